/*
 * idemproxy — an idempotency-enforcing reverse proxy.
 *
 * main: command line and configuration, listening sockets, worker threads, signals.
 * SIGTERM/SIGINT: stop accepting, let in-flight requests finish (bounded by
 * drain-timeout), exit 0. SIGUSR1: reopen the access log. SIGHUP: reload the upstreams,
 * routes and policy (an invalid file keeps the running configuration). SIGPIPE is ignored
 * (writes to dead peers fail with EPIPE).
 */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/upstream.h"
#include "worker.h"

static void main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    log_info("received %s, draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    event_base_loopbreak(arg);
}

/* One generation: a configuration and the replicas its names resolved to. */
struct main_gen {
    struct worker_gen wg;
    struct config *cfg; /* owned, or NULL: wg.cfg is an earlier generation's (or main's) */
    struct upstream_targets targets;
};

struct main_workers {
    struct worker *w;
    int n;
    /* for SIGHUP: the command line to read again, and the generations some worker may
     * still use (requests that started under one keep using it), oldest first; one is
     * freed once every worker's oldest in use is later (main_collect_cb) */
    int argc;
    char **argv;
    struct main_gen **gens;
    size_t ngens;
    const struct main_gen *current; /* the one in force (main's own view) */
    struct event *resolve_ev;       /* upstream-resolve-interval */
    struct event *collect_ev;       /* every second */
    uint64_t last_id;
    struct admin *admin; /* NULL without admin-listen: told of the reloaded record-keys */
};

/* Keep a new generation: cfg (owned from now on), or when NULL the configuration cur
 * (someone else's), with targets (taken over). NULL when out of memory (and cfg and
 * targets are freed). */
static struct main_gen *main_gen_add(struct main_workers *mw, const struct config *cur,
                                     struct config *cfg, struct upstream_targets *targets)
{
    struct main_gen *g = calloc(1, sizeof(*g)), **gens = NULL;

    if (!g || !(gens = realloc(mw->gens, (mw->ngens + 1) * sizeof(*gens)))) {
        free(g);
        if (cfg) {
            config_free(cfg);
            free(cfg);
        }
        upstream_targets_free(targets);
        log_error("out of memory: keeping the running configuration");
        return NULL;
    }
    mw->gens = gens;
    g->cfg = cfg;
    g->targets = *targets;
    g->wg.cfg = cfg ? cfg : cur;
    g->wg.targets = &g->targets;
    g->wg.id = ++mw->last_id;
    mw->gens[mw->ngens++] = g;
    return g;
}

/* Hand g to every worker, and resolve again on g's interval. */
static void main_gen_apply(struct main_workers *mw, const struct main_gen *g)
{
    struct timeval tv = clock_tv(g->wg.cfg->upstream.resolve_interval_ms);

    mw->current = g;
    for (int i = 0; i < mw->n; i++)
        worker_reload(&mw->w[i], &g->wg);
    evtimer_del(mw->resolve_ev);
    if (g->wg.cfg->upstream.resolve_interval_ms)
        evtimer_add(mw->resolve_ev, &tv);
}

/* upstream-resolve-interval: the names again (blocking, here in the main thread, never in
 * a worker); new addresses make a new generation, a failure keeps the ones in use. */
static void main_resolve_cb(evutil_socket_t fd, short what, void *arg)
{
    struct main_workers *mw = arg;
    const struct config *cfg = mw->current->wg.cfg;
    struct upstream_targets t;
    struct main_gen *g;
    struct timeval tv = clock_tv(cfg->upstream.resolve_interval_ms);
    char err[512];

    if (upstream_resolve(&cfg->upstream, &t, err, sizeof(err)) < 0) {
        log_warn("%s; keeping the addresses in use", err);
        evtimer_add(mw->resolve_ev, &tv);
        return;
    }
    if (upstream_targets_equal(&t, &mw->current->targets)) {
        upstream_targets_free(&t);
        evtimer_add(mw->resolve_ev, &tv);
        return;
    }
    log_info("upstream addresses changed: %zu replica(s) now (were %zu)", t.n,
             mw->current->targets.n);
    if (!(g = main_gen_add(mw, cfg, NULL, &t))) {
        evtimer_add(mw->resolve_ev, &tv);
        return;
    }
    main_gen_apply(mw, g);
}

