#include "admin/admin.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "core/log.h"
#include "core/metrics.h"

const struct conf_directive admin_conf_rows[] = {
    {.name = "admin-listen",
     .type = CONF_T_ADDR,
     .flags = CONF_F_PORT_ZERO,
     .off = offsetof(struct admin_conf, listen),
     .arg = "HOST:PORT",
     .help = "admin endpoint: /metrics /healthz /readyz (off unless set)"},
    CONF_END,
};

struct admin {
    struct frontend_handler super; /* first: the frontend sees only this */
    struct frontend_conf fconf;    /* the client-side limits, without the access log */
    struct admin_source *src;
    size_t nsrc;
    struct event_base *base;
    struct evconnlistener *listener;
    struct frontend *fe;
    int stop_pipe[2];
    struct event *stop_ev;
    pthread_t thread;
    int started;
    int draining; /* set by another thread: read relaxed */
};

static void admin_json(struct frontend_req *r, int status, const char *json)
{
    struct evbuffer *b = evbuffer_new();

    if (b)
        evbuffer_add(b, json, strlen(json));
    frontend_respond(r, status, NULL, NULL, "Content-Type: application/json\r\n", b);
    if (b)
        evbuffer_free(b);
}

static void admin_readyz(struct admin *a, struct frontend_req *r)
{
    struct evbuffer *b = evbuffer_new();
    int draining = METRIC_GET(a->draining), redis_down = 0, upstream_up = 0, n = 0;

    for (size_t i = 0; i < a->nsrc; i++) {
        redis_down += !redis_ready(a->src[i].redis);
        for (size_t k = 0; k < upstream_pool_replicas(a->src[i].pool); k++) {
            struct upstream_replica_stats rs;
            upstream_pool_replica(a->src[i].pool, k, &rs);
            upstream_up += !rs.down;
        }
    }
    if (!b) {
        admin_json(r, 500, "{\"status\":\"out of memory\"}\n");
        return;
    }
    if (!draining && !redis_down && upstream_up) {
        evbuffer_add_printf(b, "{\"status\":\"ready\"}\n");
    } else {
        evbuffer_add_printf(b, "{\"status\":\"not ready\",\"reasons\":[");
        if (draining)
            evbuffer_add_printf(b, "%s\"draining\"", n++ ? "," : "");
        if (redis_down)
            evbuffer_add_printf(b, "%s\"redis not ready in %d worker(s)\"", n++ ? "," : "",
                                redis_down);
        if (!upstream_up)
            evbuffer_add_printf(b, "%s\"every upstream in back-off\"", n++ ? "," : "");
        evbuffer_add_printf(b, "]}\n");
    }
    frontend_respond(r, n ? 503 : 200, NULL, NULL, "Content-Type: application/json\r\n", b);
    evbuffer_free(b);
}

/* Label value escaping (exposition format): backslash, quote, newline. */
static void admin_label(struct evbuffer *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            evbuffer_add_printf(out, "\\%c", *v);
        else if (*v == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, v, 1);
    }
}

