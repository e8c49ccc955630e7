#include "http/upstream.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "net/netio.h"
#include "net/tls.h"

#define UPSTREAM_MAX_HEAD     (64 * 1024)
#define UPSTREAM_IDLE_TIMEOUT 60000 /* ms an idle pooled connection is kept */
#define UPSTREAM_BACKOFF_MIN  500   /* ms a refusing replica is skipped, doubling */
#define UPSTREAM_BACKOFF_MAX  30000
#define UPSTREAM_PEEK_AFTER   250 /* ms idle before a reused connection is probed */

/* upstream [http://|https://]HOST:PORT ...: appends (repeatable); https:// means TLS */
static int upstream_addr_set(const struct conf_directive *d, void *base, const char *where,
                             int argc, const char **argv, char *err, size_t errlen)
{
    struct upstream_conf *uc = base;
    struct conf_addr *nl;
    size_t https = 0;

    (void)d;
    if (argc < 1)
        return conf_fail(err, errlen, "%s: expected at least 1 argument, got 0", where);
    /* the whole line or nothing: parse into the tail, count it in only at the end */
    if (!(nl = realloc(uc->addrs, (uc->naddrs + (size_t)argc) * sizeof(*nl))))
        return conf_fail(err, errlen, "%s: out of memory", where);
    uc->addrs = nl;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *why;
        int tls = strncmp(a, "https://", 8) == 0, plain = strncmp(a, "http://", 7) == 0;
        char hostport[CONF_HOST_MAX + 16];
        size_t n;
        a += tls ? 8 : plain ? 7 : 0;
        n = strcspn(a, "/");
        if ((tls || plain) && a[n] && strcmp(a + n, "/") != 0)
            return conf_fail(err, errlen,
                             "%s: '%s': a path is not part of an upstream (requests keep theirs)",
                             where, argv[i]);
        if (tls || plain) {
            snprintf(hostport, sizeof(hostport), "%.*s", (int)n, a);
            if (!strrchr(hostport, ':') || hostport[strlen(hostport) - 1] == ']')
                snprintf(hostport + strlen(hostport), sizeof(hostport) - strlen(hostport), ":%s",
                         tls ? "443" : "80");
            a = hostport;
        }
        if ((why = conf_addr_parse(a, &nl[uc->naddrs + (size_t)i], 0, 0)))
            return conf_fail(err, errlen, "%s: invalid address '%s': %s", where, argv[i], why);
        https += (size_t)tls;
    }
    uc->naddrs += (size_t)argc;
    uc->nhttps += https;
    if (https)
        uc->tls = 1;
    return 0;
}

static void upstream_addr_free(const struct conf_directive *d, void *base)
{
    struct upstream_conf *uc = base;

    (void)d;
    free(uc->addrs);
    uc->addrs = NULL;
    uc->naddrs = uc->nhttps = 0;
}

const struct conf_directive upstream_conf_rows[] = {
    {.name = "upstream",
     .type = CONF_T_CUSTOM,
     .arg = "[https://]HOST:PORT",
     .help = "backend to forward to; repeat for more (required)",
     .custom_set = upstream_addr_set,
     .custom_free = upstream_addr_free},
    {.name = "upstream-tls",
     .type = CONF_T_BOOL,
     .def = "off",
     .off = offsetof(struct upstream_conf, tls),
     .arg = "on|off",
     .help = "speak TLS to the upstreams (https:// turns it on)"},
    {.name = "upstream-tls-verify",
     .type = CONF_T_BOOL,
     .def = "on",
     .off = offsetof(struct upstream_conf, tls_verify),
     .arg = "on|off",
     .help = "check the upstream's certificate chain and name"},
    {.name = "upstream-tls-ca-file",
     .type = CONF_T_STRING,
     .off = offsetof(struct upstream_conf, tls_ca_file),
     .arg = "FILE",
     .help = "CAs the upstreams' certificates chain to (default: system's)"},
    {.name = "upstream-tls-server-name",
     .type = CONF_T_STRING,
     .off = offsetof(struct upstream_conf, tls_server_name),
     .arg = "NAME",
     .help = "SNI and the name checked (default: each upstream's host)"},
    {.name = "upstream-tls-cert-file",
     .type = CONF_T_STRING,
     .off = offsetof(struct upstream_conf, tls_cert_file),
     .arg = "FILE",
     .help = "client certificate shown to the upstreams (PEM)"},
    {.name = "upstream-tls-key-file",
     .type = CONF_T_STRING,
     .off = offsetof(struct upstream_conf, tls_key_file),
     .arg = "FILE",
     .help = "the key of upstream-tls-cert-file (PEM)"},
    {.name = "upstream-tls-session-reuse",
     .type = CONF_T_BOOL,
     .def = "on",
     .off = offsetof(struct upstream_conf, tls_session_reuse),
     .arg = "on|off",
     .help = "resume TLS sessions on new upstream connections"},
    {.name = "upstream-timeout",
     .type = CONF_T_DURATION,
     .min = 1,
     .max = 7 * CONF_MS_DAY,
     .def = "30s",
     .off = offsetof(struct upstream_conf, timeout_ms),
     .arg = "DURATION",
     .help = "time allowed for an upstream to answer"},
    {.name = "upstream-connect-timeout",
     .type = CONF_T_DURATION,
     .min = 1,
     .max = 7 * CONF_MS_DAY,
     .def = "2s",
     .off = offsetof(struct upstream_conf, connect_timeout_ms),
     .arg = "DURATION",
     .help = "time allowed to connect to an upstream"},
    {.name = "upstream-pool",
     .type = CONF_T_INT,
     .min = 1,
     .max = 100000,
     .def = "64",
     .off = offsetof(struct upstream_conf, pool),
     .arg = "N",
     .help = "idle upstream connections kept per worker"},
    {.name = "upstream-resolve-interval",
     .type = CONF_T_DURATION,
     .min = 0,
     .max = 7 * CONF_MS_DAY,
     .def = "10s",
     .off = offsetof(struct upstream_conf, resolve_interval_ms),
     .arg = "DURATION",
     .help = "resolve the upstream names again this often (0: off)"},
    CONF_END,
};

