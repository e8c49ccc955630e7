#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "config.h"
#include "log.h"

#define STORE_BACKOFF_MIN 50 /* ms before reconnecting, doubling */
#define STORE_BACKOFF_MAX 1000

/*
 * The scripts. Values: "P" fp(64) token(32) | "D" fp(64) record. Each touches only
 * KEYS[1]; completion is published on the channel named KEYS[1].
 */
enum { SCRIPT_CLAIM, SCRIPT_RECORD, SCRIPT_RELEASE, SCRIPT_RENEW, SCRIPT_COUNT };

static const char *const store_scripts[SCRIPT_COUNT] = {
    /* CLAIM fp token lease_ms → {1} claimed | {2, pttl} pending | {3, record} | {4} */
    /* one SET ... NX GET (Redis >= 7.0) both claims and tells what was there */
    "local v = redis.call('SET', KEYS[1], 'P' .. ARGV[1] .. ARGV[2], 'NX', 'GET', 'PX', ARGV[3])\n"
    "if not v then return {1} end\n"
    "if string.sub(v, 2, 65) ~= ARGV[1] then return {4} end\n"
    "if string.sub(v, 1, 1) == 'P' then return {2, redis.call('PTTL', KEYS[1])} end\n"
    "return {3, string.sub(v, 66)}\n",
    /* RECORD token retention_ms record → 1 stored | 0 refused (not ours any more) */
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v or string.sub(v, 1, 1) ~= 'P' or string.sub(v, 66) ~= ARGV[1] then return 0 end\n"
    "redis.call('SET', KEYS[1], 'D' .. string.sub(v, 2, 65) .. ARGV[3], 'PX', ARGV[2])\n"
    "redis.call('PUBLISH', KEYS[1], 'done')\n"
    "return 1\n",
    /* RELEASE token → 1 deleted | 0 not ours */
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, 1) == 'P' and string.sub(v, 66) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('PUBLISH', KEYS[1], 'released')\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    /* RENEW token lease_ms → 1 extended | 0 not ours */
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.sub(v, 1, 1) == 'P' and string.sub(v, 66) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n",
};

static const char *const store_script_names[SCRIPT_COUNT] = {"claim", "record", "release", "renew"};

struct store_cmd {
    struct store *s;
    int script;
    store_claim_cb ccb;
    store_int_cb icb;
    void *arg;
    uint64_t deadline; /* monotonic ms */
    int timed_out;     /* its deadline passed: the connection was reset for it */
    int resent;        /* already fell back from EVALSHA to EVAL */
    /* kept for the EVAL fallback: argv[0..1] are replaced by EVAL + script text */
    int argc;
    const char **argv;
    size_t *argvlen;
    char *blob;
    TAILQ_ENTRY(store_cmd) link; /* s->queue, in send order = deadline order */
};
TAILQ_HEAD(store_cmd_list, store_cmd);

struct store_watch {
    struct store *s;
    char *key;
    store_wake_cb cb;
    void *arg;
    unsigned gen;
    TAILQ_ENTRY(store_watch) link;
};
TAILQ_HEAD(store_watch_list, store_watch);

struct store {
    struct event_base *base;
    const struct config *cfg;
    int worker_id;
    char sha[SCRIPT_COUNT][41];
    char lease[24], retention[24];
    char addr[CONFIG_HOST_MAX + 16];
    /* command connection */
    redisAsyncContext *ac;
    int connected, was_down, checked_policy;
    unsigned backoff;
    struct event *reconnect_ev;
    struct event *deadline_ev;
    struct store_cmd_list queue;
    /* pub/sub connection */
    redisAsyncContext *sub;
    int sub_connected;
    unsigned sub_backoff;
    struct event *sub_reconnect_ev;
    struct store_watch_list watches;
    unsigned wake_gen;
    int freeing;
    struct store_stats stats;
};

static void store_connect(struct store *s);
static void store_sub_connect(struct store *s);
static void store_note_down(struct store *s, const char *why);

