/*
 * frontend — client connections: HTTP/1.1 parsing with limits and strict framing,
 * keep-alive, timeouts, and the per-request context.
 *
 * Ownership: a frontend_conn owns its bufferevent and at most one current request
 * (requests on one connection are processed one at a time; pipelined bytes wait in the
 * input buffer). A frontend_req owns everything of one request — head, body, the
 * upstream exchange handle — and is freed in exactly one place (frontend_req_free,
 * called by frontend_respond or, if the client is gone, when the work completes).
 * A client that disconnects does not cancel its request: req->conn becomes NULL, the
 * work completes and the answer is discarded.
 */
#ifndef IDEMPROXY_FRONTEND_H
#define IDEMPROXY_FRONTEND_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "http1.h"
#include "upstream.h"

struct worker;
struct evbuffer;
struct upstream_exchange;
struct idem_ctx;

struct frontend_req {
    struct worker *worker;
    struct frontend_conn *conn; /* NULL once the client has gone */
    struct http1_head head;
    int is_head;           /* method is HEAD */
    int has_body;          /* the client framed a body (even an empty chunked one) */
    struct evbuffer *body; /* complete request body */
    char client_ip[64];
    uint64_t started_ms;
    struct upstream_exchange *x;
    struct idem_ctx *idem;          /* keyed state (idem.h), freed with the request */
    int streaming;                  /* the answer is being streamed (frontend_stream_*) */
    int chunked_out;                /* ... re-chunked to the client */
    int paused;                     /* ... and the upstream paused for a slow client */
    TAILQ_ENTRY(frontend_req) link; /* worker->reqs */
};

/* Take over an accepted client socket. */
void frontend_accept(struct worker *w, int fd, const struct sockaddr *sa, int salen);

/*
 * Answer the request and free it (r is invalid afterwards). head: upstream head whose
 * end-to-end headers are copied (may be NULL); extra: preformatted "Name: v\r\n" lines;
 * body is moved out of (may be NULL). If the client is gone the answer is dropped.
 */
void frontend_respond(struct frontend_req *r, int status, const char *reason,
                      const struct http1_head *head, const char *extra, struct evbuffer *body);

/* Answer with an RFC 9457 problem document (see problem.h) and free r. */
void frontend_problem(struct frontend_req *r, int status, const char *slug, const char *detail,
                      const char *extra);

/*
 * An answer too large to buffer (upstream.h, UPSTREAM_STREAM) passes through as it
 * arrives: start with its head and the first bytes, add more, then end. r stays alive
 * until frontend_stream_end, which frees it. Framing to the client: the upstream's
 * Content-Length when it sent one, else chunked (HTTP/1.1 clients) or close-delimited.
 * end(complete = 0) — the upstream cut the answer short — closes the client connection
 * without completing the message, so the client can never take it for whole. A slow
 * client pauses the upstream (r->x) until its output drains.
 */
void frontend_stream_start(struct frontend_req *r, const struct http1_head *head,
                           struct evbuffer *body);
void frontend_stream_data(struct frontend_req *r, struct evbuffer *body);
void frontend_stream_end(struct frontend_req *r, int complete);

/*
 * Send r upstream: the head as headers.h rewrites it, then the body (moved out of r).
 * Both paths use it; returns the exchange (cb gets the answer) or NULL (not started).
 */
struct upstream_exchange *frontend_send_upstream(struct frontend_req *r, size_t stream_after,
                                                 upstream_cb cb, void *arg);

/* Keyless path: forward r to the upstream pool and answer with what comes back. */
void frontend_forward(struct frontend_req *r);

/* Drain: close idle connections now; busy ones close after their current answer. */
void frontend_drain(struct worker *w);

/* Shutdown: free every connection and request of w without answering. */
void frontend_free_all(struct worker *w);

#endif
