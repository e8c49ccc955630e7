#include "redis/redis.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "core/bytes.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "redis/rconn.h"
#include "redis/sentinel.h"

#define REDIS_BACKOFF_MIN 50 /* ms before reconnecting, doubling */
#define REDIS_BACKOFF_MAX 1000
#define REDIS_WAITING_MAX 65536 /* commands queued while there is no connection */
#define REDIS_PING_MS     1000  /* an idle connection is checked this often */

static int redis_wait_set(const struct conf_directive *d, void *base, const char *where, int argc,
                          const char **argv, char *err, size_t errlen);

static const struct conf_choice redis_wait_policy_choices[] = {
    {"fail", REDIS_WAIT_FAIL}, {"degrade", REDIS_WAIT_DEGRADE}, {NULL, 0}};

const struct conf_directive redis_conf_rows[] = {
    {.name = "redis",
     .type = CONF_T_ADDR,
     .flags = CONF_F_UNIX,
     .def = "127.0.0.1:6379",
     .off = offsetof(struct redis_conf, addr),
     .arg = "HOST:PORT|unix:PATH",
     .help = "Redis server for the idempotency records"},
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
    CONF_END,
};

_Static_assert(sizeof(enum redis_wait_policy) == sizeof(int), "enum must be int-sized");

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

