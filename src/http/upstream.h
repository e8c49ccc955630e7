/*
 * upstream — the upstream replicas as seen by one worker: round robin, a keep-alive pool
 * per replica, health (back-off after refused connections), and forwarding one request.
 *
 * One pool per worker thread; nothing here is shared or locked. A connection carries one
 * request at a time; idle ones watch for the peer closing so a dead one is not reused.
 *
 * The never-resend rule: the request bytes are handed to a socket only once it is
 * connected. A replica that refuses or times out the connect is marked down and the next
 * one is tried (nothing was sent). Once any byte may have reached an upstream, a failure
 * ends the exchange with UPSTREAM_FAILED / UPSTREAM_TIMEOUT — never a second send.
 */
#ifndef IDEMPROXY_HTTP_UPSTREAM_H
#define IDEMPROXY_HTTP_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/conf.h"
#include "http/http1.h"

struct event_base;
struct tls_client;
struct evbuffer;
struct upstream_pool;
struct upstream_exchange;

/* The replicas and how they are used (directives upstream, upstream-timeout,
 * upstream-connect-timeout, upstream-pool). */
struct upstream_conf {
    struct conf_addr *addrs; /* upstream [http[s]://]HOST:PORT, repeatable, required; owned */
    size_t naddrs;
    size_t nhttps;         /* how many of them were written https:// */
    int tls;               /* upstream-tls [off] (https:// turns it on) */
    int tls_verify;        /* upstream-tls-verify [on] */
    char *tls_ca_file;     /* upstream-tls-ca-file [the system's store] */
    char *tls_server_name; /* upstream-tls-server-name [each upstream's host] */
    char *tls_cert_file;   /* upstream-tls-cert-file: a client certificate */
    char *tls_key_file;    /* upstream-tls-key-file */
    int tls_session_reuse; /* upstream-tls-session-reuse [on] */
    /* not a directive: the context those make, by upstream_conf_load (NULL: no TLS) */
    struct tls_client *tls_ctx;
    uint64_t timeout_ms;          /* upstream-timeout [30s] */
    uint64_t connect_timeout_ms;  /* upstream-connect-timeout [2s] */
    int pool;                     /* upstream-pool [64]: idle connections kept per replica */
    uint64_t resolve_interval_ms; /* upstream-resolve-interval [10s]; 0: start and reload only */
};
extern const struct conf_directive upstream_conf_rows[]; /* ended by CONF_END */

/* At least one upstream, all of them http:// or all https://. 0 or -1 with err set. */
int upstream_conf_validate(const struct upstream_conf *conf, char *err, size_t errlen);

/* Once the directives are all set: with upstream-tls, load the CA and client certificate
 * files into conf->tls_ctx. 0, or -1 with err set ("upstream-tls: ..."). */
int upstream_conf_load(struct upstream_conf *conf, char *err, size_t errlen);
void upstream_conf_release(struct upstream_conf *conf);

/* The replicas an upstream list stands for: every address of every name, in the list's
 * order (a name with several addresses is several replicas, named HOST:PORT@ADDRESS; one
 * with a single address is named HOST:PORT). Made by the main thread, then read-only:
 * the workers' pools copy from it. */
#define UPSTREAM_NAME_MAX (CONF_HOST_MAX + 16 + 1 + 64) /* HOST:PORT@ADDRESS */
struct upstream_target {
    char name[UPSTREAM_NAME_MAX];
    char host[CONF_HOST_MAX + 1]; /* as configured: SNI and the name its certificate shows */
    struct sockaddr_storage sa;
    socklen_t salen;
};
struct upstream_targets {
    struct upstream_target *t; /* owned */
    size_t n;
};

/* Resolve conf's names now (getaddrinfo: blocking, for the main thread). 0, or -1 with
 * err set (a name that does not resolve) and out untouched. */
int upstream_resolve(const struct upstream_conf *conf, struct upstream_targets *out, char *err,
                     size_t errlen);
/* 1 when a and b are the same replicas in the same order. */
int upstream_targets_equal(const struct upstream_targets *a, const struct upstream_targets *b);
void upstream_targets_free(struct upstream_targets *t);

enum upstream_result {
    UPSTREAM_OK = 0,
    UPSTREAM_UNAVAILABLE, /* no replica accepted a connection; nothing was sent */
    UPSTREAM_FAILED,      /* sent, then reset/closed early or an invalid response */
    UPSTREAM_TIMEOUT,     /* sent, then no (complete) answer within upstream-timeout */
    UPSTREAM_STREAM,      /* not a final result: more of a large answer (see below) */
};