static void main_gen_free(struct main_gen *g)
{
    if (g->cfg) {
        config_free(g->cfg);
        free(g->cfg);
    }
    upstream_targets_free(&g->targets);
    free(g);
}

/* Every second: free the generations no worker uses any more. A configuration that a
 * later generation borrows (new addresses, same settings) goes to that one first. What
 * was freed goes back to the kernel (malloc_trim walks every arena, the workers' too):
 * M_TRIM_THRESHOLD keeps 64 MiB of free heap otherwise, and a process reloaded often
 * would keep the peak of its reloads. */
static void main_collect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct main_workers *mw = arg;
    uint64_t oldest = UINT64_MAX;
    size_t k = 0;

    for (int i = 0; i < mw->n; i++) {
        uint64_t o = worker_oldest_gen(&mw->w[i]);
        if (o < oldest)
            oldest = o;
    }
    if (mw->n == 0)
        return;
    for (size_t i = 0; i < mw->ngens; i++) {
        struct main_gen *g = mw->gens[i];
        if (g->wg.id >= oldest || g == mw->current) {
            mw->gens[k++] = g;
            continue;
        }
        for (size_t j = i + 1; g->cfg && j < mw->ngens; j++) {
            struct main_gen *h = mw->gens[j];
            if (h->wg.cfg == g->cfg && (h->wg.id >= oldest || h == mw->current)) {
                h->cfg = g->cfg; /* h owns it now */
                g->cfg = NULL;
            }
        }
        log_debug("configuration generation %llu freed", (unsigned long long)g->wg.id);
        main_gen_free(g);
    }
    if (k < mw->ngens)
        malloc_trim(0);
    mw->ngens = k;
}

/* a's "HOST:PORT", with the port bound when a asked for any free one (0) */
static void main_addr_str(const struct conf_addr *a, unsigned short bound, char *out, size_t len)
{
    conf_addr_str(a, out, len);
    if (a->port == 0) {
        char *colon = strrchr(out, ':');
        if (colon)
            snprintf(colon + 1, len - (size_t)(colon + 1 - out), "%u", bound);
    }
}

/* Say which settings a reload cannot change (they keep their running values). */
static void main_reload_warn(const struct config *old, const struct config *new)
{
    char a[CONF_HOST_MAX + 16], b[CONF_HOST_MAX + 16];

    if (strcmp(conf_addr_str(&old->worker.listen, a, sizeof(a)),
               conf_addr_str(&new->worker.listen, b, sizeof(b))) != 0 ||
        old->worker.workers != new->worker.workers)
        log_warn("reload: listen and workers need a restart; keeping %s with %d worker(s)", a,
                 old->worker.workers);
    if (strcmp(conf_addr_str(&old->worker.tls_listen, a, sizeof(a)),
               conf_addr_str(&new->worker.tls_listen, b, sizeof(b))) != 0)
        log_warn("reload: tls-listen needs a restart; keeping %s",
                 old->worker.tls_listen.host[0] ? a : "none");
    if (old->frontend.tls && !new->frontend.tls)
        log_warn("reload: no tls-cert-file any more; tls-listen keeps its certificates");
    if (strcmp(conf_addr_str(&old->redis.addr, a, sizeof(a)),
               conf_addr_str(&new->redis.addr, b, sizeof(b))) != 0 ||
        old->redis.timeout_ms != new->redis.timeout_ms)
        log_warn("reload: the redis settings need a restart; keeping %s", a);
    if (old->frontend.max_body != new->frontend.max_body ||
        old->frontend.max_headers != new->frontend.max_headers ||
        old->frontend.client_timeout_ms != new->frontend.client_timeout_ms ||
        old->frontend.response_buffer != new->frontend.response_buffer)
        log_warn("reload: client limits and timeouts need a restart; keeping them");
}

/* SIGHUP: read the configuration again; apply its upstreams, routes and policy to new
 * requests in every worker, or keep everything as it is when it does not load. */
