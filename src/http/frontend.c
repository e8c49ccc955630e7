#include "http/frontend.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

#include "core/bytes.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/accesslog.h"
#include "http/headers.h"
#include "net/netio.h"
#include "net/tls.h"

static const struct conf_choice fe_auth_choices[] = {{"no", TLS_AUTH_NO},
                                                     {"optional", TLS_AUTH_OPTIONAL},
                                                     {"yes", TLS_AUTH_YES},
                                                     {"off", TLS_AUTH_NO},
                                                     {NULL, 0}};

const struct conf_directive frontend_conf_rows[] = {
    {.name = "max-body",
     .type = CONF_T_SIZE,
     .min = 0,
     .max = CONF_GIB,
     .def = "1m",
     .off = offsetof(struct frontend_conf, max_body),
     .arg = "SIZE",
     .help = "largest request body"},
    {.name = "max-headers",
     .type = CONF_T_SIZE,
     .min = CONF_KIB,
     .max = CONF_MIB,
     .def = "16k",
     .off = offsetof(struct frontend_conf, max_headers),
     .arg = "SIZE",
     .help = "largest header block"},
    {.name = "response-buffer",
     .type = CONF_T_SIZE,
     .min = 4 * CONF_KIB,
     .max = CONF_GIB,
     .def = "1m",
     .off = offsetof(struct frontend_conf, response_buffer),
     .arg = "SIZE",
     .help = "answers larger than this stream through"},
    {.name = "client-timeout",
     .type = CONF_T_DURATION,
     .min = 1,
     .max = 7 * CONF_MS_DAY,
     .def = "60s",
     .off = offsetof(struct frontend_conf, client_timeout_ms),
     .arg = "DURATION",
     .help = "bound on a request head and on pauses in a body"},
    {.name = "access-log",
     .type = CONF_T_STRING,
     .def = "off",
     .off = offsetof(struct frontend_conf, access_log),
     .arg = "PATH|stderr|off",
     .help = "one JSON line per request (reopened on SIGUSR1)"},
    {.name = "error-template",
     .type = CONF_T_STRING,
     .def = "none",
     .off = offsetof(struct frontend_conf, error_template),
     .arg = "PATH|none",
     .help = "the proxy's own errors in a template's shape"},
    {.name = "tls-cert-file",
     .type = CONF_T_STRING_LIST,
     .flags = CONF_F_REPEATABLE,
     .off = offsetof(struct frontend_conf, tls_cert_files),
     .count_off = offsetof(struct frontend_conf, ntls_cert_files),
     .arg = "FILE",
     .help = "tls-listen's certificate chain (PEM; repeat: ECDSA + RSA)"},
    {.name = "tls-key-file",
     .type = CONF_T_STRING_LIST,
     .flags = CONF_F_REPEATABLE,
     .off = offsetof(struct frontend_conf, tls_key_files),
     .count_off = offsetof(struct frontend_conf, ntls_key_files),
     .arg = "FILE",
     .help = "the private key of each tls-cert-file, in order"},
    {.name = "tls-protocols",
     .type = CONF_T_STRING_LIST,
     .def = "TLSv1.2 TLSv1.3",
     .off = offsetof(struct frontend_conf, tls_protocols),
     .count_off = offsetof(struct frontend_conf, ntls_protocols),
     .arg = "TLSv1.2|TLSv1.3...",
     .help = "protocol versions tls-listen accepts"},
    {.name = "tls-ciphers",
     .type = CONF_T_STRING,
     .off = offsetof(struct frontend_conf, tls_ciphers),
     .arg = "LIST",
     .help = "TLS 1.2 ciphers, OpenSSL's syntax (default: OpenSSL's)"},
    {.name = "tls-ciphersuites",
     .type = CONF_T_STRING,
     .off = offsetof(struct frontend_conf, tls_ciphersuites),
     .arg = "LIST",
     .help = "TLS 1.3 suites, OpenSSL's syntax (default: OpenSSL's)"},
    {.name = "tls-client-ca-file",
     .type = CONF_T_STRING,
     .off = offsetof(struct frontend_conf, tls_client_ca_file),
     .arg = "FILE",
     .help = "CAs whose client certificates tls-listen accepts"},
    {.name = "tls-auth-clients",
     .type = CONF_T_ENUM,
     .def = "no",
     .off = offsetof(struct frontend_conf, tls_auth_clients),
     .choices = fe_auth_choices,
     .arg = "no|optional|yes",
     .help = "ask clients for a certificate (yes: require one)"},
    {.name = "tls-session-tickets",
     .type = CONF_T_BOOL,
     .def = "on",
     .off = offsetof(struct frontend_conf, tls_tickets),
     .arg = "on|off",
     .help = "resume TLS sessions with tickets"},
    {.name = "tls-ticket-key-file",
     .type = CONF_T_STRING_LIST,
     .flags = CONF_F_REPEATABLE,
     .off = offsetof(struct frontend_conf, tls_ticket_key_files),
     .count_off = offsetof(struct frontend_conf, ntls_ticket_key_files),
     .arg = "FILE",
     .help = "80 random bytes; the first encrypts, all decrypt"},
    {.name = "tls-handshake-timeout",
     .type = CONF_T_DURATION,
     .min = 1,
     .max = CONF_MS_DAY,
     .def = "10s",
     .off = offsetof(struct frontend_conf, tls_handshake_timeout_ms),
     .arg = "DURATION",
     .help = "bound on a client's TLS handshake"},
    CONF_END,
};

