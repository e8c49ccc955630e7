/*
 * wire — the HTTP/1.1 client bits retrystorm needs: URL parsing, an incremental response
 * parser, and a small blocking GET (for the ledgers, after the storm).
 *
 * The response parser is deliberately independent of the proxy's http1 module: a harness
 * that checks the proxy must not share its parser. It is lenient where servers commonly
 * are (bare LF line ends, any reason phrase, case-insensitive names) and strict where
 * framing is at stake: a status line that is not "HTTP/1.x NNN", a header line without
 * ':', a non-numeric or conflicting Content-Length, a bad chunk size, or a head beyond the
 * limits is an error, never a guess. It does not keep the body: body bytes are hashed
 * (FNV-1a 64 over the decoded body, chunk framing removed) and handed to an optional sink.
 *
 * Nothing here allocates except wire_get() (see there). No function keeps pointers to its
 * arguments beyond the call, except the sink pointer stored by wire_resp_init().
 */
#ifndef RETRYSTORM_WIRE_H
#define RETRYSTORM_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_HOST_MAX    256
#define WIRE_PATH_MAX    1024
#define WIRE_LINE_MAX    8192  /* longest status or header line */
#define WIRE_HEAD_MAX    65536 /* whole head, all lines */
#define WIRE_HEADERS_MAX 100

/* http://HOST:PORT[/path] (port defaults to 80; the path to def_path). */
struct wire_url {
    char host[WIRE_HOST_MAX]; /* as given; IPv6 without the brackets */
    uint16_t port;
    char path[WIRE_PATH_MAX];         /* starts with '/', may carry a query */
    char hostport[WIRE_HOST_MAX + 8]; /* the Host header value: "host:port", "[::1]:80" */
    char text[WIRE_HOST_MAX + WIRE_PATH_MAX + 16]; /* normalised URL for display */
};

/*
 * Parse s into u. Only http:// is accepted (no userinfo, no fragment). Returns 0, or -1
 * with a reason in err (e.g. "expected http://HOST:PORT[/path]").
 */
int wire_url_parse(const char *s, const char *def_path, struct wire_url *u, char *err,
                   size_t errlen);

enum wire_state {
    WIRE_MORE = 0, /* need more bytes */
    WIRE_DONE,     /* one complete response; r holds it */
    WIRE_ERROR     /* garbage or framing error; r->err says what */
};

typedef void (*wire_body_fn)(void *arg, const char *data, size_t len);

/* One response being parsed. Fields above "private" are the result. */
struct wire_resp {
    int status;         /* final status (1xx interim responses are skipped) */
    int minor;          /* HTTP/1.<minor> */
    int keep_alive;     /* the connection may carry another request */
    int replayed;       /* Idempotent-Replayed: true */
    long retry_after;   /* Retry-After in seconds, -1 if absent or an HTTP date */
    uint64_t body_len;  /* decoded body bytes */
    uint64_t body_hash; /* FNV-1a 64 of the decoded body */
    char err[128];      /* why WIRE_ERROR */
    /* private */
    int phase;
    int no_body; /* response to HEAD */
    int chunked, close_delimited, have_length, conn_close, conn_keep;
    uint64_t length, remaining;
    size_t head_bytes, nheaders;
    size_t line_len;
    wire_body_fn sink;
    void *sink_arg;
    char line[WIRE_LINE_MAX];
};

/* Prepare r for the response to one request (head_request: it was a HEAD). sink may be
 * NULL; when set it receives every decoded body byte, in order. */
void wire_resp_init(struct wire_resp *r, int head_request, wire_body_fn sink, void *sink_arg);

/*
 * Feed len bytes. Sets *used to the bytes consumed: on WIRE_DONE the rest belongs to the
 * next response (a server may not send one unasked: callers treat it as an error); on
 * WIRE_MORE all bytes were used. Feeding after DONE or ERROR returns the same state.
 */
enum wire_state wire_resp_feed(struct wire_resp *r, const char *data, size_t len, size_t *used);

/* The peer closed the connection: completes a close-delimited body (WIRE_DONE); anything
 * else unfinished becomes WIRE_ERROR. */
enum wire_state wire_resp_eof(struct wire_resp *r);

/*
 * GET u->path from u with "Connection: close", waiting at most timeout_ms in total.
 * On 2xx returns 0 with *body (malloc'd, NUL-terminated, caller frees) and *len. On any
 * failure (connect, timeout, garbage, non-2xx) returns -1, *body is NULL and err names
 * the cause, e.g. "connect 127.0.0.1:9: Connection refused".
 */
int wire_get(const struct wire_url *u, uint64_t timeout_ms, size_t max_body, char **body,
             size_t *len, char *err, size_t errlen);

/* FNV-1a 64: start with WIRE_FNV_INIT, feed any number of pieces. */
#define WIRE_FNV_INIT 1469598103934665603ULL
uint64_t wire_fnv(uint64_t h, const void *data, size_t len);

/* Format a one-line error into err (errlen 0: nothing). */
void wire_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
