/*
 * frontend — the client side of one worker: HTTP/1.1 parsing with limits and strict
 * framing, keep-alive, timeouts, the per-request context, and the handler chain.
 *
 * Handlers: a complete request is offered to each registered handler in turn (h2o's
 * on_req); the first that takes it answers it. A request nobody takes is forwarded to
 * the upstream pool as it is (the keyless path). The frontend never names a handler:
 * the keyed layer (idem/idem.h) and, later, the admin endpoint register themselves.
 *
 * Ownership: a frontend_conn owns its bufferevent and at most one current request
 * (requests on one connection are processed one at a time; pipelined bytes wait in the
 * input buffer). A frontend_req owns everything of one request — head, body, the
 * upstream exchange — and is freed in exactly one place, which first runs the cleanup
 * hooks handlers attached to it (nginx's ngx_http_cleanup_add), newest first. Answering
 * (frontend_respond, frontend_problem, the end of a streamed answer) frees it. A client
 * that disconnects does not cancel its request: req->conn becomes NULL, the work
 * completes and the answer is discarded.
 */
#ifndef IDEMPROXY_HTTP_FRONTEND_H
#define IDEMPROXY_HTTP_FRONTEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "core/conf.h"
#include "core/metrics.h"
#include "core/problem.h"
#include "http/http1.h"
#include "http/upstream.h"

struct event_base;
struct evbuffer;
struct frontend;
struct frontend_conn;
struct tls_server;

/* Client-side limits, timeouts, the access log and the shape of the proxy's own answers
 * (directives max-body, max-headers, response-buffer, client-timeout, access-log,
 * error-template). */
struct frontend_conf {
    size_t max_body;            /* max-body [1m] */
    size_t max_headers;         /* max-headers [16k] */
    size_t response_buffer;     /* response-buffer [1m]: larger answers stream */
    uint64_t client_timeout_ms; /* client-timeout [60s] */
    char *access_log;           /* access-log [off]: PATH, stderr or off; owned */
    char *error_template;       /* error-template [none]: PATH or none; owned */
    /* not a directive: the template error-template names, loaded by frontend_conf_load
     * (NULL: RFC 9457 problem+json); owned */
    struct problem_style *error_style;
    /* TLS on tls-listen (directives tls-*) */
    char **tls_cert_files; /* tls-cert-file (repeatable: ECDSA + RSA) */
    size_t ntls_cert_files;
    char **tls_key_files; /* tls-key-file, one per tls-cert-file, in order */
    size_t ntls_key_files;
    char **tls_protocols; /* tls-protocols [TLSv1.2 TLSv1.3] */
    size_t ntls_protocols;
    char *tls_ciphers;      /* tls-ciphers: TLS 1.2 list [OpenSSL's] */
    char *tls_ciphersuites; /* tls-ciphersuites: TLS 1.3 [OpenSSL's] */
    char *tls_client_ca_file;
    int tls_auth_clients;        /* tls-auth-clients [no]: enum tls_auth */
    int tls_tickets;             /* tls-session-tickets [on] */
    char **tls_ticket_key_files; /* tls-ticket-key-file (repeatable; the first encrypts) */
    size_t ntls_ticket_key_files;
    uint64_t tls_handshake_timeout_ms; /* tls-handshake-timeout [10s] */
    /* not a directive: the context those make, by frontend_conf_load when tls-cert-file
     * is set (NULL otherwise); one reference owned */
    struct tls_server *tls;
};
extern const struct conf_directive frontend_conf_rows[]; /* ended by CONF_END */

/* Once the directives are all set: load the file error-template names into
 * conf->error_style (replacing one loaded before). 0, or -1 with err set to
 * "error-template: FILE:LINE:COL: reason". */
int frontend_conf_load(struct frontend_conf *conf, char *err, size_t errlen);

/* Free what frontend_conf_load loaded (the directives are conf_free's). */
void frontend_conf_release(struct frontend_conf *conf);

/* A handler attaches state to a request with a cleanup hook: the node lives in the
 * handler's own state (no allocation) and fn(arg) runs when the request is freed. */