int frontend_conf_load(struct frontend_conf *conf, char *err, size_t errlen)
{
    struct problem_style *style = NULL;
    char why[480];

    if (conf->error_template && strcmp(conf->error_template, "none") != 0 &&
        !(style = problem_style_load(conf->error_template, why, sizeof(why))))
        return conf_fail(err, errlen, "error-template: %s", why);
    if (conf->ntls_cert_files || conf->ntls_key_files) {
        char protocols[128] = "";
        struct tls_server_opts o = {
            .cert_files = conf->tls_cert_files,
            .key_files = conf->tls_key_files,
            .ncerts = conf->ntls_cert_files,
            .nkeys = conf->ntls_key_files,
            .protocols = protocols,
            .ciphers = conf->tls_ciphers,
            .ciphersuites = conf->tls_ciphersuites,
            .client_ca_file = conf->tls_client_ca_file,
            .auth = (enum tls_auth)conf->tls_auth_clients,
            .tickets = conf->tls_tickets,
            .ticket_key_files = conf->tls_ticket_key_files,
            .nticket_keys = conf->ntls_ticket_key_files,
        };
        struct tls_server *tls;
        for (size_t i = 0; i < conf->ntls_protocols; i++)
            snprintf(protocols + strlen(protocols), sizeof(protocols) - strlen(protocols), "%s%s",
                     i ? " " : "", conf->tls_protocols[i]);
        if (!(tls = tls_server_new(&o, why, sizeof(why)))) {
            problem_style_free(style);
            return conf_fail(err, errlen, "%s", why);
        }
        tls_server_release(conf->tls);
        conf->tls = tls;
    } else if (conf->tls_client_ca_file || conf->tls_auth_clients != TLS_AUTH_NO ||
               conf->ntls_ticket_key_files) {
        problem_style_free(style);
        return conf_fail(err, errlen,
                         "tls-client-ca-file, tls-auth-clients and "
                         "tls-ticket-key-file need tls-cert-file");
    }
    problem_style_free(conf->error_style);
    conf->error_style = style;
    return 0;
}

void frontend_conf_release(struct frontend_conf *conf)
{
    problem_style_free(conf->error_style);
    conf->error_style = NULL;
    tls_server_release(conf->tls);
    conf->tls = NULL;
}

/* A client connection's state; c->req is NULL in FE_HEAD until a head arrived. */
enum fe_state {
    FE_HEAD,    /* waiting for / reading a request head */
    FE_BODY,    /* reading the body of c->req */
    FE_BUSY,    /* c->req is being handled; further input waits in the buffer */
    FE_CLOSING, /* last answer queued; close once it is written (or linger, c->linger) */
    FE_LINGER   /* an early error answer is written and our side shut down: the rest of
                   what the client sends is read and dropped, bounded, then we close */
};

static const char *fe_state_str(enum fe_state st)
{
    switch (st) {
    case FE_HEAD:
        return "head";
    case FE_BODY:
        return "body";
    case FE_BUSY:
        return "busy";
    case FE_CLOSING:
        return "closing";
    case FE_LINGER:
        return "lingering";
    }
    return "?";
}

TAILQ_HEAD(fe_conn_list, frontend_conn);
TAILQ_HEAD(fe_req_list, frontend_req);

struct frontend {
    struct event_base *base;
    const struct frontend_conf *conf;
    struct upstream_pool *pool;
    char default_host[CONF_HOST_MAX + 16];
    struct frontend_handler *handlers, **handlers_tail;
    int draining;
    void (*on_drained)(void *arg);
    void *drained_arg;
    struct event *drained_ev;  /* reports on_drained from the loop */
    struct fe_conn_list conns; /* open client connections */
    size_t nconns;
    struct fe_req_list reqs; /* requests not yet finished (client may be gone) */
    size_t nreqs;
    int past_deadline;           /* frontend_drain_deadline was called */
    struct accesslog *alog;      /* NULL: access-log off */
    struct frontend_stats stats; /* written here, read by the admin thread */
    uint64_t rid_seed, rid_counter;
    uint64_t next_seq;     /* frontend_req.seq of the next request */
    struct evbuffer *wire; /* an upstream request being put together (always left empty) */
    /* finished requests kept for the next ones, with their body buffer (drained) */
    struct fe_req_list spare;
    size_t nspare;
    int freeing;
};

#define FE_SPARE_MAX 64

struct frontend_conn {
    struct frontend *fe;
    struct netio_conn *nc;  /* the socket: reads, writes, client-timeout */
    struct timeval timeout; /* client-timeout */
    enum fe_state state;
    size_t scan;
    uint64_t head_deadline; /* FE_HEAD with bytes: the whole head is due by then (0: none) */
    int linger;             /* answered early (fe_reject): linger before closing */
    int read_closed;        /* the client half-closed after its request (FE_BUSY) */
    uint64_t linger_deadline;
    size_t lingered; /* bytes dropped while lingering */
    struct frontend_req *req;
    int keepalive;
    enum http1_body kind;
    uint64_t remaining, total;
    struct http1_chunked chunked;
    char ip[64];
    int tls;         /* over TLS */
    int handshaking; /* ... and its handshake is not done */
    char cert[65];   /* the client certificate's fingerprint ("": none) */
    TAILQ_ENTRY(frontend_conn) link;
};

/* Lingering close (nginx's lingering_close): bounds on what is read and dropped after
 * an early error answer, so that a client still sending its body can read the answer
 * instead of getting a connection reset. */
#define FE_LINGER_MS        5000 /* at most this long in all */
#define FE_LINGER_READ_MS   1000 /* ... and this long between reads */
#define FE_LINGER_MAX_BYTES (64 * 1024 * 1024)

static void fe_read_cb(struct netio_conn *nc, void *arg);
static void fe_write_cb(struct netio_conn *nc, void *arg);
static void fe_event_cb(struct netio_conn *nc, short what, void *arg);

/* Once draining: tell the owner, from the loop, when nothing is left. */
static void fe_maybe_drained(struct frontend *fe)
{
    if (fe->draining && fe->nconns == 0 && fe->nreqs == 0 && fe->on_drained &&
        !event_pending(fe->drained_ev, EV_TIMEOUT, NULL))
        event_active(fe->drained_ev, EV_TIMEOUT, 0);
}

static void fe_drained_cb(evutil_socket_t fd, short what, void *arg)
{
    struct frontend *fe = arg;

    if (fe->nconns == 0 && fe->nreqs == 0 && fe->on_drained)
        fe->on_drained(fe->drained_arg);
}