int upstream_conf_validate(const struct upstream_conf *conf, char *err, size_t errlen)
{
    if (conf->naddrs == 0)
        return conf_fail(err, errlen,
                         "no upstream configured: give --upstream HOST:PORT or an 'upstream' "
                         "line in the config file");
    if (conf->nhttps && conf->nhttps != conf->naddrs)
        return conf_fail(err, errlen,
                         "upstream: %zu of %zu upstreams are https://: the pool speaks one "
                         "protocol (write https:// for all of them, or use upstream-tls)",
                         conf->nhttps, conf->naddrs);
    return 0;
}

int upstream_conf_load(struct upstream_conf *conf, char *err, size_t errlen)
{
    struct tls_client_opts o = {.ca_file = conf->tls_ca_file,
                                .cert_file = conf->tls_cert_file,
                                .key_file = conf->tls_key_file,
                                .server_name = conf->tls_server_name,
                                .verify = conf->tls_verify,
                                /* an answer that ends with the close must end with a
                                 * close_notify, or it may be cut short (502) */
                                .strict_eof = 1};
    struct tls_client *tc;
    char why[400];

    if (!conf->tls)
        return 0;
    if (!(tc = tls_client_new(&o, why, sizeof(why))))
        return conf_fail(err, errlen, "upstream-tls: %s", why);
    tls_client_free(conf->tls_ctx);
    conf->tls_ctx = tc;
    return 0;
}

void upstream_conf_release(struct upstream_conf *conf)
{
    tls_client_free(conf->tls_ctx);
    conf->tls_ctx = NULL;
}

/* ---- names to replicas ---- */

int upstream_resolve(const struct upstream_conf *conf, struct upstream_targets *out, char *err,
                     size_t errlen)
{
    struct upstream_target *t = NULL, *grown;
    size_t n = 0;

    for (size_t i = 0; i < conf->naddrs; i++) {
        struct addrinfo hints = {0}, *res = NULL, *ai;
        char port[8], name[CONF_HOST_MAX + 16];
        size_t first = n;
        int rc;

        conf_addr_str(&conf->addrs[i], name, sizeof(name));
        snprintf(port, sizeof(port), "%u", conf->addrs[i].port);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        rc = getaddrinfo(conf->addrs[i].host, port, &hints, &res);
        if (rc != 0) {
            conf_fail(err, errlen, "upstream %s: cannot resolve: %s", name, gai_strerror(rc));
            goto err;
        }
        for (ai = res; ai; ai = ai->ai_next) {
            if (ai->ai_addrlen > sizeof(t->sa))
                continue;
            if (!(grown = realloc(t, (n + 1) * sizeof(*t)))) {
                freeaddrinfo(res);
                conf_fail(err, errlen, "out of memory");
                goto err;
            }
            t = grown;
            memset(&t[n], 0, sizeof(t[n]));
            memcpy(&t[n].sa, ai->ai_addr, ai->ai_addrlen);
            t[n].salen = ai->ai_addrlen;
            snprintf(t[n].name, sizeof(t[n].name), "%s", name);
            snprintf(t[n].host, sizeof(t[n].host), "%s", conf->addrs[i].host);
            n++;
        }
        freeaddrinfo(res);
        /* a name with several addresses is several replicas: name@address each */
        for (size_t k = first; n - first > 1 && k < n; k++) {
            char ip[64] = "?";
            getnameinfo((struct sockaddr *)&t[k].sa, t[k].salen, ip, sizeof(ip), NULL, 0,
                        NI_NUMERICHOST);
            snprintf(t[k].name, sizeof(t[k].name), "%s@%s", name, ip);
        }
    }
    out->t = t;
    out->n = n;
    return 0;
err:
    free(t);
    return -1;
}

