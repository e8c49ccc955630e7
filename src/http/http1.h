/*
 * http1 — strict HTTP/1.x message heads and body framing (RFC 9112).
 *
 * The proxy parses both sides itself rather than through evhttp: libevent 2.1's evhttp
 * answers framing errors with its own HTML pages (no error callback before 2.2), reports
 * oversized heads as 413 instead of 431, has no 408, reads a body by the first of two
 * Content-Length headers, and as a client cannot tell "nothing was sent" from "sent and
 * lost" — which the never-resend rule needs. See README "Why not evhttp".
 *
 * Strictness (each violation is an http1_error with the status to answer):
 *   - lines end in CRLF; a bare LF, NUL or other control byte in the head → 400
 *   - header names are tokens, no whitespace before ':'; obs-fold (line starting
 *     with SP/HTAB) → 400; values may hold VCHAR, obs-text, SP, HTAB only
 *   - more than HTTP1_MAX_HEADERS header lines → 431; head longer than the limit → 431
 *   - version other than HTTP/1.0 or HTTP/1.1 → 505 (malformed → 400)
 *   - framing: Content-Length together with Transfer-Encoding → 400; two Content-Length
 *     headers, a list, a sign, or anything but digits → 400; a transfer coding other
 *     than a single "chunked" → 501; HTTP/1.1 request without exactly one Host → 400
 */
#ifndef IDEMPROXY_HTTP_HTTP1_H
#define IDEMPROXY_HTTP_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#include "core/problem.h"

struct evbuffer;

#define HTTP1_MAX_HEADERS 128

/* Header names the proxy itself looks at, recognised once per head (http1_head_index)
 * so that lookups compare small integers instead of running strcasecmp over every
 * field. Everything else is HTTP1_H_OTHER. */
enum http1_hdr {
    HTTP1_H_OTHER = 0,
    HTTP1_H_HOST,
    HTTP1_H_CONTENT_LENGTH,
    HTTP1_H_TRANSFER_ENCODING,
    HTTP1_H_CONNECTION,
    HTTP1_H_KEEP_ALIVE,
    HTTP1_H_PROXY_CONNECTION,
    HTTP1_H_TE,
    HTTP1_H_TRAILER,
    HTTP1_H_UPGRADE,
    HTTP1_H_EXPECT,
    HTTP1_H_X_FORWARDED_FOR,
    HTTP1_H_X_FORWARDED_PROTO,
    HTTP1_H_X_FORWARDED_HOST,
    HTTP1_H_VIA,
    HTTP1_H_X_REQUEST_ID,
    HTTP1_H_COUNT
};

struct http1_header {
    char *name;  /* NUL-terminated, as received (case preserved) */
    char *value; /* NUL-terminated, surrounding OWS removed */
    size_t name_len, value_len;
    int id; /* enum http1_hdr */
};

/* A parsed head. All strings, and the field array itself, point into buf, which the head
 * owns: the head is small (zeroing it is cheap) and one allocation holds it all. */
struct http1_head {
    char *buf;
    size_t len; /* bytes of the raw head incl. the final empty line */
    int minor;  /* HTTP/1.<minor> */
    /* requests */
    char *method, *target; /* target in origin-form ("/p?q"), "*", or as sent */
    char *authority;       /* absolute-form target ("http://a.example/p"): its authority,
                              and target is then its origin-form ("/p"); else NULL */
    /* responses */
    int status;
    char *reason;
    size_t nheaders;
    unsigned char count[HTTP1_H_COUNT]; /* how many fields of each known name */
    struct http1_header *headers;       /* nheaders fields, inside buf */
    size_t cap;                         /* room for this many fields there */
    int connection_names;               /* a Connection field names more than close / keep-alive */
    int has_ctl; /* the raw head holds a control byte other than CR LF HTAB */
};

/* Where the field array starts in a buf whose first len bytes are strings. */
#define HTTP1_FIELDS_AT(len)                                                                       \
    (((len) + _Alignof(struct http1_header) - 1) & ~(size_t)(_Alignof(struct http1_header) - 1))

/* Why a message was rejected: the kind of problem to answer (core/problem.h) and a human
 * sentence. status and slug are the kind's row, copied for logs and tests. */
