#include "redis/sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/clock.h"
#include "core/log.h"
#include "redis/rconn.h"

struct sentinel {
    struct event_base *base;
    struct evdns_base *dns;        /* borrowed from the owner */
    const struct tls_client *tls;  /* borrowed (NULL: plain) */
    const struct conf_addr *addrs; /* borrowed from the configuration */
    size_t n;
    char *query; /* [AUTH ...] SENTINEL get-master-addr-by-name NAME, in the wire format */
    size_t query_len;
    size_t auth_len; /* the AUTH at its start (0: none) */
    char *master;
    uint64_t timeout_ms;
    /* the +switch-master subscription (sentinel_watch) */
    struct rconn *sub;
    struct event *sub_timer; /* reconnect */
    size_t sub_cur;
    unsigned sub_backoff;
    int sub_auth_pending;
    sentinel_switch_cb switch_cb;
    void *switch_arg;
    struct rconn *conn;  /* to addrs[cur], while asking it */
    struct event *timer; /* its deadline; also defers "start" to the loop */
    size_t first, cur, tried;
    int auth_pending; /* AUTH's reply comes before the answer */
    int busy;
    int in_cb, dead; /* freed from inside the callback */
    char why[512];   /* what each Sentinel said, for the log */
    sentinel_cb cb;
    void *arg;
};

static void sentinel_next(struct sentinel *s);

static void sentinel_destroy(struct sentinel *s)
{
    if (s->sub)
        rconn_free(s->sub);
    if (s->sub_timer)
        event_free(s->sub_timer);
    if (s->timer)
        event_free(s->timer);
    free(s->query);
    free(s->master);
    free(s);
}

static void sentinel_note(struct sentinel *s, const char *what)
{
    size_t len = strlen(s->why);
    char one[CONF_HOST_MAX + 16];

    snprintf(s->why + len, sizeof(s->why) - len, "%s%s: %s", len ? "; " : "",
             conf_addr_str(&s->addrs[s->cur], one, sizeof(one)), what);
}

static void sentinel_close(struct sentinel *s)
{
    if (s->conn)
        rconn_free(s->conn);
    s->conn = NULL;
    evtimer_del(s->timer);
}

/* The query is over: tell the owner, who may free s. */
static void sentinel_finish(struct sentinel *s, const struct conf_addr *primary)
{
    sentinel_cb cb = s->cb;

    sentinel_close(s);
    s->busy = 0;
    s->in_cb++;
    cb(primary, primary ? NULL : s->why, s->arg);
    s->in_cb--;
    if (s->dead && !s->in_cb)
        sentinel_destroy(s);
}

static int sentinel_on_reply(struct redisReply *reply, void *arg)
{
    struct sentinel *s = arg;
    struct conf_addr primary;
    long port;
    char *end;

    if (s->auth_pending) {
        s->auth_pending = 0;
        if (reply->type == REDIS_REPLY_ERROR) {
            sentinel_note(s, reply->str); /* the answer that follows is NOAUTH */
            sentinel_close(s);
            sentinel_next(s);
        }
        return 0;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING &&
        reply->element[0]->len < sizeof(primary.host) &&
        (port = strtol(reply->element[1]->str, &end, 10)) > 0 && port <= 65535 && !*end) {
        memset(&primary, 0, sizeof(primary));
        memcpy(primary.host, reply->element[0]->str, reply->element[0]->len);
        primary.port = (uint16_t)port;
        s->first = s->cur; /* ask it first next time */
        sentinel_finish(s, &primary);
        return 0;
    }
    if (reply->type == REDIS_REPLY_NIL)
        sentinel_note(s, "knows no master by that name");
    else
        sentinel_note(s, reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    sentinel_close(s);
    sentinel_next(s);
    return 0;
}

static void sentinel_on_close(const char *errstr, void *arg)
{
    struct sentinel *s = arg;

    sentinel_note(s, errstr);
    sentinel_close(s);
    sentinel_next(s);
}

static void sentinel_on_connect(void *arg)
{
    (void)arg;
}

static const struct rconn_cbs sentinel_cbs = {sentinel_on_connect, sentinel_on_reply,
                                              sentinel_on_close};

/* Ask the next Sentinel not tried yet in this query, or finish without a primary. */
static void sentinel_next(struct sentinel *s)
{
    char err[256];
    struct timeval tv = clock_tv(s->timeout_ms);

    for (;;) {
        if (s->tried == s->n) {
            sentinel_finish(s, NULL);
            return;
        }
        s->cur = (s->first + s->tried++) % s->n;
        s->conn = rconn_new(s->base, s->dns, s->tls, NULL, &s->addrs[s->cur], &sentinel_cbs, s, err,
                            sizeof(err));
        if (s->conn)
            break;
        sentinel_note(s, err);
    }
    s->auth_pending = s->auth_len > 0;
    rconn_write(s->conn, s->query, s->query_len);
    evtimer_add(s->timer, &tv);
}

static void sentinel_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel *s = arg;

    if (s->conn) { /* the Sentinel being asked did not answer in time */
        sentinel_note(s, "no answer in time");
        sentinel_close(s);
    }
    sentinel_next(s);
}