void frontend_req_cleanup_add(struct frontend_req *r, struct frontend_cleanup *c,
                              void (*fn)(void *arg), void *arg)
{
    c->fn = fn;
    c->arg = arg;
    c->next = r->cleanups;
    r->cleanups = c;
}

static double fe_ms(uint64_t us)
{
    return (double)us / 1000.0;
}

/* The request's access log line (fe->alog set). */
static void fe_log_request(struct frontend *fe, const struct frontend_req *r)
{
    struct accesslog_entry e = {0};

    e.unix_ms = r->started_unix_ms;
    e.client = r->client_ip;
    e.method = r->head.method;
    e.target = r->head.target;
    e.status = r->status;
    e.bytes_in = r->bytes_in;
    e.bytes_out = r->bytes_out;
    e.duration_ms = fe_ms(clock_mono_us() - r->started_us);
    e.upstream_ms = r->upstream_name ? fe_ms(r->upstream_us) : -1;
    e.redis_ms = r->redis_us ? fe_ms(r->redis_us) : -1;
    e.outcome = r->answer_dropped ? "client-gone" : r->outcome ? r->outcome : "unanswered";
    e.record = r->record[0] ? r->record : NULL;
    e.upstream = r->upstream_name;
    e.request_id = r->request_id[0] ? r->request_id : NULL;
    accesslog_write(fe->alog, &e);
}

/* Count a finished request: its outcome and its durations. */
static void fe_count_request(struct frontend *fe, const struct frontend_req *r)
{
    struct frontend_stats *st = &fe->stats;
    const char *outcome = r->answer_dropped ? "client-gone"
                          : r->outcome      ? r->outcome
                                            : "unanswered";
    size_t i;

    for (i = 0; i < st->noutcomes; i++)
        if (st->outcomes[i].name == outcome || strcmp(st->outcomes[i].name, outcome) == 0)
            break;
    if (i == st->noutcomes && i < FRONTEND_MAX_OUTCOMES) {
        st->outcomes[i].name = outcome;
        st->outcomes[i].n = 0;
        /* the entry is complete before a reader can see it */
        __atomic_store_n(&st->noutcomes, i + 1, __ATOMIC_RELEASE);
    }
    if (i < FRONTEND_MAX_OUTCOMES)
        METRIC_INC(st->outcomes[i].n);
    metrics_hist_observe(&st->total, clock_mono_us() - r->started_us);
    if (r->upstream_name)
        metrics_hist_observe(&st->upstream, r->upstream_us);
    if (r->redis_us)
        metrics_hist_observe(&st->redis, r->redis_us);
}

void frontend_stats_add(const struct frontend *fe, struct frontend_stats *sum)
{
    const struct frontend_stats *st = &fe->stats;
    size_t n = __atomic_load_n(&st->noutcomes, __ATOMIC_ACQUIRE);

    sum->conns += METRIC_GET(st->conns);
    sum->tls_handshakes += METRIC_GET(st->tls_handshakes);
    sum->tls_resumed += METRIC_GET(st->tls_resumed);
    sum->tls_failures += METRIC_GET(st->tls_failures);
    for (size_t i = 0; i < n; i++) {
        size_t k;
        for (k = 0; k < sum->noutcomes; k++)
            if (strcmp(sum->outcomes[k].name, st->outcomes[i].name) == 0)
                break;
        if (k == sum->noutcomes) {
            if (k == FRONTEND_MAX_OUTCOMES)
                continue;
            sum->outcomes[k].name = st->outcomes[i].name;
            sum->outcomes[k].n = 0;
            sum->noutcomes++;
        }
        sum->outcomes[k].n += METRIC_GET(st->outcomes[i].n);
    }
    metrics_hist_add(&sum->total, &st->total);
    metrics_hist_add(&sum->upstream, &st->upstream);
    metrics_hist_add(&sum->redis, &st->redis);
}

/* The one place a request is freed: its handlers' cleanups first, newest first. */
static void fe_req_free(struct frontend_req *r)
{
    struct frontend *fe = r->fe;

    fe_count_request(fe, r);
    if (fe->alog)
        fe_log_request(fe, r);
    if (r->x)
        upstream_exchange_detach(r->x);
    r->x = NULL;
    while (r->cleanups) {
        struct frontend_cleanup *c = r->cleanups;
        r->cleanups = c->next; /* c may be freed by its own hook */
        c->fn(c->arg);
    }
    if (r->conn && r->conn->req == r)
        r->conn->req = NULL;
    TAILQ_REMOVE(&fe->reqs, r, link);
    fe->nreqs--;
    http1_head_clear(&r->head);
    if (!fe->freeing && fe->nspare < FE_SPARE_MAX) {
        evbuffer_drain(r->body, evbuffer_get_length(r->body));
        TAILQ_INSERT_HEAD(&fe->spare, r, link);
        fe->nspare++;
    } else {
        evbuffer_free(r->body);
        free(r);
    }
    fe_maybe_drained(fe);
}

static void fe_conn_free(struct frontend_conn *c)
{
    struct frontend *fe = c->fe;

    if (c->req) {
        struct frontend_req *r = c->req;
        c->req = NULL;
        if (c->state != FE_BUSY) {
            fe_req_free(r);
        } else {
            r->conn = NULL; /* the work goes on; its answer is dropped */
            /* A streamed answer has nobody left to read it (and the upstream may be
             * paused for this very client): close the upstream side. Whatever had to be
             * recorded was recorded when streaming began. */
            if (r->streaming && r->x)
                upstream_exchange_abort(r->x, "the client went away during a streamed answer");
        }
    }
    TAILQ_REMOVE(&fe->conns, c, link);
    fe->nconns--;
    METRIC_SET(fe->stats.conns, fe->nconns);
    netio_conn_free(c->nc); /* deferred if we are inside its callback */
    free(c);
    fe_maybe_drained(fe);
}

void frontend_accept(struct frontend *fe, int fd, const struct sockaddr *sa, int salen,
                     struct tls_server *tls)
{
    struct frontend_conn *c;
    struct tport *t = NULL;