static void admin_metrics(struct admin *a, struct frontend_req *r)
{
    struct evbuffer *b = evbuffer_new();
    struct frontend_stats fs;
    struct redis_stats rs = {0};
    struct upstream_stats us = {0};
    struct idem_stats is = {0};
    uint64_t redis_ready_n = 0;

    if (!b) {
        admin_json(r, 500, "{\"status\":\"out of memory\"}\n");
        return;
    }
    memset(&fs, 0, sizeof(fs));
    for (size_t i = 0; i < a->nsrc; i++) {
        struct redis_stats r1;
        struct upstream_stats u1;
        struct idem_stats i1;
        frontend_stats_add(a->src[i].fe, &fs);
        redis_get_stats(a->src[i].redis, &r1);
        rs.commands += r1.commands;
        rs.timeouts += r1.timeouts;
        rs.reconnects += r1.reconnects;
        rs.queued += r1.queued;
        redis_ready_n += (uint64_t)redis_ready(a->src[i].redis);
        upstream_pool_counters(a->src[i].pool, &u1);
        us.connects += u1.connects;
        us.reused += u1.reused;
        us.failovers += u1.failovers;
        idem_handler_stats(a->src[i].idem, &i1);
        is.record_retries += i1.record_retries;
        is.records_lost += i1.records_lost;
        is.in_flight += i1.in_flight;
    }
    metrics_header(b, "idemproxy_build_info", "gauge", "Build of this idemproxy, as labels.");
    evbuffer_add_printf(b, "idemproxy_build_info{version=\"%s\",libevent=\"%s\"} 1\n",
                        IDEMPROXY_VERSION, event_get_version());
    metrics_header(b, "idemproxy_requests_total", "counter",
                   "Finished requests, by outcome (the access log's outcome field).");
    for (size_t i = 0; i < fs.noutcomes; i++) {
        evbuffer_add_printf(b, "idemproxy_requests_total{outcome=\"");
        admin_label(b, fs.outcomes[i].name);
        evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)fs.outcomes[i].n);
    }
    metrics_histogram(b, "idemproxy_request_duration_seconds",
                      "Time from a request's head to its end.", &fs.total);
    metrics_histogram(b, "idemproxy_upstream_duration_seconds",
                      "Time from sending a request upstream to its answer.", &fs.upstream);
    metrics_histogram(b, "idemproxy_redis_duration_seconds",
                      "Redis round trips of one keyed request (claim and record), summed.",
                      &fs.redis);
    metrics_header(b, "idemproxy_redis_commands_total", "counter", "Redis commands issued.");
    metrics_value(b, "idemproxy_redis_commands_total", NULL, rs.commands);
    metrics_header(b, "idemproxy_redis_timeouts_total", "counter",
                   "Redis commands that missed redis-timeout, sent or not.");
    metrics_value(b, "idemproxy_redis_timeouts_total", NULL, rs.timeouts);
    metrics_header(b, "idemproxy_redis_reconnects_total", "counter",
                   "Redis connections dropped for a missed deadline and made again.");
    metrics_value(b, "idemproxy_redis_reconnects_total", NULL, rs.reconnects);
    metrics_header(b, "idemproxy_redis_queued_total", "counter",
                   "Redis commands issued while there was no connection (queued).");
    metrics_value(b, "idemproxy_redis_queued_total", NULL, rs.queued);
    metrics_header(b, "idemproxy_redis_ready_workers", "gauge",
                   "Workers whose Redis connection is up with every script loaded.");
    metrics_value(b, "idemproxy_redis_ready_workers", NULL, redis_ready_n);
    metrics_header(b, "idemproxy_records_retried_total", "counter",
                   "Record attempts sent again after a failure.");
    metrics_value(b, "idemproxy_records_retried_total", NULL, is.record_retries);
    metrics_header(b, "idemproxy_records_lost_total", "counter",
                   "Answers never recorded: Redis away for the whole lease.");
    metrics_value(b, "idemproxy_records_lost_total", NULL, is.records_lost);
    metrics_header(b, "idemproxy_keyed_requests_in_flight", "gauge",
                   "Keyed requests being handled now.");
    metrics_value(b, "idemproxy_keyed_requests_in_flight", NULL, is.in_flight);
    metrics_header(b, "idemproxy_client_connections", "gauge", "Open client connections.");
    metrics_value(b, "idemproxy_client_connections", NULL, fs.conns);
    metrics_header(b, "idemproxy_upstream_connections_opened_total", "counter",
                   "TCP connections opened to upstreams.");
    metrics_value(b, "idemproxy_upstream_connections_opened_total", NULL, us.connects);
    metrics_header(b, "idemproxy_upstream_connections_reused_total", "counter",
                   "Requests sent on a pooled upstream connection.");
    metrics_value(b, "idemproxy_upstream_connections_reused_total", NULL, us.reused);
    /* per upstream: the workers' replicas are the same list, in the same order */
    if (a->nsrc) {
        size_t nrep = upstream_pool_replicas(a->src[0].pool);
        const char *names[3] = {"idemproxy_upstream_failovers_total",
                                "idemproxy_upstream_backoffs_total", "idemproxy_upstream_up"};
        const char *help[3] = {"Connects to this upstream that failed (the request moved on).",
                               "Times this upstream was put in back-off.",
                               "1 while this upstream is out of back-off in every worker."};
        for (int m = 0; m < 3; m++) {
            metrics_header(b, names[m], m < 2 ? "counter" : "gauge", help[m]);
            for (size_t k = 0; k < nrep; k++) {
                uint64_t v = m == 2 ? 1 : 0;
                struct upstream_replica_stats st;
                for (size_t i = 0; i < a->nsrc; i++) {
                    upstream_pool_replica(a->src[i].pool, k, &st);
                    if (m == 0)
                        v += st.failovers;
                    else if (m == 1)
                        v += st.backoffs;
                    else if (st.down)
                        v = 0;
                }
                evbuffer_add_printf(b, "%s{upstream=\"", names[m]);
                admin_label(b, st.name);
                evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)v);
            }
        }
    }
    metrics_header(b, "idemproxy_draining", "gauge", "1 once the process is shutting down.");
    metrics_value(b, "idemproxy_draining", NULL, (uint64_t)METRIC_GET(a->draining));
    frontend_respond(r, 200, NULL, NULL, "Content-Type: text/plain; version=0.0.4\r\n", b);
    evbuffer_free(b);
}