static uint64_t store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void store_schedule(struct event *ev, unsigned *backoff)
{
    struct timeval tv;

    *backoff = *backoff ? *backoff * 2 : STORE_BACKOFF_MIN;
    if (*backoff > STORE_BACKOFF_MAX)
        *backoff = STORE_BACKOFF_MAX;
    tv.tv_sec = *backoff / 1000;
    tv.tv_usec = (suseconds_t)(*backoff % 1000) * 1000;
    evtimer_add(ev, &tv);
}

/* Arm the single deadline timer for the oldest pending command. */
static void store_arm_deadline(struct store *s)
{
    struct store_cmd *c = TAILQ_FIRST(&s->queue);
    struct timeval tv;
    uint64_t now, left;

    if (!c) {
        evtimer_del(s->deadline_ev);
        return;
    }
    now = store_now();
    left = c->deadline > now ? c->deadline - now : 0;
    tv.tv_sec = (time_t)(left / 1000);
    tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
    evtimer_add(s->deadline_ev, &tv);
}

static void store_cmd_free(struct store_cmd *c)
{
    free(c); /* argv and arguments live in the same allocation */
}

/* Report a failure to the command's owner (once). */
static void store_cmd_fail(struct store_cmd *c, enum store_status st, const char *why)
{
    store_claim_cb ccb = c->ccb;
    store_int_cb icb = c->icb;
    void *arg = c->arg;

    c->ccb = NULL;
    c->icb = NULL;
    if (ccb)
        ccb(st, NULL, why, arg);
    else if (icb)
        icb(st, 0, why, arg);
}

/* Drop the command connection: every pending command fails (hiredis calls each reply
 * callback with NULL), then reconnect with back-off. Not called from hiredis callbacks. */
static void store_reset(struct store *s, const char *why)
{
    redisAsyncContext *ac = s->ac;

    if (!ac)
        return;
    log_warn("redis: %s; reconnecting", why);
    s->ac = NULL;
    s->connected = 0;
    s->was_down = 1;
    s->stats.reconnects++;
    redisAsyncFree(ac); /* runs store_reply_cb(NULL) for each pending command */
    if (!s->freeing)
        store_schedule(s->reconnect_ev, &s->backoff);
}

static void store_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct store *s = arg;
    struct store_cmd *c = TAILQ_FIRST(&s->queue);
    uint64_t now = store_now();
    char why[96];

    if (!c)
        return;
    if (c->deadline > now) {
        store_arm_deadline(s);
        return;
    }
    /* Every command that is due times out; the others fail with the connection. */
    TAILQ_FOREACH(c, &s->queue, link)
    {
        if (c->deadline <= now)
            c->timed_out = 1;
    }
    s->stats.timeouts++;
    snprintf(why, sizeof(why), "no answer within redis-timeout (%llu ms)",
             (unsigned long long)s->cfg->idem.redis_timeout_ms);
    store_reset(s, why);
}