int redis_conf_validate(const struct redis_conf *conf, char *err, size_t errlen)
{
    if (conf->wait_replicas > 0 && conf->wait_timeout_ms >= conf->timeout_ms)
        return conf_fail(err, errlen,
                         "redis-wait: its timeout (%llu ms) must be shorter than redis-timeout "
                         "(%llu ms): WAIT holds the connection until it answers",
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
};

struct redis_cmd {
    struct redis_client *c;
    enum redis_cmd_kind kind;
    int script; /* index into c->scripts, or -1 for a plain command */
    unsigned flags;
    redis_reply_cb cb;
    void *arg;
    uint64_t deadline; /* monotonic ms */
    int timed_out;     /* its deadline passed: the connection was reset for it */
    int resent;        /* already fell back from EVALSHA to EVAL */
    int wait_sent;     /* a WAIT follows it on the connection */
    redisReply *own;   /* its own reply, kept until the WAIT's arrives (owned) */
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
    /* c->queue (sent, awaiting replies) or c->waiting (not sent yet); each list is in
     * deadline order, so the oldest of its first two is the next deadline */
    TAILQ_ENTRY(redis_cmd) link;
};
TAILQ_HEAD(redis_cmd_list, redis_cmd);

struct redis_watch {
    struct redis_client *c;
    char *channel;
    redis_wake_cb cb;
    void *arg;
    unsigned gen;
    TAILQ_ENTRY(redis_watch) link;
};
TAILQ_HEAD(redis_watch_list, redis_watch);

struct redis_client {
    struct event_base *base;
    const struct redis_conf *conf;
    const struct redis_script *scripts;
    size_t nscripts;
    char (*sha)[41];               /* SHA1 hex of each script */
    char addr[CONF_HOST_MAX + 16]; /* the node; written by its worker under addr_lock */
    pthread_mutex_t addr_lock;     /* ... which the admin thread takes to read it */
    char wait_cmd[64];             /* "WAIT n t" in the wire format, when redis-wait is on */
    size_t wait_cmd_len;
    /* Sentinel mode: who to ask, and the primary they named (target_known) */
    struct sentinel *sentinel;
    struct conf_addr target;
    int target_known;
    int role_ok; /* the connection may take callers' commands (Sentinel: ROLE said master) */
    /* command connection */
    struct rconn *conn;
    int was_down;
    int setup_failed;      /* AUTH or SCRIPT LOAD refused: logged once until ready again */
    size_t scripts_loaded; /* on this connection */
    int ready;             /* connected with every script loaded (read by other threads) */
    unsigned backoff;
    struct event *reconnect_ev;
    struct event *deadline_ev;
    struct event *ping_ev;
    struct redis_cmd_list queue;   /* sent on conn, in send order */
    struct redis_cmd_list waiting; /* issued while there was no connection, in order */
    size_t nwaiting;
    /* pub/sub connection */
    struct rconn *sub;
    unsigned sub_backoff;
    struct event *sub_reconnect_ev;
    struct redis_watch_list watches;
    unsigned wake_gen;
    int freeing;
    struct redis_stats stats;
};

static void redis_connect(struct redis_client *c);
static void redis_send_waiting(struct redis_client *c);
static void redis_sub_connect(struct redis_client *c);
static void redis_cmd_free(struct redis_cmd *cmd);
static void redis_note_down(struct redis_client *c, const char *why);

static void redis_schedule(struct event *ev, unsigned *backoff)
{
    struct timeval tv;

    *backoff = *backoff ? *backoff * 2 : REDIS_BACKOFF_MIN;
    if (*backoff > REDIS_BACKOFF_MAX)
        *backoff = REDIS_BACKOFF_MAX;
    tv = clock_tv(*backoff);
    evtimer_add(ev, &tv);
}

/* The command whose deadline comes first: the head of one of the two lists. */
static struct redis_cmd *redis_next_deadline(struct redis_client *c)
{
    struct redis_cmd *a = TAILQ_FIRST(&c->queue), *b = TAILQ_FIRST(&c->waiting);

    if (!a || !b)
        return a ? a : b;
    return a->deadline <= b->deadline ? a : b;
}

/* Arm the single deadline timer for the oldest pending command. */
static void redis_arm_deadline(struct redis_client *c)
{
    struct redis_cmd *cmd = redis_next_deadline(c);
    struct timeval tv;
    uint64_t now;

    if (!cmd) {
        evtimer_del(c->deadline_ev);
        return;
    }
    now = clock_mono_ms();
    tv = clock_tv(cmd->deadline > now ? cmd->deadline - now : 0);
    evtimer_add(c->deadline_ev, &tv);
}

/* Report to the command's owner (once). Internal commands have no owner. */
static void redis_cmd_done(struct redis_cmd *cmd, enum redis_status st, const redisReply *reply,
                           const char *why)
{
    redis_reply_cb cb = cmd->cb;

    if (cmd->kind != RC_USER)
        return;
    if (st == REDIS_CMD_ERROR || st == REDIS_CMD_DOWN)
        METRIC_INC(cmd->c->stats.errors);
    cmd->cb = NULL;
    if (cb)
        cb(st, reply, why, cmd->arg);
}

/* Drop the command connection: every command sent on it fails (TIMEOUT if it was due,
 * else DOWN), then reconnect with back-off. Commands issued from those callbacks wait
 * for the next connection. why: logged (we drop it: a deadline), or NULL (it was lost
 * and the caller said so). Never called from inside an rconn call on c->conn other than
 * its callbacks. */
static void redis_drop(struct redis_client *c, const char *why)
{
    struct redis_cmd_list failed;
    struct redis_cmd *cmd;

    if (!c->conn)
        return;
    if (why) {
        log_warn("redis: %s; reconnecting", why);
        METRIC_INC(c->stats.reconnects);
    }
    rconn_free(c->conn);
    c->conn = NULL;
    METRIC_SET(c->ready, 0);
    c->was_down = 1;
    c->role_ok = 0;
    c->target_known = 0; /* Sentinel mode: ask again who the primary is */
    TAILQ_INIT(&failed);
    TAILQ_CONCAT(&failed, &c->queue, link);
    while ((cmd = TAILQ_FIRST(&failed))) {
        TAILQ_REMOVE(&failed, cmd, link);
        redis_cmd_done(cmd, cmd->timed_out ? REDIS_CMD_TIMEOUT : REDIS_CMD_DOWN, NULL,
                       cmd->timed_out ? "redis did not answer in time" : "redis connection lost");
        redis_cmd_free(cmd);
    }
    redis_arm_deadline(c);
    if (!c->freeing && !evtimer_pending(c->reconnect_ev, NULL))
        redis_schedule(c->reconnect_ev, &c->backoff);
}

static void redis_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    struct redis_cmd *cmd;
    uint64_t now = clock_mono_ms();
    char why[96];

    /* Queued commands whose deadline passed were never sent: they fail alone (the
     * caller knows nothing reached Redis). */
    while ((cmd = TAILQ_FIRST(&c->waiting)) && cmd->deadline <= now) {
        TAILQ_REMOVE(&c->waiting, cmd, link);
        c->nwaiting--;
        METRIC_INC(c->stats.timeouts);
        redis_cmd_done(cmd, REDIS_CMD_TIMEOUT, NULL,
                       "no Redis connection within redis-timeout (not sent)");
        redis_cmd_free(cmd);
    }
    /* the loop may run this timer before the read event of a reply already in the
     * socket: take what has arrived before giving up on it */
    if (c->conn && (cmd = TAILQ_FIRST(&c->queue)) && cmd->deadline <= now)
        rconn_read_ready(c->conn);
    cmd = TAILQ_FIRST(&c->queue);
    if (!cmd || cmd->deadline > now) {
        redis_arm_deadline(c);
        return;
    }
    /* Every command that is due times out; the others fail with the connection. */
    TAILQ_FOREACH(cmd, &c->queue, link)
    {
        if (cmd->deadline <= now)
            cmd->timed_out = 1;
    }
    METRIC_INC(c->stats.timeouts);
    snprintf(why, sizeof(why), "no answer within redis-timeout (%llu ms)",
             (unsigned long long)c->conf->timeout_ms);
    redis_drop(c, why);
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

/* Put cmd on the connection (followed by WAIT when it asks and redis-wait is on). An argv
 * command is put in the wire format here: hiredis's own formatting (sdscatfmt) cost
 * several thousand instructions a command. 0 or -1. */
static int redis_cmd_write(struct redis_client *c, struct redis_cmd *cmd)
{
    char stack[512], *buf = stack;
    size_t len;
    int rc;

    if (cmd->fmt) {
        rc = rconn_write(c->conn, cmd->fmt, cmd->fmtlen);
    } else {
        len = redis_format(NULL, cmd->argc, cmd->argv, cmd->argvlen);
        if (len > sizeof(stack) && !(buf = malloc(len)))
            return -1;
        redis_format(buf, cmd->argc, cmd->argv, cmd->argvlen);
        rc = rconn_write(c->conn, buf, len);
        if (buf != stack)
            free(buf);
    }
    cmd->wait_sent = 0;
    if (rc == 0 && (cmd->flags & REDIS_F_WAIT) && c->wait_cmd_len) {
        rc = rconn_write(c->conn, c->wait_cmd, c->wait_cmd_len);
        cmd->wait_sent = rc == 0;
    }
    return rc;
}

static void redis_cmd_free(struct redis_cmd *cmd)
{
    if (cmd->own)
        freeReplyObject(cmd->own);
    free(cmd->fmt_owned);
    free(cmd);
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

/* The caller's Lua script cache was flushed (or this node never had it: a promoted
 * replica): send the script itself, with a new deadline. 1 when resent. */
static int redis_cmd_resend_eval(struct redis_client *c, struct redis_cmd *cmd)
{
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
    if (cmd->own) {
        freeReplyObject(cmd->own);
        cmd->own = NULL;
    }
    cmd->deadline = clock_mono_ms() + c->conf->timeout_ms;
    if (!ok || redis_cmd_write(c, cmd) < 0)
        return 0;
    TAILQ_INSERT_TAIL(&c->queue, cmd, link);
    redis_arm_deadline(c);
    return 1;
}

/* AUTH passed and every script is loaded: the connection serves (and back-off starts
 * over only now, so a node that accepts connections and refuses AUTH is not hammered). */
static void redis_became_ready(struct redis_client *c)
{
    METRIC_SET(c->ready, 1);
    c->backoff = 0;
    c->setup_failed = 0;
    if (c->was_down)
        log_info("redis: connected to %s", c->addr);
    c->was_down = 0;
}

/* An internal command's reply. */
static void redis_internal_reply(struct redis_client *c, struct redis_cmd *cmd,
                                 const redisReply *reply)
{
    switch (cmd->kind) {
    case RC_AUTH:
        if (reply->type != REDIS_REPLY_ERROR)
            return;
        /* Nothing may run unauthenticated (as the default user, where it is open):
         * drop the connection and try again with back-off, logged once. */
        if (!c->setup_failed)
            log_error("redis: AUTH failed on %s%s%s: %s (check redis-user and redis-password); "
                      "retrying in the background",
                      c->addr, c->conf->user ? " as user " : "", c->conf->user ? c->conf->user : "",
                      reply->str);
        c->setup_failed = 1;
        redis_drop(c, NULL);
        return;
    case RC_SCRIPT_LOAD:
        if (reply->type == REDIS_REPLY_STRING && strcmp(reply->str, c->sha[cmd->script]) == 0) {
            if (++c->scripts_loaded == c->nscripts)
                redis_became_ready(c);
            return;
        }
        /* A connection without its scripts never becomes ready: make another (a Redis
         * still loading its data answers LOADING for a while), logged once. */
        if (!c->setup_failed)
            log_error("redis: SCRIPT LOAD %s on %s failed: %s; retrying in the background",
                      c->scripts[cmd->script].name, c->addr,
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        c->setup_failed = 1;
        redis_drop(c, NULL);
        return;
    case RC_ROLE:
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
            reply->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[0]->str, "master") == 0) {
            if (!c->role_ok) {
                c->role_ok = 1;
                redis_send_waiting(c);
            }
            return;
        }
        log_warn("redis: %s is not the primary (ROLE: %s); asking the Sentinels again", c->addr,
                 reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                         reply->element[0]->type == REDIS_REPLY_STRING
                     ? reply->element[0]->str
                 : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                    : "unexpected reply");
        redis_drop(c, NULL);
        return;
    case RC_PING:
    case RC_USER:
        return;
    }
}

/* A command's replies are in (its own, then WAIT's when one followed it): tell its owner
 * what they mean. */
static void redis_cmd_replied(struct redis_client *c, struct redis_cmd *cmd, const redisReply *own,
                              const redisReply *wait)
{
    char why[160];

    if (cmd->kind != RC_USER) {
        redis_internal_reply(c, cmd, own);
        return;
    }
    if (own->type == REDIS_REPLY_ERROR) {
        log_warn("redis: %s failed: %s", redis_cmd_name(cmd), own->str);
        redis_cmd_done(cmd, REDIS_CMD_ERROR, NULL, own->str);
        if (c->sentinel && strncmp(own->str, "READONLY", 8) == 0 && c->conn) {
            log_warn("redis: %s became a replica; asking the Sentinels again", c->addr);
            redis_drop(c, NULL);
        }
        return;
    }
    if (!cmd->wait_sent) {
        redis_cmd_done(cmd, REDIS_CMD_OK, own, NULL);
        return;
    }
    if (wait->type == REDIS_REPLY_INTEGER && wait->integer >= c->conf->wait_replicas) {
        METRIC_INC(c->stats.wait_ok);
        redis_cmd_done(cmd, REDIS_CMD_OK, own, NULL);
        return;
    }
    if (wait->type == REDIS_REPLY_INTEGER) {
        METRIC_INC(c->stats.wait_short);
        snprintf(why, sizeof(why), "WAIT: %lld of %d replicas acknowledged within %llu ms",
                 wait->integer, c->conf->wait_replicas,
                 (unsigned long long)c->conf->wait_timeout_ms);
    } else {
        METRIC_INC(c->stats.wait_error);
        snprintf(why, sizeof(why), "WAIT failed: %.120s",
                 wait->type == REDIS_REPLY_ERROR ? wait->str : "unexpected reply");
    }
    redis_cmd_done(cmd, REDIS_CMD_UNCONFIRMED, own, why);
}

/* rconn: one reply on the command connection, for the oldest command sent. 1 when the
 * reply is kept (a command's own, until its WAIT's arrives). */
static int redis_on_reply(redisReply *reply, void *arg)
{
    struct redis_client *c = arg;
    struct redis_cmd *cmd = TAILQ_FIRST(&c->queue);
    const redisReply *own, *wait = NULL;

    if (!cmd) {
        redis_drop(c, "a reply that no command asked for");
        return 0;
    }
    if (cmd->wait_sent && !cmd->own) {
        cmd->own = reply; /* WAIT's reply comes next */
        return 1;
    }
    TAILQ_REMOVE(&c->queue, cmd, link);
    redis_arm_deadline(c);
    own = cmd->own ? cmd->own : reply;
    if (cmd->own)
        wait = reply;
    if (own->type == REDIS_REPLY_ERROR && cmd->script >= 0 && !cmd->resent &&
        strncmp(own->str, "NOSCRIPT", 8) == 0) {
        if (redis_cmd_resend_eval(c, cmd))
            return 0;
        redis_cmd_done(cmd, REDIS_CMD_DOWN, NULL, "redis connection lost");
        redis_cmd_free(cmd);
        return 0;
    }
    redis_cmd_replied(c, cmd, own, wait);
    redis_cmd_free(cmd);
    return 0;
}

/* Send cmd now, or keep it until there is a connection. NULL (cmd freed) when neither. */
static struct redis_cmd *redis_enqueue(struct redis_client *c, struct redis_cmd *cmd)
{
    cmd->deadline = clock_mono_ms() + c->conf->timeout_ms;
    if (cmd->kind == RC_USER)
        METRIC_INC(c->stats.commands);
    if (!c->conn || (cmd->kind == RC_USER && !c->role_ok)) {
        /* (re)connecting: keep it, with its deadline, until a connection is made */
        TAILQ_INSERT_TAIL(&c->waiting, cmd, link);
        c->nwaiting++;
        METRIC_INC(c->stats.queued);
        if (redis_next_deadline(c) == cmd)
            redis_arm_deadline(c);
        return cmd;
    }
    if (redis_cmd_write(c, cmd) < 0) {
        redis_cmd_free(cmd);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&c->queue, cmd, link);
    if (redis_next_deadline(c) == cmd)
        redis_arm_deadline(c);
    return cmd;
}

/* Copy argv into one allocation with the command and send it. */
static struct redis_cmd *redis_send(struct redis_client *c, enum redis_cmd_kind kind, int script,
                                    int argc, const char *const *argv, const size_t *lens,
                                    unsigned flags, redis_reply_cb cb, void *arg)
{
    struct redis_cmd *cmd;
    size_t total = 0;
    char *p;

    if (!c->conn && c->nwaiting >= REDIS_WAITING_MAX)
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
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], lens[i]);
        cmd->argv[i] = p;
        cmd->argvlen[i] = lens[i];
        p += lens[i] + 1; /* calloc left the NUL */
    }
    return redis_enqueue(c, cmd);
}

