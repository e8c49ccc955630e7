#include "redis/redis.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "core/bytes.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "redis/cluster.h"
#include "net/tls.h"
#include "redis/rconn.h"
#include "redis/sentinel.h"

#define REDIS_BACKOFF_MIN 50 /* ms before reconnecting, doubling */
/* At most this between a node's connection tries: a record waiting for Redis to come back
 * has only what is left of its lease, and a longer wait outlasted it (test_faults:
 * a_record_lands_when_redis_returns_late_in_the_lease). A try is one connect(), or one
 * connection held for a redis-timeout by a frozen Redis: cheap at 5 per second. */
#define REDIS_BACKOFF_MAX 200
/* ... and between tries of what no record waits for: pub/sub connections (a waiter also
 * rechecks on its timer) and re-reads of the cluster slot map */
#define REDIS_BACKOFF_SLOW_MAX 1000
#define REDIS_WAITING_MAX      65536 /* commands queued while there is no connection */
#define REDIS_PING_MS          1000  /* an idle connection is checked this often */
#define REDIS_RETRY_MIN_MS     20    /* TRYAGAIN, CLUSTERDOWN...: wait this long, doubling */
#define REDIS_RETRY_MAX_MS     200
#define REDIS_REFRESH_MIN_MS   200 /* between two reads of the slot map */
#define REDIS_REFRESH_DOWN_MS  250 /* ... while a primary of it cannot be reached */

_Static_assert(REDIS_RETRY_REASONS == CLUSTER_RETRY_COUNT, "one counter per retry reason");

static int redis_wait_set(const struct conf_directive *d, void *base, const char *where, int argc,
                          const char **argv, char *err, size_t errlen);
static int redis_addr_set(const struct conf_directive *d, void *base, const char *where, int argc,
                          const char **argv, char *err, size_t errlen);

static const struct conf_choice redis_wait_policy_choices[] = {
    {"fail", REDIS_WAIT_FAIL}, {"degrade", REDIS_WAIT_DEGRADE}, {NULL, 0}};

static const struct conf_choice redis_pubsub_choices[] = {
    {"classic", REDIS_PUBSUB_CLASSIC}, {"sharded", REDIS_PUBSUB_SHARDED}, {NULL, 0}};

const struct conf_directive redis_conf_rows[] = {
    {.name = "redis",
     .type = CONF_T_CUSTOM,
     .def = "127.0.0.1:6379",
     .arg = "ADDR|URL",
     .help = "HOST:PORT, unix:PATH or redis[s]://URL",
     .custom_set = redis_addr_set},
    {.name = "redis-user",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, user),
     .arg = "NAME",
     .help = "Redis ACL user (AUTH user password; needs redis-password)"},
    {.name = "redis-password",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, password),
     .arg = "PASSWORD",
     .help = "Redis AUTH password (or $IDEMPROXY_REDIS_PASSWORD)"},
    {.name = "redis-timeout",
     .type = CONF_T_DURATION,
     .min = 1,
     .max = 60000,
     .def = "500ms",
     .off = offsetof(struct redis_conf, timeout_ms),
     .arg = "DURATION",
     .help = "deadline of every Redis command"},
    {.name = "redis-wait",
     .type = CONF_T_CUSTOM,
     .arg = "REPLICAS TIMEOUT|0",
     .help = "WAIT for REPLICAS after each claim/renewal/record (0: off)",
     .custom_set = redis_wait_set},
    {.name = "redis-wait-policy",
     .type = CONF_T_ENUM,
     .def = "fail",
     .off = offsetof(struct redis_conf, wait_policy),
     .choices = redis_wait_policy_choices,
     .arg = "fail|degrade",
     .help = "a claim WAIT did not confirm: 503, or forward it"},
    {.name = "redis-cluster",
     .type = CONF_T_ADDR_LIST,
     .flags = CONF_F_REPEATABLE,
     .off = offsetof(struct redis_conf, cluster),
     .count_off = offsetof(struct redis_conf, ncluster),
     .arg = "HOST:PORT",
     .help = "Redis Cluster seed node (slot map); repeat for more"},
    {.name = "redis-max-redirects",
     .type = CONF_T_INT,
     .min = 0,
     .max = 16,
     .def = "5",
     .off = offsetof(struct redis_conf, max_redirects),
     .arg = "N",
     .help = "MOVED / ASK redirects followed per command (Cluster)"},
    {.name = "redis-refresh",
     .type = CONF_T_DURATION,
     .min = 0,
     .max = CONF_MS_DAY,
     .def = "30s",
     .off = offsetof(struct redis_conf, refresh_ms),
     .arg = "DURATION",
     .help = "re-read slot map / re-ask Sentinels (0: on errors only)"},
    {.name = "redis-failover-time",
     .type = CONF_T_DURATION,
     .min = 0,
     .max = CONF_MS_DAY,
     .def = "0",
     .off = offsetof(struct redis_conf, failover_ms),
     .arg = "DURATION",
     .help = "longest failover to survive (a lease under 3x: warning)"},
    {.name = "redis-pubsub",
     .type = CONF_T_ENUM,
     .def = "classic",
     .off = offsetof(struct redis_conf, pubsub),
     .choices = redis_pubsub_choices,
     .arg = "classic|sharded",
     .help = "waiters woken by SUBSCRIBE, or SSUBSCRIBE per slot"},
    {.name = "redis-sentinel",
     .type = CONF_T_ADDR_LIST,
     .flags = CONF_F_REPEATABLE,
     .off = offsetof(struct redis_conf, sentinels),
     .count_off = offsetof(struct redis_conf, nsentinels),
     .arg = "HOST:PORT",
     .help = "Redis Sentinel to ask for the primary; repeat for more"},
    {.name = "redis-sentinel-master",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, sentinel_master),
     .arg = "NAME",
     .help = "the master name the Sentinels monitor"},
    {.name = "redis-sentinel-user",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, sentinel_user),
     .arg = "NAME",
     .help = "ACL user on the Sentinels themselves"},
    {.name = "redis-sentinel-password",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, sentinel_password),
     .arg = "PASSWORD",
     .help = "AUTH password on the Sentinels themselves"},
    {.name = "redis-tls",
     .type = CONF_T_BOOL,
     .def = "no",
     .off = offsetof(struct redis_conf, tls),
     .arg = "yes|no",
     .help = "TLS to Redis (every node, replica and Sentinel)"},
    {.name = "redis-tls-ca-file",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, tls_ca_file),
     .arg = "FILE",
     .help = "CA certificates (PEM) Redis's must chain to [system store]"},
    {.name = "redis-tls-server-name",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, tls_server_name),
     .arg = "NAME",
     .help = "SNI and certificate name to expect [each node's host]"},
    {.name = "redis-tls-cert-file",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, tls_cert_file),
     .arg = "FILE",
     .help = "client certificate (PEM) for tls-auth-clients"},
    {.name = "redis-tls-key-file",
     .type = CONF_T_STRING,
     .off = offsetof(struct redis_conf, tls_key_file),
     .arg = "FILE",
     .help = "its private key (PEM, unencrypted)"},
    {.name = "redis-tls-verify",
     .type = CONF_T_BOOL,
     .def = "yes",
     .off = offsetof(struct redis_conf, tls_verify),
     .arg = "yes|no",
     .help = "check Redis's certificate and name (no: encrypt only)"},
    CONF_END,
};

_Static_assert(sizeof(enum redis_wait_policy) == sizeof(int), "enum must be int-sized");
_Static_assert(sizeof(enum redis_pubsub) == sizeof(int), "enum must be int-sized");

/* "%41" -> 'A' in src[0..len) into a new string; NULL when out of memory or malformed. */
static char *redis_url_unescape(const char *src, size_t len)
{
    char *out = malloc(len + 1), *o = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        if (src[i] != '%') {
            *o++ = src[i];
            continue;
        }
        if (i + 2 >= len || sscanf(src + i + 1, "%2x", &v) != 1 ||
            !isxdigit((unsigned char)src[i + 1]) || !isxdigit((unsigned char)src[i + 2])) {
            free(out);
            return NULL;
        }
        *o++ = (char)v;
        i += 2;
    }
    *o = '\0';
    return out;
}

/*
 * redis HOST:PORT | unix:PATH | redis://[USER:PASS@]HOST[:PORT][/0] | rediss://... (TLS):
 * the URL form managed services hand out; its user and password become redis-user and
 * redis-password (percent-escapes decoded; an empty user is none), rediss turns redis-tls
 * on. Only database 0 exists in a cluster, and idemproxy uses no other.
 */
static int redis_addr_set(const struct conf_directive *d, void *base, const char *where, int argc,
                          const char **argv, char *err, size_t errlen)
{
    struct redis_conf *rc = base;
    const char *url, *at, *hp, *slash, *colon, *why;
    char hostport[CONF_HOST_MAX + 16], *user = NULL, *pass = NULL;
    int tls;

    (void)d;
    if (argc != 1)
        return conf_fail(err, errlen, "%s: expected 1 argument, got %d", where, argc);
    tls = strncmp(argv[0], "rediss://", 9) == 0;
    if (!tls && strncmp(argv[0], "redis://", 8) != 0) {
        if ((why = conf_addr_parse(argv[0], &rc->addr, 1, 0)))
            return conf_fail(err, errlen, "%s: invalid address '%s': %s", where, argv[0], why);
        return 0;
    }
    url = argv[0] + (tls ? 9 : 8);
    slash = strchr(url, '/');
    at = memrchr(url, '@', slash ? (size_t)(slash - url) : strlen(url));
    hp = at ? at + 1 : url;
    if (slash && strcmp(slash, "/") != 0 && strcmp(slash, "/0") != 0)
        return conf_fail(err, errlen, "%s: database '%s' in the URL: only 0 is used", where,
                         slash + 1);
    snprintf(hostport, sizeof(hostport), "%.*s", (int)(slash ? slash - hp : (long)strlen(hp)), hp);
    /* no port: Redis's */
    if (!strrchr(hostport, ':') || (hostport[0] == '[' && hostport[strlen(hostport) - 1] == ']'))
        snprintf(hostport + strlen(hostport), sizeof(hostport) - strlen(hostport), ":6379");
    if ((why = conf_addr_parse(hostport, &rc->addr, 0, 0)))
        return conf_fail(err, errlen, "%s: invalid address in the URL '%s': %s", where, argv[0],
                         why);
    if (at) {
        if (!(colon = memchr(url, ':', (size_t)(at - url))))
            return conf_fail(err, errlen,
                             "%s: the URL's user part must be USER:PASSWORD@ (or :PASSWORD@)",
                             where);
        if (!(user = redis_url_unescape(url, (size_t)(colon - url))) ||
            !(pass = redis_url_unescape(colon + 1, (size_t)(at - colon - 1)))) {
            free(user);
            return conf_fail(err, errlen, "%s: a bad %%-escape in the URL's user or password",
                             where);
        }
        free(rc->user);
        rc->user = user[0] ? user : NULL;
        if (!user[0])
            free(user);
        free(rc->password);
        rc->password = pass;
    }
    if (tls)
        rc->tls = 1;
    return 0;
}

static int redis_wait_set(const struct conf_directive *d, void *base, const char *where, int argc,
                          const char **argv, char *err, size_t errlen)
{
    struct redis_conf *rc = base;
    char *end;
    long n;
    uint64_t ms = 0;

    if (argc == 1 && strcmp(argv[0], "0") == 0) {
        rc->wait_replicas = 0;
        rc->wait_timeout_ms = 0;
        return 0;
    }
    if (argc != 2)
        return conf_fail(err, errlen, "%s: expected REPLICAS TIMEOUT, or 0 (off)", where);
    n = strtol(argv[0], &end, 10);
    if (*end || end == argv[0] || n < 0 || n > 64)
        return conf_fail(err, errlen, "%s: invalid replica count '%s' (0..64)", where, argv[0]);
    if (conf_parse_duration(argv[1], &ms) < 0 || ms < 1 || ms > 60000)
        return conf_fail(err, errlen,
                         "%s: invalid timeout '%s' (a duration from 1ms to 60s, e.g. "
                         "100ms)",
                         where, argv[1]);
    rc->wait_replicas = (int)n;
    rc->wait_timeout_ms = n ? ms : 0;
    return 0;
}

int redis_conf_load(struct redis_conf *conf, char *err, size_t errlen)
{
    struct tls_client_opts o = {conf->tls_ca_file,     conf->tls_cert_file, conf->tls_key_file,
                                conf->tls_server_name, conf->tls_verify,    0};
    struct tls_client *tc = NULL;
    char why[480];

    if (conf->tls && !(tc = tls_client_new(&o, why, sizeof(why))))
        return conf_fail(err, errlen, "redis-tls: %s", why);
    tls_client_free(conf->tls_ctx);
    conf->tls_ctx = tc;
    return 0;
}

void redis_conf_release(struct redis_conf *conf)
{
    tls_client_free(conf->tls_ctx);
    conf->tls_ctx = NULL;
}