    if (fe->draining) {
        evutil_closesocket(fd);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->fe = fe;
    c->state = FE_HEAD;
    if (sa->sa_family == AF_INET)
        evutil_inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->ip,
                         sizeof(c->ip));
    else if (sa->sa_family == AF_INET6)
        evutil_inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->ip,
                         sizeof(c->ip));
    else
        snprintf(c->ip, sizeof(c->ip), "unknown");
    netio_nodelay(fd);
    evutil_make_socket_nonblocking(fd);
    if (tls && !(t = tport_tls_server(tls, fd))) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->tls = t != NULL;
    c->nc = netio_conn_new(fe->base, fd, t, fe_read_cb, fe_write_cb, fe_event_cb, c);
    if (!c->nc) { /* fd closed */
        free(c);
        return;
    }
    TAILQ_INSERT_TAIL(&fe->conns, c, link);
    fe->nconns++;
    METRIC_SET(fe->stats.conns, fe->nconns);
    c->timeout = clock_tv(fe->conf->client_timeout_ms);
    netio_set_write_timeout(c->nc, &c->timeout);
    if (c->tls) {
        struct timeval hs = clock_tv(fe->conf->tls_handshake_timeout_ms);
        c->handshaking = 1;
        netio_handshake(c->nc, &hs); /* fe_event_cb: NETIO_CONNECTED, then reads */
        return;
    }
    netio_read_start(c->nc, &c->timeout);
}

/* After an answer is queued: go on with the next request, or close once written. */
static void fe_after_answer(struct frontend_conn *c)
{
    int flushed = netio_flush(c->nc);

    if (!c->keepalive || c->fe->draining) {
        c->state = FE_CLOSING;
        netio_read_stop(c->nc);
        /* close from the write callback, never from the caller's stack */
        if (flushed)
            netio_write_done_soon(c->nc);
        return;
    }
    c->state = FE_HEAD;
    c->scan = 0;
    c->head_deadline = 0;
    netio_read_start(c->nc, &c->timeout); /* restarts the idle timeout */
    if (evbuffer_get_length(netio_input(c->nc)))
        netio_read_kick(c->nc); /* pipelined requests already read */
}

/* Problem answer for a request we could not parse or frame; the connection closes. */
static void fe_reject(struct frontend_conn *c, enum problem_kind kind, const char *detail)
{
    struct evbuffer *out = netio_output(c->nc);
    struct evbuffer *body = evbuffer_new(), *hdrs = evbuffer_new();
    const struct problem_type *t = problem_type(kind);
    size_t before = evbuffer_get_length(out);
    struct frontend_req *r = c->req;
    int status;

    log_info("%s: %d %s: %s (connection %s)", c->ip, t->status, t->slug, detail,
             fe_state_str(c->state));
    /* out of memory: the status alone */
    status = body && hdrs ? problem_render(c->fe->conf->error_style, body, hdrs, kind, detail, NULL,
                                           r && r->request_id[0] ? r->request_id : NULL, NULL)
                          : t->status;
    headers_write_response(out, status, NULL, NULL,
                           hdrs ? (const char *)evbuffer_pullup(hdrs, -1) : NULL,
                           body ? evbuffer_get_length(body) : 0, 0, 0);
    c->linger = 1;
    if (body) {
        evbuffer_add_buffer(out, body);
        evbuffer_free(body);
    }
    if (hdrs)
        evbuffer_free(hdrs);
    if (r) {
        r->status = status;
        r->bytes_out = evbuffer_get_length(out) - before;
        r->outcome = t->slug;
        fe_req_free(r); /* also clears c->req */
    } else if (c->fe->alog) {
        /* refused before a request existed (a head too large, or that never ended) */
        struct accesslog_entry e = {.unix_ms = clock_unix_ms(),
                                    .client = c->ip,
                                    .status = status,
                                    .bytes_out = evbuffer_get_length(out) - before,
                                    .duration_ms = -1,
                                    .upstream_ms = -1,
                                    .redis_ms = -1,
                                    .outcome = t->slug};
        accesslog_write(c->fe->alog, &e);
    }
    c->keepalive = 0;
    fe_after_answer(c);
}

void frontend_respond(struct frontend_req *r, int status, const char *reason,
                      const struct http1_head *head, const char *extra, struct evbuffer *body)
{
    struct frontend_conn *c = r->conn;

    r->status = status;
    if (c) {
        struct evbuffer *out = netio_output(c->nc);
        size_t len = body ? evbuffer_get_length(body) : 0, before = evbuffer_get_length(out);
        /* HEAD and 304 answers keep the upstream's Content-Length, describing the
         * representation rather than this (empty) message. */
        int as_is = head && (r->is_head || status == 304);

        if (c->fe->draining)
            c->keepalive = 0;
        /* an HTTP/1.0 client keeps the connection only if told so */
        int keep = c->keepalive && r->head.minor == 0 ? HEADERS_KEEPALIVE_EXPLICIT : c->keepalive;

        headers_write_response(out, status, reason, head, extra, len, as_is, keep);
        if (body && !r->is_head)
            evbuffer_add_buffer(out, body);
        r->bytes_out = evbuffer_get_length(out) - before;
        log_debug("%s %s %s → %d (%llu ms)", c->ip, r->head.method, r->head.target, status,
                  (unsigned long long)((clock_mono_us() - r->started_us) / 1000));
        c->req = NULL;
        r->conn = NULL;
        fe_req_free(r);
        fe_after_answer(c);
    } else {
        r->answer_dropped = 1;
        fe_req_free(r);
    }
}

int frontend_problem_render(const struct frontend_req *r, enum problem_kind kind,
                            const char *detail, const char *extra, struct evbuffer *body,
                            struct evbuffer *hdrs)
{
    return problem_render(r->fe->conf->error_style, body, hdrs, kind, detail, r->head.target,
                          r->request_id, extra);
}

