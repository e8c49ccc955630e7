/*
 * problem — every kind of error the proxy itself answers, in one table, and its RFC 9457
 * application/problem+json body.
 *
 * A kind is one row {status, slug, title}: call sites name the kind, never a status and
 * a slug separately, so the two cannot disagree and metrics can count by kind. The
 * "type" URI of a kind is PROBLEM_TYPE_BASE + slug (a tag URI: stable, needs no
 * server). The README lists every row.
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

#endif