int redis_conf_validate(const struct redis_conf *conf, char *err, size_t errlen)
{
    char a[CONF_HOST_MAX + 16];

    if (conf->ncluster && (conf->nsentinels || conf->sentinel_master))
        return conf_fail(err, errlen,
                         "redis-cluster: cannot be used with redis-sentinel (one mode: a "
                         "cluster's own failover, or Sentinels)");
    /* redis has a default: only a value other than it is known to be given */
    if ((conf->ncluster || conf->nsentinels) &&
        strcmp(conf_addr_str(&conf->addr, a, sizeof(a)), "127.0.0.1:6379") != 0)
        return conf_fail(err, errlen, "redis %s: not used with %s (give the node%s there instead)",
                         a, conf->ncluster ? "redis-cluster" : "redis-sentinel",
                         conf->ncluster ? "s as seeds" : "'s Sentinels");
    if (conf->wait_replicas > 0 && 2 * conf->wait_timeout_ms >= conf->timeout_ms)
        return conf_fail(err, errlen,
                         "redis-wait: its timeout (%llu ms) must be under half of redis-timeout "
                         "(%llu ms): WAIT holds the connection until it answers, and a "
                         "command may wait for the WAIT before its own",
                         (unsigned long long)conf->wait_timeout_ms,
                         (unsigned long long)conf->timeout_ms);
    if (conf->nsentinels && !conf->sentinel_master)
        return conf_fail(err, errlen,
                         "redis-sentinel: needs redis-sentinel-master NAME (the master name the "
                         "Sentinels monitor)");
    if (conf->sentinel_master && !conf->nsentinels)
        return conf_fail(err, errlen,
                         "redis-sentinel-master: needs at least one redis-sentinel HOST:PORT");
    if (conf->sentinel_user && !conf->sentinel_password)
        return conf_fail(err, errlen, "redis-sentinel-user: needs redis-sentinel-password");
    if (conf->user && !conf->password)
        return conf_fail(err, errlen,
                         "redis-user: an ACL user needs redis-password (or "
                         "$IDEMPROXY_REDIS_PASSWORD)");
    return 0;
}

/* What a queue entry is: the caller's command, or one the client sends for itself. */
enum redis_cmd_kind {
    RC_USER = 0,
    RC_AUTH,        /* first on every connection, with a password */
    RC_SCRIPT_LOAD, /* script = which */
    RC_PING,        /* the idle check */
    RC_ROLE,        /* Sentinel mode: is it still the primary? (first, and the idle check) */
    RC_SLOTS,       /* Cluster mode: CLUSTER SLOTS, for the slot map (has a callback) */
    RC_WAIT,        /* WAIT: confirms every command of node->confirming */
};

/* Where a command is: each state is one list (see struct redis_node / redis_client). */
enum redis_cmd_state {
    RS_NONE = 0,   /* in no list: being handled */
    RS_UNROUTED,   /* c->unrouted: no node for it yet, or a retry after a delay */
    RS_WAITING,    /* node->waiting: for the node's connection */
    RS_SENT,       /* node->queue: written, its reply awaited */
    RS_CONFIRMING, /* node->confirming: its reply is in (own), a WAIT's is awaited */
};

struct redis_cmd {
    struct redis_client *c;
    struct redis_node *node; /* RS_WAITING / RS_SENT: which */
    enum redis_cmd_kind kind;
    enum redis_cmd_state state;
    int script; /* index into c->scripts, or -1 for a plain command */
    unsigned flags;
    redis_reply_cb cb;
    void *arg;
    uint64_t deadline; /* monotonic ms */
    uint64_t retry_at; /* RS_UNROUTED: route it again then */
    int in_deadlines;  /* on c->deadlines */
    int timed_out;     /* its deadline passed: the connection was reset for it */
    int resent;        /* already fell back from EVALSHA to EVAL */
    int needs_wait;    /* REDIS_F_WAIT with redis-wait on: a WAIT must confirm it */
    int slot;          /* cluster: the slot of its key, -1 when it has none */
    int redirects;     /* MOVED / ASK followed */
    int retries;       /* TRYAGAIN, CLUSTERDOWN... waited out */
    int asking;        /* ASK: send ASKING right before it */
    int asking_sent;   /* ... and that reply comes first */
    redisReply *own;   /* its own reply, kept until a WAIT's arrives (owned) */
    /* kept for the EVAL fallback: argv[0..1] are replaced by EVAL + script text */
    int argc;
    const char **argv;
    size_t *argvlen;
    /* or a command already in Redis's wire format (redis_eval_formatted): borrowed from
     * the caller until the callback or redis_cancel; owned once rewritten for EVAL */
    const char *fmt;
    size_t fmtlen;
    char *fmt_owned;
    int borrow_gone; /* cancelled: the borrowed bytes may be freed, never send them again */
    TAILQ_ENTRY(redis_cmd) link;  /* the list of its state */
    TAILQ_ENTRY(redis_cmd) dlink; /* c->deadlines */
};
TAILQ_HEAD(redis_cmd_list, redis_cmd);

struct redis_watch {
    struct redis_client *c;
    char *channel;
    redis_wake_cb cb;
    void *arg;
    unsigned gen;
    struct redis_node *node; /* sharded: the node it is subscribed at (NULL: none yet) */
    TAILQ_ENTRY(redis_watch) link;
};
TAILQ_HEAD(redis_watch_list, redis_watch);

/* One Redis node and our command connection to it (one node in single and Sentinel
 * mode, whose address Sentinel mode changes; every primary of the map, and the seeds,
 * in Cluster mode). Owned by its client, freed with it. */
struct redis_node {
    struct redis_client *c;
    struct conf_addr addr;
    char name[REDIS_NODE_NAME_MAX]; /* "host:port", for logs */
    struct rconn *conn;
    struct tls_session_slot session; /* TLS: the node's last session, resumed on reconnect */
    int was_down;
    int setup_failed;      /* AUTH or SCRIPT LOAD refused: logged once until ready again */
    size_t scripts_loaded; /* on this connection */
    int ready;             /* connected with every script loaded */
    int role_ok; /* the connection may take callers' commands (Sentinel: ROLE said master) */
    int seed;    /* cluster: given by redis-cluster */
    int in_map;  /* cluster: serves slots in the current map */
    unsigned backoff;
    struct event *reconnect_ev;
    struct redis_cmd_list queue;   /* sent on conn, in send order */
    struct redis_cmd_list waiting; /* for a connection (or ROLE master), in order */
    /* WAIT, one at a time: it blocks the connection for up to its timeout, so one per
     * command would queue them up (N x the timeout) when replicas are short. A WAIT
     * confirms every write sent before it, so each covers what was sent meanwhile. */
    struct redis_cmd_list confirming; /* replied, for the next WAIT's reply to confirm */
    int wait_out;                     /* a WAIT is sent, its reply awaited */
    int wait_more;                    /* commands sent since need another one */
    /* redis-pubsub sharded: SSUBSCRIBE for the channels in its slots */
    struct rconn *sub;
    unsigned sub_backoff;
    struct event *sub_reconnect_ev;
};

#define REDIS_NO_NODE 0xffffu

struct redis_client {
    struct event_base *base;
    struct evdns_base *dns;              /* node names are looked up with it (resolv.conf, hosts) */
    struct stat resolv_seen, hosts_seen; /* ... as they were when it read them */
    int dns_loaded;
    const struct redis_conf *conf;
    const struct redis_script *scripts;
    size_t nscripts;
    char (*sha)[41];   /* SHA1 hex of each script */
    char wait_cmd[64]; /* "WAIT n t" in the wire format, when redis-wait is on */
    size_t wait_cmd_len;
    /* the nodes' names as the admin thread reads them (redis_nodes), under pub_lock */
    pthread_mutex_t pub_lock;
    char (*pub)[REDIS_NODE_NAME_MAX];
    size_t npub;
    /* Sentinel mode: who to ask, and the primary they named (target_known) */
    struct sentinel *sentinel;
    struct conf_addr target;
    int target_known;
    /* the nodes: nodes[0] alone outside Cluster mode */
    struct redis_node **nodes;
    size_t nnodes;
    /* Cluster mode: slot -> index in nodes (REDIS_NO_NODE: not served) */
    int cluster;
    uint16_t *slots;
    int map_ok;        /* a map was read */
    int map_full;      /* ... and every slot is served */
    uint64_t map_at;   /* monotonic ms it was last read (read by other threads) */
    int refreshing;    /* a CLUSTER SLOTS is out */
    int refresh_again; /* ... and something asked for another meanwhile */
    uint64_t last_refresh;
    unsigned refresh_backoff;
    size_t refresh_from; /* which node to ask next after a failed refresh */
    int map_failed;      /* a refresh failed: logged once until one succeeds */
    struct event *refresh_ev;
    struct event *periodic_ev; /* redis-refresh */
    struct redis_cmd_list unrouted;
    struct event *route_ev;
    /* every pending command, soonest deadline first; one timer for the first */
    struct redis_cmd_list deadlines;
    struct event *deadline_ev;
    struct event *ping_ev;
    size_t nwaiting;      /* unrouted + waiting on every node */
    int ready;            /* read by other threads */
    int moved_standalone; /* "a cluster node": logged once */
    /* pub/sub connection */
    struct rconn *sub;
    unsigned sub_backoff;
    struct event *sub_reconnect_ev;
    struct redis_watch_list watches;
    unsigned wake_gen;
    int freeing;
    struct redis_stats stats;
};

static void redis_node_connect(struct redis_node *n);
static void redis_send_waiting(struct redis_node *n);
static void redis_sub_connect(struct redis_client *c);
static void redis_cmd_free(struct redis_cmd *cmd);
static void redis_note_down(struct redis_node *n, const char *why);
static void redis_send_wait(struct redis_node *n);
static void redis_shard_reattach(struct redis_client *c);
static void redis_nsub_reconnect_cb(evutil_socket_t fd, short what, void *arg);
static void redis_refresh_soon(struct redis_client *c);
static int redis_route(struct redis_client *c, struct redis_cmd *cmd);
static void redis_update_ready(struct redis_client *c);
static void redis_dns_refresh(struct redis_client *c);

static void redis_schedule_max(struct event *ev, unsigned *backoff, unsigned max)
{
    struct timeval tv;

    *backoff = *backoff ? *backoff * 2 : REDIS_BACKOFF_MIN;
    if (*backoff > max)
        *backoff = max;
    tv = clock_tv(*backoff);
    evtimer_add(ev, &tv);
}

/* A node's next connection try (REDIS_BACKOFF_MAX), or anything else's (the slow cap). */
static void redis_schedule(struct event *ev, unsigned *backoff)
{
    redis_schedule_max(ev, backoff, REDIS_BACKOFF_MAX);
}

static void redis_schedule_slow(struct event *ev, unsigned *backoff)
{
    redis_schedule_max(ev, backoff, REDIS_BACKOFF_SLOW_MAX);
}

static void redis_timer_in(struct event *ev, uint64_t ms)
{
    struct timeval tv = clock_tv(ms);

    evtimer_add(ev, &tv);
}

/* ---- deadlines: one list of every pending command, one timer ---- */

static void redis_arm_deadline(struct redis_client *c)
{
    struct redis_cmd *cmd = TAILQ_FIRST(&c->deadlines);
    uint64_t now;

    if (!cmd) {
        evtimer_del(c->deadline_ev);
        return;
    }
    now = clock_mono_ms();
    redis_timer_in(c->deadline_ev, cmd->deadline > now ? cmd->deadline - now : 0);
}

/* Commands mostly come in deadline order: walk back from the tail. */
static void redis_deadline_add(struct redis_client *c, struct redis_cmd *cmd)
{
    struct redis_cmd *prev = TAILQ_LAST(&c->deadlines, redis_cmd_list);

    while (prev && prev->deadline > cmd->deadline)
        prev = TAILQ_PREV(prev, redis_cmd_list, dlink);
    if (prev)
        TAILQ_INSERT_AFTER(&c->deadlines, prev, cmd, dlink);
    else
        TAILQ_INSERT_HEAD(&c->deadlines, cmd, dlink);
    cmd->in_deadlines = 1;
    if (TAILQ_FIRST(&c->deadlines) == cmd)
        redis_arm_deadline(c);
}

static void redis_deadline_remove(struct redis_client *c, struct redis_cmd *cmd)
{
    if (!cmd->in_deadlines)
        return;
    TAILQ_REMOVE(&c->deadlines, cmd, dlink);
    cmd->in_deadlines = 0;
}