void frontend_problem(struct frontend_req *r, enum problem_kind kind, const char *detail,
                      const char *extra)
{
    struct evbuffer *body = evbuffer_new(), *hdrs = evbuffer_new();
    int status = 500;

    if (body && hdrs)
        status = frontend_problem_render(r, kind, detail, extra, body, hdrs);
    if (!r->outcome)
        r->outcome = problem_type(kind)->slug;
    frontend_respond(r, status, NULL, NULL, hdrs ? (const char *)evbuffer_pullup(hdrs, -1) : NULL,
                     body);
    if (body)
        evbuffer_free(body);
    if (hdrs)
        evbuffer_free(hdrs);
}

enum problem_kind frontend_upstream_problem(enum upstream_result result)
{
    switch (result) {
    case UPSTREAM_UNAVAILABLE:
        return PROBLEM_UPSTREAM_UNAVAILABLE;
    case UPSTREAM_TIMEOUT:
        return PROBLEM_UPSTREAM_TIMEOUT;
    case UPSTREAM_OK:
    case UPSTREAM_FAILED:
    case UPSTREAM_STREAM:
        break;
    }
    return PROBLEM_UPSTREAM_FAILED;
}

#define FE_STREAM_HIGH (1024 * 1024) /* client output that pauses the upstream */

static void fe_stream_data(struct frontend_req *r, struct evbuffer *body);

/* An answer too large to buffer passes through as it arrives. Framing to the client: the
 * upstream's Content-Length when it sent one, else chunked (HTTP/1.1 clients) or
 * close-delimited. A slow client pauses the upstream (r->x) until its output drains. */
static void fe_stream_start(struct frontend_req *r, const struct http1_head *head,
                            struct evbuffer *body)
{
    struct frontend_conn *c = r->conn;
    int length_known = head->count[HTTP1_H_CONTENT_LENGTH] > 0;
    const char *extra = NULL;

    r->streaming = 1;
    r->status = head->status;
    if (c) {
        int keep;
        if (c->fe->draining)
            c->keepalive = 0;
        if (!length_known && r->head.minor >= 1) {
            extra = "Transfer-Encoding: chunked\r\n";
            r->chunked_out = 1;
        } else if (!length_known) {
            c->keepalive = 0; /* an HTTP/1.0 client learns the end from the close */
        }
        keep = c->keepalive && r->head.minor == 0 ? HEADERS_KEEPALIVE_EXPLICIT : c->keepalive;
        /* length_as_is: the upstream's Content-Length, or (streamed) none at all */
        headers_write_response(netio_output(c->nc), head->status, head->reason, head, extra, 0, 1,
                               keep);
        log_debug("%s %s %s → %d (streaming)", c->ip, r->head.method, r->head.target, head->status);
    }
    fe_stream_data(r, body);
}

static void fe_stream_data(struct frontend_req *r, struct evbuffer *body)
{
    struct frontend_conn *c = r->conn;
    struct evbuffer *out;
    size_t len = body ? evbuffer_get_length(body) : 0;

    if (!c || len == 0) {
        if (len)
            evbuffer_drain(body, len); /* the client is gone: drop it */
        return;
    }
    out = netio_output(c->nc);
    r->bytes_out += len;
    if (r->chunked_out) {
        char size[24];
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        evbuffer_add(out, size, (size_t)n);
        evbuffer_add_buffer(out, body);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add_buffer(out, body);
    }
    if (!netio_flush(c->nc) && evbuffer_get_length(out) > FE_STREAM_HIGH && r->x && !r->paused) {
        r->paused = 1; /* resumed by fe_write_cb once the client has caught up */
        upstream_exchange_pause(r->x, 1);
    }
}

/* The streamed answer ended (complete = 0: the upstream cut it short, so the client
 * connection is closed without completing the message: it can never take it for whole).
 * Frees r. */
static void fe_stream_end(struct frontend_req *r, int complete)
{
    struct frontend_conn *c = r->conn;

    r->x = NULL; /* the exchange is finishing */
    if (!c) {
        fe_req_free(r);
    } else if (complete) {
        if (r->chunked_out)
            evbuffer_add(netio_output(c->nc), "0\r\n\r\n", 5);
        c->req = NULL;
        r->conn = NULL;
        fe_req_free(r);
        fe_after_answer(c);
    } else {
        log_warn("%s %s %s: the upstream cut its answer short mid-stream; closing the "
                 "client connection",
                 c->ip, r->head.method, r->head.target);
        c->req = NULL;
        r->conn = NULL;
        fe_req_free(r);
        fe_conn_free(c);
    }
}

/*
 * Every upstream answer passes here first. Streaming is the frontend's business end to
 * end: the handler is told once when an answer starts streaming, and otherwise sees only
 * the final result of an answer that arrived whole (which it answers).
 */
static void fe_upstream_cb(const struct upstream_response *resp, void *arg)
{
    struct frontend_req *r = arg;

    if (resp->result == UPSTREAM_STREAM) {
        if (r->streaming) {
            fe_stream_data(r, resp->body);
            return;
        }
        if (r->ucb)
            r->ucb(resp, r->uarg);
        fe_stream_start(r, resp->head, resp->body);
        return;
    }
    r->x = NULL; /* the exchange is finishing */
    r->upstream_us = clock_mono_us() - r->upstream_started_us;
    if (resp->sent)
        r->upstream_name = resp->replica;
    if (r->streaming) {
        if (resp->result == UPSTREAM_OK)
            fe_stream_data(r, resp->body);
        fe_stream_end(r, resp->result == UPSTREAM_OK);
        return;
    }
    r->ucb(resp, r->uarg);
}

int frontend_send_upstream(struct frontend_req *r, size_t keep, upstream_cb cb, void *arg)
{
    struct frontend *fe = r->fe;
    struct evbuffer *wire = fe->wire;
    size_t stream_after = keep > fe->conf->response_buffer ? keep : fe->conf->response_buffer;

    if (fe->past_deadline)
        return -1; /* the drain deadline passed: nothing more goes upstream */
    headers_write_request(wire, &r->head, r->client_ip, r->tls, r->has_body,
                          evbuffer_get_length(r->body), fe->default_host,
                          r->request_id_made ? r->request_id : NULL);
    r->upstream_started_us = clock_mono_us();
    evbuffer_add_buffer(wire, r->body);
    r->ucb = cb;
    r->uarg = arg;
    r->x = upstream_forward(fe->pool, wire, r->is_head, stream_after, fe_upstream_cb, r);
    evbuffer_drain(wire, evbuffer_get_length(wire)); /* the exchange took it, or failed */
    return r->x ? 0 : -1;
}