int upstream_targets_equal(const struct upstream_targets *a, const struct upstream_targets *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->t[i].salen != b->t[i].salen || memcmp(&a->t[i].sa, &b->t[i].sa, a->t[i].salen) ||
            strcmp(a->t[i].name, b->t[i].name))
            return 0;
    return 1;
}

void upstream_targets_free(struct upstream_targets *t)
{
    free(t->t);
    t->t = NULL;
    t->n = 0;
}

/*
 * The life of one exchange. Each state says what is true in it; the order matters
 * (x->state >= UPX_SENT means "bytes may have reached an upstream": never resend).
 */
enum upx_state {
    UPX_CONNECTING, /* a replica is being tried: x->conn is NULL or connecting; nothing sent */
    UPX_DEFERRED,   /* no replica could be started from inside upstream_forward: the failure
                       is reported from the loop (x->defer_ev), never synchronously */
    UPX_SENT,       /* the request was handed to a connected socket; waiting for the head */
    UPX_BODY,       /* final head parsed (x->head valid); the body is being buffered */
    UPX_STREAMING,  /* head and body bytes delivered with UPSTREAM_STREAM, more to come */
    UPX_PAUSED,     /* streaming, reading stopped (upstream_exchange_pause) for a slow
                       client; pause_ev (upstream-timeout) runs instead of the read timer */
};

static const char *upx_state_str(enum upx_state st)
{
    switch (st) {
    case UPX_CONNECTING:
        return "connecting";
    case UPX_DEFERRED:
        return "deferred";
    case UPX_SENT:
        return "sent";
    case UPX_BODY:
        return "body";
    case UPX_STREAMING:
        return "streaming";
    case UPX_PAUSED:
        return "paused";
    }
    return "?";
}

struct up_conn {
    struct upstream_pool *pool;
    struct up_replica *rep;
    struct netio_conn *nc;       /* the socket: connect, reads, writes, timeouts */
    struct upstream_exchange *x; /* NULL while idle */
    int connecting;
    int idle;                  /* 1: linked in rep->idle, 0: linked in pool->busy */
    uint64_t idle_since;       /* monotonic ms it went back to the pool */
    TAILQ_ENTRY(up_conn) link; /* rep->idle or pool->busy */
};
TAILQ_HEAD(up_conn_list, up_conn);

struct up_replica {
    char name[UPSTREAM_NAME_MAX];
    char host[CONF_HOST_MAX + 1];    /* TLS: SNI and the name checked */
    struct tls_session_slot session; /* TLS: the last session it gave (resumed next) */
    struct sockaddr_storage sa;
    socklen_t salen;
    struct up_conn_list idle;
    size_t nidle;
    uint64_t down_until; /* monotonic ms (read by the admin thread) */
    uint64_t failovers;  /* connects that failed here, the request moved on */
    uint64_t backoffs;   /* times marked down */
    unsigned fails;
};

struct upstream_exchange {
    struct upstream_pool *pool;
    struct up_conn *conn;
    struct evbuffer *request;
    enum upx_state state;
    int is_head;
    size_t stream_after; /* body bytes buffered before streaming starts */
    struct event *defer_ev;
    struct event *pause_ev; /* UPX_PAUSED: bounds the pause (no read timer runs then) */
    upstream_cb cb;
    void *arg;
    struct up_replica *rep; /* last replica tried */
    size_t ntried;
    /* response */
    size_t scan;
    struct http1_head head;
    enum http1_body kind;
    uint64_t remaining, total;
    struct http1_chunked chunked;
    struct evbuffer *body;
    TAILQ_ENTRY(upstream_exchange) link;
    size_t order[]; /* replicas in the order to try */
};
TAILQ_HEAD(up_x_list, upstream_exchange);

struct upstream_pool {
    struct event_base *base;
    const struct upstream_conf *conf;
    struct up_replica *reps;
    size_t nreps, rr;
    struct up_conn_list busy;
    struct up_x_list exchanges;
    /* finished exchanges kept for the next ones, with their two buffers (drained): an
     * exchange and two evbuffers less to allocate and free per request */
    struct up_x_list spare;
    size_t nspare;
    struct upstream_stats stats;
    int retired; /* replaced by a reload: finishes what it has, keeps no connection */
};

#define UPSTREAM_SPARE_MAX 64

