#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "config.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/frontend.h"
#include "http/upstream.h"
#include "idem/idem.h"
#include "idem/store.h"
#include "net/tls.h"
#include "redis/redis.h"

int worker_listen_socket(const struct conf_addr *addr, unsigned short *port)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[8];
    int fd = -1, one = 1, rc;
    unsigned short want = *port ? *port : addr->port;

    snprintf(portstr, sizeof(portstr), "%u", want);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    rc = getaddrinfo(addr->host, portstr, &hints, &res);
    if (rc != 0) {
        log_error("listen %s: %s", addr->host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto err;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto err;
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 511) < 0)
        goto err;
    if (want == 0) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &len);
        want = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    }
    *port = want;
    freeaddrinfo(res);
    return fd;
err:
    log_error("listen %s:%u: %s", addr->host, want, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

static void worker_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    struct worker *w = arg;

    frontend_accept(w->fe, fd, sa, salen, l == w->tls_listener ? w->tls : NULL);
}

static void worker_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    if (w->listener && !w->draining)
        evconnlistener_enable(w->listener);
    if (w->tls_listener && !w->draining)
        evconnlistener_enable(w->tls_listener);
}

static void worker_accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval pause = {0, 100 * 1000};

    /* Out of descriptors (EMFILE, ENFILE) or memory: the listening socket stays
     * readable, so accepting again at once would spin. Serve the connections we have
     * and try again in 100 ms, as nginx does. */
    log_warn("accept: %s; pausing accepts for 100 ms", evutil_socket_error_to_string(err));
    evconnlistener_disable(l);
    evtimer_add(w->accept_ev, &pause);
}

/* Nothing left: no connection, no request, no record still being retried. */
static void worker_maybe_done(struct worker *w)
{
    size_t conns, reqs;

    frontend_counts(w->fe, &conns, &reqs);
    if (conns == 0 && reqs == 0 && idem_handler_pending(w->idem, NULL, NULL) == 0)
        event_base_loopexit(w->base, NULL);
}

static void worker_idle_cb(void *arg)
{
    worker_maybe_done(arg);
}

/* The frontend has nothing left; records of streamed answers may still be retried. */
static void worker_drained_cb(void *arg)
{
    struct worker *w = arg;
    size_t pending = idem_handler_pending(w->idem, worker_idle_cb, w);

    if (pending)
        log_info("drained; waiting for %zu record(s) still being retried", pending);
    worker_maybe_done(w);
}

/*
 * drain-timeout, in two steps. First: every request still at the upstream is ended as if
 * the upstream had timed out — a keyed one records its outcome as unknown (or releases,
 * per ambiguous), so a retry on another replica never executes it again — and the
 * worker waits, at most one lease more, for those records (a record cannot land after
 * the lease anyway). Then it stops, whatever is left.
 */
static void worker_drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    size_t conns, reqs, left;
    struct timeval tv;

    frontend_counts(w->fe, &conns, &reqs);
    if (w->draining == 1) {
        w->draining = 2;
        log_warn("drain-timeout reached with %zu connection(s), %zu request(s) open; ending "
                 "the requests still at the upstream (keyed ones record their outcome as "
                 "unknown)",
                 conns, reqs);
        left = frontend_drain_deadline(w->fe, "drain-timeout reached before the upstream "
                                              "answered");
        if (left) {
            log_info("waiting up to %llu ms (lease) for %zu request(s) to record",
                     (unsigned long long)w->gen->cfg->idem.lease_ms, left);
            tv = clock_tv(w->gen->cfg->idem.lease_ms);
            evtimer_add(w->drain_ev, &tv);
        }
        worker_maybe_done(w);
        return;
    }
    log_warn("stopping with %zu connection(s), %zu request(s), %zu record(s) unfinished", conns,
             reqs, idem_handler_pending(w->idem, NULL, NULL));
    event_base_loopexit(w->base, NULL);
}