/* Every request on the admin listener is ours. */
static int admin_on_req(struct frontend_handler *self, struct frontend_req *r)
{
    struct admin *a = (struct admin *)self;
    const char *t = r->head.target;
    size_t plen = strcspn(t, "?");
    int get = strcmp(r->head.method, "GET") == 0 || strcmp(r->head.method, "HEAD") == 0;

    r->outcome = "admin";
    if (plen == 8 && strncmp(t, "/healthz", 8) == 0 && get)
        admin_json(r, 200, "{\"status\":\"ok\"}\n");
    else if (plen == 7 && strncmp(t, "/readyz", 7) == 0 && get)
        admin_readyz(a, r);
    else if (plen == 8 && strncmp(t, "/metrics", 8) == 0 && get)
        admin_metrics(a, r);
    else if ((plen == 8 && (!strncmp(t, "/healthz", 8) || !strncmp(t, "/metrics", 8))) ||
             (plen == 7 && !strncmp(t, "/readyz", 7)))
        admin_json(r, 405, "{\"error\":\"method not allowed: use GET\"}\n");
    else
        admin_json(r, 404, "{\"error\":\"not found: /healthz, /readyz, /metrics\"}\n");
    return 1;
}

static void admin_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                            int salen, void *arg)
{
    struct admin *a = arg;

    frontend_accept(a->fe, fd, sa, salen);
}

static void admin_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;

    event_base_loopexit(a->base, NULL);
}

static void *admin_main(void *arg)
{
    struct admin *a = arg;

    log_set_worker(0);
    event_base_dispatch(a->base);
    return NULL;
}

static void admin_free(struct admin *a)
{
    frontend_free(a->fe);
    if (a->listener)
        evconnlistener_free(a->listener);
    if (a->stop_ev)
        event_free(a->stop_ev);
    for (int i = 0; i < 2; i++)
        if (a->stop_pipe[i] >= 0)
            close(a->stop_pipe[i]);
    if (a->base)
        event_base_free(a->base);
    free(a->src);
    free(a);
}

/* A listening socket on conf->listen; *port gets the port. -1 (logged) on failure. */
static int admin_socket(const struct conf_addr *addr, unsigned short *port)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[8], name[CONF_HOST_MAX + 16];
    int fd = -1, one = 1, rc;

    snprintf(portstr, sizeof(portstr), "%u", addr->port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    conf_addr_str(addr, name, sizeof(name));
    if ((rc = getaddrinfo(addr->host, portstr, &hints, &res)) != 0) {
        log_error("admin-listen %s: %s", name, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        log_error("admin-listen %s: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &len);
        *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    }
    freeaddrinfo(res);
    return fd;
}

struct admin *admin_start(const struct admin_conf *conf, const struct frontend_conf *fconf,
                          const struct admin_source *src, size_t n, unsigned short *port)
{
    struct admin *a = calloc(1, sizeof(*a));
    unsigned short bound = 0;
    int fd = -1;

    if (!a)
        return NULL;
    a->stop_pipe[0] = a->stop_pipe[1] = -1;
    a->super.name = "admin";
    a->super.on_req = admin_on_req;
    a->fconf = *fconf;
    a->fconf.access_log = NULL; /* the operator's requests are not the API's traffic */
    a->nsrc = n;
    if (!(a->src = calloc(n ? n : 1, sizeof(*a->src))))
        goto err;
    memcpy(a->src, src, n * sizeof(*src));
    if (!(a->base = event_base_new()) || pipe2(a->stop_pipe, O_NONBLOCK | O_CLOEXEC) < 0 ||
        !(a->stop_ev = event_new(a->base, a->stop_pipe[0], EV_READ, admin_stop_cb, a)) ||
        event_add(a->stop_ev, NULL) < 0 || !(a->fe = frontend_new(a->base, &a->fconf, NULL, "", 0)))
        goto err;
    frontend_add_handler(a->fe, &a->super);
    if ((fd = admin_socket(&conf->listen, &bound)) < 0)
        goto err;
    if (!(a->listener =
              evconnlistener_new(a->base, admin_accept_cb, a, LEV_OPT_CLOSE_ON_FREE, 0, fd))) {
        close(fd);
        goto err;
    }
    if (pthread_create(&a->thread, NULL, admin_main, a) != 0)
        goto err;
    a->started = 1;
    if (port)
        *port = bound;
    return a;
err:
    log_error("admin: cannot start the admin endpoint");
    admin_free(a);
    return NULL;
}

void admin_set_draining(struct admin *a)
{
    if (a)
        METRIC_SET(a->draining, 1);
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    if (a->started) {
        if (write(a->stop_pipe[1], "x", 1) < 0)
            log_error("admin: cannot signal its thread to stop");
        pthread_join(a->thread, NULL);
    }
    admin_free(a);
}