static void main_hup_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_workers *mw = arg;
    struct config *next = calloc(1, sizeof(*next));
    struct upstream_targets t;
    struct main_gen *g;
    struct conf_cli cli;
    char err[512];

    log_info("received SIGHUP, reloading the configuration");
    if (!next)
        return;
    if (config_from_argv(next, &cli, mw->argc, mw->argv, err, sizeof(err)) < 0 ||
        upstream_resolve(&next->upstream, &t, err, sizeof(err)) < 0) {
        log_error("reload failed: %s; keeping the running configuration", err);
        config_free(next);
        free(next);
        return;
    }
    main_reload_warn(mw->current->wg.cfg, next);
    if (!(g = main_gen_add(mw, NULL, next, &t)))
        return;
    main_gen_apply(mw, g);
    if (admin_reload(mw->admin, &next->idem, next->seal.ring) < 0)
        log_warn("reload: out of memory; /keys keeps the key prefix, scope and record-keys "
                 "it had");
    log_info("reloaded %s: %zu upstream(s) (%zu replica(s)), %zu route(s)",
             next->file ? next->file : "(flags)", next->upstream.naddrs, g->targets.n,
             next->idem.nroutes);
}

/* SIGUSR1: every worker reopens its access log (logrotate has moved the file). */
static void main_usr1_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_workers *mw = arg;

    log_info("received SIGUSR1, reopening the access log");
    for (int i = 0; i < mw->n; i++)
        worker_reopen_logs(&mw->w[i]);
}