/* Host for HTTP/1.0 requests without one: the first upstream. */
static const char *worker_default_host(const struct config *cfg, char *buf, size_t len)
{
    buf[0] = '\0';
    if (cfg->upstream.naddrs)
        conf_addr_str(&cfg->upstream.addrs[0], buf, len);
    return buf;
}

/* A reload or new addresses, in the worker: a new pool for the new replicas (the old one
 * finishes what it has), the new routes and policy for new requests. */
static void worker_apply(struct worker *w, const struct worker_gen *gen)
{
    const struct config *cfg = gen->cfg;
    char host[CONF_HOST_MAX + 16];
    struct upstream_pool *pool = upstream_pool_new(w->base, &cfg->upstream, gen->targets);
    struct worker_use *u = pool ? realloc(w->uses, (w->nuses + 1) * sizeof(*u)) : NULL;

    if (!u) {
        log_error("reload: cannot apply the new upstreams; keeping the running configuration");
        upstream_pool_free(pool);
        return;
    }
    w->uses = u;
    w->uses[w->nuses - 1].retired_ms = clock_mono_ms();
    w->uses[w->nuses++] =
        (struct worker_use){.gen = gen, .from_seq = frontend_next_seq(w->fe), .pool = pool};
    upstream_pool_retire(w->pool, pool);
    __atomic_store_n(&w->pool, pool, __ATOMIC_RELEASE); /* the admin thread reads it */
    frontend_set_upstreams(w->fe, pool, worker_default_host(cfg, host, sizeof(host)));
    idem_handler_set_policy(w->idem, &cfg->idem, &cfg->seal);
    if (cfg->frontend.tls && cfg->frontend.tls != w->tls) {
        /* new certificates for new connections; live ones keep theirs */
        tls_server_release(w->tls);
        w->tls = tls_server_ref(cfg->frontend.tls);
    }
    w->gen = gen;
}

/* Drop the generations no request uses any more: everything that started before the
 * next one was applied has finished (records still being retried count). Their pools go
 * too, a second after they were retired at the earliest: the admin thread reads the pool
 * in force without a lock and may have just taken the one a reload replaced. */
static void worker_collect(struct worker *w)
{
    uint64_t oldest = frontend_oldest_seq(w->fe), orphans = idem_handler_oldest_seq(w->idem);
    uint64_t now = clock_mono_ms();
    size_t k = 0;

    if (orphans < oldest)
        oldest = orphans;
    while (k + 1 < w->nuses && w->uses[k + 1].from_seq <= oldest &&
           now - w->uses[k].retired_ms >= 1000) {
        upstream_pool_free(w->uses[k].pool);
        log_debug("configuration generation %llu no longer used",
                  (unsigned long long)w->uses[k].gen->id);
        k++;
    }
    if (k) {
        memmove(w->uses, w->uses + k, (w->nuses - k) * sizeof(*w->uses));
        w->nuses -= k;
    }
    __atomic_store_n(&w->oldest_gen, w->uses[0].gen->id, __ATOMIC_RELEASE);
}

static void worker_collect_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_collect(arg);
}

uint64_t worker_oldest_gen(const struct worker *w)
{
    return __atomic_load_n(&w->oldest_gen, __ATOMIC_ACQUIRE);
}

/* Orders from the main thread, one byte each: 'r' reopen the access log, 'h' reload,
 * 'x' drain. */
static void worker_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv;
    char buf[16];
    int stop = 0, reopen = 0, reload = 0;
    const struct worker_gen *next;
    ssize_t n;

    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        stop |= memchr(buf, 'x', (size_t)n) != NULL;
        reopen |= memchr(buf, 'r', (size_t)n) != NULL;
        reload |= memchr(buf, 'h', (size_t)n) != NULL;
    }
    if (reopen)
        frontend_reopen_log(w->fe);
    if (reload && !w->draining && (next = __atomic_load_n(&w->next_gen, __ATOMIC_ACQUIRE)) &&
        next != w->gen)
        worker_apply(w, next);
    if (!stop || w->draining)
        return;
    w->draining = 1;
    if (w->listener) {
        evconnlistener_free(w->listener); /* closes our listening socket */
        w->listener = NULL;
    }
    if (w->tls_listener) {
        evconnlistener_free(w->tls_listener);
        w->tls_listener = NULL;
    }
    tv = clock_tv(w->gen->cfg->worker.drain_timeout_ms);
    evtimer_add(w->drain_ev, &tv);
    frontend_drain(w->fe, worker_drained_cb, w);
}

