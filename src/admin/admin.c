#include "admin/admin.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/log.h"
#include "core/metrics.h"
#include "http/http1.h"
#include "idem/idkey.h"
#include "idem/jsoncanon.h"
#include "idem/record.h"
#include "idem/seal.h"
#include "idem/store.h"
#include "redis/cluster.h"

const struct conf_directive admin_conf_rows[] = {
    {.name = "admin-listen",
     .type = CONF_T_ADDR,
     .flags = CONF_F_PORT_ZERO,
     .off = offsetof(struct admin_conf, listen),
     .arg = "HOST:PORT",
     .help = "admin endpoint (/metrics, /readyz, /keys/...; off unless set)"},
    {.name = "admin-token",
     .type = CONF_T_STRING,
     .off = offsetof(struct admin_conf, token),
     .arg = "TOKEN",
     .help = "bearer token for /keys (or $IDEMPROXY_ADMIN_TOKEN)"},
    CONF_END,
};

/* The parts of the policy a record's Redis key is computed from. */
struct admin_scope {
    int key_max_length;
    char *key_prefix;
    char **scope_headers;
    size_t nscope_headers;
};

struct admin {
    struct frontend_handler super; /* first: the frontend sees only this */
    struct frontend_conf fconf;    /* the client-side limits, without the access log */
    const struct admin_conf *conf;
    /* What /keys computes and opens records with, as of the last SIGHUP (admin_reload
     * swaps both): the policy's parts (owned) and a copy of the record-keys (owned, NULL
     * without a file); lock held by whoever reads or swaps them */
    struct admin_scope *scope;
    struct seal_keyring *ring;
    pthread_mutex_t lock;
    struct redis_client *redis; /* the admin thread's own, for /keys */
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

/* The worker's pool now: a reload may swap it (a replaced pool lives until exit). */
static const struct upstream_pool *admin_pool(const struct admin_source *src)
{
    return __atomic_load_n(src->pool, __ATOMIC_ACQUIRE);
}

static void admin_json(struct frontend_req *r, int status, const char *json)
{
    struct evbuffer *b = evbuffer_new();

    if (b)
        evbuffer_add(b, json, strlen(json));
    frontend_respond(r, status, NULL, NULL, "Content-Type: application/json\r\n", b);
    if (b)
        evbuffer_free(b);
}

#define ADMIN_MAX_NODES 64

/* The distinct Redis nodes the workers' commands go to (Sentinel mode: the primary each
 * was told of), with how many workers use each. Returns how many. */
static size_t admin_nodes(const struct admin *a, char nodes[][REDIS_NODE_NAME_MAX],
                          unsigned *workers)
{
    size_t n = 0;

    for (size_t i = 0; i < a->nsrc; i++) {
        char mine[REDIS_MAX_NODES][REDIS_NODE_NAME_MAX];
        size_t m = redis_nodes(a->src[i].redis, mine, REDIS_MAX_NODES);
        for (size_t j = 0; j < m; j++) {
            size_t k;
            for (k = 0; k < n && strcmp(nodes[k], mine[j]) != 0; k++)
                ;
            if (k == n && n < ADMIN_MAX_NODES) {
                memcpy(nodes[n], mine[j], sizeof(mine[j]));
                workers[n++] = 0;
            }
            if (k < n)
                workers[k]++;
        }
    }
    return n;
}

/* ["host:port", ...] (node names are host:port or "(primary of 'NAME')": no escaping
 * beyond quotes and backslashes is needed, and those are escaped). */
static void admin_nodes_json(const struct admin *a, struct evbuffer *b)
{
    char nodes[ADMIN_MAX_NODES][REDIS_NODE_NAME_MAX];
    unsigned workers[ADMIN_MAX_NODES];
    size_t n = admin_nodes(a, nodes, workers);

    evbuffer_add(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        evbuffer_add_printf(b, "%s\"", i ? "," : "");
        for (const char *p = nodes[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                evbuffer_add(b, "\\", 1);
            evbuffer_add(b, p, 1);
        }
        evbuffer_add(b, "\"", 1);
    }
    evbuffer_add(b, "]", 1);
}

static void admin_readyz(struct admin *a, struct frontend_req *r)
{
    struct evbuffer *b = evbuffer_new();
    int draining = METRIC_GET(a->draining), redis_down = 0, upstream_up = 0, n = 0;

    for (size_t i = 0; i < a->nsrc; i++) {
        const struct upstream_pool *p = admin_pool(&a->src[i]); /* once: a reload swaps it */
        redis_down += !redis_ready(a->src[i].redis);
        for (size_t k = 0; k < upstream_pool_replicas(p); k++) {
            struct upstream_replica_stats rs;
            upstream_pool_replica(p, k, &rs);
            upstream_up += !rs.down;
        }
    }
    if (!b) {
        admin_json(r, 500, "{\"status\":\"out of memory\"}\n");
        return;
    }
    if (!draining && !redis_down && upstream_up) {
        evbuffer_add_printf(b, "{\"status\":\"ready\",\"redis\":");
        admin_nodes_json(a, b);
        evbuffer_add_printf(b, "}\n");
    } else {
        evbuffer_add_printf(b, "{\"status\":\"not ready\",\"redis\":");
        admin_nodes_json(a, b);
        evbuffer_add_printf(b, ",\"reasons\":[");
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

/* One upstream summed over the workers, by name (their lists are the same, except for
 * the moment a reload reaches one worker before another): failovers, back-offs, and 1
 * while it is out of back-off in every worker. */
static void admin_replica_sum(const struct admin *a, const char *name, uint64_t out[3])
{
    out[0] = out[1] = 0;
    out[2] = 1;
    for (size_t i = 0; i < a->nsrc; i++) {
        const struct upstream_pool *p = admin_pool(&a->src[i]);
        for (size_t j = 0; j < upstream_pool_replicas(p); j++) {
            struct upstream_replica_stats st;
            upstream_pool_replica(p, j, &st);
            if (strcmp(st.name, name) != 0)
                continue;
            out[0] += st.failovers;
            out[1] += st.backoffs;
            if (st.down)
                out[2] = 0;
            break;
        }
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
        rs.errors += r1.errors;
        rs.reconnects += r1.reconnects;
        rs.queued += r1.queued;
        rs.wait_ok += r1.wait_ok;
        rs.wait_short += r1.wait_short;
        rs.wait_error += r1.wait_error;
        rs.pings += r1.pings;
        rs.moved += r1.moved;
        rs.ask += r1.ask;
        for (int k = 0; k < REDIS_RETRY_REASONS; k++)
            rs.retries[k] += r1.retries[k];
        rs.refreshes += r1.refreshes;
        rs.switches += r1.switches;
        rs.resends += r1.resends;
        rs.tls_handshakes += r1.tls_handshakes;
        rs.tls_resumed += r1.tls_resumed;
        rs.cluster |= r1.cluster;
        if (r1.cluster && (i == 0 || r1.map_age_ms > rs.map_age_ms))
            rs.map_age_ms = r1.map_age_ms; /* the oldest map of any worker */
        redis_ready_n += (uint64_t)redis_ready(a->src[i].redis);
        upstream_pool_counters(admin_pool(&a->src[i]), &u1);
        us.connects += u1.connects;
        us.reused += u1.reused;
        us.tls_resumed += u1.tls_resumed;
        us.failovers += u1.failovers;
        idem_handler_stats(a->src[i].idem, &i1);
        is.record_retries += i1.record_retries;
        is.records_lost += i1.records_lost;
        is.in_flight += i1.in_flight;
        is.claims_failed_redis += i1.claims_failed_redis;
        is.claims_failed_wait += i1.claims_failed_wait;
        is.claims_unconfirmed += i1.claims_unconfirmed;
        is.records_unconfirmed += i1.records_unconfirmed;
        is.records_unreadable += i1.records_unreadable;
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
    {
        const struct {
            const char *name, *type, *help;
            uint64_t v;
        } one[] = {
            {"idemproxy_redis_commands_total", "counter", "Redis commands issued.", rs.commands},
            {"idemproxy_redis_timeouts_total", "counter",
             "Redis commands that missed redis-timeout, sent or not.", rs.timeouts},
            {"idemproxy_redis_errors_total", "counter",
             "Redis commands that failed otherwise: an error reply (OOM, READONLY...) or the "
             "connection lost.",
             rs.errors},
            {"idemproxy_redis_reconnects_total", "counter",
             "Redis connections dropped for a missed deadline and made again.", rs.reconnects},
            {"idemproxy_redis_queued_total", "counter",
             "Redis commands issued while there was no connection (queued).", rs.queued},
            {"idemproxy_redis_ready_workers", "gauge",
             "Workers whose Redis connection is up with every script loaded.", redis_ready_n},
            {"idemproxy_records_retried_total", "counter",
             "Record attempts sent again after a failure.", is.record_retries},
            {"idemproxy_records_lost_total", "counter",
             "Answers never recorded: Redis away for the whole lease.", is.records_lost},
            {"idemproxy_redis_pings_total", "counter",
             "PINGs of an idle Redis connection (a frozen Redis fails them: /readyz 503).",
             rs.pings},
            {"idemproxy_redis_resends_total", "counter",
             "Commands that may run twice (the claim) sent again after their connection was "
             "lost before the reply.",
             rs.resends},
            {"idemproxy_redis_tls_handshakes_total", "counter",
             "TLS connections made to Redis nodes (redis-tls): none per request in steady state.",
             rs.tls_handshakes},
            {"idemproxy_redis_tls_resumed_total", "counter",
             "TLS connections to Redis nodes that resumed the node's last session.",
             rs.tls_resumed},
            {"idemproxy_redis_master_switches_total", "counter",
             "Sentinel +switch-master announcements heard for our master (per worker).",
             rs.switches},
            {"idemproxy_claims_unconfirmed_total", "counter",
             "Claims forwarded though WAIT did not confirm them (redis-wait-policy degrade).",
             is.claims_unconfirmed},
            {"idemproxy_records_unreadable_total", "counter",
             "Replays refused with 502: a stored record that does not open (a key not in "
             "record-keys, altered, or plain where records are sealed).",
             is.records_unreadable},
            {"idemproxy_records_unconfirmed_total", "counter",
             "Answers recorded on the primary that WAIT never confirmed within the lease.",
             is.records_unconfirmed},
            {"idemproxy_keyed_requests_in_flight", "gauge", "Keyed requests being handled now.",
             is.in_flight},
            {"idemproxy_client_connections", "gauge", "Open client connections.", fs.conns},
            {"idemproxy_tls_handshakes_total", "counter",
             "Client TLS handshakes completed on tls-listen (full and resumed).",
             fs.tls_handshakes},
            {"idemproxy_tls_resumed_total", "counter",
             "Client TLS handshakes that resumed a session (a ticket).", fs.tls_resumed},
            {"idemproxy_tls_handshake_failures_total", "counter",
             "Client TLS handshakes that failed or timed out (plain text on the TLS port "
             "included).",
             fs.tls_failures},
            {"idemproxy_upstream_connections_opened_total", "counter",
             "TCP connections opened to upstreams.", us.connects},
            {"idemproxy_upstream_connections_reused_total", "counter",
             "Requests sent on a pooled upstream connection.", us.reused},
            {"idemproxy_upstream_tls_resumed_total", "counter",
             "Upstream TLS connections that resumed a session (upstream-tls-session-reuse).",
             us.tls_resumed},
            {"idemproxy_draining", "gauge", "1 once the process is shutting down.",
             (uint64_t)METRIC_GET(a->draining)},
        };
        for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
            metrics_header(b, one[i].name, one[i].type, one[i].help);
            metrics_value(b, one[i].name, NULL, one[i].v);
        }
    }
    {
        char nodes[ADMIN_MAX_NODES][REDIS_NODE_NAME_MAX];
        unsigned workers[ADMIN_MAX_NODES];
        size_t n = admin_nodes(a, nodes, workers);
        metrics_header(b, "idemproxy_redis_node_workers", "gauge",
                       "Workers whose Redis commands go to this node (with Sentinel: the "
                       "primary they were told of).");
        for (size_t i = 0; i < n; i++) {
            evbuffer_add_printf(b, "idemproxy_redis_node_workers{node=\"");
            admin_label(b, nodes[i]);
            evbuffer_add_printf(b, "\"} %u\n", workers[i]);
        }
    }
    metrics_header(b, "idemproxy_redis_redirects_total", "counter",
                   "Redis Cluster redirects followed, by kind: moved (the slot map changed), "
                   "ask (a slot being migrated).");
    metrics_value(b, "idemproxy_redis_redirects_total", "kind=\"moved\"", rs.moved);
    metrics_value(b, "idemproxy_redis_redirects_total", "kind=\"ask\"", rs.ask);
    metrics_header(b, "idemproxy_redis_retries_total", "counter",
                   "Redis commands sent again after an error that says they did not run, by "
                   "reason.");
    for (int k = 1; k < REDIS_RETRY_REASONS; k++) {
        char label[48];
        snprintf(label, sizeof(label), "reason=\"%s\"", cluster_retry_name(k));
        metrics_value(b, "idemproxy_redis_retries_total", label, rs.retries[k]);
    }
    if (rs.cluster) {
        metrics_header(b, "idemproxy_redis_topology_refreshes_total", "counter",
                       "Redis Cluster slot map reads (CLUSTER SLOTS).");
        metrics_value(b, "idemproxy_redis_topology_refreshes_total", NULL, rs.refreshes);
        metrics_header(b, "idemproxy_redis_slot_map_age_seconds", "gauge",
                       "Age of the oldest Redis Cluster slot map a worker routes by (+Inf: "
                       "none read yet).");
        if (rs.map_age_ms == UINT64_MAX)
            evbuffer_add_printf(b, "idemproxy_redis_slot_map_age_seconds +Inf\n");
        else
            evbuffer_add_printf(b, "idemproxy_redis_slot_map_age_seconds %.3f\n",
                                (double)rs.map_age_ms / 1000.0);
    }
    metrics_header(b, "idemproxy_redis_wait_total", "counter",
                   "WAITs after claims, renewals and records, by result: ok (enough replicas), "
                   "short (fewer in time), error (refused).");
    metrics_value(b, "idemproxy_redis_wait_total", "result=\"ok\"", rs.wait_ok);
    metrics_value(b, "idemproxy_redis_wait_total", "result=\"short\"", rs.wait_short);
    metrics_value(b, "idemproxy_redis_wait_total", "result=\"error\"", rs.wait_error);
    metrics_header(b, "idemproxy_claims_failed_closed_total", "counter",
                   "Keyed requests answered 503 rather than forwarded unprotected, by reason: "
                   "redis (it failed; on-redis-error reject), wait (the claim was not "
                   "confirmed; redis-wait-policy fail).");
    metrics_value(b, "idemproxy_claims_failed_closed_total", "reason=\"redis\"",
                  is.claims_failed_redis);
    metrics_value(b, "idemproxy_claims_failed_closed_total", "reason=\"wait\"",
                  is.claims_failed_wait);
    /* per upstream, in the first worker's order */
    if (a->nsrc) {
        const struct upstream_pool *first = admin_pool(&a->src[0]);
        const char *names[3] = {"idemproxy_upstream_failovers_total",
                                "idemproxy_upstream_backoffs_total", "idemproxy_upstream_up"};
        const char *help[3] = {"Connects to this upstream that failed (the request moved on).",
                               "Times this upstream was put in back-off.",
                               "1 while this upstream is out of back-off in every worker."};
        for (int m = 0; m < 3; m++) {
            metrics_header(b, names[m], m < 2 ? "counter" : "gauge", help[m]);
            for (size_t k = 0; k < upstream_pool_replicas(first); k++) {
                struct upstream_replica_stats want;
                uint64_t v[3];
                upstream_pool_replica(first, k, &want);
                admin_replica_sum(a, want.name, v);
                evbuffer_add_printf(b, "%s{upstream=\"", names[m]);
                admin_label(b, want.name);
                evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)v[m]);
            }
        }
    }
    frontend_respond(r, 200, NULL, NULL, "Content-Type: text/plain; version=0.0.4\r\n", b);
    evbuffer_free(b);
}

/* ---- /keys: inspect and purge one key ---- */

#define ADMIN_MAX_SCOPE 16

/* What a /keys request body asks. */
struct admin_keyq {
    struct evbuffer *key;
    char *names[ADMIN_MAX_SCOPE], *values[ADMIN_MAX_SCOPE];
    size_t nscope;
    int force, body, bad;
};

/* One /keys request waiting for Redis: freed with its request (the cleanup hook). */
struct admin_keyop {
    struct admin *a;
    struct frontend_req *r;
    struct frontend_cleanup cleanup;
    struct redis_cmd *cmd;
    int purge, force, body;
    char id[17];
    char rkey[512]; /* the Redis key: a sealed record's additional data */
};

static void admin_keyop_free(void *arg)
{
    struct admin_keyop *op = arg;

    redis_cancel(op->cmd);
    free(op);
}

static int admin_scope_member(const char *name, size_t nlen, const char *value, size_t vlen,
                              void *arg)
{
    struct admin_keyq *q = arg;
    struct evbuffer *v = evbuffer_new();
    size_t n;

    if (!v || q->nscope == ADMIN_MAX_SCOPE || jsoncanon_string(value, vlen, v) != 0) {
        if (v)
            evbuffer_free(v);
        return -1;
    }
    n = evbuffer_get_length(v);
    q->names[q->nscope] = strndup(name, nlen);
    q->values[q->nscope] = malloc(n + 1);
    if (q->values[q->nscope]) {
        evbuffer_remove(v, q->values[q->nscope], n);
        q->values[q->nscope][n] = '\0';
    }
    q->nscope++;
    evbuffer_free(v);
    return q->names[q->nscope - 1] && q->values[q->nscope - 1] ? 0 : -1;
}

static int admin_key_member(const char *name, size_t nlen, const char *value, size_t vlen,
                            void *arg)
{
    struct admin_keyq *q = arg;

    if (strcmp(name, "key") == 0)
        return !q->key && (q->key = evbuffer_new()) ? jsoncanon_string(value, vlen, q->key) : -1;
    if (strcmp(name, "scope") == 0)
        return jsoncanon_members(value, vlen, admin_scope_member, q);
    if (strcmp(name, "force") == 0 || strcmp(name, "body") == 0) {
        int *flag = name[0] == 'f' ? &q->force : &q->body;
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
            return -1;
        *flag = value[0] == 't';
        return 0;
    }
    return -1; /* a member we do not know: say so rather than ignore it */
}

static void admin_keyq_clear(struct admin_keyq *q)
{
    if (q->key)
        evbuffer_free(q->key);
    for (size_t i = 0; i < q->nscope; i++) {
        free(q->names[i]);
        free(q->values[i]);
    }
}

/* Is this admin request authorised for /keys? Answers it (401/403) when not. */
static int admin_authorised(struct admin *a, struct frontend_req *r)
{
    const char *auth = http1_header_get(&r->head, "Authorization", NULL);
    const char *tok = a->conf->token;
    size_t tlen = tok ? strlen(tok) : 0;

    if (!tok || !*tok) {
        admin_json(r, 403, "{\"error\":\"the /keys routes are off: set admin-token\"}\n");
        return 0;
    }
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != tlen ||
        CRYPTO_memcmp(auth + 7, tok, tlen) != 0) {
        admin_json(r, 401, "{\"error\":\"Authorization: Bearer <admin-token> required\"}\n");
        return 0;
    }
    return 1;
}

/*
 * The Redis key of q, as the keyed handler computes it for a request that carries q's key
 * and scope headers. -1 (answered 400) when q cannot be such a request.
 */
static int admin_rkey(struct admin *a, struct frontend_req *r, const struct admin_keyq *q,
                      char *rkey, size_t len, char id16[17])
{
    struct evbuffer *raw = evbuffer_new();
    struct http1_head head;
    struct http1_error err;
    uint8_t id[IDKEY_HASH_LEN];
    char key[4097], hex[IDKEY_HEX_LEN + 1];
    size_t klen = evbuffer_get_length(q->key);
    const char *cert = NULL;
    const struct admin_scope *sc = NULL; /* non-NULL: a->lock is held */
    int rc = -1;

    if (!raw)
        goto out;
    pthread_mutex_lock(&a->lock); /* the scope of the last reload, until out */
    sc = a->scope;
    /* the key itself, as the keyed handler has it once the header is unquoted */
    if (klen == 0 || klen > (size_t)sc->key_max_length ||
        klen != (size_t)evbuffer_copyout(q->key, key, klen))
        goto out;
    for (size_t i = 0; i < klen; i++)
        if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] > 0x7e)
            goto out;
    key[klen] = '\0';
    evbuffer_add_printf(raw, "POST / HTTP/1.1\r\nHost: admin\r\n");
    for (size_t i = 0; i < q->nscope; i++) {
        if (strcmp(q->names[i], IDKEY_SCOPE_CLIENT_CERT) == 0)
            cert = q->values[i]; /* the fingerprint, in hex */
        else
            evbuffer_add_printf(raw, "%s: %s\r\n", q->names[i], q->values[i]);
    }
    evbuffer_add(raw, "\r\n", 2);
    if (http1_parse_request(&head, (const char *)evbuffer_pullup(raw, -1), evbuffer_get_length(raw),
                            &err) < 0)
        goto out; /* a scope name or value no request could carry */
    rc = idkey_record_id(&head, sc->scope_headers, sc->nscope_headers, cert, key, klen, id);
    http1_head_clear(&head);
    if (rc == 0) {
        idkey_hex(id, hex);
        snprintf(rkey, len, "%s%s", sc->key_prefix, hex);
        memcpy(id16, hex, 16);
        id16[16] = '\0';
    }