static void store_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct store_cmd *c = privdata;
    struct store *s = c->s;
    redisReply *reply = r;

    TAILQ_REMOVE(&s->queue, c, link);
    if (!s->freeing)
        store_arm_deadline(s);
    if (!reply || s->freeing) {
        if (!s->freeing)
            store_cmd_fail(c, c->timed_out ? STORE_TIMEOUT : STORE_DOWN,
                           c->timed_out ? "redis did not answer in time" : "redis connection lost");
        store_cmd_free(c);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && !c->resent && s->ac == ac &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* the script cache was flushed: send the script itself, same deadline rules */
        c->resent = 1;
        c->argv[0] = "EVAL";
        c->argvlen[0] = 4;
        c->argv[1] = store_scripts[c->script];
        c->argvlen[1] = strlen(store_scripts[c->script]);
        c->deadline = store_now() + s->cfg->idem.redis_timeout_ms;
        if (redisAsyncCommandArgv(ac, store_reply_cb, c, c->argc, c->argv, c->argvlen) ==
            REDIS_OK) {
            TAILQ_INSERT_TAIL(&s->queue, c, link);
            store_arm_deadline(s);
            return;
        }
        store_cmd_fail(c, STORE_DOWN, "redis connection lost");
        store_cmd_free(c);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("redis: %s script failed: %s", store_script_names[c->script], reply->str);
        store_cmd_fail(c, STORE_ERROR, reply->str);
        store_cmd_free(c);
        return;
    }
    if (c->script == SCRIPT_CLAIM) {
        struct store_claim_result res = {0};
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
            reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[0]->integer < 1 ||
            reply->element[0]->integer > 4) {
            store_cmd_fail(c, STORE_ERROR, "unexpected reply to claim");
        } else {
            res.kind = (enum store_claim)reply->element[0]->integer;
            res.pttl_ms = -1;
            if (res.kind == STORE_PENDING && reply->elements > 1 &&
                reply->element[1]->type == REDIS_REPLY_INTEGER)
                res.pttl_ms = reply->element[1]->integer;
            if (res.kind == STORE_DONE) {
                if (reply->elements < 2 || reply->element[1]->type != REDIS_REPLY_STRING) {
                    store_cmd_fail(c, STORE_ERROR, "unexpected reply to claim");
                    store_cmd_free(c);
                    return;
                }
                res.record = reply->element[1]->str;
                res.record_len = reply->element[1]->len;
            }
            if (c->ccb) {
                store_claim_cb cb = c->ccb;
                c->ccb = NULL;
                cb(STORE_OK, &res, NULL, c->arg);
            }
        }
    } else if (reply->type != REDIS_REPLY_INTEGER) {
        store_cmd_fail(c, STORE_ERROR, "unexpected reply");
    } else if (c->icb) {
        store_int_cb cb = c->icb;
        c->icb = NULL;
        cb(STORE_OK, reply->integer, NULL, c->arg);
    }
    store_cmd_free(c);
}

/* Build and send EVALSHA sha 1 key args...; the blob keeps copies for an EVAL resend. */
static struct store_cmd *store_send(struct store *s, int script, const char *key, int nargs,
                                    const char *const *args, const size_t *lens)
{
    struct store_cmd *c;
    size_t total = 0, keylen = strlen(key);
    int argc = 4 + nargs;
    char *p;

    if (!s->ac)
        return NULL;
    for (int i = 0; i < nargs; i++)
        total += lens[i];
    /* one allocation: the command, then its argv, lengths and argument bytes */
    c = calloc(1, sizeof(*c) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + keylen + total);
    if (!c)
        return NULL;
    c->blob = (char *)(c + 1);
    c->argv = (const char **)(void *)c->blob;
    c->argvlen = (size_t *)(void *)(c->blob + (size_t)argc * sizeof(char *));
    p = c->blob + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    c->s = s;
    c->script = script;
    c->argc = argc;
    c->argv[0] = "EVALSHA";
    c->argvlen[0] = 7;
    c->argv[1] = s->sha[script];
    c->argvlen[1] = 40;
    c->argv[2] = "1";
    c->argvlen[2] = 1;
    memcpy(p, key, keylen);
    c->argv[3] = p;
    c->argvlen[3] = keylen;
    p += keylen;
    for (int i = 0; i < nargs; i++) {
        memcpy(p, args[i], lens[i]);
        c->argv[4 + i] = p;
        c->argvlen[4 + i] = lens[i];
        p += lens[i];
    }
    c->deadline = store_now() + s->cfg->idem.redis_timeout_ms;
    if (redisAsyncCommandArgv(s->ac, store_reply_cb, c, argc, c->argv, c->argvlen) != REDIS_OK) {
        store_cmd_free(c);
        return NULL;
    }
    s->stats.commands++;
    TAILQ_INSERT_TAIL(&s->queue, c, link);
    if (TAILQ_FIRST(&s->queue) == c)
        store_arm_deadline(s);
    return c;
}