/* Take cmd out of the list of its state (not out of c->deadlines). */
static void redis_cmd_unlink(struct redis_cmd *cmd)
{
    struct redis_client *c = cmd->c;

    switch (cmd->state) {
    case RS_UNROUTED:
        TAILQ_REMOVE(&c->unrouted, cmd, link);
        c->nwaiting--;
        break;
    case RS_WAITING:
        TAILQ_REMOVE(&cmd->node->waiting, cmd, link);
        c->nwaiting--;
        break;
    case RS_SENT:
        TAILQ_REMOVE(&cmd->node->queue, cmd, link);
        break;
    case RS_CONFIRMING:
        TAILQ_REMOVE(&cmd->node->confirming, cmd, link);
        break;
    case RS_NONE:
        break;
    }
    cmd->state = RS_NONE;
}

/* Report to the command's owner (once). Internal commands have no owner, except the
 * slot map's CLUSTER SLOTS. */
static void redis_cmd_done(struct redis_cmd *cmd, enum redis_status st, const redisReply *reply,
                           const char *why)
{
    redis_reply_cb cb = cmd->cb;

    if (cmd->kind != RC_USER && cmd->kind != RC_SLOTS)
        return;
    if (cmd->kind == RC_USER && (st == REDIS_CMD_ERROR || st == REDIS_CMD_DOWN))
        METRIC_INC(cmd->c->stats.errors);
    cmd->cb = NULL;
    if (cb)
        cb(st, reply, why, cmd->arg);
}

/* Report and free a command that is in no list any more. */
static void redis_cmd_finish(struct redis_cmd *cmd, enum redis_status st, const redisReply *reply,
                             const char *why)
{
    redis_cmd_done(cmd, st, reply, why);
    redis_cmd_free(cmd);
}

/* Sent, its reply lost with the connection: may it go again (REDIS_F_RESEND)? Not once
 * its deadline has passed, nor when nobody waits for it or its bytes are gone. */
static int redis_cmd_may_resend(const struct redis_cmd *cmd, uint64_t now)
{
    return (cmd->flags & REDIS_F_RESEND) && cmd->kind == RC_USER && cmd->cb && !cmd->timed_out &&
           !cmd->borrow_gone && cmd->deadline > now && !cmd->c->freeing;
}

/* Drop n's connection: every command sent on it fails (TIMEOUT if it was due, else
 * DOWN; REDIS_F_RESEND ones are routed again), then reconnect with back-off when the node is still
 * wanted. Commands issued from those callbacks wait for the next connection. why: logged (we drop
 * it: a deadline), or NULL (it was lost and the caller said so). */
static void redis_drop(struct redis_node *n, const char *why)
{
    struct redis_client *c = n->c;
    struct redis_cmd_list failed, again;
    struct redis_cmd *cmd;
    uint64_t now = clock_mono_ms();

    if (!n->conn)
        return;
    if (why) {
        log_warn("redis: %s: %s; reconnecting", n->name, why);
        METRIC_INC(c->stats.reconnects);
    }
    rconn_free(n->conn);
    n->conn = NULL;
    n->ready = 0;
    n->was_down = 1;
    n->role_ok = 0;
    n->wait_out = n->wait_more = 0;
    c->target_known = 0; /* Sentinel mode: ask again who the primary is */
    /* those that ran but were never confirmed: their reply, as not confirmed */
    TAILQ_INIT(&failed);
    TAILQ_CONCAT(&failed, &n->confirming, link);
    while ((cmd = TAILQ_FIRST(&failed))) {
        TAILQ_REMOVE(&failed, cmd, link);
        cmd->state = RS_NONE;
        redis_deadline_remove(c, cmd);
        METRIC_INC(c->stats.wait_error);
        redis_cmd_finish(cmd, REDIS_CMD_UNCONFIRMED, cmd->own,
                         "WAIT: the connection was lost before replicas confirmed it");
    }
    TAILQ_INIT(&failed);
    TAILQ_INIT(&again);
    TAILQ_CONCAT(&failed, &n->queue, link);
    while ((cmd = TAILQ_FIRST(&failed))) {
        TAILQ_REMOVE(&failed, cmd, link);
        cmd->state = RS_NONE;
        if (redis_cmd_may_resend(cmd, now)) {
            TAILQ_INSERT_TAIL(&again, cmd, link);
            continue;
        }
        redis_deadline_remove(c, cmd);
        redis_cmd_finish(cmd, cmd->timed_out ? REDIS_CMD_TIMEOUT : REDIS_CMD_DOWN, NULL,
                         cmd->timed_out ? "redis did not answer in time" : "redis connection lost");
    }
    redis_arm_deadline(c);
    redis_update_ready(c);
    if (c->freeing)
        return;
    if (c->cluster)
        redis_refresh_soon(c); /* a failover, perhaps: who serves its slots now? */
    if (!evtimer_pending(n->reconnect_ev, NULL) &&
        (!c->cluster || n->in_map || !TAILQ_EMPTY(&n->waiting) || (n->seed && !c->map_ok)))
        redis_schedule(n->reconnect_ev, &n->backoff);
    /* the claims: again, where they belong now (the next connection, made with back-off;
     * the new primary) */
    while ((cmd = TAILQ_FIRST(&again))) {
        TAILQ_REMOVE(&again, cmd, link);
        cmd->asking = cmd->asking_sent = 0;
        METRIC_INC(c->stats.resends);
        if (redis_route(c, cmd) < 0) {
            redis_deadline_remove(c, cmd);
            redis_cmd_finish(cmd, REDIS_CMD_DOWN, NULL, "redis connection lost");
        }
    }
}

static void redis_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    struct redis_cmd *cmd, *s;
    uint64_t now = clock_mono_ms();
    int read_tried = 0;
    char why[96];

    while ((cmd = TAILQ_FIRST(&c->deadlines)) && cmd->deadline <= now) {
        struct redis_node *n = cmd->node;
        if (cmd->state != RS_SENT && cmd->state != RS_CONFIRMING) {
            /* never sent: it fails alone (the caller knows nothing reached Redis) */
            int unrouted = cmd->state == RS_UNROUTED;
            redis_cmd_unlink(cmd);
            redis_deadline_remove(c, cmd);
            METRIC_INC(c->stats.timeouts);
            redis_cmd_finish(cmd, REDIS_CMD_TIMEOUT, NULL,
                             unrouted && c->cluster
                                 ? "no cluster node took it within redis-timeout (not sent)"
                                 : "no Redis connection within redis-timeout (not sent)");
            continue;
        }
        if (!read_tried) {
            /* the loop may run this timer before the read event of a reply already in
             * a socket: take what has arrived before giving up on anything, then look
             * again (what was due may have been answered, or its connection gone) */
            read_tried = 1;
            for (size_t i = 0; i < c->nnodes; i++)
                if (c->nodes[i]->conn)
                    rconn_read_ready(c->nodes[i]->conn);
            continue;
        }
        /* Every command due on that connection times out; the others fail with it. */
        TAILQ_FOREACH(s, &n->queue, link)
        {
            if (s->deadline <= now)
                s->timed_out = 1;
        }
        METRIC_INC(c->stats.timeouts);
        snprintf(why, sizeof(why), "no answer within redis-timeout (%llu ms)",
                 (unsigned long long)c->conf->timeout_ms);
        redis_drop(n, why);
    }
    redis_arm_deadline(c);
}

static const char *redis_cmd_name(const struct redis_cmd *cmd)
{
    return cmd->script >= 0 ? cmd->c->scripts[cmd->script].name : cmd->argv[0];
}

char *redis_put_array(char *p, size_t n)
{
    *p++ = '*';
    p += bytes_u64(p, n);
    memcpy(p, "\r\n", 2);
    return p + 2;
}

char *redis_put_bulk(char *p, const void *bytes, size_t len)
{
    *p++ = '$';
    p += bytes_u64(p, len);
    memcpy(p, "\r\n", 2);
    p += 2;
    if (bytes)
        memcpy(p, bytes, len);
    p += len;
    memcpy(p, "\r\n", 2);
    return p + 2;
}

size_t redis_format(char *dst, int argc, const char *const *argv, const size_t *lens)
{
    char num[20], *p;
    size_t n;

    if (!dst) {
        n = 1 + bytes_u64(num, (uint64_t)argc) + 2;
        for (int i = 0; i < argc; i++)
            n += 1 + bytes_u64(num, lens[i]) + 2 + lens[i] + 2;
        return n;
    }
    p = redis_put_array(dst, (size_t)argc);
    for (int i = 0; i < argc; i++)
        p = redis_put_bulk(p, argv[i], lens[i]);
    return (size_t)(p - dst);
}

/* Put cmd on n's connection (after ASKING for an ASK redirect; followed by WAIT when it
 * asks and redis-wait is on). An argv command is put in the wire format here: hiredis's
 * own formatting (sdscatfmt) cost several thousand instructions a command. 0 or -1. */
static int redis_cmd_write(struct redis_node *n, struct redis_cmd *cmd)
{
    static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
    struct redis_client *c = n->c;
    char stack[512], *buf = stack;
    size_t len;
    int rc = 0;

    cmd->asking_sent = 0;
    if (cmd->asking) {
        if (rconn_write(n->conn, asking, sizeof(asking) - 1) < 0)
            return -1;
        cmd->asking_sent = 1;
    }
    if (cmd->fmt) {
        rc = rconn_write(n->conn, cmd->fmt, cmd->fmtlen);
    } else {
        len = redis_format(NULL, cmd->argc, cmd->argv, cmd->argvlen);
        if (len > sizeof(stack) && !(buf = malloc(len)))
            return -1;
        redis_format(buf, cmd->argc, cmd->argv, cmd->argvlen);
        rc = rconn_write(n->conn, buf, len);
        if (buf != stack)
            free(buf);
    }
    cmd->needs_wait = (cmd->flags & REDIS_F_WAIT) && c->wait_cmd_len;
    return rc;
}

static void redis_cmd_free(struct redis_cmd *cmd)
{
    redis_deadline_remove(cmd->c, cmd);
    if (cmd->own)
        freeReplyObject(cmd->own);
    free(cmd->fmt_owned);
    free(cmd);
}

/* A WAIT on n's connection, confirming every write sent on it so far. */
static void redis_send_wait(struct redis_node *n)
{
    struct redis_client *c = n->c;
    struct redis_cmd *w = calloc(1, sizeof(*w));

    if (!w) {
        n->wait_more = 1; /* the next reply tries again */
        return;
    }
    w->c = c;
    w->kind = RC_WAIT;
    w->script = -1;
    w->fmt = c->wait_cmd; /* the client's own, for as long as it lives */
    w->fmtlen = c->wait_cmd_len;
    w->deadline = clock_mono_ms() + c->conf->timeout_ms;
    redis_deadline_add(c, w);
    w->node = n;
    if (rconn_write(n->conn, w->fmt, w->fmtlen) < 0) {
        redis_cmd_free(w);
        n->wait_more = 1;
        return;
    }
    TAILQ_INSERT_TAIL(&n->queue, w, link);
    w->state = RS_SENT;
    n->wait_out = 1;
    n->wait_more = 0;
}

/* A WAIT's reply: every command that replied before it is confirmed, or not. */
static void redis_wait_replied(struct redis_node *n, const redisReply *wait)
{
    struct redis_client *c = n->c;
    struct redis_cmd_list done;
    struct redis_cmd *cmd;
    enum redis_status st = REDIS_CMD_OK;
    char why[160] = "";

    n->wait_out = 0;
    if (n->wait_more) /* first: callbacks below may issue more, which then wait for it */
        redis_send_wait(n);
    if (wait->type == REDIS_REPLY_INTEGER && wait->integer >= c->conf->wait_replicas) {
        st = REDIS_CMD_OK;
    } else if (wait->type == REDIS_REPLY_INTEGER) {
        st = REDIS_CMD_UNCONFIRMED;
        snprintf(why, sizeof(why), "WAIT: %lld of %d replicas acknowledged within %llu ms",
                 wait->integer, c->conf->wait_replicas,
                 (unsigned long long)c->conf->wait_timeout_ms);
    } else {
        st = REDIS_CMD_UNCONFIRMED;
        snprintf(why, sizeof(why), "WAIT failed: %.120s",
                 wait->type == REDIS_REPLY_ERROR ? wait->str : "unexpected reply");
    }
    TAILQ_INIT(&done);
    TAILQ_CONCAT(&done, &n->confirming, link);
    while ((cmd = TAILQ_FIRST(&done))) {
        TAILQ_REMOVE(&done, cmd, link);
        cmd->state = RS_NONE;
        if (st == REDIS_CMD_OK)
            METRIC_INC(c->stats.wait_ok);
        else if (wait->type == REDIS_REPLY_INTEGER)
            METRIC_INC(c->stats.wait_short);
        else
            METRIC_INC(c->stats.wait_error);
        redis_cmd_finish(cmd, st, cmd->own, st == REDIS_CMD_OK ? NULL : why);
    }
}

/* Give cmd to node n: written at once when its connection takes it, else kept until it
 * does (and the node is connected if it is not yet). 0, or -1 when the write failed (cmd
 * is then in no list). */