out:
    if (sc)
        pthread_mutex_unlock(&a->lock);
    if (raw)
        evbuffer_free(raw);
    if (rc < 0)
        admin_json(r, 400,
                   "{\"error\":\"the body must be {\\\"key\\\": \\\"...\\\", \\\"scope\\\": "
                   "{\\\"Header\\\": \\\"value\\\"}} with a valid key and header names and "
                   "values\"}\n");
    return rc;
}

static void admin_inspect_cb(enum redis_status st, const struct redisReply *reply,
                             const char *errstr, void *arg)
{
    struct admin_keyop *op = arg;
    struct store_inspect_result res;
    struct evbuffer *b;

    op->cmd = NULL;
    if (st != REDIS_CMD_OK || store_inspect_result(reply, &res) < 0) {
        admin_json(op->r, 503, "{\"error\":\"redis did not answer\"}\n");
        return;
    }
    if (!(b = evbuffer_new())) {
        admin_json(op->r, 500, "{\"error\":\"out of memory\"}\n");
        return;
    }
    if (res.state == 0) {
        evbuffer_add_printf(b, "{\"state\":\"absent\",\"record\":\"%s\"}\n", op->id);
    } else if (res.state == STORE_PENDING) {
        evbuffer_add_printf(b, "{\"state\":\"pending\",\"record\":\"%s\",\"ttl_ms\":%lld}\n",
                            op->id, res.pttl_ms);
    } else {
        struct record rec;
        const char *why = NULL, *data = res.record;
        size_t len = res.record_len, plain_len = 0;
        unsigned char *plain = NULL;
        uint32_t key_id;
        int sealed = seal_is_sealed(data, len, &key_id);
        enum seal_status sst = SEAL_OPENED;

        if (sealed) {
            pthread_mutex_lock(&op->a->lock);
            sst = seal_open(op->a->ring, data, len, op->rkey, res.fp, &plain, &plain_len);
            pthread_mutex_unlock(&op->a->lock);
        }
        if (sealed && sst == SEAL_OPENED) {
            data = (const char *)plain;
            len = plain_len;
        }
        if (sealed)
            evbuffer_add_printf(b, "{\"sealed\":true,\"key_id\":%u,", (unsigned)key_id);
        else
            evbuffer_add(b, "{", 1);
        if (sst != SEAL_OPENED) {
            evbuffer_add_printf(b,
                                "\"state\":\"done\",\"record\":\"%s\",\"unreadable\":\"%s\","
                                "\"ttl_ms\":%lld}\n",
                                op->id, seal_status_str(sst), res.pttl_ms);
        } else if (record_decode(&rec, data, len, &why) < 0) {
            evbuffer_add_printf(b, "\"state\":\"done\",\"record\":\"%s\",\"corrupt\":\"%s\"}\n",
                                op->id, why);
        } else {
            uint64_t now = (uint64_t)time(NULL) * 1000;
            evbuffer_add_printf(b,
                                "\"state\":\"done\",\"record\":\"%s\",\"status\":%d,"
                                "\"replayable\":%s,\"age_ms\":%lld,\"size\":%zu,"
                                "\"ttl_ms\":%lld",
                                op->id, rec.status,
                                rec.flags & RECORD_F_TOO_LARGE ? "false" : "true",
                                (long long)(now - rec.created_ms), res.record_len, res.pttl_ms);
            if (op->body) {
                size_t n = 4 * ((rec.body_len + 2) / 3) + 1;
                unsigned char *enc = malloc(n);
                if (enc) {
                    EVP_EncodeBlock(enc, rec.body, (int)rec.body_len);
                    evbuffer_add_printf(b, ",\"body_base64\":\"%s\"", enc);
                    free(enc);
                }
            }
            evbuffer_add(b, "}\n", 2);
            record_clear(&rec);
        }
        if (plain) {
            OPENSSL_cleanse(plain, plain_len);
            free(plain);
        }
    }
    frontend_respond(op->r, 200, NULL, NULL, "Content-Type: application/json\r\n", b);
    evbuffer_free(b);
}