struct sentinel *sentinel_new(struct event_base *base, struct evdns_base *dns,
                              const struct tls_client *tls, const struct conf_addr *sentinels,
                              size_t n, const char *query, size_t query_len, size_t auth_len,
                              const char *master, uint64_t timeout_ms)
{
    struct sentinel *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->base = base;
    s->dns = dns;
    s->tls = tls;
    s->addrs = sentinels;
    s->n = n;
    s->auth_len = auth_len;
    s->timeout_ms = timeout_ms;
    s->query_len = query_len;
    if (!(s->query = malloc(query_len)) || !(s->master = strdup(master)) ||
        !(s->timer = evtimer_new(base, sentinel_timer_cb, s))) {
        sentinel_destroy(s);
        return NULL;
    }
    memcpy(s->query, query, query_len);
    return s;
}

int sentinel_query(struct sentinel *s, sentinel_cb cb, void *arg)
{
    struct timeval now = {0, 0};

    if (s->n == 0)
        return -1;
    s->cb = cb;
    s->arg = arg;
    if (s->busy)
        return 0;
    s->busy = 1;
    s->tried = 0;
    s->why[0] = '\0';
    evtimer_add(s->timer, &now); /* from the loop: the callback never runs inside here */
    return 0;
}

void sentinel_free(struct sentinel *s)
{
    if (!s)
        return;
    sentinel_close(s);
    if (s->sub)
        rconn_free(s->sub);
    s->sub = NULL;
    if (s->in_cb) {
        s->dead = 1;
        return;
    }
    sentinel_destroy(s);
}

/* ---- +switch-master ---- */

static void sentinel_sub_connect(struct sentinel *s);

static void sentinel_sub_lost(struct sentinel *s)
{
    struct timeval tv;

    if (s->sub)
        rconn_free(s->sub);
    s->sub = NULL;
    s->sub_cur++; /* the next Sentinel */
    s->sub_backoff = s->sub_backoff ? s->sub_backoff * 2 : 100;
    if (s->sub_backoff > 2000)
        s->sub_backoff = 2000;
    tv = clock_tv(s->sub_backoff);
    evtimer_add(s->sub_timer, &tv);
}

/* "NAME old-ip old-port new-ip new-port" */
static void sentinel_switch(struct sentinel *s, const char *msg)
{
    char name[256], oldip[CONF_HOST_MAX], newip[CONF_HOST_MAX], from[CONF_HOST_MAX + 16];
    unsigned oldport, newport;
    struct conf_addr primary;

    if (sscanf(msg, "%255s %255s %u %255s %u", name, oldip, &oldport, newip, &newport) != 5 ||
        strcmp(name, s->master) != 0 || newport == 0 || newport > 65535)
        return;
    memset(&primary, 0, sizeof(primary));
    snprintf(primary.host, sizeof(primary.host), "%s", newip);
    primary.port = (uint16_t)newport;
    conf_addr_str(&s->addrs[s->sub_cur % s->n], from, sizeof(from));
    s->in_cb++;
    s->switch_cb(&primary, from, s->switch_arg);
    s->in_cb--;
    if (s->dead && !s->in_cb)
        sentinel_destroy(s);
}

static int sentinel_sub_on_reply(struct redisReply *reply, void *arg)
{
    struct sentinel *s = arg;
    char one[CONF_HOST_MAX + 16];

    if (s->sub_auth_pending) {
        s->sub_auth_pending = 0;
        if (reply->type == REDIS_REPLY_ERROR) {
            log_warn("redis: Sentinel %s refused AUTH for +switch-master: %s",
                     conf_addr_str(&s->addrs[s->sub_cur % s->n], one, sizeof(one)), reply->str);
            sentinel_sub_lost(s);
        }
        return 0;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[2]->type == REDIS_REPLY_STRING) {
        if (strcmp(reply->element[0]->str, "subscribe") == 0)
            s->sub_backoff = 0;
        else if (strcmp(reply->element[0]->str, "message") == 0)
            sentinel_switch(s, reply->element[2]->str);
    }
    return 0;
}

static void sentinel_sub_on_close(const char *errstr, void *arg)
{
    sentinel_sub_lost(arg);
}

static const struct rconn_cbs sentinel_sub_cbs = {sentinel_on_connect, sentinel_sub_on_reply,
                                                  sentinel_sub_on_close};

static void sentinel_sub_connect(struct sentinel *s)
{
    static const char subscribe[] = "*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n";
    char err[256];

    s->sub = rconn_new(s->base, s->dns, s->tls, NULL, &s->addrs[s->sub_cur % s->n],
                       &sentinel_sub_cbs, s, err, sizeof(err));
    if (!s->sub) {
        sentinel_sub_lost(s);
        return;
    }
    s->sub_auth_pending = s->auth_len > 0;
    if ((s->auth_len && rconn_write(s->sub, s->query, s->auth_len) < 0) ||
        rconn_write(s->sub, subscribe, sizeof(subscribe) - 1) < 0)
        sentinel_sub_lost(s);
}

static void sentinel_sub_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel *s = arg;

    if (!s->sub)
        sentinel_sub_connect(s);
}

int sentinel_watch(struct sentinel *s, sentinel_switch_cb cb, void *arg)
{
    if (s->n == 0 || !(s->sub_timer = evtimer_new(s->base, sentinel_sub_timer_cb, s)))
        return -1;
    s->switch_cb = cb;
    s->switch_arg = arg;
    sentinel_sub_connect(s);
    return 0;
}
