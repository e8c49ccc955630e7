#include "redis/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "core/bytes.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"

#define REDIS_BACKOFF_MIN 50 /* ms before reconnecting, doubling */
#define REDIS_BACKOFF_MAX 1000
#define REDIS_WAITING_MAX 65536 /* commands queued while there is no connection */

const struct conf_directive redis_conf_rows[] = {
    {.name = "redis",
     .type = CONF_T_ADDR,
     .flags = CONF_F_UNIX,
     .def = "127.0.0.1:6379",
     .off = offsetof(struct redis_conf, addr),
     .arg = "HOST:PORT|unix:PATH",
     .help = "Redis server for the idempotency records"},
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
    CONF_END,
};

struct redis_cmd {
    struct redis_client *c;
    int script; /* index into c->scripts, or -1 for a plain command */
    redis_reply_cb cb;
    void *arg;
    uint64_t deadline; /* monotonic ms */
    int timed_out;     /* its deadline passed: the connection was reset for it */
    int resent;        /* already fell back from EVALSHA to EVAL */
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
    char (*sha)[41]; /* SHA1 hex of each script */
    char addr[CONF_HOST_MAX + 16];
    /* command connection */
    redisAsyncContext *ac;
    int connected, was_down;
    size_t scripts_loaded; /* on this connection */
    int ready;             /* connected with every script loaded (read by other threads) */
    unsigned backoff;
    struct event *reconnect_ev;
    struct event *deadline_ev;
    struct redis_cmd_list queue;   /* sent on ac, in send order */
    struct redis_cmd_list waiting; /* issued while there was no connection, in order */
    size_t nwaiting;
    /* pub/sub connection */
    redisAsyncContext *sub;
    int sub_connected;
    unsigned sub_backoff;
    struct event *sub_reconnect_ev;
    struct redis_watch_list watches;
    unsigned wake_gen;
    int freeing;
    struct redis_stats stats;
};

static void redis_connect(struct redis_client *c);
static void redis_sub_connect(struct redis_client *c);
static void redis_on_reply(redisAsyncContext *ac, void *r, void *privdata);
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

/* Report to the command's owner (once). */
static void redis_cmd_done(struct redis_cmd *cmd, enum redis_status st, const redisReply *reply,
                           const char *why)
{
    redis_reply_cb cb = cmd->cb;

    if (st == REDIS_CMD_ERROR || st == REDIS_CMD_DOWN)
        METRIC_INC(cmd->c->stats.errors);
    cmd->cb = NULL;
    if (cb)
        cb(st, reply, why, cmd->arg);
}

/* Drop the command connection: every pending command fails (hiredis calls each reply
 * callback with NULL), then reconnect with back-off. Not called from hiredis callbacks. */
