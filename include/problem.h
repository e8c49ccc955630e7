/*
 * problem — RFC 9457 application/problem+json answers produced by the proxy itself.
 *
 * Every kind of error has a stable slug; its "type" URI is PROBLEM_TYPE_BASE + slug
 * (a tag URI: stable, needs no server). The README lists every type.
 */
#ifndef IDEMPROXY_PROBLEM_H
#define IDEMPROXY_PROBLEM_H

#include <stddef.h>

struct evbuffer;

#define PROBLEM_TYPE_BASE "tag:idemproxy.dev,2026:problem:"

/* Title for a slug (e.g. "body-too-large" → "Request body too large"); NULL if unknown. */
const char *problem_title(const char *slug);

/*
 * Append the JSON document to body: {"type","title","status","detail"[, "instance"]}.
 * detail and instance may be NULL; they are JSON-escaped. Returns bytes appended or -1.
 */
int problem_body(struct evbuffer *body, int status, const char *slug, const char *detail,
                 const char *instance);

/* JSON-escape s (len bytes) into out, without surrounding quotes. */
void problem_json_escape(struct evbuffer *out, const char *s, size_t len);

#endif