/* A command of the client's own, ahead of what waits (AUTH, SCRIPT LOAD, PING). */
static void redis_send_internal(struct redis_client *c, enum redis_cmd_kind kind, int script,
                                int argc, const char *const *argv, const size_t *lens)
{
    struct redis_cmd *cmd = redis_send(c, kind, script, argc, argv, lens, 0, NULL, NULL);

    if (!cmd)
        log_warn("redis: could not send %s", argv[0]);
}

/* A new connection: send what was queued while there was none, oldest first (after the
 * AUTH and SCRIPT LOADs already sent on it). */
static void redis_send_waiting(struct redis_client *c)
{
    struct redis_cmd *cmd;

    while (c->conn && c->role_ok && (cmd = TAILQ_FIRST(&c->waiting))) {
        TAILQ_REMOVE(&c->waiting, cmd, link);
        c->nwaiting--;
        if (redis_cmd_write(c, cmd) < 0) {
            redis_cmd_done(cmd, REDIS_CMD_DOWN, NULL, "redis connection lost");
            redis_cmd_free(cmd);
            continue;
        }
        TAILQ_INSERT_TAIL(&c->queue, cmd, link);
    }
    redis_arm_deadline(c);
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
    return redis_send(c, RC_USER, script, 4 + nargs, argv, argvlen, flags, cb, arg);
}