static void up_read_cb(struct netio_conn *nc, void *arg);
static void up_event_cb(struct netio_conn *nc, short what, void *arg);
static void up_attempt(struct upstream_exchange *x);
static void up_defer_cb(evutil_socket_t fd, short what, void *arg);

struct upstream_pool *upstream_pool_new(struct event_base *base, const struct upstream_conf *conf,
                                        const struct upstream_targets *targets)
{
    struct upstream_pool *pool = calloc(1, sizeof(*pool));

    if (!pool)
        return NULL;
    pool->base = base;
    pool->conf = conf;
    TAILQ_INIT(&pool->busy);
    TAILQ_INIT(&pool->exchanges);
    TAILQ_INIT(&pool->spare);
    pool->nreps = targets->n;
    pool->reps = calloc(pool->nreps ? pool->nreps : 1, sizeof(*pool->reps));
    if (!pool->reps) {
        free(pool);
        return NULL;
    }
    for (size_t i = 0; i < pool->nreps; i++) {
        struct up_replica *r = &pool->reps[i];
        TAILQ_INIT(&r->idle);
        snprintf(r->name, sizeof(r->name), "%s", targets->t[i].name);
        snprintf(r->host, sizeof(r->host), "%s", targets->t[i].host);
        memcpy(&r->sa, &targets->t[i].sa, targets->t[i].salen);
        r->salen = targets->t[i].salen;
    }
    return pool;
}

static void up_conn_free(struct up_conn *c)
{
    if (c->x)
        c->x->conn = NULL;
    if (c->idle) {
        TAILQ_REMOVE(&c->rep->idle, c, link);
        c->rep->nidle--;
    } else {
        TAILQ_REMOVE(&c->pool->busy, c, link);
    }
    netio_conn_free(c->nc); /* deferred if we are inside its callback */
    free(c);
}

static void up_exchange_destroy(struct upstream_exchange *x)
{
    if (x->body)
        evbuffer_free(x->body);
    if (x->request)
        evbuffer_free(x->request);
    free(x);
}

static void up_free_spares(struct upstream_pool *pool)
{
    struct upstream_exchange *x;

    while ((x = TAILQ_FIRST(&pool->spare))) {
        TAILQ_REMOVE(&pool->spare, x, link);
        up_exchange_destroy(x);
    }
    pool->nspare = 0;
}

/* Done with x: its resources go, and x itself is kept as a spare when there is room. */
static void up_exchange_free(struct upstream_exchange *x)
{
    TAILQ_REMOVE(&x->pool->exchanges, x, link);
    if (x->conn)
        up_conn_free(x->conn);
    http1_head_clear(&x->head);
    if (x->defer_ev)
        event_free(x->defer_ev);
    if (x->pause_ev)
        event_free(x->pause_ev);
    if (!x->pool->retired && x->pool->nspare < UPSTREAM_SPARE_MAX) {
        evbuffer_drain(x->body, evbuffer_get_length(x->body));
        evbuffer_drain(x->request, evbuffer_get_length(x->request));
        TAILQ_INSERT_HEAD(&x->pool->spare, x, link);
        x->pool->nspare++;
        return;
    }
    up_exchange_destroy(x);
}

void upstream_pool_free(struct upstream_pool *pool)
{
    struct upstream_exchange *x;
    struct up_conn *c;

    if (!pool)
        return;
    pool->retired = 1; /* no more spares */
    while ((x = TAILQ_FIRST(&pool->exchanges)))
        up_exchange_free(x);
    up_free_spares(pool);
    while ((c = TAILQ_FIRST(&pool->busy)))
        up_conn_free(c);
    for (size_t i = 0; pool->reps && i < pool->nreps; i++)
        while ((c = TAILQ_FIRST(&pool->reps[i].idle)))
            up_conn_free(c);
    for (size_t i = 0; pool->reps && i < pool->nreps; i++)
        tls_session_clear(&pool->reps[i].session);
    free(pool->reps);
    free(pool);
}

size_t upstream_pool_replicas(const struct upstream_pool *pool)
{
    return pool->nreps;
}

void upstream_pool_replica(const struct upstream_pool *pool, size_t i,
                           struct upstream_replica_stats *out)
{
    const struct up_replica *r = &pool->reps[i];

    out->name = r->name;
    out->failovers = METRIC_GET(r->failovers);
    out->backoffs = METRIC_GET(r->backoffs);
    out->down = METRIC_GET(r->down_until) > clock_mono_ms();
}

void upstream_pool_counters(const struct upstream_pool *pool, struct upstream_stats *out)
{
    out->connects = METRIC_GET(pool->stats.connects);
    out->reused = METRIC_GET(pool->stats.reused);
    out->failovers = METRIC_GET(pool->stats.failovers);
    out->tls_resumed = METRIC_GET(pool->stats.tls_resumed);
    out->idle = out->active = 0;
}