static int redis_node_put(struct redis_node *n, struct redis_cmd *cmd)
{
    struct redis_client *c = n->c;

    cmd->node = n;
    if (!n->conn || (cmd->kind == RC_USER && !n->role_ok)) {
        TAILQ_INSERT_TAIL(&n->waiting, cmd, link);
        cmd->state = RS_WAITING;
        c->nwaiting++;
        if (!n->conn && !evtimer_pending(n->reconnect_ev, NULL) && !c->freeing)
            redis_timer_in(n->reconnect_ev, 0); /* from the loop, not inside the caller */
        return 0;
    }
    if (redis_cmd_write(n, cmd) < 0)
        return -1;
    TAILQ_INSERT_TAIL(&n->queue, cmd, link);
    cmd->state = RS_SENT;
    if (cmd->needs_wait) {
        if (n->wait_out)
            n->wait_more = 1; /* the WAIT after the one out will cover it */
        else
            redis_send_wait(n);
    }
    return 0;
}

/* Keep cmd until retry_at (0: the next loop pass), then route it again. */
static void redis_unrouted_put(struct redis_client *c, struct redis_cmd *cmd, uint64_t retry_at)
{
    struct timeval tv;
    uint64_t now = clock_mono_ms();

    cmd->retry_at = retry_at;
    cmd->node = NULL;
    TAILQ_INSERT_TAIL(&c->unrouted, cmd, link);
    cmd->state = RS_UNROUTED;
    c->nwaiting++;
    if (!evtimer_pending(c->route_ev, &tv) || retry_at <= now)
        redis_timer_in(c->route_ev, retry_at > now ? retry_at - now : 0);
}

static void redis_route_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    struct redis_cmd_list due;
    struct redis_cmd *cmd, *next;
    uint64_t now = clock_mono_ms(), soonest = UINT64_MAX;

    TAILQ_INIT(&due);
    for (cmd = TAILQ_FIRST(&c->unrouted); cmd; cmd = next) {
        next = TAILQ_NEXT(cmd, link);
        if (cmd->retry_at <= now) {
            redis_cmd_unlink(cmd);
            TAILQ_INSERT_TAIL(&due, cmd, link);
        } else if (cmd->retry_at < soonest) {
            soonest = cmd->retry_at;
        }
    }
    if (soonest != UINT64_MAX)
        redis_timer_in(c->route_ev, soonest - now);
    while ((cmd = TAILQ_FIRST(&due))) {
        TAILQ_REMOVE(&due, cmd, link);
        if (redis_route(c, cmd) < 0)
            redis_cmd_finish(cmd, REDIS_CMD_DOWN, NULL, "redis connection lost");
    }
}

/* Cluster: a node to send a keyless command (or CLUSTER SLOTS) to: one that is ready,
 * else the next of the map's (or the seeds') in turn. */
static struct redis_node *redis_any_node(struct redis_client *c, size_t from)
{
    for (size_t i = 0; i < c->nnodes; i++) {
        struct redis_node *n = c->nodes[(from + i) % c->nnodes];
        if (n->ready && (n->in_map || !c->map_ok))
            return n;
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        struct redis_node *n = c->nodes[(from + i) % c->nnodes];
        if (n->in_map || (!c->map_ok && n->seed))
            return n;
    }
    return c->nnodes ? c->nodes[from % c->nnodes] : NULL;
}

/* Send cmd where it belongs: the one node, or in Cluster mode the owner of its slot. */
static int redis_route(struct redis_client *c, struct redis_cmd *cmd)
{
    unsigned idx;

    if (!c->cluster)
        return redis_node_put(c->nodes[0], cmd);
    if (cmd->slot < 0) {
        struct redis_node *n = redis_any_node(c, 0);
        return redis_node_put(n, cmd);
    }
    idx = c->slots[cmd->slot];
    if (idx == REDIS_NO_NODE) {
        /* no map yet, or the slot is not served: wait for the next map */
        redis_unrouted_put(c, cmd, UINT64_MAX);
        redis_refresh_soon(c);
        return 0;
    }
    return redis_node_put(c->nodes[idx], cmd);
}

/*
 * The EVAL form of a formatted EVALSHA command: "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n"
 * becomes "*N\r\n$4\r\nEVAL\r\n$<len>\r\n<script>\r\n", the rest is kept. 0 or -1.
 */
static int redis_cmd_to_eval(struct redis_cmd *cmd, const char *script)
{
    const char *rest = cmd->fmt, *end = cmd->fmt + cmd->fmtlen;
    char head[64];
    size_t slen = strlen(script), hlen, tail;
    char *out;
    int n;

    rest = memchr(rest, '\n', (size_t)(end - rest)); /* after "*N\r\n" */
    if (!rest || (size_t)(end - rest - 1) < 13 + 5 + 40 + 2 ||
        memcmp(rest + 1, "$7\r\nEVALSHA\r\n$40\r\n", 18) != 0)
        return -1;
    hlen = (size_t)(rest + 1 - cmd->fmt);
    rest += 1 + 18 + 40 + 2;
    tail = (size_t)(end - rest);
    n = snprintf(head, sizeof(head), "$4\r\nEVAL\r\n$%zu\r\n", slen);
    out = malloc(hlen + (size_t)n + slen + 2 + tail);
    if (!out)
        return -1;
    memcpy(out, cmd->fmt, hlen);
    memcpy(out + hlen, head, (size_t)n);
    memcpy(out + hlen + (size_t)n, script, slen);
    memcpy(out + hlen + (size_t)n + slen, "\r\n", 2);
    memcpy(out + hlen + (size_t)n + slen + 2, rest, tail);
    free(cmd->fmt_owned);
    cmd->fmt_owned = out;
    cmd->fmt = out;
    cmd->fmtlen = hlen + (size_t)n + slen + 2 + tail;
    return 0;
}

/* Forget the replies of a command about to be sent again. */
static void redis_cmd_rearm(struct redis_cmd *cmd)
{
    if (cmd->own) {
        freeReplyObject(cmd->own);
        cmd->own = NULL;
    }
    cmd->needs_wait = 0;
    cmd->asking_sent = 0;
    cmd->timed_out = 0;
}

/* The caller's Lua script cache was flushed (or this node never had it: a promoted
 * replica): send the script itself to the same node, with a new deadline. 1 when resent. */
static int redis_cmd_resend_eval(struct redis_node *n, struct redis_cmd *cmd)
{
    struct redis_client *c = n->c;
    int ok;

    cmd->resent = 1;
    if (cmd->fmt) {
        ok = !cmd->borrow_gone && redis_cmd_to_eval(cmd, c->scripts[cmd->script].text) == 0;
    } else {
        cmd->argv[0] = "EVAL";
        cmd->argvlen[0] = 4;
        cmd->argv[1] = c->scripts[cmd->script].text;
        cmd->argvlen[1] = strlen(c->scripts[cmd->script].text);
        ok = 1;
    }
    redis_cmd_rearm(cmd);
    redis_deadline_remove(c, cmd);
    cmd->deadline = clock_mono_ms() + c->conf->timeout_ms;
    redis_deadline_add(c, cmd);
    return ok && redis_node_put(n, cmd) == 0;
}

/* AUTH passed and every script is loaded: the connection serves (and back-off starts
 * over only now, so a node that accepts connections and refuses AUTH is not hammered). */
static void redis_became_ready(struct redis_node *n)
{
    n->ready = 1;
    n->backoff = 0;
    n->setup_failed = 0;
    if (n->was_down)
        log_info("redis: connected to %s", n->name);
    n->was_down = 0;
    redis_update_ready(n->c);
}

/* ROLE of a primary: ["master", offset, [[ip, port, offset], ...]]. A WAIT for fewer
 * replicas than it has does not protect a claim from a failover to one that did not
 * confirm it (Sentinel may promote any of them, and a manual SENTINEL FAILOVER lets the
 * old primary take writes, confirmed by the others, until it is demoted): say so, once
 * per process. */
static void redis_check_replicas(struct redis_node *n, const redisReply *role)
{
    static int warned;
    struct redis_client *c = n->c;
    size_t replicas;

    if (c->conf->wait_replicas <= 0 || role->elements < 3 ||
        role->element[2]->type != REDIS_REPLY_ARRAY)
        return;
    replicas = role->element[2]->elements;
    if (replicas <= (size_t)c->conf->wait_replicas ||
        __atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
        return;
    log_warn("redis: %s has %zu replicas but redis-wait asks %d to confirm: a failover to a "
             "replica that did not confirm a claim loses it, and its key can execute again; "
             "set redis-wait to %zu (every replica that can be promoted)",
             n->name, replicas, c->conf->wait_replicas, replicas);
}

/* An internal command's reply. */
static void redis_internal_reply(struct redis_node *n, struct redis_cmd *cmd,
                                 const redisReply *reply)
{
    struct redis_client *c = n->c;

    switch (cmd->kind) {
    case RC_AUTH:
        if (reply->type != REDIS_REPLY_ERROR)
            return;
        /* Nothing may run unauthenticated (as the default user, where it is open):
         * drop the connection and try again with back-off, logged once. */
        if (!n->setup_failed)
            log_error("redis: AUTH failed on %s%s%s: %s (check redis-user and redis-password); "
                      "retrying in the background",
                      n->name, c->conf->user ? " as user " : "", c->conf->user ? c->conf->user : "",
                      reply->str);
        n->setup_failed = 1;
        redis_drop(n, NULL);
        return;
    case RC_SCRIPT_LOAD:
        if (reply->type == REDIS_REPLY_STRING && strcmp(reply->str, c->sha[cmd->script]) == 0) {
            if (++n->scripts_loaded == c->nscripts)
                redis_became_ready(n);
            return;
        }
        /* A connection without its scripts never becomes ready: make another (a Redis
         * still loading its data answers LOADING for a while), logged once. */
        if (!n->setup_failed)
            log_error("redis: SCRIPT LOAD %s on %s failed: %s; retrying in the background",
                      c->scripts[cmd->script].name, n->name,
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        n->setup_failed = 1;
        redis_drop(n, NULL);
        return;
    case RC_ROLE:
        if (!c->sentinel) { /* only asked for the replica count */
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                reply->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(reply->element[0]->str, "master") == 0)
                redis_check_replicas(n, reply);
            return;
        }
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
            reply->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[0]->str, "master") == 0) {
            redis_check_replicas(n, reply);
            if (!n->role_ok) {
                n->role_ok = 1;
                redis_send_waiting(n);
            }
            return;
        }
        log_warn("redis: %s is not the primary (ROLE: %s); asking the Sentinels again", n->name,
                 reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                         reply->element[0]->type == REDIS_REPLY_STRING
                     ? reply->element[0]->str
                 : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                    : "unexpected reply");
        redis_drop(n, NULL);
        return;
    case RC_PING:
    case RC_USER:
    case RC_SLOTS:
    case RC_WAIT:
        return;
    }
}

/* The index of the node at addr, made (and connected later) when new; REDIS_NO_NODE
 * when there are too many. */
static unsigned redis_node_index(struct redis_client *c, const struct conf_addr *addr);

/* Cluster: MOVED / ASK. 1 when cmd went on to the node named (it is kept), 0 when not
 * a redirect, -1 when it may not follow it (why set). */
static int redis_cmd_redirect(struct redis_node *n, struct redis_cmd *cmd, const char *err,
                              char *why, size_t whylen)
{
    struct redis_client *c = n->c;
    struct conf_addr to;
    unsigned slot, idx;
    enum cluster_redirect kind = cluster_parse_redirect(err, &n->addr, &slot, &to);

    if (kind == CLUSTER_NO_REDIRECT)
        return 0;
    if (!c->cluster) {
        if (!c->moved_standalone)
            log_error("redis: %s is a Redis Cluster node (%s): give it to redis-cluster, not "
                      "redis",
                      n->name, err);
        c->moved_standalone = 1;
        return 0;
    }
    if (cmd->redirects >= c->conf->max_redirects) {
        snprintf(why, whylen, "%.80s: more than redis-max-redirects (%d) redirects", err,
                 c->conf->max_redirects);
        return -1;
    }
    if ((idx = redis_node_index(c, &to)) == REDIS_NO_NODE) {
        snprintf(why, whylen, "%.80s: too many cluster nodes", err);
        return -1;
    }
    cmd->redirects++;
    if (kind == CLUSTER_MOVED) {
        METRIC_INC(c->stats.moved);
        c->slots[slot] = (uint16_t)idx; /* at once; the whole map follows */
        c->nodes[idx]->in_map = 1;
        redis_refresh_soon(c);
    } else {
        METRIC_INC(c->stats.ask);
    }
    cmd->asking = kind == CLUSTER_ASK;
    redis_cmd_rearm(cmd);
    if (redis_node_put(c->nodes[idx], cmd) < 0) {
        snprintf(why, whylen, "redis connection lost");
        return -1;
    }
    return 1;
}

/* An error that says the command did not run and may in a moment (TRYAGAIN, CLUSTERDOWN,
 * LOADING, MASTERDOWN, READONLY): wait a little and route it again, within its deadline.
 * 1 when kept. */