struct redis_cmd *redis_eval_formatted(struct redis_client *c, int script, const char *cmd,
                                       size_t len, unsigned flags, redis_reply_cb cb, void *arg)
{
    struct redis_cmd *rc;

    if (script < 0 || (size_t)script >= c->nscripts ||
        (!c->conn && c->nwaiting >= REDIS_WAITING_MAX) || !(rc = calloc(1, sizeof(*rc))))
        return NULL;
    rc->c = c;
    rc->script = script;
    rc->flags = flags;
    rc->cb = cb;
    rc->arg = arg;
    rc->fmt = cmd;
    rc->fmtlen = len;
    return redis_enqueue(c, rc);
}

const char *redis_script_sha(const struct redis_client *c, int script)
{
    return script >= 0 && (size_t)script < c->nscripts ? c->sha[script] : NULL;
}

struct redis_cmd *redis_command(struct redis_client *c, int argc, const char *const *argv,
                                const size_t *lens, unsigned flags, redis_reply_cb cb, void *arg)
{
    return redis_send(c, RC_USER, -1, argc, argv, lens, flags, cb, arg);
}

void redis_cancel(struct redis_cmd *cmd)
{
    struct redis_client *c;

    if (!cmd)
        return;
    cmd->cb = NULL;
    cmd->arg = NULL;
    if (!cmd->fmt || cmd->fmt_owned)
        return; /* its bytes are its own: it is still sent (a release must be) */
    cmd->borrow_gone = 1;
    c = cmd->c;
    /* borrowed bytes not yet written to a connection must not be read later: drop it */
    for (struct redis_cmd *w = TAILQ_FIRST(&c->waiting); w; w = TAILQ_NEXT(w, link)) {
        if (w == cmd) {
            TAILQ_REMOVE(&c->waiting, cmd, link);
            c->nwaiting--;
            redis_cmd_free(cmd);
            redis_arm_deadline(c);
            return;
        }
    }
}