/* The keyless path's answer: what the upstream said, or the problem of its failure. */
static void fe_forward_done(const struct upstream_response *resp, void *arg)
{
    struct frontend_req *r = arg;

    if (resp->result == UPSTREAM_STREAM)
        return; /* the frontend streams it */
    if (resp->result == UPSTREAM_OK)
        frontend_respond(r, resp->head->status, resp->head->reason, resp->head, NULL, resp->body);
    else
        frontend_problem(r, frontend_upstream_problem(resp->result), resp->error, NULL);
}

void frontend_forward(struct frontend_req *r)
{
    if (r->fe->past_deadline) {
        frontend_problem(r, PROBLEM_DRAINING, "this replica is shutting down",
                         "Retry-After: 1\r\n");
        return;
    }
    if (!r->outcome)
        r->outcome = "keyless";
    if (frontend_send_upstream(r, 0, fe_forward_done, r) < 0)
        frontend_problem(r, PROBLEM_INTERNAL_ERROR, "could not start the upstream request", NULL);
}

/* The request is complete: offer it to the handlers, else forward it as it is. */
static void fe_dispatch(struct frontend_conn *c)
{
    struct frontend_req *r = c->req;

    /* Reading stays enabled (no epoll_ctl per request): a client that goes away is
     * noticed, and pipelined bytes wait in the input buffer, bounded in fe_read_cb. */
    c->state = FE_BUSY;
    c->keepalive = http1_keepalive(&r->head) && !c->fe->draining;
    r->bytes_in = evbuffer_get_length(r->body);
    for (struct frontend_handler *h = c->fe->handlers; h; h = h->next)
        if (h->on_req(h, r))
            return;
    frontend_forward(r);
}

/*
 * The request id: the client's X-Request-Id (first one; at most 128 bytes are kept), or
 * one made here — 128 bits, unique across workers and restarts: a random per-frontend
 * seed and a counter, as hex. One getrandom per worker, none per request.
 */
static void fe_request_id(struct frontend *fe, struct frontend_req *r)
{
    const char *v = r->head.count[HTTP1_H_X_REQUEST_ID]
                        ? http1_header_get_id(&r->head, HTTP1_H_X_REQUEST_ID, NULL)
                        : NULL;

    if (v && *v) {
        bytes_strlcpy(r->request_id, v, sizeof(r->request_id));
        return;
    }
    /* snprintf would cost more than the rest of the request */
    bytes_hex64(r->request_id, fe->rid_seed);
    bytes_hex64(r->request_id + 16, ++fe->rid_counter);
    r->request_id[32] = '\0';
    r->request_id_made = 1;
}