static void redis_reset(struct redis_client *c, const char *why)
{
    redisAsyncContext *ac = c->ac;

    if (!ac)
        return;
    log_warn("redis: %s; reconnecting", why);
    c->ac = NULL;
    c->connected = 0;
    METRIC_SET(c->ready, 0);
    c->was_down = 1;
    METRIC_INC(c->stats.reconnects);
    redisAsyncFree(ac); /* runs redis_on_reply(NULL) for each pending command */
    if (!c->freeing)
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
    redis_reset(c, why);
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

/* Hand cmd to hiredis on ac (it copies the bytes into its output buffer). An argv command
 * is put in the wire format here: hiredis's own formatting (sdscatfmt) cost several
 * thousand instructions a command. */
static int redis_cmd_write(redisAsyncContext *ac, struct redis_cmd *cmd)
{
    char stack[512], *buf = stack;
    size_t len;
    int rc;

    if (cmd->fmt)
        return redisAsyncFormattedCommand(ac, redis_on_reply, cmd, cmd->fmt, cmd->fmtlen);
    len = redis_format(NULL, cmd->argc, cmd->argv, cmd->argvlen);
    if (len > sizeof(stack) && !(buf = malloc(len)))
        return REDIS_ERR;
    redis_format(buf, cmd->argc, cmd->argv, cmd->argvlen);
    rc = redisAsyncFormattedCommand(ac, redis_on_reply, cmd, buf, len);
    if (buf != stack)
        free(buf);
    return rc;
}

static void redis_cmd_free(struct redis_cmd *cmd)
{
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

static void redis_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_cmd *cmd = privdata;
    struct redis_client *c = cmd->c;
    redisReply *reply = r;

    TAILQ_REMOVE(&c->queue, cmd, link);
    if (!c->freeing)
        redis_arm_deadline(c);
    if (!reply || c->freeing) {
        if (!c->freeing)
            redis_cmd_done(cmd, cmd->timed_out ? REDIS_CMD_TIMEOUT : REDIS_CMD_DOWN, NULL,
                           cmd->timed_out ? "redis did not answer in time"
                                          : "redis connection lost");
        redis_cmd_free(cmd);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && cmd->script >= 0 && !cmd->resent && c->ac == ac &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* the script cache was flushed: send the script itself, same deadline rules */
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
        cmd->deadline = clock_mono_ms() + c->conf->timeout_ms;
        if (ok && redis_cmd_write(ac, cmd) == REDIS_OK) {
            TAILQ_INSERT_TAIL(&c->queue, cmd, link);
            redis_arm_deadline(c);
            return;
        }
        redis_cmd_done(cmd, REDIS_CMD_DOWN, NULL, "redis connection lost");
        redis_cmd_free(cmd);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("redis: %s failed: %s", redis_cmd_name(cmd), reply->str);
        redis_cmd_done(cmd, REDIS_CMD_ERROR, NULL, reply->str);
    } else {
        redis_cmd_done(cmd, REDIS_CMD_OK, reply, NULL);
    }
    redis_cmd_free(cmd);
}

/* Send cmd now, or keep it until there is a connection. NULL (cmd freed) when neither. */
static struct redis_cmd *redis_enqueue(struct redis_client *c, struct redis_cmd *cmd)
{
    cmd->deadline = clock_mono_ms() + c->conf->timeout_ms;
    METRIC_INC(c->stats.commands);
    if (!c->ac) {
        /* (re)connecting: keep it, with its deadline, until a connection is made */
        TAILQ_INSERT_TAIL(&c->waiting, cmd, link);
        c->nwaiting++;
        METRIC_INC(c->stats.queued);
        if (redis_next_deadline(c) == cmd)
            redis_arm_deadline(c);
        return cmd;
    }
    if (redis_cmd_write(c->ac, cmd) != REDIS_OK) {
        redis_cmd_free(cmd);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&c->queue, cmd, link);
    if (redis_next_deadline(c) == cmd)
        redis_arm_deadline(c);
    return cmd;
}

/* Copy argv into one allocation with the command and send it. */
static struct redis_cmd *redis_send(struct redis_client *c, int script, int argc,
                                    const char *const *argv, const size_t *lens, redis_reply_cb cb,
                                    void *arg)
{
    struct redis_cmd *cmd;
    size_t total = 0;
    char *p;

    if (!c->ac && c->nwaiting >= REDIS_WAITING_MAX)
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
    cmd->script = script;
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

/* A new connection: send what was queued while there was none, oldest first (after the
 * AUTH and SCRIPT LOADs already queued on it). */
static void redis_send_waiting(struct redis_client *c)
{
    struct redis_cmd *cmd;

    while (c->ac && (cmd = TAILQ_FIRST(&c->waiting))) {
        TAILQ_REMOVE(&c->waiting, cmd, link);
        c->nwaiting--;
        if (redis_cmd_write(c->ac, cmd) != REDIS_OK) {
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
                             const char *const *args, const size_t *lens, redis_reply_cb cb,
                             void *arg)
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
    return redis_send(c, script, 4 + nargs, argv, argvlen, cb, arg);
}

struct redis_cmd *redis_eval_formatted(struct redis_client *c, int script, const char *cmd,
                                       size_t len, redis_reply_cb cb, void *arg)
{
    struct redis_cmd *rc;

    if (script < 0 || (size_t)script >= c->nscripts ||
        (!c->ac && c->nwaiting >= REDIS_WAITING_MAX) || !(rc = calloc(1, sizeof(*rc))))
        return NULL;
    rc->c = c;
    rc->script = script;
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
                                const size_t *lens, redis_reply_cb cb, void *arg)
{
    return redis_send(c, -1, argc, argv, lens, cb, arg);
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
    /* borrowed bytes not yet handed to hiredis must not be read later: drop it */
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
}

int redis_ready(const struct redis_client *c)
{
    return METRIC_GET(c->ready);
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
struct redis_ev {
    redisAsyncContext *ac;
    struct event *rev, *wev, *flush;
    int flushing;
};

static void redis_ev_read(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ev *e = arg;
    redisAsyncHandleRead(e->ac);
}

static void redis_ev_write(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ev *e = arg;

    e->flushing = 1;
    redisAsyncHandleWrite(e->ac); /* may free e (connection lost): touch nothing after */
}

static void redis_ev_add_read(void *arg)
{
    struct redis_ev *e = arg;
    event_add(e->rev, NULL);
}

static void redis_ev_del_read(void *arg)
{
    struct redis_ev *e = arg;
    event_del(e->rev);
}

static void redis_ev_add_write(void *arg)
{
    struct redis_ev *e = arg;

    if (e->flushing) /* still bytes left after a write: wait for writability */
        event_add(e->wev, NULL);
    else
        event_active(e->flush, EV_WRITE, 0);
}

static void redis_ev_del_write(void *arg)
{
    struct redis_ev *e = arg;

    e->flushing = 0;
    event_del(e->wev);
}

static void redis_ev_cleanup(void *arg)
{
    struct redis_ev *e = arg;

    event_free(e->rev);
    event_free(e->wev);
    event_free(e->flush);
    free(e);
}

static int redis_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct redis_ev *e = calloc(1, sizeof(*e));
    int fd = ac->c.fd;

    if (!e)
        return -1;
    e->ac = ac;
    e->rev = event_new(base, fd, EV_READ | EV_PERSIST, redis_ev_read, e);
    e->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, redis_ev_write, e);
    e->flush = event_new(base, -1, 0, redis_ev_write, e);
    if (!e->rev || !e->wev || !e->flush)
        goto err;
    ac->ev.data = e;
    ac->ev.addRead = redis_ev_add_read;
    ac->ev.delRead = redis_ev_del_read;
    ac->ev.addWrite = redis_ev_add_write;
    ac->ev.delWrite = redis_ev_del_write;
    ac->ev.cleanup = redis_ev_cleanup;
    /* hiredis asks for writability to learn that a non-blocking connect finished */
    e->flushing = 1;
    event_add(e->rev, NULL);
    event_add(e->wev, NULL);
    return 0;
err:
    if (e->rev)
        event_free(e->rev);
    if (e->wev)
        event_free(e->wev);
    if (e->flush)
        event_free(e->flush);
    free(e);
    return -1;
}

/* ---- connection management ---- */

static void redis_script_loaded_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    struct redis_client *c = ac->data;
    long idx = (long)(intptr_t)privdata;

    if (!reply || !c || c->freeing)
        return;
    if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, c->sha[idx]) != 0)
        log_error("redis: SCRIPT LOAD %s failed: %s", c->scripts[idx].name,
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    else if (ac == c->ac && ++c->scripts_loaded == c->nscripts)
        METRIC_SET(c->ready, 1);
}