void redis_get_stats(const struct redis_client *c, struct redis_stats *out)
{
    out->commands = METRIC_GET(c->stats.commands);
    out->timeouts = METRIC_GET(c->stats.timeouts);
    out->errors = METRIC_GET(c->stats.errors);
    out->reconnects = METRIC_GET(c->stats.reconnects);
    out->queued = METRIC_GET(c->stats.queued);
    out->wait_ok = METRIC_GET(c->stats.wait_ok);
    out->wait_short = METRIC_GET(c->stats.wait_short);
    out->wait_error = METRIC_GET(c->stats.wait_error);
    out->pings = METRIC_GET(c->stats.pings);
}

int redis_ready(const struct redis_client *c)
{
    return METRIC_GET(c->ready);
}

void redis_node(const struct redis_client *c, char *buf, size_t len)
{
    struct redis_client *m = (struct redis_client *)c; /* the lock, not the state */

    pthread_mutex_lock(&m->addr_lock);
    snprintf(buf, len, "%s", c->addr);
    pthread_mutex_unlock(&m->addr_lock);
}

const struct redis_conf *redis_client_conf(const struct redis_client *c)
{
    return c->conf;
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
    struct redis_client *c = arg;

    log_debug("redis: TCP connection to %s up", c->addr);
}

static void redis_on_close(const char *errstr, void *arg)
{
    struct redis_client *c = arg;

    if (rconn_connected(c->conn)) {
        log_warn("redis: connection to %s lost: %s", c->addr, errstr);
        c->was_down = 1;
    } else {
        redis_note_down(c, errstr); /* once per outage, not per attempt */
    }
    redis_drop(c, NULL);
}