struct store_cmd *store_claim(struct store *s, const char *key, const char *fp_hex,
                              const char *token, store_claim_cb cb, void *arg)
{
    const char *args[] = {fp_hex, token, s->lease};
    size_t lens[] = {strlen(fp_hex), strlen(token), strlen(s->lease)};
    struct store_cmd *c = store_send(s, SCRIPT_CLAIM, key, 3, args, lens);

    if (c) {
        c->ccb = cb;
        c->arg = arg;
    }
    return c;
}

static struct store_cmd *store_int(struct store *s, int script, const char *key, int nargs,
                                   const char *const *args, const size_t *lens, store_int_cb cb,
                                   void *arg)
{
    struct store_cmd *c = store_send(s, script, key, nargs, args, lens);

    if (c) {
        c->icb = cb;
        c->arg = arg;
    }
    return c;
}

struct store_cmd *store_record(struct store *s, const char *key, const char *token,
                               const void *record, size_t len, store_int_cb cb, void *arg)
{
    const char *args[] = {token, s->retention, record};
    size_t lens[] = {strlen(token), strlen(s->retention), len};
    return store_int(s, SCRIPT_RECORD, key, 3, args, lens, cb, arg);
}

struct store_cmd *store_release(struct store *s, const char *key, const char *token,
                                store_int_cb cb, void *arg)
{
    const char *args[] = {token};
    size_t lens[] = {strlen(token)};
    return store_int(s, SCRIPT_RELEASE, key, 1, args, lens, cb, arg);
}

struct store_cmd *store_renew(struct store *s, const char *key, const char *token, store_int_cb cb,
                              void *arg)
{
    const char *args[] = {token, s->lease};
    size_t lens[] = {strlen(token), strlen(s->lease)};
    return store_int(s, SCRIPT_RENEW, key, 2, args, lens, cb, arg);
}

void store_cancel(struct store_cmd *c)
{
    if (c) {
        c->ccb = NULL;
        c->icb = NULL;
        c->arg = NULL;
    }
}

void store_get_stats(const struct store *s, struct store_stats *out)
{
    *out = s->stats;
}

/* ---- the hiredis event adapter ----
 *
 * hiredis's own libevent adapter re-adds a one-shot read event after every read and
 * toggles a write event around every write: four epoll_ctl calls per round trip. Ours
 * keeps a persistent read event, and writes what hiredis buffered from a deferred
 * callback at the end of the current loop pass (no syscall to schedule it, and every
 * command issued in that pass goes out in one write). Only a socket that would block
 * gets a real write event.
 */
struct store_ev {
    redisAsyncContext *ac;
    struct event *rev, *wev, *flush;
    int flushing;
};

static void store_ev_read(evutil_socket_t fd, short what, void *arg)
{
    struct store_ev *e = arg;
    redisAsyncHandleRead(e->ac);
}

static void store_ev_write(evutil_socket_t fd, short what, void *arg)
{
    struct store_ev *e = arg;

    e->flushing = 1;
    redisAsyncHandleWrite(e->ac); /* may free e (connection lost): touch nothing after */
}

static void store_ev_add_read(void *arg)
{
    struct store_ev *e = arg;
    event_add(e->rev, NULL);
}

static void store_ev_del_read(void *arg)
{
    struct store_ev *e = arg;
    event_del(e->rev);
}

static void store_ev_add_write(void *arg)
{
    struct store_ev *e = arg;

    if (e->flushing) /* still bytes left after a write: wait for writability */
        event_add(e->wev, NULL);
    else
        event_active(e->flush, EV_WRITE, 0);
}

static void store_ev_del_write(void *arg)
{
    struct store_ev *e = arg;

    e->flushing = 0;
    event_del(e->wev);
}

static void store_ev_cleanup(void *arg)
{
    struct store_ev *e = arg;

    event_free(e->rev);
    event_free(e->wev);
    event_free(e->flush);
    free(e);
}

