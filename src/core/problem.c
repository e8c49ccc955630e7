#include "core/problem.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

/* One row per kind, in enum order (checked at compile time by the count). */
static const struct problem_type problem_types[] = {
    [PROBLEM_BAD_REQUEST] = {400, "bad-request", "Malformed request"},
    [PROBLEM_INVALID_HEADER] = {400, "invalid-header", "Invalid header field"},
    [PROBLEM_MISSING_HOST] = {400, "missing-host", "Missing or repeated Host header"},
    [PROBLEM_CONFLICTING_FRAMING] = {400, "conflicting-framing", "Ambiguous message framing"},
    [PROBLEM_INVALID_CONTENT_LENGTH] = {400, "invalid-content-length", "Invalid Content-Length"},
    [PROBLEM_UNSUPPORTED_TRANSFER_ENCODING] = {501, "unsupported-transfer-encoding",
                                               "Unsupported transfer coding"},
    [PROBLEM_METHOD_NOT_SUPPORTED] = {501, "method-not-supported", "Method not supported"},
    [PROBLEM_VERSION_NOT_SUPPORTED] = {505, "version-not-supported", "HTTP version not supported"},
    [PROBLEM_BODY_TOO_LARGE] = {413, "body-too-large", "Request body too large"},
    [PROBLEM_HEADERS_TOO_LARGE] = {431, "headers-too-large", "Request header fields too large"},
    [PROBLEM_REQUEST_TIMEOUT] = {408, "request-timeout", "Client sent the request too slowly"},
    [PROBLEM_UPSTREAM_UNAVAILABLE] = {502, "upstream-unavailable",
                                      "No upstream replica accepted the connection"},
    [PROBLEM_UPSTREAM_FAILED] = {502, "upstream-failed",
                                 "Upstream failed before completing its response"},
    [PROBLEM_UPSTREAM_TIMEOUT] = {504, "upstream-timeout", "Upstream did not answer in time"},
    [PROBLEM_INTERNAL_ERROR] = {500, "internal-error", "Internal proxy error"},
    [PROBLEM_DRAINING] = {503, "draining", "This proxy replica is shutting down"},
    [PROBLEM_INVALID_KEY] = {400, "invalid-idempotency-key", "Invalid Idempotency-Key"},
    [PROBLEM_MISSING_KEY] = {400, "missing-idempotency-key", "Idempotency-Key required"},
    [PROBLEM_KEY_IN_USE] = {409, "idempotency-key-in-use",
                            "A request with this Idempotency-Key is still being processed"},
    [PROBLEM_KEY_REUSED] = {422, "idempotency-key-reused",
                            "Idempotency-Key reused with a different request"},
    [PROBLEM_STORE_UNAVAILABLE] = {503, "store-unavailable", "Idempotency store unavailable"},
    [PROBLEM_OUTCOME_UNKNOWN] = {504, "outcome-unknown",
                                 "Outcome of the original request is unknown"},
    [PROBLEM_NOT_REPLAYABLE] = {502, "response-not-replayable",
                                "Original response too large to replay"},
    [PROBLEM_RECORD_UNREADABLE] = {502, "record-unreadable", "Stored response cannot be read"},
};
_Static_assert(sizeof(problem_types) / sizeof(problem_types[0]) == PROBLEM_KIND_COUNT,
               "one problem_types row per enum problem_kind");

const struct problem_type *problem_type(enum problem_kind kind)
{
    if ((unsigned)kind >= PROBLEM_KIND_COUNT || !problem_types[kind].slug)
        kind = PROBLEM_INTERNAL_ERROR;
    return &problem_types[kind];
}

int problem_kind_by_slug(const char *slug)
{
    for (int k = 0; k < PROBLEM_KIND_COUNT; k++)
        if (problem_types[k].slug && strcmp(problem_types[k].slug, slug) == 0)
            return k;
    return -1;
}

void problem_json_escape(struct evbuffer *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        evbuffer_add(out, s + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            evbuffer_add(out, esc, 2);
        } else if (c == '\n') {
            evbuffer_add(out, "\\n", 2);
        } else if (c == '\r') {
            evbuffer_add(out, "\\r", 2);
        } else if (c == '\t') {
            evbuffer_add(out, "\\t", 2);
        } else {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            evbuffer_add(out, esc, 6);
        }
    }
    evbuffer_add(out, s + run, len - run);
}

int problem_body(struct evbuffer *body, enum problem_kind kind, const char *detail,
                 const char *instance, const char *request_id)
{
    const struct problem_type *t = problem_type(kind);
    size_t before = evbuffer_get_length(body);

    evbuffer_add_printf(body, "{\"type\":\"%s%s\",\"title\":\"", PROBLEM_TYPE_BASE, t->slug);
    problem_json_escape(body, t->title, strlen(t->title));
    evbuffer_add_printf(body, "\",\"status\":%d", t->status);
    if (detail) {
        evbuffer_add(body, ",\"detail\":\"", 11);
        problem_json_escape(body, detail, strlen(detail));
        evbuffer_add(body, "\"", 1);
    }
    if (instance) {
        evbuffer_add(body, ",\"instance\":\"", 13);
        problem_json_escape(body, instance, strlen(instance));
        evbuffer_add(body, "\"", 1);
    }
    if (request_id) {
        evbuffer_add(body, ",\"request_id\":\"", 15);
        problem_json_escape(body, request_id, strlen(request_id));
        evbuffer_add(body, "\"", 1);
    }
    evbuffer_add(body, "}\n", 2);
    return (int)(evbuffer_get_length(body) - before);
}