static const struct rconn_cbs redis_conn_cbs = {redis_on_connect, redis_on_reply, redis_on_close};

/* Log an outage once, not at every reconnect attempt. */
static void redis_note_down(struct redis_client *c, const char *why)
{
    if (!c->was_down)
        log_warn("redis: cannot reach %s: %s; retrying in the background", c->addr, why);
    c->was_down = 1;
}

/* The Sentinels answered (or none could): connect to the primary they named. */
static void redis_sentinel_cb(const struct conf_addr *primary, const char *why, void *arg)
{
    struct redis_client *c = arg;
    char was[sizeof(c->addr)];

    if (c->conn)
        return;
    if (!primary) {
        redis_note_down(c, why);
        redis_schedule(c->reconnect_ev, &c->backoff);
        return;
    }
    memcpy(was, c->addr, sizeof(was));
    c->target = *primary;
    c->target_known = 1;
    pthread_mutex_lock(&c->addr_lock);
    conf_addr_str(&c->target, c->addr, sizeof(c->addr));
    pthread_mutex_unlock(&c->addr_lock);
    if (strcmp(was, c->addr) != 0) {
        log_info("redis: the Sentinels name %s as the primary of '%s'", c->addr,
                 c->conf->sentinel_master);
        if (c->sub) { /* its subscriptions follow to the new primary */
            rconn_free(c->sub);
            c->sub = NULL;
            if (!TAILQ_EMPTY(&c->watches))
                redis_schedule(c->sub_reconnect_ev, &c->sub_backoff);
        }
    }
    redis_connect(c);
}