/* What the completion callback sees. Valid only during the callback. */
struct upstream_response {
    enum upstream_result result;
    int sent;                /* any byte may have reached an upstream */
    int streaming;           /* the head was already delivered with UPSTREAM_STREAM */
    const char *replica;     /* "host:port" of the replica used (or last tried) */
    struct http1_head *head; /* UPSTREAM_OK: the final (non-1xx) response head */
    struct evbuffer *body;   /* UPSTREAM_OK: de-chunked body; the callee may drain it */
    const char *error;       /* otherwise: why, for logs and problem details */
};

/*
 * Called once per upstream_forward with the final result — and before that, for an
 * answer whose body grows past stream_after bytes, once per arriving piece with
 * UPSTREAM_STREAM: head and the body so far (drain it). After the first STREAM call,
 * the final call carries the rest of the body (UPSTREAM_OK) or says the answer was cut
 * short (FAILED/TIMEOUT, with streaming set): the receiver must then not treat what it
 * passed on as complete. The exchange is freed by the pool after the final callback
 * returns; callbacks may start new exchanges but must not keep resp. The final OK
 * callback may take over the head (copy *head, then zero *head) and drain the body.
 */
typedef void (*upstream_cb)(const struct upstream_response *resp, void *arg);

/* Create the pool for one worker, one replica per target (copied; conf is borrowed and
 * must outlive the pool). NULL when out of memory. */
struct upstream_pool *upstream_pool_new(struct event_base *base, const struct upstream_conf *conf,
                                        const struct upstream_targets *targets);

/* A reload replaced the pool by successor: its counters and the back-off of the replicas
 * both name move over; its idle connections close now, its exchanges finish (and their
 * connections close after them, not pooled). Free it later, as usual. */
void upstream_pool_retire(struct upstream_pool *pool, struct upstream_pool *successor);

/* Close idle connections and abort in-flight exchanges WITHOUT calling their callbacks
 * (shutdown only: the caller owns whatever arg pointed to). */
void upstream_pool_free(struct upstream_pool *pool);

/*
 * Forward a request. request holds the complete wire request (head + body) and is moved
 * out of (left empty) — the pool owns those bytes from here. is_head: the request method
 * was HEAD (its response has no body). stream_after: bodies up to this many bytes are
 * delivered whole; larger ones stream (UPSTREAM_STREAM; SIZE_MAX: never). Returns the exchange
 * handle (for upstream_exchange_detach) or NULL if it could not even start (then cb was NOT
 * called).
 */
struct upstream_exchange *upstream_forward(struct upstream_pool *pool, struct evbuffer *request,
                                           int is_head, size_t stream_after, upstream_cb cb,
                                           void *arg);

/* Stop (pause = 1) or resume reading the answer: backpressure from a slow client while
 * streaming. A pause longer than upstream-timeout ends the exchange (UPSTREAM_TIMEOUT). */
void upstream_exchange_pause(struct upstream_exchange *x, int pause);

/* End the exchange now: its connection is closed and the callback is called at once with
 * UPSTREAM_TIMEOUT (why) when bytes may have reached the upstream — its outcome is
 * unknown — or UPSTREAM_UNAVAILABLE when nothing was sent. x is freed on return. */
void upstream_exchange_abort(struct upstream_exchange *x, const char *why);

/* Forget the callback (its arg is going away); the exchange still completes so the
 * connection can be reused or closed cleanly. */
void upstream_exchange_detach(struct upstream_exchange *x);

/* Counters for logs/tests. */
struct upstream_stats {
    uint64_t connects;    /* TCP connections opened */
    uint64_t reused;      /* requests sent on a pooled connection */
    uint64_t failovers;   /* connects refused → next replica */
    uint64_t tls_resumed; /* TLS connections that resumed a session */
    size_t idle, active;  /* connections now */
};
/* The owning worker only (idle and active walk the lists). */
void upstream_pool_stats(const struct upstream_pool *pool, struct upstream_stats *out);

/* Any thread (the admin thread): the counters (idle and active left 0), and per replica
 * its name, failovers, back-offs and whether it is in back-off now. */
void upstream_pool_counters(const struct upstream_pool *pool, struct upstream_stats *out);
struct upstream_replica_stats {
    const char *name;
    uint64_t failovers, backoffs;
    int down;
};
size_t upstream_pool_replicas(const struct upstream_pool *pool);
void upstream_pool_replica(const struct upstream_pool *pool, size_t i,
                           struct upstream_replica_stats *out);

#endif
