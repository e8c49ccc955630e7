/*
 * problem — every kind of error the proxy itself answers, in one table, and how its
 * answer is written: RFC 9457 application/problem+json by default, or in the shape of
 * the API in front, from an error template (problem_style).
 *
 * A kind is one row {status, slug, title}: call sites name the kind, never a status and
 * a slug separately, so the two cannot disagree and metrics can count by kind. The
 * "type" URI of a kind is PROBLEM_TYPE_BASE + slug (a tag URI: stable, needs no
 * server). The README lists every row.
 *
 * Every error body the proxy makes goes through problem_render(), so an answer made now
 * and one recorded for replay have the same shape.
 */
#ifndef IDEMPROXY_CORE_PROBLEM_H
#define IDEMPROXY_CORE_PROBLEM_H

#include <stddef.h>

struct evbuffer;

#define PROBLEM_TYPE_BASE "tag:idemproxy.dev,2026:problem:"

enum problem_kind {
    /* the client's request (http1, frontend) */
    PROBLEM_BAD_REQUEST = 0,
    PROBLEM_INVALID_HEADER,
    PROBLEM_MISSING_HOST,
    PROBLEM_CONFLICTING_FRAMING,
    PROBLEM_INVALID_CONTENT_LENGTH,
    PROBLEM_UNSUPPORTED_TRANSFER_ENCODING,
    PROBLEM_METHOD_NOT_SUPPORTED,
    PROBLEM_VERSION_NOT_SUPPORTED,
    PROBLEM_BODY_TOO_LARGE,
    PROBLEM_HEADERS_TOO_LARGE,
    PROBLEM_REQUEST_TIMEOUT,
    /* the upstream side */
    PROBLEM_UPSTREAM_UNAVAILABLE,
    PROBLEM_UPSTREAM_FAILED,
    PROBLEM_UPSTREAM_TIMEOUT,
    PROBLEM_INTERNAL_ERROR,
    PROBLEM_DRAINING,
    /* the idempotency layer */
    PROBLEM_INVALID_KEY,
    PROBLEM_MISSING_KEY,
    PROBLEM_KEY_IN_USE,
    PROBLEM_KEY_REUSED,
    PROBLEM_STORE_UNAVAILABLE,
    PROBLEM_OUTCOME_UNKNOWN,
    PROBLEM_NOT_REPLAYABLE,
    PROBLEM_RECORD_UNREADABLE,
    PROBLEM_KIND_COUNT
};

struct problem_type {
    int status;        /* the HTTP status answered */
    const char *slug;  /* stable, part of the type URI */
    const char *title; /* short human summary */
};

/* The row of kind (never NULL: an out-of-range kind is PROBLEM_INTERNAL_ERROR's row). */
const struct problem_type *problem_type(enum problem_kind kind);

/* The kind whose slug is slug, or -1 (for tests and tools that read bodies back). */
int problem_kind_by_slug(const char *slug);

/*
 * Append the JSON document to body: {"type","title","status"[,"detail"][,"instance"]
 * [,"request_id"]} (request_id: an extension member, RFC 9457 §3.2). detail, instance
 * and request_id may be NULL (left out); they are JSON-escaped. Returns bytes appended.
 */
int problem_body(struct evbuffer *body, enum problem_kind kind, const char *detail,
                 const char *instance, const char *request_id);

/* JSON-escape s (len bytes) into out, without surrounding quotes. */
void problem_json_escape(struct evbuffer *out, const char *s, size_t len);

/*
 * An error template (the error-template directive): per kind, a status, a content type,
 * a body with placeholders and header lines. Immutable once loaded; shared read-only by
 * every worker. The file format is in the README ("Errors in the shape of your API").
 *
 * Placeholders: {{status}} {{slug}} {{type}} {{title}} {{detail}} {{instance}}
 * {{request_id}}, and the template's own variables ("vars", per kind). Inserted values
 * are escaped for the body's content type: JSON-escaped (without quotes) for a JSON type
 * (application/json, anything +json), entity-escaped for XML and HTML, as they are for
 * any other type; in headers, control characters become spaces.
 */
struct problem_style;

/* Parse a template (text: len bytes; origin names it in errors). The style, or NULL with
 * err set to "ORIGIN:LINE:COL: reason" (or "ORIGIN: reason"). */
struct problem_style *problem_style_parse(const char *text, size_t len, const char *origin,
                                          char *err, size_t errlen);

/* Read and parse the file at path (at most PROBLEM_STYLE_MAX_FILE bytes); as above, with
 * the path as origin. */
#define PROBLEM_STYLE_MAX_FILE (1024 * 1024)
struct problem_style *problem_style_load(const char *path, char *err, size_t errlen);

void problem_style_free(struct problem_style *style);

/*
 * The one renderer of the proxy's own answers. Appends the body of kind to body and its
 * header lines to hdrs: "Content-Type: ...\r\n", then extra (preformatted "Name:
 * value\r\n" lines the call site adds, e.g. Retry-After; may be NULL), then the style's
 * headers that extra does not name, then one NUL byte — so evbuffer_pullup(hdrs, -1) is
 * the header block as a C string. style NULL: the RFC 9457 document (problem_body).
 * detail, instance and request_id may be NULL (empty in a template). Returns the status
 * to answer: the kind's, or the one the style gives it.
 */
int problem_render(const struct problem_style *style, struct evbuffer *body, struct evbuffer *hdrs,
                   enum problem_kind kind, const char *detail, const char *instance,
                   const char *request_id, const char *extra);

#endif