static int store_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct store_ev *e = calloc(1, sizeof(*e));
    int fd = ac->c.fd;

    if (!e)
        return -1;
    e->ac = ac;
    e->rev = event_new(base, fd, EV_READ | EV_PERSIST, store_ev_read, e);
    e->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, store_ev_write, e);
    e->flush = event_new(base, -1, 0, store_ev_write, e);
    if (!e->rev || !e->wev || !e->flush) {
        if (e->rev)
            event_free(e->rev);
        if (e->wev)
            event_free(e->wev);
        if (e->flush)
            event_free(e->flush);
        free(e);
        return -1;
    }
    ac->ev.data = e;
    ac->ev.addRead = store_ev_add_read;
    ac->ev.delRead = store_ev_del_read;
    ac->ev.addWrite = store_ev_add_write;
    ac->ev.delWrite = store_ev_del_write;
    ac->ev.cleanup = store_ev_cleanup;
    /* hiredis asks for writability to learn that a non-blocking connect finished */
    e->flushing = 1;
    event_add(e->rev, NULL);
    event_add(e->wev, NULL);
    return 0;
}

/* ---- connection management ---- */

static void store_script_loaded_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    struct store *s = ac->data;
    long idx = (long)(intptr_t)privdata;

    if (!reply || !s || s->freeing)
        return;
    if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, s->sha[idx]) != 0)
        log_error("redis: SCRIPT LOAD %s failed: %s", store_script_names[idx],
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
}

static void store_policy_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;

    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return; /* CONFIG may be disabled on managed Redis: nothing to check then */
    if (strcmp(reply->element[1]->str, "noeviction") != 0)
        log_warn("redis: maxmemory-policy is '%s': Redis may evict records, and an evicted "
                 "record means a duplicate execution; set maxmemory-policy noeviction",
                 reply->element[1]->str);
}

static void store_auth_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;

    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_error("redis: AUTH failed: %s (check redis-password)", reply->str);
}

/* First thing on every new connection: AUTH, when a password is configured. */
static void store_auth(struct store *s, redisAsyncContext *ac)
{
    const char *pw = s->cfg->redis_password;

    if (pw && *pw)
        redisAsyncCommand(ac, store_auth_cb, NULL, "AUTH %b", pw, strlen(pw));
}

static void store_version_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    const char *v;

    if (!reply || reply->type != REDIS_REPLY_STRING)
        return;
    v = strstr(reply->str, "redis_version:");
    if (v && atoi(v + 14) < 7)
        log_error("redis: version %.*s is too old: idemproxy needs Redis 7.0 or later (its "
                  "claim script uses SET NX GET); every keyed request will fail",
                  (int)strcspn(v + 14, "\r\n"), v + 14);
}

static void store_connect_cb(const redisAsyncContext *ac, int status)
{
    struct store *s = ac->data;

    if (!s || ac != s->ac)
        return;
    if (status != REDIS_OK) {
        store_note_down(s, ac->errstr);
        s->ac = NULL; /* hiredis frees it after this callback */
        s->connected = 0;
        if (!s->freeing)
            store_schedule(s->reconnect_ev, &s->backoff);
        return;
    }
    s->connected = 1;
    s->backoff = 0;
    if (s->was_down)
        log_info("redis: connected to %s", s->addr);
    s->was_down = 0;
}

static void store_disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct store *s = ac->data;

    if (!s || ac != s->ac)
        return; /* we dropped it ourselves */
    log_warn("redis: connection lost: %s", status == REDIS_OK ? "closed" : ac->errstr);
    s->ac = NULL;
    s->connected = 0;
    s->was_down = 1;
    if (!s->freeing)
        store_schedule(s->reconnect_ev, &s->backoff);
}

/* Log an outage once, not at every reconnect attempt. */
static void store_note_down(struct store *s, const char *why)
{
    if (!s->was_down)
        log_warn("redis: cannot connect to %s: %s; retrying in the background", s->addr, why);
    s->was_down = 1;
}