static void redis_connect(struct redis_client *c)
{
    char err[256];
    const char *argv[3];
    size_t lens[3];
    int n;

    if (c->sentinel && !c->target_known) {
        if (sentinel_query(c->sentinel, redis_sentinel_cb, c) < 0)
            redis_schedule(c->reconnect_ev, &c->backoff);
        return;
    }
    c->role_ok = !c->sentinel;
    c->conn = rconn_new(c->base, c->sentinel ? &c->target : &c->conf->addr, &redis_conn_cbs, c, err,
                        sizeof(err));
    if (!c->conn) {
        redis_note_down(c, err);
        redis_schedule(c->reconnect_ev, &c->backoff);
        return;
    }
    c->scripts_loaded = 0;
    METRIC_SET(c->ready, 0);
    if ((n = redis_auth_argv(c->conf->user, c->conf->password, argv, lens)) > 0)
        redis_send_internal(c, RC_AUTH, -1, n, argv, lens);
    if (c->sentinel) {
        const char *role[] = {"ROLE"};
        size_t role_len[] = {4};
        redis_send_internal(c, RC_ROLE, -1, 1, role, role_len);
    }
    /* Ahead of any EVALSHA on this connection, so the scripts are there first. */
    for (size_t i = 0; i < c->nscripts; i++) {
        const char *load[] = {"SCRIPT", "LOAD", c->scripts[i].text};
        size_t load_lens[] = {6, 4, strlen(c->scripts[i].text)};
        redis_send_internal(c, RC_SCRIPT_LOAD, (int)i, 3, load, load_lens);
    }
    if (c->nscripts == 0)
        redis_became_ready(c);
    redis_send_waiting(c);
}

static void redis_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;

    if (!c->conn)
        redis_connect(c);
}

/* Every second: an idle connection gets a PING under the usual deadline, so a Redis
 * that stopped answering (frozen, socket still open) is noticed without traffic. */
static void redis_ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;
    const char *argv[] = {"PING"};
    size_t lens[] = {4};

    if (!c->conn || !TAILQ_EMPTY(&c->queue))
        return;
    METRIC_INC(c->stats.pings);
    if (c->sentinel) {
        const char *role[] = {"ROLE"};
        size_t role_len[] = {4};
        redis_send_internal(c, RC_ROLE, -1, 1, role, role_len);
        return;
    }
    redis_send_internal(c, RC_PING, -1, 1, argv, lens);
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
        redis_schedule(c->sub_reconnect_ev, &c->sub_backoff);
}

static const struct rconn_cbs redis_sub_cbs = {redis_sub_on_connect, redis_sub_on_reply,
                                               redis_sub_on_close};

/* SUBSCRIBE or UNSUBSCRIBE channel on the pub/sub connection. */
static void redis_sub_send(struct redis_client *c, const char *verb, const char *channel)
{
    const char *argv[] = {verb, channel};
    size_t lens[] = {strlen(verb), strlen(channel)}, len = redis_format(NULL, 2, argv, lens);
    char stack[512], *buf = len <= sizeof(stack) ? stack : malloc(len);

    if (!buf)
        return;
    redis_format(buf, 2, argv, lens);
    rconn_write(c->sub, buf, len);
    if (buf != stack)
        free(buf);
}

static void redis_sub_connect(struct redis_client *c)
{
    struct redis_watch *w;
    char err[256];
    const char *argv[3];
    size_t lens[3], len;
    int n;

    if (c->sentinel && !c->target_known) { /* not yet known: after the command connection */
        redis_schedule(c->sub_reconnect_ev, &c->sub_backoff);
        return;
    }
    c->sub = rconn_new(c->base, c->sentinel ? &c->target : &c->conf->addr, &redis_sub_cbs, c, err,
                       sizeof(err));
    if (!c->sub) {
        redis_schedule(c->sub_reconnect_ev, &c->sub_backoff);
        return;
    }
    if ((n = redis_auth_argv(c->conf->user, c->conf->password, argv, lens)) > 0) {
        char buf[1024];
        if ((len = redis_format(NULL, n, argv, lens)) <= sizeof(buf)) {
            redis_format(buf, n, argv, lens);
            rconn_write(c->sub, buf, len);
        }
    }
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
            redis_sub_send(c, "SUBSCRIBE", w->channel);
    }
}