void upstream_pool_retire(struct upstream_pool *pool, struct upstream_pool *successor)
{
    /* counters carry over (they must not go backwards in /metrics), and so does the
     * back-off of a replica both lists name */
    METRIC_ADD(successor->stats.connects, METRIC_GET(pool->stats.connects));
    METRIC_ADD(successor->stats.tls_resumed, METRIC_GET(pool->stats.tls_resumed));
    METRIC_ADD(successor->stats.reused, METRIC_GET(pool->stats.reused));
    METRIC_ADD(successor->stats.failovers, METRIC_GET(pool->stats.failovers));
    for (size_t k = 0; k < successor->nreps; k++) {
        struct up_replica *to = &successor->reps[k];
        for (size_t i = 0; i < pool->nreps; i++) {
            const struct up_replica *from = &pool->reps[i];
            if (strcmp(from->name, to->name) != 0)
                continue;
            METRIC_ADD(to->failovers, METRIC_GET(from->failovers));
            METRIC_ADD(to->backoffs, METRIC_GET(from->backoffs));
            if (from->salen == to->salen && memcmp(&from->sa, &to->sa, to->salen) == 0) {
                METRIC_SET(to->down_until, METRIC_GET(from->down_until));
                to->fails = from->fails;
            }
            break;
        }
    }
    pool->retired = 1;
    up_free_spares(pool); /* it starts no exchange again */
    for (size_t i = 0; i < pool->nreps; i++) {
        struct up_conn *c;
        while ((c = TAILQ_FIRST(&pool->reps[i].idle)))
            up_conn_free(c);
    }
}

void upstream_pool_stats(const struct upstream_pool *pool, struct upstream_stats *out)
{
    struct up_conn *c;

    *out = pool->stats;
    out->idle = 0;
    out->active = 0;
    for (size_t i = 0; i < pool->nreps; i++)
        out->idle += pool->reps[i].nidle;
    TAILQ_FOREACH(c, &pool->busy, link)
    out->active++;
}

/* End the exchange: give the connection back (or close it), report, free. */
static void up_finish(struct upstream_exchange *x, enum upstream_result result, const char *error)
{
    struct upstream_pool *pool = x->pool;
    struct up_conn *c = x->conn;
    struct upstream_response resp;

    if (c) {
        int reusable = result == UPSTREAM_OK && x->kind != HTTP1_BODY_CLOSE &&
                       http1_keepalive(&x->head) && evbuffer_get_length(netio_input(c->nc)) == 0 &&
                       evbuffer_get_length(netio_output(c->nc)) == 0 &&
                       c->rep->nidle < (size_t)pool->conf->pool && !pool->retired;
        if (reusable) {
            struct timeval idle = clock_tv(UPSTREAM_IDLE_TIMEOUT);
            TAILQ_REMOVE(&pool->busy, c, link);
            c->x = NULL;
            x->conn = NULL;
            TAILQ_INSERT_HEAD(&c->rep->idle, c, link);
            c->idle = 1;
            c->idle_since = clock_mono_ms();
            c->rep->nidle++;
            netio_set_write_timeout(c->nc, NULL);
            netio_read_start(c->nc, &idle); /* notices the peer closing it */
        } else {
            up_conn_free(c);
        }
    }
    if (result == UPSTREAM_OK)
        log_debug("upstream %s: %d, %llu body bytes", x->rep->name, x->head.status,
                  (unsigned long long)x->total);
    else
        log_warn("upstream %s: %s (exchange %s)", x->rep ? x->rep->name : "-", error,
                 upx_state_str(x->state));

    memset(&resp, 0, sizeof(resp));
    resp.result = result;
    resp.sent = x->state >= UPX_SENT;
    resp.streaming = x->state >= UPX_STREAMING;
    resp.replica = x->rep ? x->rep->name : "-";
    resp.head = result == UPSTREAM_OK ? &x->head : NULL;
    resp.body = result == UPSTREAM_OK ? x->body : NULL;
    resp.error = error;
    if (x->cb)
        x->cb(&resp, x->arg);
    up_exchange_free(x);
}

static void up_mark_down(struct up_replica *r, const char *why)
{
    uint64_t backoff = UPSTREAM_BACKOFF_MIN;

    for (unsigned i = 0; i < r->fails && backoff < UPSTREAM_BACKOFF_MAX; i++)
        backoff *= 2;
    if (backoff > UPSTREAM_BACKOFF_MAX)
        backoff = UPSTREAM_BACKOFF_MAX;
    r->fails++;
    METRIC_SET(r->down_until, clock_mono_ms() + backoff);
    METRIC_INC(r->backoffs);
    log_warn("upstream %s: %s; marked down for %llu ms", r->name, why, (unsigned long long)backoff);
}