static redisAsyncContext *store_open(struct store *s)
{
    const struct config_addr *a = &s->cfg->redis;
    redisAsyncContext *ac;

    ac =
        a->unix_path[0] ? redisAsyncConnectUnix(a->unix_path) : redisAsyncConnect(a->host, a->port);
    if (!ac)
        return NULL;
    if (ac->err) {
        store_note_down(s, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    if (store_ev_attach(ac, s->base) < 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

static void store_connect(struct store *s)
{
    redisAsyncContext *ac = store_open(s);

    if (!ac) {
        store_note_down(s, "cannot create a connection");
        store_schedule(s->reconnect_ev, &s->backoff);
        return;
    }
    s->ac = ac;
    redisAsyncSetConnectCallback(ac, store_connect_cb);
    redisAsyncSetDisconnectCallback(ac, store_disconnect_cb);
    store_auth(s, ac);
    /* Queued ahead of any EVALSHA on this connection, so the scripts are there first. */
    for (long i = 0; i < SCRIPT_COUNT; i++)
        redisAsyncCommand(ac, store_script_loaded_cb, (void *)(intptr_t)i, "SCRIPT LOAD %s",
                          store_scripts[i]);
    if (s->worker_id == 1 && !s->checked_policy) {
        s->checked_policy = 1;
        redisAsyncCommand(ac, store_policy_cb, NULL, "CONFIG GET maxmemory-policy");
        redisAsyncCommand(ac, store_version_cb, NULL, "INFO server");
    }
}

static void store_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct store *s = arg;

    if (!s->ac)
        store_connect(s);
}

/* ---- pub/sub ---- */

static void store_wake(struct store *s, const char *channel)
{
    struct store_watch *w;
    unsigned gen = ++s->wake_gen;

    /* Callbacks may unwatch (themselves or others): rescan after each call. */
    for (;;) {
        TAILQ_FOREACH(w, &s->watches, link)
        {
            if (w->gen != gen && strcmp(w->key, channel) == 0)
                break;
        }
        if (!w)
            return;
        w->gen = gen;
        w->cb(w->arg);
    }
}

static void store_sub_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    struct store *s = privdata;

    if (!reply || s->freeing || ac != s->sub || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[0]->str, "message") == 0 ||
        strcmp(reply->element[0]->str, "subscribe") == 0)
        store_wake(s, reply->element[1]->str);
}

static int store_key_watched(struct store *s, const char *key, struct store_watch *except)
{
    struct store_watch *w;

    TAILQ_FOREACH(w, &s->watches, link)
    {
        if (w != except && strcmp(w->key, key) == 0)
            return 1;
    }
    return 0;
}

static void store_sub_connect_cb(const redisAsyncContext *ac, int status)
{
    struct store *s = ac->data;

    if (!s || ac != s->sub)
        return;
    if (status != REDIS_OK) {
        s->sub = NULL;
        if (!s->freeing && !TAILQ_EMPTY(&s->watches))
            store_schedule(s->sub_reconnect_ev, &s->sub_backoff);
        return;
    }
    s->sub_connected = 1;
    s->sub_backoff = 0;
}

static void store_sub_disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct store *s = ac->data;

    if (!s || ac != s->sub)
        return;
    s->sub = NULL;
    s->sub_connected = 0;
    if (!s->freeing && !TAILQ_EMPTY(&s->watches))
        store_schedule(s->sub_reconnect_ev, &s->sub_backoff);
}

static void store_sub_connect(struct store *s)
{
    struct store_watch *w;
    redisAsyncContext *ac = store_open(s);

    if (!ac) {
        store_schedule(s->sub_reconnect_ev, &s->sub_backoff);
        return;
    }
    s->sub = ac;
    redisAsyncSetConnectCallback(ac, store_sub_connect_cb);
    redisAsyncSetDisconnectCallback(ac, store_sub_disconnect_cb);
    store_auth(s, ac);
    /* (re)subscribe every watched key once */
    TAILQ_FOREACH(w, &s->watches, link)
    {
        struct store_watch *v;
        int first = 1;
        TAILQ_FOREACH(v, &s->watches, link)
        {
            if (v == w)
                break;
            if (strcmp(v->key, w->key) == 0)
                first = 0;
        }
        if (first)
            redisAsyncCommand(ac, store_sub_cb, s, "SUBSCRIBE %b", w->key, strlen(w->key));
    }
}