static int main_run(const struct config *cfg, int argc, char **argv)
{
    struct worker *workers = NULL;
    struct event_base *base = NULL;
    struct event *sigterm = NULL, *sigint = NULL, *sigusr1 = NULL, *sighup = NULL;
    struct admin *admin = NULL;
    struct main_workers mw = {.argc = argc, .argv = argv};
    struct upstream_targets targets;
    const struct main_gen *first = NULL;
    char err[512];
    sigset_t block, old;
    unsigned short port = 0, tls_port = 0;
    int ninit = 0, nstarted = 0, rc = 1;
    char addr[2 * CONF_HOST_MAX + 48];
    struct evbuffer *ups = NULL;

    workers = calloc((size_t)cfg->worker.workers, sizeof(*workers));
    base = event_base_new();
    if (!workers || !base)
        goto out;
    sigterm = evsignal_new(base, SIGTERM, main_signal_cb, base);
    sigint = evsignal_new(base, SIGINT, main_signal_cb, base);
    sigusr1 = evsignal_new(base, SIGUSR1, main_usr1_cb, &mw);
    sighup = evsignal_new(base, SIGHUP, main_hup_cb, &mw);
    if (!sigterm || !sigint || !sigusr1 || !sighup || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0 || evsignal_add(sigusr1, NULL) < 0 ||
        evsignal_add(sighup, NULL) < 0)
        goto out;

    mw.resolve_ev = evtimer_new(base, main_resolve_cb, &mw);
    mw.collect_ev = event_new(base, -1, EV_PERSIST, main_collect_cb, &mw);
    if (!mw.resolve_ev || !mw.collect_ev)
        goto out;
    /* the upstream names, resolved here (and again on upstream-resolve-interval) */
    if (upstream_resolve(&cfg->upstream, &targets, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    if (!(first = main_gen_add(&mw, cfg, NULL, &targets)))
        goto out;
    mw.current = first;

    /* All sockets are bound before any thread starts, so a bad address fails at once. */
    for (int i = 0; i < cfg->worker.workers; i++) {
        int fd = worker_listen_socket(&cfg->worker.listen, &port), tls_fd = -1;
        if (fd >= 0 && cfg->worker.tls_listen.host[0] &&
            (tls_fd = worker_listen_socket(&cfg->worker.tls_listen, &tls_port)) < 0) {
            close(fd);
            goto out;
        }
        if (fd < 0 || worker_init(&workers[i], i + 1, &first->wg, fd, tls_fd) < 0)
            goto out;
        ninit++;
    }

    /* Workers inherit a mask without SIGTERM/SIGINT: only this thread handles them. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (int i = 0; i < cfg->worker.workers; i++) {
        if (worker_start(&workers[i]) < 0)
            break;
        nstarted++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (nstarted < cfg->worker.workers)
        goto out;
    mw.w = workers;
    mw.n = nstarted;
    {
        struct timeval second = clock_tv(1000);
        event_add(mw.collect_ev, &second);
    }
    if (cfg->upstream.resolve_interval_ms) {
        struct timeval tv = clock_tv(cfg->upstream.resolve_interval_ms);
        evtimer_add(mw.resolve_ev, &tv);
    }
    if (cfg->admin.listen.host[0]) {
        struct admin_source *src = calloc((size_t)nstarted, sizeof(*src));
        unsigned short aport = 0;
        char aaddr[CONF_HOST_MAX + 16];
        for (int i = 0; src && i < nstarted; i++)
            src[i] = (struct admin_source){workers[i].fe, &workers[i].pool, workers[i].redis,
                                           workers[i].idem};
        admin = src ? admin_start(&cfg->admin, &cfg->frontend, &cfg->idem, &cfg->seal, &cfg->redis,
                                  src, (size_t)nstarted, &aport)
                    : NULL;
        free(src);
        if (!admin)
            goto out;
        mw.admin = admin;
        conf_addr_str(&cfg->admin.listen, aaddr, sizeof(aaddr));
        log_info("admin endpoint on %.*s:%u (/metrics /healthz /readyz)",
                 (int)(strrchr(aaddr, ':') - aaddr), aaddr, aport);
    }

    main_addr_str(&cfg->worker.listen, port, addr, sizeof(addr));
    if (cfg->worker.tls_listen.host[0]) {
        size_t n = strlen(addr);
        snprintf(addr + n, sizeof(addr) - n, " and TLS on ");
        n = strlen(addr);
        main_addr_str(&cfg->worker.tls_listen, tls_port, addr + n, sizeof(addr) - n);
    }
    ups = evbuffer_new();
    for (size_t i = 0; ups && i < cfg->upstream.naddrs; i++) {
        char one[CONF_HOST_MAX + 16];
        evbuffer_add_printf(ups, "%s%s", i ? " " : "",
                            conf_addr_str(&cfg->upstream.addrs[i], one, sizeof(one)));
    }
    if (ups)
        evbuffer_add(ups, "", 1);
    log_info("idemproxy %s listening on %s with %d worker(s); upstreams: %s", IDEMPROXY_VERSION,
             addr, cfg->worker.workers, ups ? (const char *)evbuffer_pullup(ups, -1) : "?");
    event_base_dispatch(base);
    rc = 0;
out:
    admin_set_draining(admin); /* /readyz: 503 from now on, while the workers drain */
    for (int i = 0; i < nstarted; i++)
        worker_stop(&workers[i]);
    for (int i = 0; i < nstarted; i++)
        worker_wait(&workers[i]);
    admin_stop(admin); /* before the workers free what it reads */
    for (int i = 0; i < ninit; i++)
        worker_join(&workers[i]);
    if (rc == 0)
        log_info("stopped");
    /* freeing the signal events restores the default action: a second SIGTERM (an
     * orchestrator repeating itself) must not turn a clean exit into a kill */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (sigusr1)
        event_free(sigusr1);
    if (sighup)
        event_free(sighup);
    if (mw.resolve_ev)
        event_free(mw.resolve_ev);
    if (mw.collect_ev)
        event_free(mw.collect_ev);
    for (size_t i = 0; i < mw.ngens; i++)
        main_gen_free(mw.gens[i]);
    free(mw.gens);
    if (base)
        event_base_free(base);
    if (ups)
        evbuffer_free(ups);
    free(workers);
    return rc;
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct conf_cli cli = {0};
    char err[512];
    int rc = 1;

    signal(SIGPIPE, SIG_IGN);
    /* Requests allocate and free in waves; returning memory to the kernel after each
     * (madvise) costs syscalls for nothing. Keep up to 64 MiB of free heap. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    if (config_from_argv(&cfg, &cli, argc, argv, err, sizeof(err)) < 0) {
        fprintf(stderr, "idemproxy: %s\n", err);
        if (cli.test_only)
            fprintf(stderr, "idemproxy: configuration test failed\n");
        else
            fprintf(stderr, "Try 'idemproxy --help'.\n");
        goto out;
    }
    if (cli.show_help) {
        config_print_help(stdout);
        rc = 0;
        goto out;
    }
    if (cli.show_version) {
        printf("idemproxy %s (libevent %s)\n", IDEMPROXY_VERSION, event_get_version());
        rc = 0;
        goto out;
    }
    config_warnings(&cfg, stderr);
    if (cli.test_only) {
        fprintf(stderr, "idemproxy: configuration %s is ok\n", cfg.file ? cfg.file : "(flags)");
        rc = 0;
        goto out;
    }
    log_set_level(cfg.log_level);
    rc = main_run(&cfg, argc, argv);
out:
    config_free(&cfg);
    return rc;
}