/* A head arrived: parse it, check framing and limits. 0 to go on, -1 when rejected. */
static int fe_start_request(struct frontend_conn *c, struct evbuffer *in, long n)
{
    const struct frontend_conf *conf = c->fe->conf;
    struct frontend_req *r;
    struct http1_error err;
    const char *expect;

    if ((r = TAILQ_FIRST(&c->fe->spare))) {
        struct evbuffer *body = r->body;

        TAILQ_REMOVE(&c->fe->spare, r, link);
        c->fe->nspare--;
        memset(r, 0, sizeof(*r));
        r->body = body;
    } else if (!(r = calloc(1, sizeof(*r))) || !(r->body = evbuffer_new())) {
        free(r);
        fe_reject(c, PROBLEM_INTERNAL_ERROR, "out of memory");
        return -1;
    }
    r->fe = c->fe;
    r->conn = c;
    r->seq = c->fe->next_seq++;
    r->started_us = clock_mono_us();
    r->started_unix_ms = clock_unix_ms();
    bytes_strlcpy(r->client_ip, c->ip, sizeof(r->client_ip));
    bytes_strlcpy(r->client_cert, c->cert, sizeof(r->client_cert));
    r->tls = c->tls;
    TAILQ_INSERT_TAIL(&c->fe->reqs, r, link);
    c->fe->nreqs++;
    c->req = r;

    if (http1_parse_request(&r->head, (const char *)evbuffer_pullup(in, n), (size_t)n, &err) < 0) {
        fe_reject(c, err.kind, err.detail);
        return -1;
    }
    evbuffer_drain(in, (size_t)n);
    c->scan = 0;
    fe_request_id(c->fe, r);
    if (http1_request_framing(&r->head, &c->kind, &c->remaining, &err) < 0) {
        fe_reject(c, err.kind, err.detail);
        return -1;
    }
    if (strcmp(r->head.method, "CONNECT") == 0) {
        fe_reject(c, PROBLEM_METHOD_NOT_SUPPORTED, "CONNECT is not supported by a reverse proxy");
        return -1;
    }
    r->is_head = strcmp(r->head.method, "HEAD") == 0;
    r->has_body =
        c->kind != HTTP1_BODY_NONE || http1_header_get_id(&r->head, HTTP1_H_CONTENT_LENGTH, NULL);
    if (c->kind == HTTP1_BODY_LENGTH && c->remaining > conf->max_body) {
        char d[128];
        snprintf(d, sizeof(d), "Content-Length %llu exceeds the limit of %zu bytes",
                 (unsigned long long)c->remaining, conf->max_body);
        fe_reject(c, PROBLEM_BODY_TOO_LARGE, d);
        return -1;
    }
    c->total = 0;
    memset(&c->chunked, 0, sizeof(c->chunked));
    expect = http1_header_get_id(&r->head, HTTP1_H_EXPECT, NULL);
    if (expect && r->head.minor == 1 && c->kind != HTTP1_BODY_NONE &&
        strcasecmp(expect, "100-continue") == 0 && evbuffer_get_length(in) == 0) {
        evbuffer_add(netio_output(c->nc), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        netio_flush(c->nc);
    }
    c->state = FE_BODY;
    return 0;
}

/*
 * client-timeout bounds a whole request head, not each read of it (a client trickling a
 * byte at a time would otherwise hold the connection forever). The reader's timeout is
 * an inactivity timeout; while a head is incomplete it is set to what is left of the
 * head's deadline instead. started: bytes of a head have arrived.
 */
static void fe_head_deadline(struct frontend_conn *c, int started)
{
    uint64_t now;
    struct timeval tv;

    if (!started)
        return; /* an idle keep-alive connection: client-timeout of silence */
    now = clock_mono_ms();
    if (!c->head_deadline)
        c->head_deadline = now + c->fe->conf->client_timeout_ms;
    tv = clock_tv(c->head_deadline > now ? c->head_deadline - now : 0);
    netio_read_start(c->nc, &tv);
}

/* Consume what is buffered, as far as the state allows. */
static void fe_process(struct frontend_conn *c)
{
    const struct frontend_conf *conf = c->fe->conf;
    struct evbuffer *in = netio_input(c->nc);

    for (;;) {
        if (c->state == FE_HEAD) {
            long n = http1_head_end(in, &c->scan, conf->max_headers, 1);
            if (n == 0) {
                fe_head_deadline(c, evbuffer_get_length(in) > 0);
                return;
            }
            if (c->head_deadline) {
                c->head_deadline = 0; /* the body: client-timeout between reads */
                netio_read_start(c->nc, &c->timeout);
            }
            if (n == -2) {
                fe_reject(c, PROBLEM_BAD_REQUEST, "bare LF in message head (lines end in CRLF)");
                return;
            }
            if (n < 0) {
                char d[96];
                snprintf(d, sizeof(d), "request head exceeds the limit of %zu bytes",
                         conf->max_headers);
                fe_reject(c, PROBLEM_HEADERS_TOO_LARGE, d);
                return;
            }
            if (fe_start_request(c, in, n) < 0)
                return;
        }
        if (c->state != FE_BODY)
            return;
        if (c->kind == HTTP1_BODY_LENGTH) {
            size_t avail = evbuffer_get_length(in);
            size_t take = avail < c->remaining ? avail : (size_t)c->remaining;
            evbuffer_remove_buffer(in, c->req->body, take);
            c->remaining -= take;
            if (c->remaining)
                return;
        } else if (c->kind == HTTP1_BODY_CHUNKED) {
            struct http1_error err;
            int r = http1_chunked_decode(&c->chunked, in, c->req->body, conf->max_body, &c->total,
                                         conf->max_headers, &err);
            if (r < 0) {
                fe_reject(c, err.kind, err.detail);
                return;
            }
            if (r == 0)
                return;
        }
        fe_dispatch(c);
        return; /* the rest waits until the answer is queued */
    }
}

/* The answer is out: shut our side, then read and drop what still comes, bounded. */
static void fe_linger_start(struct frontend_conn *c)
{
    struct timeval tv = clock_tv(FE_LINGER_READ_MS);

    c->state = FE_LINGER;
    c->linger_deadline = clock_mono_ms() + FE_LINGER_MS;
    netio_shutdown_write(c->nc);
    evbuffer_drain(netio_input(c->nc), evbuffer_get_length(netio_input(c->nc)));
    netio_read_start(c->nc, &tv);
}

static void fe_read_cb(struct netio_conn *nc, void *arg)
{
    struct frontend_conn *c = arg;

    if (c->state == FE_LINGER) {
        struct evbuffer *in = netio_input(nc);
        c->lingered += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (c->lingered > FE_LINGER_MAX_BYTES || clock_mono_ms() >= c->linger_deadline)
            fe_conn_free(c);
        return;
    }
    if (c->state == FE_HEAD || c->state == FE_BODY)
        fe_process(c);
    else if (evbuffer_get_length(netio_input(nc)) > c->fe->conf->max_headers)
        netio_read_stop(c->nc); /* enough pipelined; resumed after the answer */
}

static void fe_write_cb(struct netio_conn *nc, void *arg)
{
    struct frontend_conn *c = arg;

    (void)nc;
    if (c->req && c->req->paused && c->req->x) {
        c->req->paused = 0; /* the client caught up with a streamed answer */
        upstream_exchange_pause(c->req->x, 0);
    }
    if (c->state == FE_CLOSING) {
        if (c->linger && !c->read_closed)
            fe_linger_start(c);
        else
            fe_conn_free(c);
    }
}

/* The TLS handshake ended (what: NETIO_CONNECTED, or why not). */
static void fe_handshake_done(struct frontend_conn *c, short what)
{
    struct tport *t = netio_tport(c->nc);

    c->handshaking = 0;
    if (what & NETIO_CONNECTED) {
        METRIC_INC(c->fe->stats.tls_handshakes);
        if (tport_tls_reused(t))
            METRIC_INC(c->fe->stats.tls_resumed);
        if (!tport_peer_fingerprint(t, c->cert))
            c->cert[0] = '\0';
        netio_read_start(c->nc, &c->timeout);
        return;
    }
    METRIC_INC(c->fe->stats.tls_failures);
    if (t->not_tls) {
        /* plain HTTP on the TLS port: say so in plain HTTP (as nginx does), then close */
        static const char msg[] = "HTTP/1.1 400 Bad Request\r\n"
                                  "Content-Type: text/plain\r\n"
                                  "Content-Length: 48\r\n"
                                  "Connection: close\r\n\r\n"
                                  "This port speaks TLS: use https:// to connect.\r\n";
        ssize_t n = send(netio_fd(c->nc), msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
        log_info("%s: plain HTTP sent to the TLS port; answered 400", c->ip);
    } else {
        log_info("%s: %s", c->ip,
                 (what & NETIO_TIMEOUT) ? "TLS handshake did not finish within "
                                          "tls-handshake-timeout"
                                        : netio_error(c->nc));
    }
    fe_conn_free(c);
}

static void fe_event_cb(struct netio_conn *nc, short what, void *arg)
{
    struct frontend_conn *c = arg;

    if (c->handshaking) {
        fe_handshake_done(c, what);
        return;
    }

    if ((what & NETIO_TIMEOUT) && (what & NETIO_READING) &&
        (c->state == FE_BUSY || c->state == FE_CLOSING)) {
        /* the client waits for a slow answer: that is not the client's fault (and a
         * closing connection's write timeout is the bufferevent's) */
        return;
    }
    if ((what & NETIO_EOF) && (what & NETIO_READING) && c->state == FE_BUSY) {
        /* A half-close after a complete request is legal HTTP/1.1 (the client says it
         * sends nothing more): answer it, then close. A client that is really gone is
         * noticed when the answer cannot be written. */
        c->read_closed = 1;
        c->keepalive = 0;
        netio_read_stop(c->nc);
        return;
    }
    if ((what & NETIO_TIMEOUT) && (what & NETIO_READING) &&
        (c->state == FE_BODY || (c->state == FE_HEAD && evbuffer_get_length(netio_input(nc))))) {
        /* a request started but did not arrive in time */
        fe_reject(c, PROBLEM_REQUEST_TIMEOUT, "the request did not arrive within client-timeout");
        return;
    }
    /* EOF, error, idle keep-alive timeout, write timeout, the end of lingering: close */
    fe_conn_free(c);
}

struct frontend *frontend_new(struct event_base *base, const struct frontend_conf *conf,
                              struct upstream_pool *pool, const char *default_host, int worker_id)
{
    struct frontend *fe = calloc(1, sizeof(*fe));

    if (!fe)
        return NULL;
    if (getrandom(&fe->rid_seed, sizeof(fe->rid_seed), 0) != sizeof(fe->rid_seed))
        fe->rid_seed = clock_unix_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)worker_id;
    if (conf->access_log && strcmp(conf->access_log, "off") != 0 &&
        !(fe->alog = accesslog_new(base, conf->access_log, worker_id))) {
        free(fe);
        return NULL;
    }
    fe->base = base;
    fe->conf = conf;
    fe->pool = pool;
    snprintf(fe->default_host, sizeof(fe->default_host), "%s", default_host ? default_host : "");
    fe->handlers_tail = &fe->handlers;
    TAILQ_INIT(&fe->conns);
    TAILQ_INIT(&fe->reqs);
    TAILQ_INIT(&fe->spare);
    fe->drained_ev = event_new(base, -1, 0, fe_drained_cb, fe);
    fe->wire = evbuffer_new();
    if (!fe->drained_ev || !fe->wire) {
        if (fe->drained_ev)
            event_free(fe->drained_ev);
        if (fe->wire)
            evbuffer_free(fe->wire);
        accesslog_free(fe->alog);
        free(fe);
        return NULL;
    }
    return fe;
}

uint64_t frontend_next_seq(const struct frontend *fe)
{
    return fe->next_seq;
}

uint64_t frontend_oldest_seq(const struct frontend *fe)
{
    const struct frontend_req *r = TAILQ_FIRST(&fe->reqs); /* in the order they started */

    return r ? r->seq : fe->next_seq;
}

void frontend_set_upstreams(struct frontend *fe, struct upstream_pool *pool,
                            const char *default_host)
{
    fe->pool = pool;
    snprintf(fe->default_host, sizeof(fe->default_host), "%s", default_host ? default_host : "");
}

void frontend_reopen_log(struct frontend *fe)
{
    if (fe->alog)
        accesslog_reopen(fe->alog);
}

void frontend_add_handler(struct frontend *fe, struct frontend_handler *h)
{
    h->next = NULL;
    *fe->handlers_tail = h;
    fe->handlers_tail = &h->next;
}

void frontend_counts(const struct frontend *fe, size_t *conns, size_t *reqs)
{
    *conns = fe->nconns;
    *reqs = fe->nreqs;
}

void frontend_drain(struct frontend *fe, void (*on_drained)(void *arg), void *arg)
{
    struct frontend_conn *c, *next;

    fe->draining = 1;
    fe->on_drained = on_drained;
    fe->drained_arg = arg;
    for (c = TAILQ_FIRST(&fe->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        c->keepalive = 0;
        if (c->state == FE_HEAD && evbuffer_get_length(netio_input(c->nc)) == 0 &&
            evbuffer_get_length(netio_output(c->nc)) == 0)
            fe_conn_free(c);
    }
    fe_maybe_drained(fe);
}

int frontend_past_deadline(const struct frontend *fe)
{
    return fe->past_deadline;
}

size_t frontend_drain_deadline(struct frontend *fe, const char *why)
{
    struct frontend_conn *c, *next;
    struct frontend_req *r;

    fe->past_deadline = 1;
    /* a request still arriving will not be answered: close its connection */
    for (c = TAILQ_FIRST(&fe->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == FE_HEAD || c->state == FE_BODY || c->state == FE_LINGER)
            fe_conn_free(c);
    }
    /* Each abort answers (or records, then answers) and may free any request: scan
     * again from the start after each one. */
    for (;;) {
        TAILQ_FOREACH(r, &fe->reqs, link)
        {
            if (r->x)
                break;
        }
        if (!r)
            break;
        upstream_exchange_abort(r->x, why);
    }
    return fe->nreqs;
}

void frontend_free(struct frontend *fe)
{
    struct frontend_conn *c;
    struct frontend_req *r;

    if (!fe)
        return;
    fe->on_drained = NULL;
    fe->freeing = 1;
    while ((c = TAILQ_FIRST(&fe->conns))) {
        if (c->req)
            c->state = FE_BODY; /* free the request with the connection */
        fe_conn_free(c);
    }
    while ((r = TAILQ_FIRST(&fe->reqs)))
        fe_req_free(r);
    while ((r = TAILQ_FIRST(&fe->spare))) {
        TAILQ_REMOVE(&fe->spare, r, link);
        evbuffer_free(r->body);
        free(r);
    }
    event_free(fe->drained_ev);
    evbuffer_free(fe->wire);
    accesslog_free(fe->alog);
    free(fe);
}