static int redis_cmd_retry(struct redis_node *n, struct redis_cmd *cmd, const char *err)
{
    struct redis_client *c = n->c;
    enum cluster_retry r = cluster_retry_reason(err);
    uint64_t now = clock_mono_ms(), delay;

    if (r == CLUSTER_RETRY_READONLY && c->sentinel && n->conn) {
        log_warn("redis: %s became a replica; asking the Sentinels again", n->name);
        redis_drop(n, NULL);
    }
    if (r == CLUSTER_RETRY_NONE || (r == CLUSTER_RETRY_READONLY && !c->cluster && !c->sentinel))
        return 0;
    delay = (uint64_t)REDIS_RETRY_MIN_MS << (cmd->retries < 4 ? cmd->retries : 4);
    if (delay > REDIS_RETRY_MAX_MS)
        delay = REDIS_RETRY_MAX_MS;
    if (now + delay >= cmd->deadline)
        return 0;
    cmd->retries++;
    METRIC_INC(c->stats.retries[r]);
    if (c->cluster && r != CLUSTER_RETRY_LOADING && r != CLUSTER_RETRY_TRYAGAIN)
        redis_refresh_soon(c);
    redis_cmd_rearm(cmd);
    redis_unrouted_put(c, cmd, now + delay);
    return 1;
}

/* A command's reply is in: tell its owner what it means, or keep it for the next WAIT to
 * confirm. 1 when it was sent again or is kept (it is not done), 0 when done (free it). */
static int redis_cmd_replied(struct redis_node *n, struct redis_cmd *cmd, redisReply *own)
{
    struct redis_client *c = n->c;
    char why[160];
    int rc;

    if (cmd->kind != RC_USER && cmd->kind != RC_SLOTS) {
        redis_internal_reply(n, cmd, own);
        return 0;
    }
    if (own->type == REDIS_REPLY_ERROR && cmd->kind == RC_USER && !cmd->borrow_gone) {
        if ((rc = redis_cmd_redirect(n, cmd, own->str, why, sizeof(why))) > 0)
            return 1;
        if (rc == 0 && redis_cmd_retry(n, cmd, own->str))
            return 1;
        log_warn("redis: %s failed on %s: %s", redis_cmd_name(cmd), n->name,
                 rc < 0 ? why : own->str);
        redis_cmd_done(cmd, REDIS_CMD_ERROR, NULL, rc < 0 ? why : own->str);
        return 0;
    }
    if (own->type == REDIS_REPLY_ERROR) { /* CLUSTER SLOTS refused, or a cancelled one */
        redis_cmd_done(cmd, REDIS_CMD_ERROR, NULL, own->str);
        return 0;
    }
    if (!cmd->needs_wait) {
        redis_cmd_done(cmd, REDIS_CMD_OK, own, NULL);
        return 0;
    }
    /* It ran: a WAIT's reply says whether replicas have it. Its deadline was for its
     * reply; the WAIT that covers it has a deadline of its own (WAIT may take its timeout
     * and then some: Redis checks blocked clients' timeouts at its own tick). */
    cmd->own = own;
    TAILQ_INSERT_TAIL(&n->confirming, cmd, link);
    cmd->state = RS_CONFIRMING;
    redis_deadline_remove(c, cmd);
    return 1;
}

/* rconn: one reply on a node's command connection, for the oldest command sent. 1 when
 * the reply is kept (a command's own, until a WAIT confirms it). */
static int redis_on_reply(redisReply *reply, void *arg)
{
    struct redis_node *n = arg;
    struct redis_cmd *cmd = TAILQ_FIRST(&n->queue);
    int kept = 0;

    if (!cmd) {
        redis_drop(n, "a reply that no command asked for");
        return 0;
    }
    if (cmd->asking_sent) { /* ASKING's +OK (an error there: the command says more) */
        cmd->asking_sent = 0;
        return 0;
    }
    redis_cmd_unlink(cmd);
    if (cmd->kind == RC_WAIT) {
        redis_cmd_free(cmd);
        redis_wait_replied(n, reply);
    } else if (reply->type == REDIS_REPLY_ERROR && cmd->script >= 0 && !cmd->resent &&
               strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        if (!redis_cmd_resend_eval(n, cmd))
            redis_cmd_finish(cmd, REDIS_CMD_DOWN, NULL, "redis connection lost");
    } else if (redis_cmd_replied(n, cmd, reply)) {
        kept = cmd->state == RS_CONFIRMING; /* its reply waits with it */
    } else {
        redis_cmd_free(cmd);
    }
    redis_arm_deadline(n->c);
    return kept;
}

/* Send cmd where it goes, or keep it until it can be. NULL (cmd freed) when neither. */
static struct redis_cmd *redis_enqueue(struct redis_client *c, struct redis_cmd *cmd)
{
    cmd->deadline = clock_mono_ms() + c->conf->timeout_ms;
    if (cmd->kind == RC_USER)
        METRIC_INC(c->stats.commands);
    redis_deadline_add(c, cmd);
    if (redis_route(c, cmd) < 0) {
        redis_cmd_free(cmd);
        return NULL;
    }
    if (cmd->state != RS_SENT && cmd->kind == RC_USER)
        METRIC_INC(c->stats.queued);
    return cmd;
}

/* The slot an argv command routes by (-1: none), in Cluster mode. */
static int redis_argv_slot(const struct redis_client *c, int argc, const char *const *argv,
                           const size_t *lens)
{
    const char *key;
    size_t len;

    if (!c->cluster || !cluster_command_key(argc, argv, lens, &key, &len))
        return -1;
    return (int)cluster_key_slot(key, len);
}

/* Copy argv into one allocation with the command. node: an internal command for that
 * node (NULL: routed). */
static struct redis_cmd *redis_send(struct redis_client *c, struct redis_node *node,
                                    enum redis_cmd_kind kind, int script, int argc,
                                    const char *const *argv, const size_t *lens, unsigned flags,
                                    redis_reply_cb cb, void *arg)
{
    struct redis_cmd *cmd;
    size_t total = 0;
    char *p;

    if (c->nwaiting >= REDIS_WAITING_MAX)
        return NULL;
    for (int i = 0; i < argc; i++)
        total += lens[i];
    /* one allocation: the command, then its argv, lengths and argument bytes (each
     * NUL-terminated too, so argv[0] names a plain command in logs) */
    cmd = calloc(1, sizeof(*cmd) + (size_t)argc * (sizeof(char *) + sizeof(size_t) + 1) + total);
    if (!cmd)
        return NULL;
    cmd->argv = (const char **)(void *)(cmd + 1);
    cmd->argvlen = (size_t *)(void *)((char *)(cmd + 1) + (size_t)argc * sizeof(char *));
    p = (char *)(cmd + 1) + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    cmd->c = c;
    cmd->kind = kind;
    cmd->script = script;
    cmd->flags = flags;
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->argc = argc;
    cmd->slot = redis_argv_slot(c, argc, argv, lens);
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], lens[i]);
        cmd->argv[i] = p;
        cmd->argvlen[i] = lens[i];
        p += lens[i] + 1; /* calloc left the NUL */
    }
    if (!node)
        return redis_enqueue(c, cmd);
    cmd->deadline = clock_mono_ms() + c->conf->timeout_ms;
    redis_deadline_add(c, cmd);
    if (redis_node_put(node, cmd) < 0) {
        redis_cmd_free(cmd);
        return NULL;
    }
    return cmd;
}

/* A command of the client's own to node n, ahead of what waits (AUTH, SCRIPT LOAD...). */
static void redis_send_internal(struct redis_node *n, enum redis_cmd_kind kind, int script,
                                int argc, const char *const *argv, const size_t *lens)
{
    struct redis_cmd *cmd = redis_send(n->c, n, kind, script, argc, argv, lens, 0, NULL, NULL);

    if (!cmd)
        log_warn("redis: could not send %s to %s", argv[0], n->name);
}

/* A new connection (or ROLE said master): send what waited for it, oldest first (after
 * the AUTH and SCRIPT LOADs already sent on it). */
static void redis_send_waiting(struct redis_node *n)
{
    struct redis_cmd *cmd;

    while (n->conn && n->role_ok && (cmd = TAILQ_FIRST(&n->waiting))) {
        redis_cmd_unlink(cmd);
        if (redis_node_put(n, cmd) < 0)
            redis_cmd_finish(cmd, REDIS_CMD_DOWN, NULL, "redis connection lost");
    }
}

#define REDIS_EVAL_MAX_ARGS 16

struct redis_cmd *redis_eval(struct redis_client *c, int script, const char *key, int nargs,
                             const char *const *args, const size_t *lens, unsigned flags,
                             redis_reply_cb cb, void *arg)
{
    const char *argv[4 + REDIS_EVAL_MAX_ARGS];
    size_t argvlen[4 + REDIS_EVAL_MAX_ARGS];

    if (script < 0 || (size_t)script >= c->nscripts || nargs > REDIS_EVAL_MAX_ARGS)
        return NULL;
    argv[0] = "EVALSHA";
    argvlen[0] = 7;
    argv[1] = c->sha[script];
    argvlen[1] = 40;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = key;
    argvlen[3] = strlen(key);
    for (int i = 0; i < nargs; i++) {
        argv[4 + i] = args[i];
        argvlen[4 + i] = lens[i];
    }
    return redis_send(c, NULL, RC_USER, script, 4 + nargs, argv, argvlen, flags, cb, arg);
}

struct redis_cmd *redis_eval_formatted(struct redis_client *c, int script, const char *cmd,
                                       size_t len, unsigned flags, redis_reply_cb cb, void *arg)
{
    struct redis_cmd *rc;
    const char *key;
    size_t klen;

    if (script < 0 || (size_t)script >= c->nscripts || c->nwaiting >= REDIS_WAITING_MAX ||
        !(rc = calloc(1, sizeof(*rc))))
        return NULL;
    rc->c = c;
    rc->script = script;
    rc->flags = flags;
    rc->cb = cb;
    rc->arg = arg;
    rc->fmt = cmd;
    rc->fmtlen = len;
    rc->slot = c->cluster && cluster_wire_key(cmd, len, &key, &klen)
                   ? (int)cluster_key_slot(key, klen)
                   : -1;
    return redis_enqueue(c, rc);
}

const char *redis_script_sha(const struct redis_client *c, int script)
{
    return script >= 0 && (size_t)script < c->nscripts ? c->sha[script] : NULL;
}

struct redis_cmd *redis_command(struct redis_client *c, int argc, const char *const *argv,
                                const size_t *lens, unsigned flags, redis_reply_cb cb, void *arg)
{
    return redis_send(c, NULL, RC_USER, -1, argc, argv, lens, flags, cb, arg);
}

void redis_cancel(struct redis_cmd *cmd)
{
    struct redis_client *c;

    if (!cmd)
        return;
    c = cmd->c;
    cmd->cb = NULL;
    cmd->arg = NULL;
    if (!cmd->fmt || cmd->fmt_owned)
        return; /* its bytes are its own: it is still sent (a release must be) */
    cmd->borrow_gone = 1;
    /* borrowed bytes not yet written to a connection must not be read later: drop it */
    if (cmd->state == RS_WAITING || cmd->state == RS_UNROUTED) {
        redis_cmd_unlink(cmd);
        redis_cmd_free(cmd);
        redis_arm_deadline(c);
    }
}

void redis_get_stats(const struct redis_client *c, struct redis_stats *out)
{
    uint64_t at = METRIC_GET(c->map_at);

    out->commands = METRIC_GET(c->stats.commands);
    out->timeouts = METRIC_GET(c->stats.timeouts);
    out->errors = METRIC_GET(c->stats.errors);
    out->reconnects = METRIC_GET(c->stats.reconnects);
    out->queued = METRIC_GET(c->stats.queued);
    out->wait_ok = METRIC_GET(c->stats.wait_ok);
    out->wait_short = METRIC_GET(c->stats.wait_short);
    out->wait_error = METRIC_GET(c->stats.wait_error);
    out->pings = METRIC_GET(c->stats.pings);
    out->moved = METRIC_GET(c->stats.moved);
    out->ask = METRIC_GET(c->stats.ask);
    for (int i = 0; i < CLUSTER_RETRY_COUNT; i++)
        out->retries[i] = METRIC_GET(c->stats.retries[i]);
    out->refreshes = METRIC_GET(c->stats.refreshes);
    out->switches = METRIC_GET(c->stats.switches);
    out->resends = METRIC_GET(c->stats.resends);
    out->tls_handshakes = METRIC_GET(c->stats.tls_handshakes);
    out->tls_resumed = METRIC_GET(c->stats.tls_resumed);
    out->cluster = c->cluster;
    out->map_age_ms = !c->cluster ? 0 : at ? clock_mono_ms() - at : UINT64_MAX;
}

int redis_ready(const struct redis_client *c)
{
    return METRIC_GET(c->ready);
}