static void admin_purge_cb(enum redis_status st, const struct redisReply *reply, const char *errstr,
                           void *arg)
{
    struct admin_keyop *op = arg;
    long long v = -1;

    op->cmd = NULL;
    if (st != REDIS_CMD_OK || store_int_result(reply, &v) < 0) {
        admin_json(op->r, 503, "{\"error\":\"redis did not answer\"}\n");
        return;
    }
    if (v == 1) {
        log_warn("admin: purged record %s%s (from %s)", op->id, op->force ? " (forced)" : "",
                 op->r->client_ip);
        admin_json(op->r, 200, "{\"purged\":true}\n");
    } else if (v == 2) {
        admin_json(op->r, 409,
                   "{\"purged\":false,\"state\":\"pending\",\"error\":\"the key is still being "
                   "executed: purge it with \\\"force\\\": true only if its request is lost\"}\n");
    } else {
        admin_json(op->r, 404, "{\"purged\":false,\"state\":\"absent\"}\n");
    }
}

static void admin_keys(struct admin *a, struct frontend_req *r, int purge)
{
    struct admin_keyq q = {0};
    struct admin_keyop *op;
    size_t len = evbuffer_get_length(r->body);

    if (!admin_authorised(a, r))
        return;
    if (len == 0 ||
        jsoncanon_members((const char *)evbuffer_pullup(r->body, -1), len, admin_key_member, &q) !=
            0 ||
        !q.key) {
        admin_keyq_clear(&q);
        admin_json(r, 400,
                   "{\"error\":\"the body must be a JSON object: {\\\"key\\\": \\\"...\\\", "
                   "\\\"scope\\\": {...}, \\\"force\\\"|\\\"body\\\": true}\"}\n");
        return;
    }
    if (!(op = calloc(1, sizeof(*op)))) {
        admin_keyq_clear(&q);
        admin_json(r, 500, "{\"error\":\"out of memory\"}\n");
        return;
    }
    if (admin_rkey(a, r, &q, op->rkey, sizeof(op->rkey), op->id) < 0) {
        admin_keyq_clear(&q);
        free(op);
        return;
    }
    op->a = a;
    op->r = r;
    op->purge = purge;
    op->force = q.force;
    op->body = q.body;
    admin_keyq_clear(&q);
    frontend_req_cleanup_add(r, &op->cleanup, admin_keyop_free, op);
    op->cmd = purge ? store_purge(a->redis, op->rkey, op->force, admin_purge_cb, op)
                    : store_inspect(a->redis, op->rkey, admin_inspect_cb, op);
    if (!op->cmd)
        admin_json(r, 503, "{\"error\":\"redis unavailable\"}\n");
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
    else if (plen == 13 && strncmp(t, "/keys/inspect", 13) == 0 &&
             strcmp(r->head.method, "POST") == 0)
        admin_keys(a, r, 0);
    else if (plen == 11 && strncmp(t, "/keys/purge", 11) == 0 &&
             strcmp(r->head.method, "POST") == 0)
        admin_keys(a, r, 1);
    else if ((plen == 13 && !strncmp(t, "/keys/inspect", 13)) ||
             (plen == 11 && !strncmp(t, "/keys/purge", 11)))
        admin_json(r, 405, "{\"error\":\"method not allowed: use POST\"}\n");
    else if ((plen == 8 && (!strncmp(t, "/healthz", 8) || !strncmp(t, "/metrics", 8))) ||
             (plen == 7 && !strncmp(t, "/readyz", 7)))
        admin_json(r, 405, "{\"error\":\"method not allowed: use GET\"}\n");
    else
        admin_json(r, 404,
                   "{\"error\":\"not found: /healthz, /readyz, /metrics, /keys/inspect, "
                   "/keys/purge\"}\n");
    return 1;
}