struct frontend_cleanup {
    void (*fn)(void *arg);
    void *arg;
    struct frontend_cleanup *next;
};

struct frontend_req {
    struct frontend *fe;
    struct frontend_conn *conn; /* NULL once the client has gone */
    struct http1_head head;
    int is_head;           /* method is HEAD */
    int has_body;          /* the client framed a body (even an empty chunked one) */
    struct evbuffer *body; /* complete request body */
    char client_ip[64];
    /* the SHA-256 of the client's verified TLS certificate, hex ("" when none): a
     * scope-headers entry ":client-cert" scopes keys by it */
    char client_cert[65];
    int tls; /* it came over TLS (tls-listen) */
    /* The request id: X-Request-Id as the client sent it (first one, cut at 128 bytes),
     * or one the proxy made (then it is added to the upstream request). Logged, and in
     * the proxy's own error bodies. */
    char request_id[129];
    int request_id_made;
    /* What the access log says of it: a handler sets outcome (a static string; the
     * frontend's default is "keyless", or the slug of its own error answer), record (a
     * short record id, never the key) and adds its Redis round trips to redis_us. */
    const char *outcome;
    char record[17];
    uint64_t redis_us;
    /* private to frontend.c */
    struct upstream_exchange *x; /* the exchange in flight, NULL when none */
    upstream_cb ucb;             /* the handler's view of that exchange */
    void *uarg;
    uint64_t started_us, started_unix_ms, upstream_started_us, upstream_us, bytes_in;
    const char *upstream_name; /* the replica that answered (the pool's, long-lived) */
    int status;                /* answered (0: not yet) */
    int answer_dropped;        /* the client was gone when the answer was ready */
    uint64_t bytes_out;
    int streaming;   /* the answer is being streamed */
    int chunked_out; /* ... re-chunked to the client */
    int paused;      /* ... and the upstream paused for a slow client */
    struct frontend_cleanup *cleanups;
    uint64_t seq;                   /* numbered as requests start (frontend_oldest_seq) */
    TAILQ_ENTRY(frontend_req) link; /* fe->reqs */
};

/*
 * A request handler. on_req is offered every complete request; it returns 0 to decline
 * (the next handler is asked) or 1 when it took the request, which it must then answer
 * exactly once (or hand to frontend_forward). Handlers are not owned by the frontend.
 */
struct frontend_handler {
    const char *name;
    int (*on_req)(struct frontend_handler *self, struct frontend_req *r);
    struct frontend_handler *next; /* set by frontend_add_handler */
};

/* The client side of one worker, on base. conf and pool are borrowed; default_host is
 * the Host given to HTTP/1.0 requests without one (copied); worker_id names the worker
 * in the access log. NULL on failure (an access log that cannot be opened is logged). */
struct frontend *frontend_new(struct event_base *base, const struct frontend_conf *conf,
                              struct upstream_pool *pool, const char *default_host, int worker_id);

/* A reload: new requests go to pool (borrowed), HTTP/1.0 ones without Host get
 * default_host; requests already sent stay with the pool they went to. */
/* Requests are numbered as they start: the number the next one gets, and the lowest of
 * those not finished yet (the next one's when none is) — for an owner that must know
 * when everything that started before some moment has finished (a reload's old
 * configuration). */
uint64_t frontend_next_seq(const struct frontend *fe);
uint64_t frontend_oldest_seq(const struct frontend *fe);

void frontend_set_upstreams(struct frontend *fe, struct upstream_pool *pool,
                            const char *default_host);

/* Open the access log again (after logrotate moved it; SIGUSR1). */
void frontend_reopen_log(struct frontend *fe);

/* Shutdown: free every connection and request without answering, then fe. */
void frontend_free(struct frontend *fe);

/* Append h to the chain (offered requests in the order added). */
void frontend_add_handler(struct frontend *fe, struct frontend_handler *h);

/* Take over an accepted client socket (closed at once while draining); with tls (not
 * NULL), it speaks TLS: the handshake comes first, within tls-handshake-timeout. */