size_t redis_nodes(const struct redis_client *c, char (*out)[REDIS_NODE_NAME_MAX], size_t max)
{
    struct redis_client *m = (struct redis_client *)c; /* the lock, not the state */
    size_t n;

    pthread_mutex_lock(&m->pub_lock);
    n = c->npub < max ? c->npub : max;
    memcpy(out, c->pub, n * sizeof(*out));
    pthread_mutex_unlock(&m->pub_lock);
    return n;
}

const struct redis_conf *redis_client_conf(const struct redis_client *c)
{
    return c->conf;
}

/* Tell the admin thread which nodes the commands go to: the one node (Sentinel: the
 * primary named, or "(primary of 'NAME')"), or the primaries of the slot map (the seeds
 * before one is read). */
static void redis_publish_nodes(struct redis_client *c)
{
    size_t k = 0;

    pthread_mutex_lock(&c->pub_lock);
    if (c->sentinel && !c->target_known && !c->nodes[0]->conn)
        snprintf(c->pub[k++], REDIS_NODE_NAME_MAX, "(primary of '%s')", c->conf->sentinel_master);
    else
        for (size_t i = 0; i < c->nnodes && k < REDIS_MAX_NODES; i++)
            if (!c->cluster || (c->map_ok ? c->nodes[i]->in_map : c->nodes[i]->seed))
                memcpy(c->pub[k++], c->nodes[i]->name, REDIS_NODE_NAME_MAX);
    c->npub = k;
    pthread_mutex_unlock(&c->pub_lock);
}

/* Ready: the one node connected with its scripts; in Cluster mode a map serving every
 * slot and each of its primaries so. */
static void redis_update_ready(struct redis_client *c)
{
    int ready = 1;

    if (!c->cluster) {
        ready = c->nodes[0]->ready;
    } else if (!c->map_ok || !c->map_full) {
        ready = 0;
    } else {
        for (size_t i = 0; i < c->nnodes; i++)
            if (c->nodes[i]->in_map && !c->nodes[i]->ready)
                ready = 0;
    }
    METRIC_SET(c->ready, ready);
}

/* ---- connection management ---- */

/* AUTH [user] password, as argv; 0 when there is no password. */
static int redis_auth_argv(const char *user, const char *password, const char *argv[3],
                           size_t lens[3])
{
    int n = 0;

    if (!password || !*password)
        return 0;
    argv[n] = "AUTH";
    lens[n++] = 4;
    if (user && *user) {
        argv[n] = user;
        lens[n] = strlen(user);
        n++;
    }
    argv[n] = password;
    lens[n] = strlen(password);
    return n + 1;
}

static void redis_on_connect(void *arg)
{
    struct redis_node *n = arg;

    if (rconn_tls(n->conn)) {
        METRIC_INC(n->c->stats.tls_handshakes);
        if (rconn_tls_reused(n->conn))
            METRIC_INC(n->c->stats.tls_resumed);
    }
    log_debug("redis: %s connection to %s up%s", rconn_tls(n->conn) ? "TLS" : "TCP", n->name,
              rconn_tls_reused(n->conn) ? " (session resumed)" : "");
}

static void redis_on_close(const char *errstr, void *arg)
{
    struct redis_node *n = arg;

    if (rconn_connected(n->conn)) {
        log_warn("redis: connection to %s lost: %s", n->name, errstr);
        n->was_down = 1;
    } else {
        redis_note_down(n, errstr); /* once per outage, not per attempt */
    }
    redis_drop(n, NULL);
}

static const struct rconn_cbs redis_conn_cbs = {redis_on_connect, redis_on_reply, redis_on_close};

/* Log an outage once, not at every reconnect attempt. */
static void redis_note_down(struct redis_node *n, const char *why)
{
    if (!n->was_down)
        log_warn("redis: cannot reach %s: %s; retrying in the background", n->name, why);
    n->was_down = 1;
}

static void redis_node_set_addr(struct redis_node *n, const struct conf_addr *addr)
{
    n->addr = *addr;
    conf_addr_str(addr, n->name, sizeof(n->name));
}

/* The Sentinels answered (or none could): connect to the primary they named; with a
 * connection up already (a redis-refresh check), leave it if they name another. */
static void redis_sentinel_cb(const struct conf_addr *primary, const char *why, void *arg)
{
    struct redis_client *c = arg;
    struct redis_node *n = c->nodes[0];
    char was[sizeof(n->name)], now[sizeof(n->name)];

    if (n->conn) {
        if (primary && strcmp(conf_addr_str(primary, now, sizeof(now)), n->name) != 0) {
            log_warn("redis: the Sentinels name %s as the primary of '%s' now; leaving %s", now,
                     c->conf->sentinel_master, n->name);
            redis_drop(n, NULL);
        }
        return;
    }
    if (!primary) {
        redis_note_down(n, why);
        redis_schedule(n->reconnect_ev, &n->backoff);
        return;
    }
    memcpy(was, n->name, sizeof(was));
    c->target = *primary;
    c->target_known = 1;
    redis_node_set_addr(n, primary);
    redis_publish_nodes(c);
    if (strcmp(was, n->name) != 0) {
        log_info("redis: the Sentinels name %s as the primary of '%s'", n->name,
                 c->conf->sentinel_master);
        if (c->sub) { /* its subscriptions follow to the new primary */
            rconn_free(c->sub);
            c->sub = NULL;
            if (!TAILQ_EMPTY(&c->watches))
                redis_schedule_slow(c->sub_reconnect_ev, &c->sub_backoff);
        }
        if (n->sub) { /* (sharded) */
            rconn_free(n->sub);
            n->sub = NULL;
            redis_schedule_slow(n->sub_reconnect_ev, &n->sub_backoff);
        }
    }
    redis_node_connect(n);
}

static void redis_node_connect(struct redis_node *n)
{
    struct redis_client *c = n->c;
    char err[256];
    const char *argv[3];
    size_t lens[3];
    int k;

    if (n->conn || c->freeing)
        return;
    redis_dns_refresh(c);
    if (c->sentinel && !c->target_known) {
        if (sentinel_query(c->sentinel, redis_sentinel_cb, c) < 0)
            redis_schedule(n->reconnect_ev, &n->backoff);
        return;
    }
    n->role_ok = !c->sentinel;
    n->conn = rconn_new(c->base, c->dns, c->conf->tls_ctx, &n->session, &n->addr, &redis_conn_cbs,
                        n, err, sizeof(err));
    if (!n->conn) {
        redis_note_down(n, err);
        redis_schedule(n->reconnect_ev, &n->backoff);
        return;
    }
    n->scripts_loaded = 0;
    n->ready = 0;
    if ((k = redis_auth_argv(c->conf->user, c->conf->password, argv, lens)) > 0)
        redis_send_internal(n, RC_AUTH, -1, k, argv, lens);
    if (c->sentinel || c->conf->wait_replicas > 0) {
        /* Sentinel: is it the primary? With redis-wait: how many replicas has it? */
        const char *role[] = {"ROLE"};
        size_t role_len[] = {4};
        redis_send_internal(n, RC_ROLE, -1, 1, role, role_len);
    }
    /* Ahead of any EVALSHA on this connection, so the scripts are there first. */
    for (size_t i = 0; i < c->nscripts; i++) {
        const char *load[] = {"SCRIPT", "LOAD", c->scripts[i].text};
        size_t load_lens[] = {6, 4, strlen(c->scripts[i].text)};
        redis_send_internal(n, RC_SCRIPT_LOAD, (int)i, 3, load, load_lens);
    }
    if (c->nscripts == 0)
        redis_became_ready(n);
    redis_send_waiting(n);
}

static void redis_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_node *n = arg;

    redis_node_connect(n);
}

/* Every second: an idle connection gets a PING under the usual deadline, so a Redis
 * that stopped answering (frozen, socket still open) is noticed without traffic. */
static void redis_ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    const char *ping[] = {"PING"}, *role[] = {"ROLE"};
    size_t lens[] = {4};

    for (size_t i = 0; i < c->nnodes; i++) {
        struct redis_node *n = c->nodes[i];
        if (!n->conn || !TAILQ_EMPTY(&n->queue))
            continue;
        METRIC_INC(c->stats.pings);
        /* Sentinel mode: is it still the primary? */
        redis_send_internal(n, c->sentinel ? RC_ROLE : RC_PING, -1, 1, c->sentinel ? role : ping,
                            lens);
    }
}

/* ---- Cluster mode: the slot map ---- */

static unsigned redis_node_index(struct redis_client *c, const struct conf_addr *addr)
{
    struct redis_node *n, **grown;

    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i]->addr.port == addr->port && strcmp(c->nodes[i]->addr.host, addr->host) == 0)
            return (unsigned)i;
    if (c->nnodes >= REDIS_MAX_NODES || !(n = calloc(1, sizeof(*n))))
        return REDIS_NO_NODE;
    if (!(grown = realloc(c->nodes, (c->nnodes + 1) * sizeof(*grown))) ||
        !(n->reconnect_ev = evtimer_new(c->base, redis_reconnect_cb, n)) ||
        !(n->sub_reconnect_ev = evtimer_new(c->base, redis_nsub_reconnect_cb, n))) {
        if (grown)
            c->nodes = grown;
        if (n->reconnect_ev)
            event_free(n->reconnect_ev);
        if (n->sub_reconnect_ev)
            event_free(n->sub_reconnect_ev);
        free(n);
        return REDIS_NO_NODE;
    }
    c->nodes = grown;
    n->c = c;
    redis_node_set_addr(n, addr);
    TAILQ_INIT(&n->queue);
    TAILQ_INIT(&n->waiting);
    TAILQ_INIT(&n->confirming);
    c->nodes[c->nnodes] = n;
    return (unsigned)c->nnodes++;
}

/* A new map: every node's waiting commands whose slot moved go to their new owner. */
static void redis_reroute(struct redis_client *c)
{
    struct redis_cmd *cmd, *next;

    for (size_t i = 0; i < c->nnodes; i++) {
        struct redis_node *n = c->nodes[i];
        for (cmd = TAILQ_FIRST(&n->waiting); cmd; cmd = next) {
            next = TAILQ_NEXT(cmd, link);
            if (cmd->kind != RC_USER || (cmd->slot >= 0 ? c->slots[cmd->slot] == i : n->in_map))
                continue;
            redis_cmd_unlink(cmd);
            redis_unrouted_put(c, cmd, 0);
        }
    }
    for (cmd = TAILQ_FIRST(&c->unrouted); cmd; cmd = TAILQ_NEXT(cmd, link))
        if (cmd->retry_at == UINT64_MAX)
            cmd->retry_at = 0;
    if (!TAILQ_EMPTY(&c->unrouted))
        redis_timer_in(c->route_ev, 0);
}

/* Take the map a CLUSTER SLOTS reply gives. */
static void redis_map_apply(struct redis_client *c, const struct cluster_range *r, size_t nr)
{
    size_t served = 0, primaries = 0;
    int changed = !c->map_ok;

    for (size_t i = 0; i < c->nnodes; i++)
        c->nodes[i]->in_map = 0;
    {
        uint16_t *next = malloc(CLUSTER_NSLOTS * sizeof(*next));
        if (!next)
            return;
        for (size_t i = 0; i < CLUSTER_NSLOTS; i++)
            next[i] = REDIS_NO_NODE;
        for (size_t k = 0; k < nr; k++) {
            unsigned idx = redis_node_index(c, &r[k].primary);
            if (idx == REDIS_NO_NODE)
                continue;
            c->nodes[idx]->in_map = 1;
            for (unsigned s = r[k].from; s <= r[k].to; s++)
                next[s] = (uint16_t)idx;
        }
        for (size_t i = 0; i < CLUSTER_NSLOTS; i++) {
            served += next[i] != REDIS_NO_NODE;
            changed |= next[i] != c->slots[i];
        }
        memcpy(c->slots, next, CLUSTER_NSLOTS * sizeof(*next));
        free(next);
    }
    for (size_t i = 0; i < c->nnodes; i++)
        primaries += c->nodes[i]->in_map;
    c->map_ok = 1;
    c->map_full = served == CLUSTER_NSLOTS;
    METRIC_SET(c->map_at, clock_mono_ms());
    if (changed) {
        if (c->map_full)
            log_info("redis: cluster slot map: %zu primaries serve all %d slots", primaries,
                     CLUSTER_NSLOTS);
        else
            log_warn("redis: cluster slot map: %zu of %d slots are served (by %zu primaries); "
                     "commands for the others wait for the map to change",
                     served, CLUSTER_NSLOTS, primaries);
    }
    redis_publish_nodes(c);
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i]->in_map && !c->nodes[i]->conn &&
            !evtimer_pending(c->nodes[i]->reconnect_ev, NULL))
            redis_timer_in(c->nodes[i]->reconnect_ev, 0);
    redis_reroute(c);
    redis_update_ready(c);
    if (c->conf->pubsub == REDIS_PUBSUB_SHARDED)
        redis_shard_reattach(c);
}