static void admin_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                            int salen, void *arg)
{
    struct admin *a = arg;

    frontend_accept(a->fe, fd, sa, salen, NULL);
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

static void admin_scope_free(struct admin_scope *sc)
{
    if (!sc)
        return;
    for (size_t i = 0; i < sc->nscope_headers; i++)
        free(sc->scope_headers[i]);
    free(sc->scope_headers);
    free(sc->key_prefix);
    free(sc);
}

static void admin_free(struct admin *a)
{
    frontend_free(a->fe); /* first: its requests cancel their Redis commands */
    redis_client_free(a->redis);
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
    seal_keyring_free(a->ring);
    admin_scope_free(a->scope);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

/* A copy of kr the admin owns (freed with seal_keyring_free); NULL when out of memory. */
static struct seal_keyring *admin_keyring_copy(const struct seal_keyring *kr)
{
    struct seal_keyring *copy = malloc(sizeof(*copy));

    if (copy)
        memcpy(copy, kr, sizeof(*copy));
    return copy;
}

/* pol's key-max-length, key-prefix and scope-headers, copied; NULL when out of memory. */
static struct admin_scope *admin_scope_copy(const struct idem_policy *pol)
{
    struct admin_scope *sc = calloc(1, sizeof(*sc));

    if (!sc)
        return NULL;
    sc->key_max_length = pol->key_max_length;
    if (!(sc->key_prefix = strdup(pol->key_prefix)) ||
        !(sc->scope_headers = calloc(pol->nscope_headers + 1, sizeof(char *))))
        goto err;
    for (; sc->nscope_headers < pol->nscope_headers; sc->nscope_headers++)
        if (!(sc->scope_headers[sc->nscope_headers] =
                  strdup(pol->scope_headers[sc->nscope_headers])))
            goto err;
    return sc;
err:
    admin_scope_free(sc);
    return NULL;
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
                          const struct idem_policy *pol, const struct seal_conf *seal,
                          const struct redis_conf *redis, const struct admin_source *src, size_t n,
                          unsigned short *port)
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
    a->conf = conf;
    pthread_mutex_init(&a->lock, NULL);
    if (!(a->scope = admin_scope_copy(pol)) ||
        (seal->ring && !(a->ring = admin_keyring_copy(seal->ring))))
        goto err;
    a->fconf.access_log = NULL; /* the operator's requests are not the API's traffic */
    a->nsrc = n;
    if (!(a->src = calloc(n ? n : 1, sizeof(*a->src))))
        goto err;
    memcpy(a->src, src, n * sizeof(*src));
    if (!(a->base = event_base_new()) || pipe2(a->stop_pipe, O_NONBLOCK | O_CLOEXEC) < 0 ||
        !(a->stop_ev = event_new(a->base, a->stop_pipe[0], EV_READ, admin_stop_cb, a)) ||
        event_add(a->stop_ev, NULL) < 0 ||
        !(a->fe = frontend_new(a->base, &a->fconf, NULL, "", 0)) ||
        !(a->redis = redis_client_new(a->base, redis, store_scripts_for(redis), store_nscripts)))
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

int admin_reload(struct admin *a, const struct idem_policy *pol, const struct seal_keyring *kr)
{
    struct admin_scope *sc, *old_sc;
    struct seal_keyring *ring = NULL, *old_ring;

    if (!a)
        return 0;
    if (!(sc = admin_scope_copy(pol)))
        return -1;
    if (kr && !(ring = admin_keyring_copy(kr))) {
        admin_scope_free(sc);
        return -1;
    }
    pthread_mutex_lock(&a->lock);
    old_sc = a->scope;
    old_ring = a->ring;
    a->scope = sc;
    a->ring = ring;
    pthread_mutex_unlock(&a->lock);
    admin_scope_free(old_sc);
    seal_keyring_free(old_ring);
    return 0;
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