/* The connection is established: hand it the request. From here on, never resend. */
static void up_send(struct upstream_exchange *x, struct up_conn *c)
{
    struct timeval tv = clock_tv(x->pool->conf->timeout_ms);

    c->x = x;
    c->connecting = 0;
    x->conn = c;
    x->state = UPX_SENT;
    netio_set_write_timeout(c->nc, &tv);
    evbuffer_add_buffer(netio_output(c->nc), x->request);
    netio_read_start(c->nc, &tv);
    netio_flush(c->nc);
}

/* Is a pooled idle connection still open? The peer may have closed it a moment ago and
 * the loop not yet seen it: the classic keep-alive race, where the request would be lost
 * (and never resent). Upstreams close idle connections after seconds, so a connection
 * idle for less than UPSTREAM_PEEK_AFTER ms is trusted without the extra syscall. */
static int up_conn_alive(struct up_conn *c)
{
    char b;
    ssize_t n;

    if (clock_mono_ms() - c->idle_since < UPSTREAM_PEEK_AFTER)
        return 1;
    n = recv(netio_fd(c->nc), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static struct up_conn *up_connect(struct upstream_exchange *x, struct up_replica *r)
{
    struct upstream_pool *pool = x->pool;
    struct timeval tv = clock_tv(pool->conf->connect_timeout_ms);
    struct up_conn *c = calloc(1, sizeof(*c));
    struct tport *t = NULL;
    int fd;

    if (!c)
        return NULL;
    c->pool = pool;
    c->rep = r;
    c->connecting = 1;
    c->x = x;
    if ((fd = netio_socket((struct sockaddr *)&r->sa)) < 0) {
        free(c);
        return NULL;
    }
    if (pool->conf->tls_ctx) {
        char why[256];
        if (!(t = tport_tls_client(pool->conf->tls_ctx, fd, r->host,
                                   pool->conf->tls_session_reuse ? &r->session : NULL, why,
                                   sizeof(why)))) {
            log_warn("upstream %s: %s", r->name, why);
            close(fd);
            free(c);
            return NULL;
        }
    }
    if (!(c->nc = netio_conn_new(pool->base, fd, t, up_read_cb, NULL, up_event_cb, c))) {
        free(c); /* fd closed */
        return NULL;
    }
    TAILQ_INSERT_TAIL(&pool->busy, c, link);
    x->conn = c;
    METRIC_INC(pool->stats.connects);
    if (netio_connect(c->nc, (struct sockaddr *)&r->sa, r->salen, &tv) < 0) {
        up_conn_free(c);
        return NULL;
    }
    return c;
}

/* Try the next replica in x's order; finishes the exchange when none is left. */
static void up_attempt(struct upstream_exchange *x)
{
    struct upstream_pool *pool = x->pool;

    while (x->ntried < pool->nreps) {
        struct up_replica *r = &pool->reps[x->order[x->ntried++]];
        struct up_conn *c;

        x->rep = r;
        while ((c = TAILQ_FIRST(&r->idle))) {
            if (!up_conn_alive(c)) {
                up_conn_free(c);
                continue;
            }
            TAILQ_REMOVE(&r->idle, c, link);
            r->nidle--;
            c->idle = 0;
            TAILQ_INSERT_TAIL(&pool->busy, c, link);
            METRIC_INC(pool->stats.reused);
            up_send(x, c);
            return;
        }
        if (up_connect(x, r))
            return; /* up_event_cb continues */
        up_mark_down(r, "cannot start a connection");
    }
    if (x->state == UPX_DEFERRED) {
        up_finish(x, UPSTREAM_UNAVAILABLE, "no upstream replica accepted the connection");
        return;
    }
    /* Maybe still inside upstream_forward: report from the loop, never synchronously. */
    x->state = UPX_DEFERRED;
    x->defer_ev = event_new(pool->base, -1, 0, up_defer_cb, x);
    if (!x->defer_ev) {
        up_finish(x, UPSTREAM_UNAVAILABLE, "no upstream replica accepted the connection");
        return;
    }
    event_active(x->defer_ev, EV_TIMEOUT, 0);
}

static void up_defer_cb(evutil_socket_t fd, short what, void *arg)
{
    up_attempt(arg);
}

struct upstream_exchange *upstream_forward(struct upstream_pool *pool, struct evbuffer *request,
                                           int is_head, size_t stream_after, upstream_cb cb,
                                           void *arg)
{
    struct upstream_exchange *x;
    uint64_t now = clock_mono_ms();
    size_t n = pool->nreps, k = 0, start;

    if (n == 0)
        return NULL;
    if ((x = TAILQ_FIRST(&pool->spare))) {
        struct evbuffer *req = x->request, *body = x->body;

        TAILQ_REMOVE(&pool->spare, x, link);
        pool->nspare--;
        memset(x, 0, sizeof(*x) + n * sizeof(x->order[0]));
        x->request = req;
        x->body = body;
    } else if ((x = calloc(1, sizeof(*x) + n * sizeof(x->order[0])))) {
        x->request = evbuffer_new();
        x->body = evbuffer_new();
        if (!x->request || !x->body) {
            up_exchange_destroy(x);
            return NULL;
        }
    } else {
        return NULL;
    }
    x->pool = pool;
    x->state = UPX_CONNECTING;
    x->is_head = is_head;
    x->stream_after = stream_after;
    x->cb = cb;
    x->arg = arg;
    evbuffer_add_buffer(x->request, request);
    TAILQ_INSERT_TAIL(&pool->exchanges, x, link);

    /* Round robin over healthy replicas first; replicas in back-off come last, so
     * when every replica is down one is still probed. */
    start = pool->rr++ % n;
    for (size_t i = 0; i < n; i++) {
        size_t idx = (start + i) % n;
        if (pool->reps[idx].down_until <= now)
            x->order[k++] = idx;
    }
    for (size_t i = 0; i < n; i++) {
        size_t idx = (start + i) % n;
        if (pool->reps[idx].down_until > now)
            x->order[k++] = idx;
    }
    up_attempt(x);
    return x;
}

void upstream_exchange_abort(struct upstream_exchange *x, const char *why)
{
    up_finish(x, x->state >= UPX_SENT ? UPSTREAM_TIMEOUT : UPSTREAM_UNAVAILABLE, why);
}

void upstream_exchange_detach(struct upstream_exchange *x)
{
    x->cb = NULL;
    x->arg = NULL;
    if (x->state == UPX_PAUSED) /* nobody will resume it: let the answer drain into the void */
        upstream_exchange_pause(x, 0);
}

static void up_pause_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    up_finish(arg, UPSTREAM_TIMEOUT,
              "the client did not read a streamed answer within "
              "upstream-timeout");
}

void upstream_exchange_pause(struct upstream_exchange *x, int pause)
{
    struct timeval tv = clock_tv(x->pool->conf->timeout_ms);

    if (x->state != (pause ? UPX_STREAMING : UPX_PAUSED) || !x->conn || x->conn->connecting)
        return;
    x->state = pause ? UPX_PAUSED : UPX_STREAMING;
    log_debug("upstream %s: %s reading a streamed answer (now %s)", x->rep ? x->rep->name : "-",
              pause ? "paused" : "resumed", upx_state_str(x->state));
    if (pause) {
        netio_read_stop(x->conn->nc);
        if (!x->pause_ev)
            x->pause_ev = evtimer_new(x->pool->base, up_pause_timeout_cb, x);
        if (x->pause_ev)
            evtimer_add(x->pause_ev, &tv);
    } else {
        if (x->pause_ev)
            evtimer_del(x->pause_ev);
        netio_read_start(x->conn->nc, &tv);
        if (evbuffer_get_length(netio_input(x->conn->nc)))
            netio_read_kick(x->conn->nc);
    }
}

/* A large answer in progress: hand what has arrived to the receiver (or drop it). */
static void up_stream(struct upstream_exchange *x)
{
    struct upstream_response resp;

    memset(&resp, 0, sizeof(resp));
    resp.result = UPSTREAM_STREAM;
    resp.sent = 1;
    resp.streaming = x->state >= UPX_STREAMING;
    resp.replica = x->rep->name;
    resp.head = &x->head;
    resp.body = x->body;
    if (x->state < UPX_STREAMING)
        x->state = UPX_STREAMING;
    if (x->cb)
        x->cb(&resp, x->arg);
    evbuffer_drain(x->body, evbuffer_get_length(x->body)); /* whatever was not taken */
}

/* Consume what arrived. Returns 1 when the response is complete, 0 for more, -1 on error
 * (with *why set). */
static int up_parse(struct upstream_exchange *x, struct evbuffer *in, const char **why)
{
    static __thread char reason[200];
    struct http1_error err;

    while (x->state < UPX_BODY) {
        long n = http1_head_end(in, &x->scan, UPSTREAM_MAX_HEAD, 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            *why = n == -2 ? "upstream response head has a line ending in a bare LF"
                           : "upstream response head too large";
            return -1;
        }
        if (http1_parse_response(&x->head, (const char *)evbuffer_pullup(in, n), (size_t)n, &err) <
            0) {
            snprintf(reason, sizeof(reason), "%s", err.detail);
            *why = reason;
            return -1;
        }
        evbuffer_drain(in, (size_t)n);
        x->scan = 0;
        if (x->head.status > 599) {
            /* RFC 9110 §15: 100-599. Anything else is not an answer; the request was
             * sent, so its outcome is unknown. */
            snprintf(reason, sizeof(reason), "invalid status %d from upstream", x->head.status);
            *why = reason;
            return -1;
        }
        if (x->head.status < 200) {
            if (x->head.status == 101) {
                *why = "upstream switched protocols";
                return -1;
            }
            http1_head_clear(&x->head); /* 100, 103: informational, skip */
            continue;
        }
        if (http1_response_framing(&x->head, x->is_head, &x->kind, &x->remaining, &err) < 0) {
            snprintf(reason, sizeof(reason), "%s", err.detail);
            *why = reason;
            return -1;
        }
        x->state = UPX_BODY;
    }
    switch (x->kind) {
    case HTTP1_BODY_NONE:
        return 1;
    case HTTP1_BODY_LENGTH: {
        size_t avail = evbuffer_get_length(in);
        size_t take = avail < x->remaining ? avail : (size_t)x->remaining;
        evbuffer_remove_buffer(in, x->body, take);
        x->remaining -= take;
        x->total += take;
        return x->remaining == 0;
    }
    case HTTP1_BODY_CHUNKED: {
        int r = http1_chunked_decode(&x->chunked, in, x->body, UINT64_MAX / 4, &x->total,
                                     UPSTREAM_MAX_HEAD, &err);
        if (r < 0) {
            snprintf(reason, sizeof(reason), "invalid chunked response: %s", err.detail);
            *why = reason;
        }
        return r;
    }
    case HTTP1_BODY_CLOSE:
        x->total += evbuffer_get_length(in);
        evbuffer_add_buffer(x->body, in);
        return 0; /* complete at EOF */
    }
    return -1;
}

static void up_read_cb(struct netio_conn *nc, void *arg)
{
    struct up_conn *c = arg;
    struct upstream_exchange *x = c->x;
    const char *why = NULL;
    int r;

    if (!x) {
        /* bytes on an idle connection: protocol violation, drop it */
        up_conn_free(c);
        return;
    }
    r = up_parse(x, netio_input(nc), &why);
    if (r > 0)
        up_finish(x, UPSTREAM_OK, NULL);
    else if (r < 0)
        up_finish(x, UPSTREAM_FAILED, why);
    else if (x->state >= UPX_BODY && evbuffer_get_length(x->body) > 0 &&
             (x->state >= UPX_STREAMING || evbuffer_get_length(x->body) > x->stream_after))
        up_stream(x); /* x stays alive: only up_finish frees it */
    /* c may be freed or reused by now: do not touch it */
}

static int pool_tls_reused(struct up_conn *c)
{
    return c->pool->conf->tls_ctx && tport_tls_reused(netio_tport(c->nc));
}

static void up_event_cb(struct netio_conn *nc, short what, void *arg)
{
    struct up_conn *c = arg;
    struct upstream_exchange *x = c->x;
    static __thread char why[256];

    if (!x) { /* idle: closed by the peer or idle timeout */
        up_conn_free(c);
        return;
    }
    if (c->connecting) {
        if (what & NETIO_CONNECTED) {
            if (pool_tls_reused(c))
                METRIC_INC(x->pool->stats.tls_resumed);
            c->rep->fails = 0;
            c->rep->down_until = 0;
            up_send(x, c);
            return;
        }
        snprintf(why, sizeof(why), "%s",
                 (what & NETIO_TIMEOUT) ? "connect timed out" : netio_error(nc));
        up_mark_down(c->rep, why);
        METRIC_INC(c->rep->failovers);
        up_conn_free(c); /* x->conn = NULL */
        METRIC_INC(x->pool->stats.failovers);
        up_attempt(x);
        return;
    }
    if (what & NETIO_EOF) {
        const char *perr = NULL;
        int r = up_parse(x, netio_input(nc), &perr);
        if (r > 0 || (r == 0 && x->state >= UPX_BODY && x->kind == HTTP1_BODY_CLOSE)) {
            up_finish(x, UPSTREAM_OK, NULL);
            return;
        }
        snprintf(why, sizeof(why), "%s",
                 perr
                     ? perr
                     : (x->state >= UPX_BODY ? "upstream closed the connection mid-body (truncated)"
                                             : "upstream closed the connection before answering"));
        up_finish(x, UPSTREAM_FAILED, why);
        return;
    }
    if (what & NETIO_TIMEOUT) {
        up_finish(x, UPSTREAM_TIMEOUT, "upstream did not answer within upstream-timeout");
        return;
    }
    snprintf(why, sizeof(why), "upstream connection failed: %s", netio_error(nc));
    up_finish(x, UPSTREAM_FAILED, why);
}
