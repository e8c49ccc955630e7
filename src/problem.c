#include "problem.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

static const struct {
    const char *slug, *title;
} problem_kinds[] = {
    {"bad-request", "Malformed request"},
    {"invalid-header", "Invalid header field"},
    {"missing-host", "Missing or repeated Host header"},
    {"conflicting-framing", "Ambiguous message framing"},
    {"invalid-content-length", "Invalid Content-Length"},
    {"unsupported-transfer-encoding", "Unsupported transfer coding"},
    {"method-not-supported", "Method not supported"},
    {"version-not-supported", "HTTP version not supported"},
    {"body-too-large", "Request body too large"},
    {"headers-too-large", "Request header fields too large"},
    {"request-timeout", "Client sent the request too slowly"},
    {"upstream-unavailable", "No upstream replica accepted the connection"},
    {"upstream-failed", "Upstream failed before completing its response"},
    {"upstream-timeout", "Upstream did not answer in time"},
    {"internal-error", "Internal proxy error"},
    /* idempotency engine */
    {"invalid-idempotency-key", "Invalid Idempotency-Key"},
    {"missing-idempotency-key", "Idempotency-Key required"},
    {"idempotency-key-in-use", "A request with this Idempotency-Key is still being processed"},
    {"idempotency-key-reused", "Idempotency-Key reused with a different request"},
    {"store-unavailable", "Idempotency store unavailable"},
    {"outcome-unknown", "Outcome of the original request is unknown"},
    {"response-not-replayable", "Original response too large to replay"},
};

const char *problem_title(const char *slug)
{
    for (size_t i = 0; i < sizeof(problem_kinds) / sizeof(problem_kinds[0]); i++)
        if (strcmp(problem_kinds[i].slug, slug) == 0)
            return problem_kinds[i].title;
    return NULL;
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

int problem_body(struct evbuffer *body, int status, const char *slug, const char *detail,
                 const char *instance)
{
    size_t before = evbuffer_get_length(body);
    const char *title = problem_title(slug);

    if (!title)
        title = "Error";
    evbuffer_add_printf(body, "{\"type\":\"%s%s\",\"title\":\"", PROBLEM_TYPE_BASE, slug);
    problem_json_escape(body, title, strlen(title));
    evbuffer_add_printf(body, "\",\"status\":%d", status);
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
    evbuffer_add(body, "}\n", 2);
    return (int)(evbuffer_get_length(body) - before);
}
