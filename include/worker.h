/*
 * worker — one thread: its own event_base, its own SO_REUSEPORT listener, its own
 * upstream pool (and, with the idempotency engine, its own Redis connection). Nothing
 * mutable is shared between workers; the only cross-thread call is worker_stop().
 */
#ifndef IDEMPROXY_WORKER_H
#define IDEMPROXY_WORKER_H

#include <pthread.h>
#include <stddef.h>
#include <sys/queue.h>

struct config;
struct event;
struct event_base;
struct evconnlistener;
struct upstream_pool;
struct store;
struct frontend_conn;
struct frontend_req;

TAILQ_HEAD(frontend_conn_list, frontend_conn);
TAILQ_HEAD(frontend_req_list, frontend_req);

struct worker {
    int id; /* 1-based, for logs */
    const struct config *cfg;
    pthread_t thread;
    int started;
    struct event_base *base;
    struct evconnlistener *listener;
    int listen_fd;
    struct upstream_pool *pool;
    struct store *store;    /* Redis connections of this worker */
    char default_host[300]; /* Host for HTTP/1.0 requests without one: the first upstream */
    int stop_pipe[2];       /* worker_stop (another thread) writes, stop_ev reads */
    struct event *stop_ev;
    struct event *drain_ev;  /* drain-timeout */
    struct event *accept_ev; /* resumes accepting after running out of descriptors */
    int draining;
    struct frontend_conn_list conns; /* open client connections */
    size_t nconns;
    struct frontend_req_list reqs; /* requests not yet finished (client may be gone) */
    size_t nreqs;
};

/*
 * Create a listening socket bound to the configured address with SO_REUSEPORT.
 * *port (in/out): 0 means "the configured port"; when that is 0 too, the kernel picks
 * one and *port returns it so further workers bind the same. Returns fd or -1 (logged).
 */
int worker_listen_socket(const struct config *cfg, unsigned short *port);

/* Prepare w (event base, listener on listen_fd which it then owns, pool). 0 or -1. */
int worker_init(struct worker *w, int id, const struct config *cfg, int listen_fd);

/* Run the loop in a new thread. 0 or -1. */
int worker_start(struct worker *w);

/* Ask the worker to drain and exit (thread-safe, async). */
void worker_stop(struct worker *w);

/* Wait for the thread, then free everything w owns. */
void worker_join(struct worker *w);

/* Called by frontend when a connection or request ends, so a draining worker can exit
 * as soon as nothing is left. */
void worker_maybe_finish(struct worker *w);

#endif