static void redis_refresh_cb(evutil_socket_t fd, short what, void *arg);

/* Read the map again soon: at once, or 200 ms after the last read (redirects and
 * errors come in bursts: one read serves them all). */
static void redis_refresh_soon(struct redis_client *c)
{
    uint64_t now = clock_mono_ms(), at = c->last_refresh + REDIS_REFRESH_MIN_MS;

    if (!c->cluster || c->freeing)
        return;
    if (c->refreshing) {
        c->refresh_again = 1;
        return;
    }
    if (!evtimer_pending(c->refresh_ev, NULL))
        redis_timer_in(c->refresh_ev, at > now ? at - now : 0);
}

static void redis_slots_cb(enum redis_status st, const struct redisReply *reply, const char *errstr,
                           void *arg)
{
    struct redis_client *c = arg;
    struct cluster_range *r = NULL;
    struct redis_node *asked = c->nodes[c->refresh_from % c->nnodes];
    char err[640];
    size_t nr = 0;
    int down = 0;

    c->refreshing = 0;
    if (st == REDIS_CMD_OK &&
        cluster_parse_slots(reply, &asked->addr, &r, &nr, err, sizeof(err)) == 0) {
        if (nr == 0)
            snprintf(err, sizeof(err), "%s serves no slots (is the cluster set up?)", asked->name);
        else {
            if (c->map_failed)
                log_info("redis: cluster slot map read from %s", asked->name);
            c->map_failed = 0;
            c->refresh_backoff = 0;
            redis_map_apply(c, r, nr);
        }
        free(r);
    } else if (st != REDIS_CMD_OK) {
        snprintf(err, sizeof(err), "CLUSTER SLOTS on %s: %s", asked->name, errstr);
    }
    if (st != REDIS_CMD_OK || nr == 0) {
        if (!c->map_failed)
            log_warn("redis: cannot read the cluster slot map: %s; asking another node", err);
        c->map_failed = 1;
        c->refresh_from++;
        if (!c->freeing)
            redis_schedule_slow(c->refresh_ev, &c->refresh_backoff);
        return;
    }
    /* a primary of the map that cannot be reached: its replica may be taking over, so
     * look again until the map changes or it is back */
    for (size_t i = 0; i < c->nnodes; i++)
        down |= c->nodes[i]->in_map && !c->nodes[i]->ready;
    if (c->refresh_again || down) {
        c->refresh_again = 0;
        if (!c->freeing && !evtimer_pending(c->refresh_ev, NULL))
            redis_timer_in(c->refresh_ev, down ? REDIS_REFRESH_DOWN_MS : REDIS_REFRESH_MIN_MS);
    }
}

static void redis_refresh_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    const char *argv[] = {"CLUSTER", "SLOTS"};
    size_t lens[] = {7, 5};
    struct redis_node *n;

    if (c->refreshing || c->freeing)
        return;
    n = redis_any_node(c, c->refresh_from);
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i] == n)
            c->refresh_from = i;
    c->refreshing = 1;
    c->last_refresh = clock_mono_ms();
    METRIC_INC(c->stats.refreshes);
    if (!redis_send(c, n, RC_SLOTS, -1, 2, argv, lens, 0, redis_slots_cb, c)) {
        c->refreshing = 0;
        redis_schedule_slow(c->refresh_ev, &c->refresh_backoff);
    }
}

/* redis-refresh: read the map again (Cluster), ask the Sentinels again (Sentinel). */
static void redis_periodic_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;

    if (c->cluster)
        redis_refresh_soon(c);
    else if (c->sentinel && c->nodes[0]->conn && c->nodes[0]->role_ok)
        sentinel_query(c->sentinel, redis_sentinel_cb, c);
}

/* ---- pub/sub ---- */

static void redis_wake(struct redis_client *c, const char *channel)
{
    struct redis_watch *w;
    unsigned gen = ++c->wake_gen;

    /* Callbacks may unwatch (themselves or others): rescan after each call. */
    for (;;) {
        TAILQ_FOREACH(w, &c->watches, link)
        {
            if (w->gen != gen && strcmp(w->channel, channel) == 0)
                break;
        }
        if (!w)
            return;
        w->gen = gen;
        w->cb(w->arg);
    }
}

/* rconn: a reply or push on the pub/sub connection. */
static int redis_sub_on_reply(redisReply *reply, void *arg)
{
    struct redis_client *c = arg;
    const char *kind;

    if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis: pub/sub connection: %s", reply->str);
        return 0;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return 0; /* AUTH's +OK */
    kind = reply->element[0]->str;
    if (strcmp(kind, "message") == 0 || strcmp(kind, "subscribe") == 0 ||
        strcmp(kind, "smessage") == 0 || strcmp(kind, "ssubscribe") == 0)
        redis_wake(c, reply->element[1]->str);
    return 0;
}

static int redis_channel_watched(struct redis_client *c, const char *channel)
{
    struct redis_watch *w;

    TAILQ_FOREACH(w, &c->watches, link)
    {
        if (strcmp(w->channel, channel) == 0)
            return 1;
    }
    return 0;
}

static void redis_sub_on_connect(void *arg)
{
    struct redis_client *c = arg;

    c->sub_backoff = 0;
}

static void redis_sub_on_close(const char *errstr, void *arg)
{
    struct redis_client *c = arg;

    rconn_free(c->sub);
    c->sub = NULL;
    if (!c->freeing && !TAILQ_EMPTY(&c->watches))
        redis_schedule_slow(c->sub_reconnect_ev, &c->sub_backoff);
}

static const struct rconn_cbs redis_sub_cbs = {redis_sub_on_connect, redis_sub_on_reply,
                                               redis_sub_on_close};

/* "VERB channel" ((UN)SUBSCRIBE, S(UN)SUBSCRIBE) on a pub/sub connection. */
static void redis_sub_write(struct rconn *rc, const char *verb, const char *channel)
{
    const char *argv[] = {verb, channel};
    size_t lens[] = {strlen(verb), strlen(channel)}, len = redis_format(NULL, 2, argv, lens);
    char stack[512], *buf = len <= sizeof(stack) ? stack : malloc(len);

    if (!buf)
        return;
    redis_format(buf, 2, argv, lens);
    rconn_write(rc, buf, len);
    if (buf != stack)
        free(buf);
}

/* AUTH first on a pub/sub connection, when a password is set (its +OK is ignored). */
static void redis_sub_auth(struct redis_client *c, struct rconn *rc)
{
    const char *argv[3];
    size_t lens[3], len;
    char buf[1024];
    int n = redis_auth_argv(c->conf->user, c->conf->password, argv, lens);

    if (n > 0 && (len = redis_format(NULL, n, argv, lens)) <= sizeof(buf)) {
        redis_format(buf, n, argv, lens);
        rconn_write(rc, buf, len);
    }
}

/* Where the pub/sub connection goes: the one node; in Cluster mode any node (a PUBLISH
 * reaches every node of the cluster), one that is ready if there is one. */
static const struct conf_addr *redis_sub_addr(struct redis_client *c)
{
    if (c->cluster)
        return &redis_any_node(c, 0)->addr;
    return &c->nodes[0]->addr;
}

static void redis_sub_connect(struct redis_client *c)
{
    struct redis_watch *w;
    char err[256];

    if (c->sentinel && !c->target_known) { /* not yet known: after the command connection */
        redis_schedule_slow(c->sub_reconnect_ev, &c->sub_backoff);
        return;
    }
    c->sub = rconn_new(c->base, c->dns, c->conf->tls_ctx, NULL, redis_sub_addr(c), &redis_sub_cbs,
                       c, err, sizeof(err));
    if (!c->sub) {
        redis_schedule_slow(c->sub_reconnect_ev, &c->sub_backoff);
        return;
    }
    redis_sub_auth(c, c->sub);
    /* (re)subscribe every watched channel once */
    TAILQ_FOREACH(w, &c->watches, link)
    {
        struct redis_watch *v;
        int first = 1;
        TAILQ_FOREACH(v, &c->watches, link)
        {
            if (v == w)
                break;
            if (strcmp(v->channel, w->channel) == 0)
                first = 0;
        }
        if (first)
            redis_sub_write(c->sub, "SUBSCRIBE", w->channel);
    }
}

static void redis_sub_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;

    if (!c->sub && !TAILQ_EMPTY(&c->watches))
        redis_sub_connect(c);
}

/* ---- sharded pub/sub: SSUBSCRIBE at the node of the channel's slot ---- */

/* The node serving channel's slot (the one node outside Cluster mode); NULL: none yet. */
static struct redis_node *redis_shard_node(struct redis_client *c, const char *channel)
{
    unsigned idx;

    if (!c->cluster)
        return c->nodes[0];
    idx = c->slots[cluster_key_slot(channel, strlen(channel))];
    return idx == REDIS_NO_NODE ? NULL : c->nodes[idx];
}

/* Another watch than except of channel at n. */
static int redis_shard_watched(struct redis_client *c, struct redis_node *n, const char *channel,
                               const struct redis_watch *except)
{
    struct redis_watch *w;

    TAILQ_FOREACH(w, &c->watches, link)
    {
        if (w != except && w->node == n && strcmp(w->channel, channel) == 0)
            return 1;
    }
    return 0;
}

static void redis_nsub_on_connect(void *arg)
{
    struct redis_node *n = arg;

    n->sub_backoff = 0;
}

/* A reply or push on a node's sharded pub/sub connection. */
static int redis_nsub_on_reply(redisReply *reply, void *arg)
{
    struct redis_node *n = arg;
    struct redis_client *c = n->c;
    struct redis_watch *w;
    const char *kind, *channel;

    if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis: sharded pub/sub connection to %s: %s", n->name, reply->str);
        return 0;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return 0; /* AUTH's +OK */
    kind = reply->element[0]->str;
    channel = reply->element[1]->str;
    if (strcmp(kind, "smessage") == 0 || strcmp(kind, "ssubscribe") == 0) {
        redis_wake(c, channel);
    } else if (strcmp(kind, "sunsubscribe") == 0 && redis_shard_watched(c, n, channel, NULL)) {
        /* not asked for: its slot moved (or the node was demoted). Its watchers look
         * again now; they are subscribed where the next map says. */
        TAILQ_FOREACH(w, &c->watches, link)
        {
            if (w->node == n && strcmp(w->channel, channel) == 0)
                w->node = NULL;
        }
        redis_refresh_soon(c);
        redis_wake(c, channel);
        if (!c->cluster)
            redis_shard_reattach(c);
    }
    return 0;
}

static void redis_nsub_on_close(const char *errstr, void *arg)
{
    struct redis_node *n = arg;
    struct redis_client *c = n->c;
    struct redis_watch *w;

    rconn_free(n->sub);
    n->sub = NULL;
    if (c->freeing)
        return;
    TAILQ_FOREACH(w, &c->watches, link)
    {
        if (w->node == n) {
            redis_schedule_slow(n->sub_reconnect_ev, &n->sub_backoff);
            return;
        }
    }
}

static const struct rconn_cbs redis_nsub_cbs = {redis_nsub_on_connect, redis_nsub_on_reply,
                                                redis_nsub_on_close};

/* Connect n's sharded pub/sub connection and subscribe every channel watched at n. */
static void redis_nsub_connect(struct redis_node *n)
{
    struct redis_client *c = n->c;
    struct redis_watch *w;
    char err[256];

    if (n->sub || c->freeing)
        return;
    TAILQ_FOREACH(w, &c->watches, link)
    {
        if (w->node == n)
            break;
    }
    if (!w)
        return; /* its watches moved to another node meanwhile */
    if (!(n->sub = rconn_new(c->base, c->dns, c->conf->tls_ctx, &n->session, &n->addr,
                             &redis_nsub_cbs, n, err, sizeof(err)))) {
        redis_schedule_slow(n->sub_reconnect_ev, &n->sub_backoff);
        return;
    }
    redis_sub_auth(c, n->sub);
    TAILQ_FOREACH(w, &c->watches, link)
    {
        struct redis_watch *v;
        int first = w->node == n;
        for (v = TAILQ_FIRST(&c->watches); first && v != w; v = TAILQ_NEXT(v, link))
            if (v->node == n && strcmp(v->channel, w->channel) == 0)
                first = 0;
        if (first)
            redis_sub_write(n->sub, "SSUBSCRIBE", w->channel);
    }
}

static void redis_nsub_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_nsub_connect(arg);
}

/* Subscribe w where its channel's slot is served (nothing when no node serves it yet:
 * the caller's timers look again, and the next map attaches it). */
static void redis_shard_attach(struct redis_watch *w)
{
    struct redis_client *c = w->c;
    struct redis_node *n = redis_shard_node(c, w->channel);

    w->node = n;
    if (!n)
        return;
    if (n->sub) {
        if (!redis_shard_watched(c, n, w->channel, w))
            redis_sub_write(n->sub, "SSUBSCRIBE", w->channel);
    } else if (!evtimer_pending(n->sub_reconnect_ev, NULL)) {
        redis_nsub_connect(n); /* subscribes w too */
    }
}