static void redis_auth_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;

    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_error("redis: AUTH failed: %s (check redis-password)", reply->str);
}

/* First thing on every new connection: AUTH, when a password is configured. */
static void redis_auth(struct redis_client *c, redisAsyncContext *ac)
{
    const char *pw = c->conf->password;

    if (pw && *pw)
        redisAsyncCommand(ac, redis_auth_cb, NULL, "AUTH %b", pw, strlen(pw));
}

static void redis_connect_cb(const redisAsyncContext *ac, int status)
{
    struct redis_client *c = ac->data;

    if (!c || ac != c->ac)
        return;
    if (status != REDIS_OK) {
        redis_note_down(c, ac->errstr);
        c->ac = NULL; /* hiredis frees it after this callback */
        c->connected = 0;
        if (!c->freeing)
            redis_schedule(c->reconnect_ev, &c->backoff);
        return;
    }
    c->connected = 1;
    c->backoff = 0;
    if (c->was_down)
        log_info("redis: connected to %s", c->addr);
    c->was_down = 0;
}

static void redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct redis_client *c = ac->data;

    if (!c || ac != c->ac)
        return; /* we dropped it ourselves */
    log_warn("redis: connection lost: %s", status == REDIS_OK ? "closed" : ac->errstr);
    c->ac = NULL;
    c->connected = 0;
    METRIC_SET(c->ready, 0);
    c->was_down = 1;
    if (!c->freeing)
        redis_schedule(c->reconnect_ev, &c->backoff);
}

/* Log an outage once, not at every reconnect attempt. */
static void redis_note_down(struct redis_client *c, const char *why)
{
    if (!c->was_down)
        log_warn("redis: cannot connect to %s: %s; retrying in the background", c->addr, why);
    c->was_down = 1;
}

