/*
 * worker — one thread: its own event_base, SO_REUSEPORT listener, upstream pool, Redis
 * client, frontend and handler chain. Nothing mutable is shared between workers; the
 * only cross-thread call is worker_stop(). The worker is where the layers are put
 * together: it owns every per-thread object and frees them in reverse order.
 */
#ifndef IDEMPROXY_WORKER_H
#define IDEMPROXY_WORKER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct event;
struct event_base;
struct evconnlistener;
struct frontend;
struct frontend_handler;
struct redis_client;
struct store;
struct tls_server;
struct conf_addr;
struct upstream_pool;
struct upstream_targets;

/* What a worker runs with: a configuration and the replicas its upstream names resolved
 * to. Made by the main thread (at start, on SIGHUP, when the addresses change); requests
 * that started under one keep using its policy, so it is freed only once every worker's
 * oldest generation in use (worker_oldest_gen) is a later one. */
struct worker_gen {
    const struct config *cfg;
    const struct upstream_targets *targets;
    uint64_t id; /* increasing, from 1 */
};

/* A generation a worker applied, from which request on, and the pool it made for it. */
struct worker_use {
    const struct worker_gen *gen;
    uint64_t from_seq;          /* frontend_next_seq when it was applied */
    struct upstream_pool *pool; /* retired once a later one is applied */
    uint64_t retired_ms;        /* ... then (monotonic) */
};

struct worker {
    int id; /* 1-based, for logs */
    pthread_t thread;
    int started;
    int ran; /* the thread ran and was joined: its counters mean something */
    struct event_base *base;
    struct evconnlistener *listener;
    int listen_fd;
    struct evconnlistener *tls_listener; /* tls-listen (NULL: none) */
    int tls_listen_fd;
    struct tls_server *tls; /* what tls-listen speaks: the latest generation's (a reference) */
    struct upstream_pool *pool;
    struct redis_client *redis;    /* this worker's Redis connections */
    struct store *store;           /* the idempotency operations on them */
    struct frontend *fe;           /* client connections and requests */
    struct frontend_handler *idem; /* the keyed-request handler */
    int stop_pipe[2];              /* worker_stop (another thread) writes, stop_ev reads */
    struct event *stop_ev;
    struct event *drain_ev;            /* drain-timeout */
    struct event *accept_ev;           /* resumes accepting after running out of descriptors */
    int draining;                      /* 1: draining; 2: past drain-timeout, waiting for records */
    const struct worker_gen *gen;      /* the one in force: its config and replicas */
    const struct worker_gen *next_gen; /* one waiting to be applied (set by main) */
    /* the generations some request (or record still being retried) may use, oldest
     * first, the last one in force; older ones are dropped (their pools freed) once every
     * request that started under them is done */
    struct worker_use *uses;
    size_t nuses;
    uint64_t oldest_gen;      /* uses[0].gen->id, for the main thread */
    struct event *collect_ev; /* every second */
};

/*
 * Create a listening socket bound to addr (listen, tls-listen) with SO_REUSEPORT.
 * *port (in/out): 0 means "addr's port"; when that is 0 too, the kernel picks one and
 * *port returns it so further workers bind the same. Returns fd or -1 (logged).
 */
int worker_listen_socket(const struct conf_addr *addr, unsigned short *port);

/* Prepare w (event base, listeners on listen_fd and tls_fd (-1: none) which it then
 * owns, pool, Redis, frontend, handlers). 0, or -1 (logged) with everything released. */
int worker_init(struct worker *w, int id, const struct worker_gen *gen, int listen_fd, int tls_fd);

/* Run the loop in a new thread. 0 or -1. */
int worker_start(struct worker *w);

/* Ask the worker to drain and exit (thread-safe, async). */
void worker_stop(struct worker *w);

/* Ask the worker to apply gen's replicas, routes and policy to new requests (thread-safe,
 * async; SIGHUP, or new addresses). gen must live until worker_oldest_gen of every worker
 * is past its id (requests that started under it keep using it). */
void worker_reload(struct worker *w, const struct worker_gen *gen);

/* The id of the oldest generation w may still use (any thread): every generation with a
 * lower id is no longer used by w. */
uint64_t worker_oldest_gen(const struct worker *w);

/* Ask the worker to reopen its access log (thread-safe, async; SIGUSR1). */
void worker_reopen_logs(struct worker *w);

/* Wait for the thread to end (its objects stay, e.g. for the admin thread to stop
 * reading them first). */
void worker_wait(struct worker *w);

/* Wait for the thread, then log its counters and free everything w owns. */
void worker_join(struct worker *w);

#endif