static void redis_shard_detach(struct redis_watch *w)
{
    struct redis_node *n = w->node;

    if (n && n->sub && !w->c->freeing && !redis_shard_watched(w->c, n, w->channel, w))
        redis_sub_write(n->sub, "SUNSUBSCRIBE", w->channel);
    w->node = NULL;
}

/* A new map (or an unasked sunsubscribe): every watch goes where its slot is now. */
static void redis_shard_reattach(struct redis_client *c)
{
    struct redis_watch *w;

    TAILQ_FOREACH(w, &c->watches, link)
    {
        if (w->node != redis_shard_node(c, w->channel) || !w->node) {
            redis_shard_detach(w);
            redis_shard_attach(w);
        }
    }
}

struct redis_watch *redis_watch(struct redis_client *c, const char *channel, redis_wake_cb cb,
                                void *arg)
{
    struct redis_watch *w = calloc(1, sizeof(*w));
    int subscribed;

    if (!w || !(w->channel = strdup(channel))) {
        free(w);
        return NULL;
    }
    w->c = c;
    w->cb = cb;
    w->arg = arg;
    w->gen = c->wake_gen;
    if (c->conf->pubsub == REDIS_PUBSUB_SHARDED) {
        TAILQ_INSERT_TAIL(&c->watches, w, link);
        redis_shard_attach(w);
        return w;
    }
    subscribed = redis_channel_watched(c, channel);
    TAILQ_INSERT_TAIL(&c->watches, w, link);
    if (!c->sub) {
        if (!evtimer_pending(c->sub_reconnect_ev, NULL))
            redis_sub_connect(c); /* subscribes every watched channel, this one included */
    } else if (!subscribed) {
        redis_sub_write(c->sub, "SUBSCRIBE", channel);
    }
    return w;
}

void redis_unwatch(struct redis_watch *w)
{
    struct redis_client *c;

    if (!w)
        return;
    c = w->c;
    if (c->conf->pubsub == REDIS_PUBSUB_SHARDED)
        redis_shard_detach(w);
    TAILQ_REMOVE(&c->watches, w, link);
    if (c->conf->pubsub != REDIS_PUBSUB_SHARDED && c->sub && !c->freeing &&
        !redis_channel_watched(c, w->channel))
        redis_sub_write(c->sub, "UNSUBSCRIBE", w->channel);
    free(w->channel);
    free(w);
}

/* ---- lifecycle ---- */

static int redis_sha1_hex(const char *text, char out[41])
{
    unsigned char md[20];
    unsigned int n = 0;
    static const char hex[] = "0123456789abcdef";

    if (!EVP_Digest(text, strlen(text), md, &n, EVP_sha1(), NULL) || n != 20)
        return -1;
    for (int i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
    return 0;
}

/* A Sentinel announced +switch-master for our master: leave a primary that is no longer
 * it at once (the usual procedure then asks the Sentinels and checks ROLE). */
static void redis_switch_cb(const struct conf_addr *primary, const char *from, void *arg)
{
    struct redis_client *c = arg;
    struct redis_node *n = c->nodes[0];
    char to[REDIS_NODE_NAME_MAX];

    conf_addr_str(primary, to, sizeof(to));
    METRIC_INC(c->stats.switches);
    log_info("redis: Sentinel %s announces +switch-master: '%s' is at %s now", from,
             c->conf->sentinel_master, to);
    if (n->conn && strcmp(n->name, to) != 0) {
        n->backoff = 0;
        redis_drop(n, NULL);
    }
}

/* The Sentinel querier, with its query ([AUTH] SENTINEL get-master-addr-by-name) built. */
static int redis_sentinel_new(struct redis_client *c)
{
    const struct redis_conf *conf = c->conf;
    const char *q[] = {"SENTINEL", "get-master-addr-by-name", conf->sentinel_master};
    size_t qlens[] = {8, 23, strlen(conf->sentinel_master)}, len = 0;
    const char *auth[3];
    size_t alens[3];
    int n = redis_auth_argv(conf->sentinel_user, conf->sentinel_password, auth, alens), rc = -1;
    char *buf;

    snprintf(c->nodes[0]->name, sizeof(c->nodes[0]->name), "(primary of '%s')",
             conf->sentinel_master);
    if (n)
        len = redis_format(NULL, n, auth, alens);
    if (!(buf = malloc(len + redis_format(NULL, 3, q, qlens))))
        return -1;
    if (n)
        redis_format(buf, n, auth, alens);
    len += redis_format(buf + len, 3, q, qlens);
    c->sentinel = sentinel_new(c->base, c->dns, conf->tls_ctx, conf->sentinels, conf->nsentinels,
                               buf, len, n ? redis_format(NULL, n, auth, alens) : 0,
                               conf->sentinel_master, conf->timeout_ms);
    rc = c->sentinel && sentinel_watch(c->sentinel, redis_switch_cb, c) == 0 ? 0 : -1;
    free(buf);
    return rc;
}

/* Has path changed since *seen (which is updated)? A file that is missing counts as one
 * state of its own. */
static int redis_file_changed(const char *path, struct stat *seen)
{
    struct stat now;

    if (stat(path, &now) < 0)
        memset(&now, 0, sizeof(now));
    if (now.st_ino == seen->st_ino && now.st_size == seen->st_size &&
        now.st_mtim.tv_sec == seen->st_mtim.tv_sec && now.st_mtim.tv_nsec == seen->st_mtim.tv_nsec)
        return 0;
    *seen = now;
    return 1;
}

/* The resolver follows the system's settings as getaddrinfo does, without blocking:
 * /etc/resolv.conf (nameservers, search, ndots, timeout, attempts) and /etc/hosts, each
 * read again when it changed (checked before every connection, which is when a name is
 * looked up). Without a usable resolv.conf, 127.0.0.1 is asked, as glibc does. */
static void redis_dns_refresh(struct redis_client *c)
{
    int resolv = redis_file_changed("/etc/resolv.conf", &c->resolv_seen) || !c->dns_loaded;
    int hosts = redis_file_changed("/etc/hosts", &c->hosts_seen);

    c->dns_loaded = 1;
    if (resolv) {
        evdns_base_clear_nameservers_and_suspend(c->dns);
        evdns_base_search_clear(c->dns);
        evdns_base_clear_host_addresses(c->dns);
        if (evdns_base_resolv_conf_parse(c->dns, DNS_OPTIONS_ALL, "/etc/resolv.conf") != 0) {
            evdns_base_load_hosts(c->dns, "/etc/hosts");
            if (evdns_base_count_nameservers(c->dns) == 0)
                evdns_base_nameserver_ip_add(c->dns, "127.0.0.1");
        }
        evdns_base_resume(c->dns);
    } else if (hosts) {
        evdns_base_clear_host_addresses(c->dns);
        evdns_base_load_hosts(c->dns, "/etc/hosts");
    }
}

/* The nodes to start from: the one (single, Sentinel), or the seeds (Cluster). */
static int redis_nodes_new(struct redis_client *c)
{
    const struct redis_conf *conf = c->conf;

    if (!conf->ncluster)
        return redis_node_index(c, &conf->addr) == REDIS_NO_NODE ? -1 : 0;
    c->cluster = 1;
    if (!(c->slots = malloc(CLUSTER_NSLOTS * sizeof(*c->slots))))
        return -1;
    for (size_t i = 0; i < CLUSTER_NSLOTS; i++)
        c->slots[i] = REDIS_NO_NODE;
    for (size_t i = 0; i < conf->ncluster; i++) {
        unsigned idx = redis_node_index(c, &conf->cluster[i]);
        if (idx == REDIS_NO_NODE)
            return -1;
        c->nodes[idx]->seed = 1;
    }
    return 0;
}

struct redis_client *redis_client_new(struct event_base *base, const struct redis_conf *conf,
                                      const struct redis_script *scripts, size_t nscripts)
{
    struct redis_client *c = calloc(1, sizeof(*c));
    struct timeval ping = clock_tv(REDIS_PING_MS), refresh;

    if (!c)
        return NULL;
    c->base = base;
    c->conf = conf;
    c->scripts = scripts;
    c->nscripts = nscripts;
    TAILQ_INIT(&c->unrouted);
    TAILQ_INIT(&c->deadlines);
    TAILQ_INIT(&c->watches);
    pthread_mutex_init(&c->pub_lock, NULL);
    if (!(c->pub = calloc(REDIS_MAX_NODES, sizeof(*c->pub))) || redis_nodes_new(c) < 0 ||
        !(c->dns = evdns_base_new(base, 0)))
        goto err;
    redis_dns_refresh(c);
    if (conf->nsentinels && redis_sentinel_new(c) < 0)
        goto err;
    redis_publish_nodes(c);
    if (conf->wait_replicas > 0) {
        char n[24], t[24];
        const char *argv[] = {"WAIT", n, t};
        size_t lens[] = {4, bytes_u64(n, (uint64_t)conf->wait_replicas),
                         bytes_u64(t, conf->wait_timeout_ms)};
        c->wait_cmd_len = redis_format(c->wait_cmd, 3, argv, lens);
    }
    c->sha = calloc(nscripts ? nscripts : 1, sizeof(*c->sha));
    if (!c->sha)
        goto err;
    for (size_t i = 0; i < nscripts; i++)
        if (redis_sha1_hex(scripts[i].text, c->sha[i]) < 0)
            goto err;
    c->sub_reconnect_ev = evtimer_new(base, redis_sub_reconnect_cb, c);
    c->deadline_ev = evtimer_new(base, redis_deadline_cb, c);
    c->ping_ev = event_new(base, -1, EV_PERSIST, redis_ping_cb, c);
    c->route_ev = evtimer_new(base, redis_route_cb, c);
    c->refresh_ev = evtimer_new(base, redis_refresh_cb, c);
    c->periodic_ev = event_new(base, -1, EV_PERSIST, redis_periodic_cb, c);
    if (!c->sub_reconnect_ev || !c->deadline_ev || !c->ping_ev || !c->route_ev || !c->refresh_ev ||
        !c->periodic_ev)
        goto err;
    event_add(c->ping_ev, &ping);
    if (conf->refresh_ms && (c->cluster || c->sentinel)) {
        refresh = clock_tv(conf->refresh_ms);
        event_add(c->periodic_ev, &refresh);
    }
    for (size_t i = 0; i < c->nnodes; i++)
        redis_node_connect(c->nodes[i]);
    if (c->cluster)
        redis_refresh_soon(c);
    return c;
err:
    redis_client_free(c);
    return NULL;
}

static void redis_cmd_list_free(struct redis_cmd_list *l)
{
    struct redis_cmd *cmd;

    while ((cmd = TAILQ_FIRST(l))) {
        TAILQ_REMOVE(l, cmd, link);
        redis_cmd_free(cmd);
    }
}

void redis_client_free(struct redis_client *c)
{
    struct redis_watch *w;

    if (!c)
        return;
    c->freeing = 1;
    for (size_t i = 0; i < c->nnodes; i++) {
        rconn_free(c->nodes[i]->conn);
        c->nodes[i]->conn = NULL;
        rconn_free(c->nodes[i]->sub);
        c->nodes[i]->sub = NULL;
    }
    rconn_free(c->sub);
    c->sub = NULL;
    while ((w = TAILQ_FIRST(&c->watches))) {
        TAILQ_REMOVE(&c->watches, w, link);
        free(w->channel);
        free(w);
    }
    /* sent or not, their callbacks are not called */
    for (size_t i = 0; i < c->nnodes; i++) {
        struct redis_node *n = c->nodes[i];
        redis_cmd_list_free(&n->queue);
        redis_cmd_list_free(&n->waiting);
        redis_cmd_list_free(&n->confirming);
        if (n->reconnect_ev)
            event_free(n->reconnect_ev);
        if (n->sub_reconnect_ev)
            event_free(n->sub_reconnect_ev);
        tls_session_clear(&n->session);
        free(n);
    }
    redis_cmd_list_free(&c->unrouted);
    free(c->nodes);
    free(c->slots);
    sentinel_free(c->sentinel);
    if (c->dns)
        evdns_base_free(c->dns, 0); /* every lookup was cancelled with its connection */
    if (c->sub_reconnect_ev)
        event_free(c->sub_reconnect_ev);
    if (c->deadline_ev)
        event_free(c->deadline_ev);
    if (c->ping_ev)
        event_free(c->ping_ev);
    if (c->route_ev)
        event_free(c->route_ev);
    if (c->refresh_ev)
        event_free(c->refresh_ev);
    if (c->periodic_ev)
        event_free(c->periodic_ev);
    free(c->sha);
    free(c->pub);
    pthread_mutex_destroy(&c->pub_lock);
    free(c);
}