struct http1_error {
    enum problem_kind kind;
    int status;
    const char *slug;
    char detail[160];
};

enum http1_body {
    HTTP1_BODY_NONE,    /* no body */
    HTTP1_BODY_LENGTH,  /* exactly content_length bytes */
    HTTP1_BODY_CHUNKED, /* chunked transfer coding */
    HTTP1_BODY_CLOSE    /* responses only: until the connection closes */
};

/*
 * Look for the end of a head in buf, starting the search at *scan (updated, so a head
 * arriving byte by byte is not rescanned). Leading CRLFs before a request line are
 * drained from buf (RFC 9112 §2.2). Returns the head length (>0) when complete, 0 when
 * more bytes are needed, -1 when max bytes arrived without an end (→ 431), -2 when a
 * line of the unfinished head ends in a bare LF (→ 400 at once: it could never end).
 */
long http1_head_end(struct evbuffer *buf, size_t *scan, size_t max, int is_request);

/*
 * Parse a complete head (data/len as located by http1_head_end). On success returns 0
 * and h owns a copy (release with http1_head_clear). On failure returns -1, fills err,
 * and h holds nothing.
 */
int http1_parse_request(struct http1_head *h, const char *data, size_t len,
                        struct http1_error *err);
int http1_parse_response(struct http1_head *h, const char *data, size_t len,
                         struct http1_error *err);
void http1_head_clear(struct http1_head *h);

/* Which known header is name (len bytes, case-insensitive)? HTTP1_H_OTHER if none. */
int http1_header_id(const char *name, size_t len);

/* Set every field's id and the per-name counts. The parsers do this; whoever fills a
 * head by hand (record.c) calls it once the fields are in place. */
void http1_head_index(struct http1_head *h);

/* First header named name (case-insensitive), or NULL. n counts how many there are. The
 * _id forms take a known name's enum http1_hdr (no name to look up: the hot path's). */
const char *http1_header_get(const struct http1_head *h, const char *name, size_t *n);
const char *http1_header_get_id(const struct http1_head *h, int id, size_t *n);

/* Does comma-separated list header `name` contain token (case-insensitive)? */
int http1_header_has_token(const struct http1_head *h, const char *name, const char *token);
int http1_header_has_token_id(const struct http1_head *h, int id, const char *token);

/* Is v a valid Host value: empty, or host[:port] with host a reg-name (alnum - . _ ~ and
 * %HH), an IPv4 address or a [bracketed] IP literal, and a port of 1-5 digits ≤ 65535?
 * Spaces, lists, paths and userinfo are not. */
int http1_host_valid(const char *v);

/* Request body framing and the Host rules (one Host in HTTP/1.1, a valid one, equal to
 * an absolute-form target's authority); -1 with err on any violation listed above. */
int http1_request_framing(const struct http1_head *h, enum http1_body *kind, uint64_t *length,
                          struct http1_error *err);

/* Response body framing given the request method; -1 (→ 502) on an invalid length. */
int http1_response_framing(const struct http1_head *h, int request_was_head, enum http1_body *kind,
                           uint64_t *length, struct http1_error *err);

/* Keep the connection after this message? (1.1 unless "close"; 1.0 only if "keep-alive") */
int http1_keepalive(const struct http1_head *h);

/* Incremental chunked decoder. Zero-initialise; feed it whatever arrived. */
struct http1_chunked {
    int state;
    uint64_t remaining;
    size_t line_bytes; /* bytes of the current size/trailer line seen so far */
    size_t trailer_bytes;
};

/*
 * Move decoded body bytes from in to out. max_body bounds the decoded total (*total is
 * updated); max_trailer bounds size lines and trailers. Returns 1 when the last chunk and
 * trailers were consumed (bytes after it stay in in), 0 when more input is needed, -1 on
 * a malformed chunk (400) or a body over max_body (413), with err filled.
 */
int http1_chunked_decode(struct http1_chunked *c, struct evbuffer *in, struct evbuffer *out,
                         uint64_t max_body, uint64_t *total, size_t max_trailer,
                         struct http1_error *err);

/* Reason phrase for a status code ("OK", "Bad Request", ...; "Unknown" otherwise). */
const char *http1_reason(int status);

/* Token characters (RFC 9110 tchar). */
int http1_is_tchar(unsigned char c);

#endif