static redisAsyncContext *redis_open(struct redis_client *c)
{
    const struct conf_addr *a = &c->conf->addr;
    redisAsyncContext *ac;

    ac =
        a->unix_path[0] ? redisAsyncConnectUnix(a->unix_path) : redisAsyncConnect(a->host, a->port);
    if (!ac)
        return NULL;
    if (ac->err) {
        redis_note_down(c, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = c;
    if (redis_ev_attach(ac, c->base) < 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

static void redis_connect(struct redis_client *c)
{
    redisAsyncContext *ac = redis_open(c);

    if (!ac) {
        redis_note_down(c, "cannot create a connection");
        redis_schedule(c->reconnect_ev, &c->backoff);
        return;
    }
    c->ac = ac;
    c->scripts_loaded = 0;
    METRIC_SET(c->ready, 0);
    redisAsyncSetConnectCallback(ac, redis_connect_cb);
    redisAsyncSetDisconnectCallback(ac, redis_disconnect_cb);
    redis_auth(c, ac);
    /* Queued ahead of any EVALSHA on this connection, so the scripts are there first. */
    for (size_t i = 0; i < c->nscripts; i++)
        redisAsyncCommand(ac, redis_script_loaded_cb, (void *)(intptr_t)i, "SCRIPT LOAD %s",
                          c->scripts[i].text);
    redis_send_waiting(c);
}

static void redis_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_client *c = arg;

    if (!c->ac)
        redis_connect(c);
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

static void redis_sub_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    struct redis_client *c = privdata;

    if (!reply || c->freeing || ac != c->sub || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[0]->str, "message") == 0 ||
        strcmp(reply->element[0]->str, "subscribe") == 0)
        redis_wake(c, reply->element[1]->str);
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

static void redis_sub_connect_cb(const redisAsyncContext *ac, int status)
{
    struct redis_client *c = ac->data;

    if (!c || ac != c->sub)
        return;
    if (status != REDIS_OK) {
        c->sub = NULL;
        if (!c->freeing && !TAILQ_EMPTY(&c->watches))
            redis_schedule(c->sub_reconnect_ev, &c->sub_backoff);
        return;
    }
    c->sub_connected = 1;
    c->sub_backoff = 0;
}

static void redis_sub_disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct redis_client *c = ac->data;

    if (!c || ac != c->sub)
        return;
    c->sub = NULL;
    c->sub_connected = 0;
    if (!c->freeing && !TAILQ_EMPTY(&c->watches))
        redis_schedule(c->sub_reconnect_ev, &c->sub_backoff);
}

static void redis_sub_connect(struct redis_client *c)
{
    struct redis_watch *w;
    redisAsyncContext *ac = redis_open(c);

    if (!ac) {
        redis_schedule(c->sub_reconnect_ev, &c->sub_backoff);
        return;
    }
    c->sub = ac;
    redisAsyncSetConnectCallback(ac, redis_sub_connect_cb);
    redisAsyncSetDisconnectCallback(ac, redis_sub_disconnect_cb);
    redis_auth(c, ac);
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
            redisAsyncCommand(ac, redis_sub_cb, c, "SUBSCRIBE %b", w->channel, strlen(w->channel));
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
        redisAsyncCommand(c->sub, redis_sub_cb, c, "SUBSCRIBE %b", channel, strlen(channel));
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
        redisAsyncCommand(c->sub, redis_sub_cb, c, "UNSUBSCRIBE %b", w->channel,
                          strlen(w->channel));
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

struct redis_client *redis_client_new(struct event_base *base, const struct redis_conf *conf,
                                      const struct redis_script *scripts, size_t nscripts)
{
    struct redis_client *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->base = base;
    c->conf = conf;
    c->scripts = scripts;
    c->nscripts = nscripts;
    TAILQ_INIT(&c->queue);
    TAILQ_INIT(&c->waiting);
    TAILQ_INIT(&c->watches);
    conf_addr_str(&conf->addr, c->addr, sizeof(c->addr));
    c->sha = calloc(nscripts ? nscripts : 1, sizeof(*c->sha));
    if (!c->sha)
        goto err;
    for (size_t i = 0; i < nscripts; i++)
        if (redis_sha1_hex(scripts[i].text, c->sha[i]) < 0)
            goto err;
    c->reconnect_ev = evtimer_new(base, redis_reconnect_cb, c);
    c->sub_reconnect_ev = evtimer_new(base, redis_sub_reconnect_cb, c);
    c->deadline_ev = evtimer_new(base, redis_deadline_cb, c);
    if (!c->reconnect_ev || !c->sub_reconnect_ev || !c->deadline_ev)
        goto err;
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
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac);
    }
    if (c->sub) {
        redisAsyncContext *ac = c->sub;
        c->sub = NULL;
        redisAsyncFree(ac);
    }
    while ((w = TAILQ_FIRST(&c->watches))) {
        TAILQ_REMOVE(&c->watches, w, link);
        free(w->channel);
        free(w);
    }
    while ((cmd = TAILQ_FIRST(&c->waiting))) { /* never sent: their callbacks are not called */
        TAILQ_REMOVE(&c->waiting, cmd, link);
        redis_cmd_free(cmd);
    }
    if (c->reconnect_ev)
        event_free(c->reconnect_ev);
    if (c->sub_reconnect_ev)
        event_free(c->sub_reconnect_ev);
    if (c->deadline_ev)
        event_free(c->deadline_ev);
    free(c->sha);
    free(c);
}