static void store_sub_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct store *s = arg;

    if (!s->sub && !TAILQ_EMPTY(&s->watches))
        store_sub_connect(s);
}

struct store_watch *store_watch(struct store *s, const char *key, store_wake_cb cb, void *arg)
{
    struct store_watch *w = calloc(1, sizeof(*w));
    int subscribed;

    if (!w || !(w->key = strdup(key))) {
        free(w);
        return NULL;
    }
    w->s = s;
    w->cb = cb;
    w->arg = arg;
    w->gen = s->wake_gen;
    subscribed = store_key_watched(s, key, NULL);
    TAILQ_INSERT_TAIL(&s->watches, w, link);
    if (!s->sub) {
        if (!evtimer_pending(s->sub_reconnect_ev, NULL))
            store_sub_connect(s); /* subscribes every watched key, this one included */
    } else if (!subscribed) {
        redisAsyncCommand(s->sub, store_sub_cb, s, "SUBSCRIBE %b", key, strlen(key));
    }
    return w;
}

void store_unwatch(struct store_watch *w)
{
    struct store *s;

    if (!w)
        return;
    s = w->s;
    TAILQ_REMOVE(&s->watches, w, link);
    if (s->sub && !s->freeing && !store_key_watched(s, w->key, NULL))
        redisAsyncCommand(s->sub, store_sub_cb, s, "UNSUBSCRIBE %b", w->key, strlen(w->key));
    free(w->key);
    free(w);
}

/* ---- lifecycle ---- */

static int store_sha1_hex(const char *text, char out[41])
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

struct store *store_new(struct event_base *base, const struct config *cfg, int worker_id)
{
    struct store *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->base = base;
    s->cfg = cfg;
    s->worker_id = worker_id;
    TAILQ_INIT(&s->queue);
    TAILQ_INIT(&s->watches);
    config_addr_str(&cfg->redis, s->addr, sizeof(s->addr));
    snprintf(s->lease, sizeof(s->lease), "%llu", (unsigned long long)cfg->idem.lease_ms);
    snprintf(s->retention, sizeof(s->retention), "%llu",
             (unsigned long long)cfg->idem.retention_ms);
    for (int i = 0; i < SCRIPT_COUNT; i++)
        if (store_sha1_hex(store_scripts[i], s->sha[i]) < 0)
            goto err;
    s->reconnect_ev = evtimer_new(base, store_reconnect_cb, s);
    s->sub_reconnect_ev = evtimer_new(base, store_sub_reconnect_cb, s);
    s->deadline_ev = evtimer_new(base, store_deadline_cb, s);
    if (!s->reconnect_ev || !s->sub_reconnect_ev || !s->deadline_ev)
        goto err;
    store_connect(s);
    return s;
err:
    store_free(s);
    return NULL;
}

void store_free(struct store *s)
{
    struct store_watch *w;

    if (!s)
        return;
    s->freeing = 1;
    if (s->ac) {
        redisAsyncContext *ac = s->ac;
        s->ac = NULL;
        redisAsyncFree(ac);
    }
    if (s->sub) {
        redisAsyncContext *ac = s->sub;
        s->sub = NULL;
        redisAsyncFree(ac);
    }
    while ((w = TAILQ_FIRST(&s->watches))) {
        TAILQ_REMOVE(&s->watches, w, link);
        free(w->key);
        free(w);
    }
    if (s->reconnect_ev)
        event_free(s->reconnect_ev);
    if (s->sub_reconnect_ev)
        event_free(s->sub_reconnect_ev);
    if (s->deadline_ev)
        event_free(s->deadline_ev);
    free(s);
}