void frontend_accept(struct frontend *fe, int fd, const struct sockaddr *sa, int salen,
                     struct tls_server *tls);

/* Drain: close idle connections now, busy ones after their current answer; refuse new
 * ones. on_drained(arg) is called once, from the loop, when no connection and no
 * request is left (at once if none is). */
void frontend_drain(struct frontend *fe, void (*on_drained)(void *arg), void *arg);

/*
 * The drain deadline has come: connections still sending a request are closed, and every
 * request still at the upstream is ended as if the upstream had timed out (its handler
 * then answers it, or records its outcome as unknown first). Returns how many requests
 * remain (those still recording or waiting); on_drained follows when they end.
 */
size_t frontend_drain_deadline(struct frontend *fe, const char *why);

/* Has the drain deadline come (frontend_drain_deadline)? Nothing may be sent upstream
 * any more: a handler still deciding must not forward. */
int frontend_past_deadline(const struct frontend *fe);

/* What a frontend counted, for the metrics: read from any thread (core/metrics.h). */
#define FRONTEND_MAX_OUTCOMES 32
struct frontend_stats {
    uint64_t conns; /* open client connections now */
    /* TLS handshakes on tls-listen: done (of which resumed), and failed or timed out */
    uint64_t tls_handshakes, tls_resumed, tls_failures;
    size_t noutcomes;
    struct {
        const char *name; /* as the access log spells it */
        uint64_t n;
    } outcomes[FRONTEND_MAX_OUTCOMES];
    struct metrics_hist total, upstream, redis; /* durations of finished requests */
};
/* Add what fe counted into sum (outcomes matched by name). */
void frontend_stats_add(const struct frontend *fe, struct frontend_stats *sum);

/* Open connections and unfinished requests (for logs). */
void frontend_counts(const struct frontend *fe, size_t *conns, size_t *reqs);

/* Run fn(arg) when r is freed (after the hooks added later). c is the caller's node. */
void frontend_req_cleanup_add(struct frontend_req *r, struct frontend_cleanup *c,
                              void (*fn)(void *arg), void *arg);

/*
 * Answer the request and free it (r is invalid afterwards). head: upstream head whose
 * end-to-end headers are copied (may be NULL); extra: preformatted "Name: v\r\n" lines;
 * body is moved out of (may be NULL). If the client is gone the answer is dropped.
 */
void frontend_respond(struct frontend_req *r, int status, const char *reason,
                      const struct http1_head *head, const char *extra, struct evbuffer *body);

/* Answer with the problem document of kind (core/problem.h), in the shape error-template
 * gives it, and free r. extra: more header lines (may be NULL). */
void frontend_problem(struct frontend_req *r, enum problem_kind kind, const char *detail,
                      const char *extra);

/* The answer frontend_problem would give, without answering: body and header lines
 * appended as problem_render() does (hdrs ends in a NUL byte). For a handler that keeps
 * the answer (a recorded outcome) before it answers. Returns the status. */
int frontend_problem_render(const struct frontend_req *r, enum problem_kind kind,
                            const char *detail, const char *extra, struct evbuffer *body,
                            struct evbuffer *hdrs);

/* The problem kind for an upstream exchange that did not deliver an answer
 * (UPSTREAM_UNAVAILABLE / FAILED / TIMEOUT). */
enum problem_kind frontend_upstream_problem(enum upstream_result result);

/*
 * Send r upstream: the head as headers.h rewrites it, then the body (moved out of r).
 * Answers up to max(keep, response-buffer) bytes arrive whole; larger ones stream to the
 * client by themselves. cb sees: UPSTREAM_STREAM once, when an answer starts streaming
 * (its head is about to go out: note it, do not answer), and the final result of an
 * answer that did not stream (the handler answers r). A streamed answer is ended — and r
 * freed — by the frontend itself. Returns 0, or -1 when the exchange could not even
 * start (cb is not called).
 */
int frontend_send_upstream(struct frontend_req *r, size_t keep, upstream_cb cb, void *arg);

/* Keyless path: forward r to the upstream pool and answer with what comes back. */
void frontend_forward(struct frontend_req *r);

#endif