int worker_init(struct worker *w, int id, const struct worker_gen *gen, int listen_fd, int tls_fd)
{
    const struct config *cfg = gen->cfg;
    char host[CONF_HOST_MAX + 16];

    memset(w, 0, sizeof(*w));
    w->stop_pipe[0] = w->stop_pipe[1] = -1;
    w->tls_listen_fd = -1;
    w->id = id;
    w->gen = gen;
    w->listen_fd = listen_fd;
    w->tls_listen_fd = tls_fd;
    w->base = event_base_new();
    if (!w->base)
        goto err;
    w->listener =
        evconnlistener_new(w->base, worker_accept_cb, w, LEV_OPT_CLOSE_ON_FREE, 0, listen_fd);
    if (!w->listener)
        goto err;
    w->listen_fd = -1; /* owned by the listener now */
    evconnlistener_set_error_cb(w->listener, worker_accept_error_cb);
    if (tls_fd >= 0) {
        if (!cfg->frontend.tls) {
            log_error("tls-listen needs tls-cert-file and tls-key-file");
            goto err;
        }
        w->tls = tls_server_ref(cfg->frontend.tls);
        w->tls_listener =
            evconnlistener_new(w->base, worker_accept_cb, w, LEV_OPT_CLOSE_ON_FREE, 0, tls_fd);
        if (!w->tls_listener)
            goto err;
        w->tls_listen_fd = -1;
        evconnlistener_set_error_cb(w->tls_listener, worker_accept_error_cb);
    }
    /* The one cross-thread signal: main writes a byte here. A pipe rather than libevent's
     * thread support keeps every lock off the request path. */
    if (pipe2(w->stop_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        goto err;
    w->stop_ev = event_new(w->base, w->stop_pipe[0], EV_READ | EV_PERSIST, worker_stop_cb, w);
    if (!w->stop_ev || event_add(w->stop_ev, NULL) < 0)
        goto err;
    w->drain_ev = evtimer_new(w->base, worker_drain_timeout_cb, w);
    w->accept_ev = evtimer_new(w->base, worker_accept_resume_cb, w);
    w->collect_ev = event_new(w->base, -1, EV_PERSIST, worker_collect_cb, w);
    if (!w->drain_ev || !w->accept_ev || !w->collect_ev)
        goto err;
    {
        struct timeval second = clock_tv(1000);
        event_add(w->collect_ev, &second);
    }
    /* the layers, bottom up; the keyed handler is the one registered handler */
    w->pool = upstream_pool_new(w->base, &cfg->upstream, gen->targets);
    w->redis = w->pool ? redis_client_new(w->base, &cfg->redis, store_scripts_for(&cfg->redis),
                                          store_nscripts)
                       : NULL;
    w->store = w->redis ? store_new(w->redis, id == 1) : NULL;
    w->fe = w->store ? frontend_new(w->base, &cfg->frontend, w->pool,
                                    worker_default_host(cfg, host, sizeof(host)), id)
                     : NULL;
    w->idem = w->fe ? idem_handler_new(w->base, &cfg->idem, &cfg->seal, w->store) : NULL;
    if (!w->idem)
        goto err;
    frontend_add_handler(w->fe, w->idem);
    if (!(w->uses = calloc(1, sizeof(*w->uses))))
        goto err;
    w->uses[0] = (struct worker_use){.gen = gen, .from_seq = 0, .pool = w->pool};
    w->nuses = 1;
    w->oldest_gen = gen->id;
    return 0;
err:
    log_error("worker %d: initialisation failed", id);
    worker_join(w);
    return -1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    log_set_worker(w->id);
    log_debug("worker started");
    event_base_dispatch(w->base);
    log_debug("worker stopped");
    return NULL;
}

int worker_start(struct worker *w)
{
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        log_error("worker %d: cannot start thread", w->id);
        return -1;
    }
    w->started = 1;
    return 0;
}

void worker_stop(struct worker *w)
{
    if (w->stop_pipe[1] >= 0 && write(w->stop_pipe[1], "x", 1) < 0)
        log_error("worker %d: cannot signal it to stop", w->id);
}

void worker_reload(struct worker *w, const struct worker_gen *gen)
{
    __atomic_store_n(&w->next_gen, gen, __ATOMIC_RELEASE);
    if (w->stop_pipe[1] >= 0 && write(w->stop_pipe[1], "h", 1) < 0)
        log_error("worker %d: cannot signal it to reload", w->id);
}

void worker_reopen_logs(struct worker *w)
{
    if (w->stop_pipe[1] >= 0 && write(w->stop_pipe[1], "r", 1) < 0)
        log_error("worker %d: cannot signal it to reopen its access log", w->id);
}

void worker_wait(struct worker *w)
{
    if (w->started) {
        pthread_join(w->thread, NULL);
        w->started = 0;
        w->ran = 1;
    }
}

void worker_join(struct worker *w)
{
    worker_wait(w);
    if (w->ran && w->pool && w->redis) {
        /* what this worker did, for the operator reading the shutdown log */
        struct upstream_stats us;
        struct redis_stats ss;
        struct idem_stats is = {0};
        upstream_pool_stats(w->pool, &us);
        redis_get_stats(w->redis, &ss);
        if (w->idem)
            idem_handler_stats(w->idem, &is);
        log_info("worker %d: upstream connections opened %llu, reused %llu times, %llu "
                 "failovers; redis commands %llu (queued %llu), timeouts %llu, reconnects "
                 "%llu; records retried %llu, lost %llu",
                 w->id, (unsigned long long)us.connects, (unsigned long long)us.reused,
                 (unsigned long long)us.failovers, (unsigned long long)ss.commands,
                 (unsigned long long)ss.queued, (unsigned long long)ss.timeouts,
                 (unsigned long long)ss.reconnects, (unsigned long long)is.record_retries,
                 (unsigned long long)is.records_lost);
    }
    /* top down: requests (and their handlers' state) before what they used */
    frontend_free(w->fe);
    w->fe = NULL;
    idem_handler_free(w->idem);
    w->idem = NULL;
    store_free(w->store);
    w->store = NULL;
    redis_client_free(w->redis);
    w->redis = NULL;
    upstream_pool_free(w->pool);
    w->pool = NULL;
    for (size_t i = 0; i + 1 < w->nuses; i++) /* the last one's is w->pool */
        upstream_pool_free(w->uses[i].pool);
    free(w->uses);
    w->uses = NULL;
    w->nuses = 0;
    if (w->listener)
        evconnlistener_free(w->listener);
    w->listener = NULL;
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    w->listen_fd = -1;
    if (w->tls_listener)
        evconnlistener_free(w->tls_listener);
    w->tls_listener = NULL;
    if (w->tls_listen_fd >= 0)
        close(w->tls_listen_fd);
    w->tls_listen_fd = -1;
    tls_server_release(w->tls);
    w->tls = NULL;
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->drain_ev)
        event_free(w->drain_ev);
    if (w->accept_ev)
        event_free(w->accept_ev);
    w->accept_ev = NULL;
    if (w->collect_ev)
        event_free(w->collect_ev);
    w->collect_ev = NULL;
    w->stop_ev = w->drain_ev = NULL;
    for (int i = 0; i < 2; i++) {
        if (w->stop_pipe[i] >= 0)
            close(w->stop_pipe[i]);
        w->stop_pipe[i] = -1;
    }
    if (w->base)
        event_base_free(w->base);
    w->base = NULL;
}