static void redis_sub_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;

    if (!c->sub && !TAILQ_EMPTY(&c->watches))
        redis_sub_connect(c);
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
    subscribed = redis_channel_watched(c, channel);
    TAILQ_INSERT_TAIL(&c->watches, w, link);
    if (!c->sub) {
        if (!evtimer_pending(c->sub_reconnect_ev, NULL))
            redis_sub_connect(c); /* subscribes every watched channel, this one included */
    } else if (!subscribed) {
        redis_sub_send(c, "SUBSCRIBE", channel);
    }
    return w;
}

void redis_unwatch(struct redis_watch *w)
{
    struct redis_client *c;

    if (!w)
        return;
    c = w->c;
    TAILQ_REMOVE(&c->watches, w, link);
    if (c->sub && !c->freeing && !redis_channel_watched(c, w->channel))
        redis_sub_send(c, "UNSUBSCRIBE", w->channel);
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

    snprintf(c->addr, sizeof(c->addr), "(primary of '%s')", conf->sentinel_master);
    if (n)
        len = redis_format(NULL, n, auth, alens);
    if (!(buf = malloc(len + redis_format(NULL, 3, q, qlens))))
        return -1;
    if (n)
        redis_format(buf, n, auth, alens);
    len += redis_format(buf + len, 3, q, qlens);
    c->sentinel =
        sentinel_new(c->base, conf->sentinels, conf->nsentinels, buf, len, n > 0, conf->timeout_ms);
    rc = c->sentinel ? 0 : -1;
    free(buf);
    return rc;
}

struct redis_client *redis_client_new(struct event_base *base, const struct redis_conf *conf,
                                      const struct redis_script *scripts, size_t nscripts)
{
    struct redis_client *c = calloc(1, sizeof(*c));
    struct timeval ping = clock_tv(REDIS_PING_MS);

    if (!c)
        return NULL;
    c->base = base;
    c->conf = conf;
    c->scripts = scripts;
    c->nscripts = nscripts;
    TAILQ_INIT(&c->queue);
    TAILQ_INIT(&c->waiting);
    TAILQ_INIT(&c->watches);
    pthread_mutex_init(&c->addr_lock, NULL);
    conf_addr_str(&conf->addr, c->addr, sizeof(c->addr));
    if (conf->nsentinels && redis_sentinel_new(c) < 0)
        goto err;
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
    c->reconnect_ev = evtimer_new(base, redis_reconnect_cb, c);
    c->sub_reconnect_ev = evtimer_new(base, redis_sub_reconnect_cb, c);
    c->deadline_ev = evtimer_new(base, redis_deadline_cb, c);
    c->ping_ev = event_new(base, -1, EV_PERSIST, redis_ping_cb, c);
    if (!c->reconnect_ev || !c->sub_reconnect_ev || !c->deadline_ev || !c->ping_ev)
        goto err;
    event_add(c->ping_ev, &ping);
    redis_connect(c);
    return c;
err:
    redis_client_free(c);
    return NULL;
}

void redis_client_free(struct redis_client *c)
{
    struct redis_watch *w;
    struct redis_cmd *cmd;

    if (!c)
        return;
    c->freeing = 1;
    rconn_free(c->conn);
    c->conn = NULL;
    rconn_free(c->sub);
    c->sub = NULL;
    while ((w = TAILQ_FIRST(&c->watches))) {
        TAILQ_REMOVE(&c->watches, w, link);
        free(w->channel);
        free(w);
    }
    /* sent or not, their callbacks are not called */
    while ((cmd = TAILQ_FIRST(&c->queue))) {
        TAILQ_REMOVE(&c->queue, cmd, link);
        redis_cmd_free(cmd);
    }
    while ((cmd = TAILQ_FIRST(&c->waiting))) {
        TAILQ_REMOVE(&c->waiting, cmd, link);
        redis_cmd_free(cmd);
    }
    sentinel_free(c->sentinel);
    if (c->reconnect_ev)
        event_free(c->reconnect_ev);
    if (c->sub_reconnect_ev)
        event_free(c->sub_reconnect_ev);
    if (c->deadline_ev)
        event_free(c->deadline_ev);
    if (c->ping_ev)
        event_free(c->ping_ev);
    free(c->sha);
    pthread_mutex_destroy(&c->addr_lock);
    free(c);
}
