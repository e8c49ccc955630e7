#include "idem/idem.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/rand.h>

#include "core/bytes.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/problem.h"
#include "http/frontend.h"
#include "idem/idkey.h"
#include "idem/jsoncanon.h"
#include "idem/record.h"
#include "idem/seal.h"

#define IDEM_RETRY_MIN_MS 50 /* first pause before a record is sent again, doubling */
/* at most this: once Redis is back, a record must not sit out much of what is left of its
 * lease (as redis.c's reconnect back-off; each try waits up to redis-timeout for a
 * connection, unsent) */
#define IDEM_RETRY_MAX_MS    200
#define IDEM_RETRY_MARGIN_MS 20 /* a record sent later than this before the lease ends is moot */

TAILQ_HEAD(idem_ctx_list, idem_ctx);

struct idem_handler {
    struct frontend_handler super; /* first: the frontend sees only this */
    struct event_base *base;
    const struct idem_policy *pol;
    const struct seal_conf *seal;
    struct store *store;
    /* keyed state whose request is gone while its record is still being retried (a
     * streamed answer ends before Redis comes back): it lives on until the record
     * resolves, and a draining worker waits for it */
    struct idem_ctx_list orphans;
    size_t norphans;
    void (*on_idle)(void *arg); /* the last orphan resolved */
    void *idle_arg;
    struct idem_stats stats;
};

/* Where a keyed request is. Each state names what is in flight. */
enum idem_state {
    IDEM_CLAIMING,   /* ctx->cmd is the claim (or a claim again, after a wake-up) */
    IDEM_WAITING,    /* another request holds the key: ctx->watch, recheck_ev and wait_ev
                        are armed; ctx->cmd is a claim again when one is in flight */
    IDEM_FORWARDING, /* ours: the upstream works (r's exchange), renew_ev runs every lease/3 */
    IDEM_RECORDING,  /* the answer (status, head, body) and its encoding (rec) are kept;
                        ctx->cmd is the record in flight, or retry_ev is armed for the next
                        attempt; renew_ev still runs: the lease must outlive the record */
    IDEM_DONE,       /* the record resolved; a streamed answer may still be flowing */
};

static const char *idem_state_str(enum idem_state st)
{
    switch (st) {
    case IDEM_CLAIMING:
        return "claiming";
    case IDEM_WAITING:
        return "waiting";
    case IDEM_FORWARDING:
        return "forwarding";
    case IDEM_RECORDING:
        return "recording";
    case IDEM_DONE:
        return "done";
    }
    return "?";
}

struct idem_ctx {
    struct frontend_req *r;
    struct idem_handler *h;
    const struct idem_policy *pol;
    const struct seal_conf *seal; /* record-encryption, of the generation it started under */
    struct store *store;
    struct frontend_cleanup cleanup; /* frees ctx with r */
    enum idem_state state;
    char *rkey;                        /* key-prefix + hex record id */
    char id[17];                       /* short record id for logs (never the raw key) */
    char fp[IDKEY_HEX_LEN + 1];        /* the host fingerprint: what our claim stores */
    char legacy_fp[IDKEY_HEX_LEN + 1]; /* the host-less one, as the previous release had */
    char token[STORE_TOKEN_LEN + 1];
    struct redis_cmd *cmd;   /* claim or record in flight */
    struct redis_cmd *renew; /* lease renewal in flight */
    struct redis_watch *watch;
    struct event *renew_ev;   /* every lease/3 while forwarding and recording */
    struct event *recheck_ev; /* waiting: claim again when the other lease may have expired */
    struct event *wait_ev;    /* waiting: wait-timeout */
    int wake_again;           /* a wake-up arrived while a claim was in flight */
    /* the lease: it surely lasts until lease_until (monotonic ms): the send time of the
     * claim, or of the last renewal that succeeded, plus lease */
    uint64_t claim_sent, renew_sent, lease_until;
    uint64_t redis_sent_us; /* the claim or record in flight: when it was sent */
    uint64_t seq;           /* its request's frontend_req.seq (kept when an orphan) */
    /* the answer being recorded */
    int status;
    struct http1_head head;
    struct evbuffer *body;
    struct store_record_cmd rec; /* the RECORD command with the encoded answer inside, until
                                    the record lands or is given up (rec.buf: NULL) */
    const uint8_t *body_at;      /* the body inside rec, once ctx->body was let go (never
                                    when sealed: rec holds it encrypted) */
    size_t body_len;
    struct event *retry_ev; /* recording: the next attempt */
    unsigned retry_ms;      /* back-off between attempts */
    unsigned attempts;
    int streamed;               /* the answer streams: nothing to answer once recorded */
    int unconfirmed;            /* recording: landed, WAIT did not confirm it yet */
    TAILQ_ENTRY(idem_ctx) link; /* h->orphans, once its request is gone */
};

static void idem_claim(struct idem_ctx *ctx);

/* Release everything ctx holds. */
static void idem_ctx_free(struct idem_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->h)
        METRIC_DEC(ctx->h->stats.in_flight);
    redis_cancel(ctx->cmd);
    redis_cancel(ctx->renew);
    redis_unwatch(ctx->watch);
    if (ctx->renew_ev)
        event_free(ctx->renew_ev);
    if (ctx->retry_ev)
        event_free(ctx->retry_ev);
    store_record_cmd_free(&ctx->rec);
    if (ctx->recheck_ev)
        event_free(ctx->recheck_ev);
    if (ctx->wait_ev)
        event_free(ctx->wait_ev);
    http1_head_clear(&ctx->head);
    if (ctx->body)
        evbuffer_free(ctx->body);
    free(ctx); /* rkey lives in the same allocation */
}

/* The request's cleanup hook. A record still being retried outlives its request (only
 * a streamed answer can end first): ctx becomes an orphan until the record resolves. */
static void idem_req_gone(void *arg)
{
    struct idem_ctx *ctx = arg;

    if (ctx->state == IDEM_RECORDING && ctx->rec.buf) {
        ctx->r = NULL;
        TAILQ_INSERT_TAIL(&ctx->h->orphans, ctx, link);
        ctx->h->norphans++;
        return;
    }
    idem_ctx_free(ctx);
}

/* Fire-and-forget release of our claim (the retry may execute again). */
static void idem_release(struct idem_ctx *ctx, const char *why)
{
    log_info("idem %s: released (%s)", ctx->id, why);
    if (!store_release(ctx->store, ctx->rkey, ctx->token, NULL, NULL))
        log_warn("idem %s: could not release the claim; it expires with its lease", ctx->id);
}

static void idem_stop_watching(struct idem_ctx *ctx)
{
    redis_unwatch(ctx->watch);
    ctx->watch = NULL;
    if (ctx->recheck_ev)
        evtimer_del(ctx->recheck_ev);
    if (ctx->wait_ev)
        evtimer_del(ctx->wait_ev);
}

static void idem_store_failed(struct idem_ctx *ctx, const char *why)
{
    struct frontend_req *r = ctx->r;

    idem_stop_watching(ctx);
    if (ctx->pol->on_redis_error == IDEM_REDIS_PASS) {
        log_warn("idem %s: store unavailable (%s); forwarding UNPROTECTED (on-redis-error pass)",
                 ctx->id, why);
        r->outcome = "unprotected";
        frontend_forward(r);
        return;
    }
    METRIC_INC(ctx->h->stats.claims_failed_redis);
    log_warn("idem %s: 503 store unavailable (%s; was %s)", ctx->id, why,
             idem_state_str(ctx->state));
    r->outcome = "store-unavailable";
    frontend_problem(r, PROBLEM_STORE_UNAVAILABLE,
                     "the idempotency store did not answer; the request was not forwarded",
                     "Retry-After: 1\r\n");
}

/* ---- replay ---- */

/* A stored record that cannot be read (sealed with a key we lack, altered, or plain
 * where records are sealed): 502, never a new execution. */
static void idem_unreadable(struct idem_ctx *ctx, const char *why, uint32_t key_id, int sealed)
{
    char d[320];

    METRIC_INC(ctx->h->stats.records_unreadable);
    if (sealed)
        log_error("idem %s: stored record (key id %u) %s", ctx->id, (unsigned)key_id, why);
    else
        log_error("idem %s: stored record %s", ctx->id, why);
    snprintf(d, sizeof(d),
             "the original request was executed, but its recorded answer cannot be read (%s); "
             "it is not executed again",
             why);
    ctx->r->outcome = "unreadable";
    frontend_problem(ctx->r, PROBLEM_RECORD_UNREADABLE, d, NULL);
}

static void idem_replay(struct idem_ctx *ctx, const struct store_claim_result *res)
{
    struct frontend_req *r = ctx->r;
    const struct seal_conf *seal = ctx->seal;
    const char *data = res->record, *why = NULL;
    size_t len = res->record_len, plain_len = 0;
    unsigned char *plain = NULL;
    struct record rec;
    struct evbuffer *body;
    uint32_t key_id = 0;

    if (seal_is_sealed(data, len, &key_id)) {
        enum seal_status st =
            seal_open(seal->ring, data, len, ctx->rkey, res->fp, &plain, &plain_len);
        if (st != SEAL_OPENED) {
            idem_unreadable(ctx,
                            st == SEAL_UNKNOWN_KEY && !seal->ring
                                ? "sealed, and no record-keys are configured"
                                : seal_status_str(st),
                            key_id, 1);
            return;
        }
        data = (const char *)plain;
        len = plain_len;
    } else if (seal->mode != SEAL_OFF && !seal->plaintext_read) {
        idem_unreadable(ctx,
                        "is not sealed where records are (record-plaintext-read no: one "
                        "written before encryption was turned on, or not by idemproxy)",
                        0, 0);
        return;
    }
    if (record_decode(&rec, data, len, &why) < 0) {
        log_error("idem %s: stored record is corrupt (%s)", ctx->id, why);
        frontend_problem(r, PROBLEM_INTERNAL_ERROR, "the stored answer is corrupt", NULL);
        goto out;
    }
    if (rec.flags & RECORD_F_TOO_LARGE) {
        char d[160];
        log_info("idem %s: 502 original answer (%d) too large to replay", ctx->id, rec.status);
        snprintf(d, sizeof(d),
                 "the original request was executed and answered %d, but its answer was larger "
                 "than max-record and cannot be replayed",
                 rec.status);
        record_clear(&rec);
        r->outcome = "not-replayable";
        frontend_problem(r, PROBLEM_NOT_REPLAYABLE, d, NULL);
        goto out;
    }
    log_info("idem %s: replay %d", ctx->id, rec.status);
    body = evbuffer_new();
    if (body)
        evbuffer_add(body, rec.body, rec.body_len);
    frontend_respond(r, rec.status, rec.head.reason, &rec.head, "Idempotent-Replayed: true\r\n",
                     body);
    record_clear(&rec);
    if (body)
        evbuffer_free(body);
out:
    if (plain) {
        OPENSSL_cleanse(plain, plain_len);
        free(plain);
    }
}

/* ---- waiting for another request's answer ---- */

static void idem_wake_cb(void *arg)
{
    struct idem_ctx *ctx = arg;

    if (ctx->state != IDEM_WAITING)
        return;
    if (ctx->cmd) {
        ctx->wake_again = 1; /* look again when the claim in flight returns */
        return;
    }
    idem_claim(ctx);
}

static void idem_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    idem_wake_cb(arg);
}

static void idem_wait_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct idem_ctx *ctx = arg;

    idem_stop_watching(ctx);
    log_info("idem %s: 409 still in flight after wait-timeout", ctx->id);
    ctx->r->outcome = "in-flight";
    frontend_problem(ctx->r, PROBLEM_KEY_IN_USE,
                     "a request with this key is still being processed (waited wait-timeout)",
                     "Retry-After: 1\r\n");
}

/* Park (or keep parked) ctx. 0, or -1 when it could not and r was answered. */
static int idem_wait(struct idem_ctx *ctx, long long pttl)
{
    struct event_base *base = ctx->h->base;
    struct timeval tv;

    if (ctx->state != IDEM_WAITING) {
        ctx->state = IDEM_WAITING;
        ctx->recheck_ev = evtimer_new(base, idem_recheck_cb, ctx);
        ctx->wait_ev = evtimer_new(base, idem_wait_timeout_cb, ctx);
        if (!ctx->recheck_ev || !ctx->wait_ev) {
            frontend_problem(ctx->r, PROBLEM_INTERNAL_ERROR, "out of memory", NULL);
            return -1;
        }
        tv = clock_tv(ctx->pol->wait_timeout_ms);
        evtimer_add(ctx->wait_ev, &tv);
        /* pub/sub wakes us when the owner records or releases; the subscription's
         * confirmation wakes us once too, closing the race with an early completion */
        ctx->watch = redis_watch(store_client(ctx->store), ctx->rkey, idem_wake_cb, ctx);
        log_debug("idem %s: waiting for the request in flight", ctx->id);
    }
    /* A crashed owner publishes nothing: look again when its lease runs out. */
    tv = clock_tv(pttl > 0 ? (uint64_t)pttl + 5 : 50);
    evtimer_add(ctx->recheck_ev, &tv);
    return 0;
}

/* ---- forwarding and recording ---- */

/* The value of a RECORD/RELEASE/RENEW reply (also when WAIT did not confirm it), or -1
 * with *errstr set. */
static long long idem_int_reply(enum redis_status *st, const struct redisReply *reply,
                                const char **errstr)
{
    long long v = 0;

    if ((*st == REDIS_CMD_OK || *st == REDIS_CMD_UNCONFIRMED) && store_int_result(reply, &v) < 0) {
        *st = REDIS_CMD_ERROR;
        *errstr = "unexpected reply";
    }
    return *st == REDIS_CMD_OK || *st == REDIS_CMD_UNCONFIRMED ? v : -1;
}

static void idem_stop_renewing(struct idem_ctx *ctx)
{
    if (ctx->renew_ev)
        evtimer_del(ctx->renew_ev);
    redis_cancel(ctx->renew);
    ctx->renew = NULL;
}

static void idem_free_buf(const void *data, size_t len, void *buf)
{
    free(buf);
}

/* The record resolved (landed, refused, or given up): answer the client with what was
 * kept — unless the answer streamed — or, for an orphan, go away. */
static void idem_record_done(struct idem_ctx *ctx)
{
    struct idem_handler *h = ctx->h;
    struct evbuffer *body = ctx->body, *moved = NULL;

    idem_stop_renewing(ctx);
    ctx->state = IDEM_DONE; /* not an orphan-to-be any more */
    if (!ctx->r) {
        TAILQ_REMOVE(&h->orphans, ctx, link);
        h->norphans--;
        idem_ctx_free(ctx);
        if (h->norphans == 0 && h->on_idle)
            h->on_idle(h->idle_arg);
        return;
    }
    if (ctx->streamed) {
        store_record_cmd_free(&ctx->rec); /* the stream goes on; nothing to answer here */
        return;
    }
    if (ctx->body_at && ctx->body_len && (moved = evbuffer_new()) != NULL) {
        /* The answer's body lives inside the record command: the client's output takes
         * that buffer over (freed once written) instead of a copy. */
        if (evbuffer_add_reference(moved, ctx->body_at, ctx->body_len, idem_free_buf,
                                   ctx->rec.buf) == 0)
            ctx->rec.buf = NULL;
        else
            evbuffer_add(moved, ctx->body_at, ctx->body_len);
        body = moved;
    }
    /* frees ctx (the request's cleanup) */
    frontend_respond(ctx->r, ctx->status, ctx->head.reason, &ctx->head, NULL, body);
    if (moved)
        evbuffer_free(moved);
}

static void idem_record_send(struct idem_ctx *ctx);

static void idem_record_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    idem_record_send(arg);
}

/*
 * An attempt failed (Redis did not answer, the connection was lost, or it answered an
 * error). The record is a compare-and-set on our token, safe to send again, so it is
 * retried with back-off for as long as our lease surely lasts; after that a retry could
 * only be refused, and another request may already have claimed the key.
 */
static void idem_record_failed(struct idem_ctx *ctx, const char *why)
{
    uint64_t now = clock_mono_ms(), wait;
    struct timeval tv;

    ctx->retry_ms = ctx->retry_ms ? ctx->retry_ms * 2 : IDEM_RETRY_MIN_MS;
    if (ctx->retry_ms > IDEM_RETRY_MAX_MS)
        ctx->retry_ms = IDEM_RETRY_MAX_MS;
    /* the last attempts squeeze into what is left of the lease */
    wait = now + ctx->retry_ms < ctx->lease_until ? ctx->retry_ms : (ctx->lease_until - now) / 2;
    if (now + IDEM_RETRY_MARGIN_MS >= ctx->lease_until && ctx->unconfirmed) {
        METRIC_INC(ctx->h->stats.records_unconfirmed);
        log_error("idem %s: answer %d recorded on the primary but NOT confirmed by the "
                  "replicas (%s) within the lease; a failover before they have it would "
                  "execute a retry again",
                  ctx->id, ctx->status, why);
        idem_record_done(ctx);
        return;
    }
    if (now + IDEM_RETRY_MARGIN_MS >= ctx->lease_until) {
        METRIC_INC(ctx->h->stats.records_lost);
        log_error("idem %s: answer %d NOT recorded after %u attempt(s): %s, and our lease "
                  "runs out; a retry after it will execute again",
                  ctx->id, ctx->status, ctx->attempts, why);
        idem_record_done(ctx);
        return;
    }
    if (ctx->attempts == 1)
        log_warn("idem %s: record of answer %d failed (%s); retrying while the lease lasts "
                 "(%llu ms left)",
                 ctx->id, ctx->status, why, (unsigned long long)(ctx->lease_until - now));
    METRIC_INC(ctx->h->stats.record_retries);
    tv = clock_tv(wait);
    evtimer_add(ctx->retry_ev, &tv);
}

/*
 * The record landed on the primary but WAIT did not see enough replicas take it. The
 * answer is real (the upstream executed): the client gets it now, from a copy, while the
 * record command stays with ctx — an orphan once the request ends — and is sent again
 * (with its WAIT) while the lease lasts. A record that is already there answers 2, so
 * each attempt only asks the replicas again.
 */
static void idem_record_unconfirmed(struct idem_ctx *ctx, const char *why)
{
    struct frontend_req *r = ctx->r;
    struct evbuffer *body = ctx->body, *copy = NULL;

    if (!ctx->unconfirmed)
        log_warn("idem %s: answer %d recorded but not confirmed by the replicas (%s); "
                 "asking again while the lease lasts",
                 ctx->id, ctx->status, why);
    ctx->unconfirmed = 1;
    /* the key holds the record now: a renewal would only be refused */
    idem_stop_renewing(ctx);
    if (r && !ctx->streamed) {
        if (ctx->body_at && ctx->body_len && (copy = evbuffer_new()) != NULL) {
            evbuffer_add(copy, ctx->body_at, ctx->body_len);
            body = copy;
        }
        /* ends r: ctx lives on as an orphan (idem_req_gone) until the record resolves */
        frontend_respond(r, ctx->status, ctx->head.reason, &ctx->head, NULL, body);
        if (copy)
            evbuffer_free(copy);
    }
    idem_record_failed(ctx, why); /* may free ctx (the lease ran out) */
}

static void idem_record_cb(enum redis_status st, const struct redisReply *reply, const char *errstr,
                           void *arg)
{
    struct idem_ctx *ctx = arg;
    long long value = idem_int_reply(&st, reply, &errstr);

    ctx->cmd = NULL;
    if (ctx->r)
        ctx->r->redis_us += clock_mono_us() - ctx->redis_sent_us;
    if (st == REDIS_CMD_UNCONFIRMED && value != 0) {
        idem_record_unconfirmed(ctx, errstr);
        return;
    }
    if (st != REDIS_CMD_OK && st != REDIS_CMD_UNCONFIRMED) {
        idem_record_failed(ctx, errstr);
        return;
    }
    if (ctx->unconfirmed)
        log_info("idem %s: answer %d confirmed by the replicas (attempt %u)", ctx->id, ctx->status,
                 ctx->attempts);
    else if (value == 1)
        log_debug("idem %s: recorded %d (attempt %u)", ctx->id, ctx->status, ctx->attempts);
    else if (value == 2 && ctx->attempts > 1)
        log_info("idem %s: answer %d already recorded (an earlier attempt of ours landed, or "
                 "a later owner's after our lease)",
                 ctx->id, ctx->status);
    else /* 0, or done on our first attempt: someone else's record */
        log_warn("idem %s: record refused: stale owner (our lease expired and the key was "
                 "claimed again); answer %d not recorded",
                 ctx->id, ctx->status);
    idem_record_done(ctx);
}

static void idem_record_send(struct idem_ctx *ctx)
{
    ctx->attempts++;
    ctx->redis_sent_us = clock_mono_us();
    ctx->cmd = store_record_send(ctx->store, &ctx->rec, idem_record_cb, ctx);
    if (!ctx->cmd)
        idem_record_failed(ctx, "the Redis queue is full");
}

/* Send the RECORD command in ctx->rec; renewals go on until it resolves. */
static void idem_record_start(struct idem_ctx *ctx)
{
    ctx->state = IDEM_RECORDING;
    ctx->retry_ev = evtimer_new(ctx->h->base, idem_record_retry_cb, ctx);
    if (!ctx->retry_ev) {
        log_error("idem %s: out of memory; answer %d not recorded", ctx->id, ctx->status);
        idem_release(ctx, "out of memory");
        idem_record_done(ctx);
        return;
    }
    idem_record_send(ctx);
}

/* Records sealed (record-encryption): the room the envelope adds, where the plain record
 * goes inside ctx->rec, and the sealing of plain_len bytes there, in place. */
static size_t idem_seal_room(const struct idem_ctx *ctx)
{
    return ctx->seal->mode != SEAL_OFF ? SEAL_OVERHEAD : 0;
}

static uint8_t *idem_plain_at(const struct idem_ctx *ctx)
{
    return ctx->rec.record + (ctx->seal->mode != SEAL_OFF ? SEAL_HEAD_LEN : 0);
}

static int idem_seal(struct idem_ctx *ctx, size_t plain_len)
{
    if (ctx->seal->mode == SEAL_OFF)
        return 0;
    return seal_record(ctx->seal->ring, ctx->rec.record, plain_len, ctx->rkey, ctx->fp);
}

/* ctx->rec for the record "status was answered but is too large to replay". 0 or -1. */
static int idem_rec_too_large(struct idem_ctx *ctx)
{
    struct evbuffer *tmp = evbuffer_new();
    size_t n = 0;
    int rc = -1;

    if (tmp && record_encode_too_large(tmp, ctx->status, clock_unix_ms()) == 0 &&
        store_record_prepare(ctx->store, &ctx->rec, ctx->rkey, ctx->token, ctx->fp,
                             ctx->pol->retention_ms,
                             (n = evbuffer_get_length(tmp)) + idem_seal_room(ctx)) == 0 &&
        evbuffer_copyout(tmp, idem_plain_at(ctx), n) == (ev_ssize_t)n && idem_seal(ctx, n) == 0)
        rc = 0;
    if (tmp)
        evbuffer_free(tmp);
    return rc;
}

/*
 * Record the answer kept in ctx (head, body), then answer the client with it. The record
 * is encoded straight into the RECORD command, and the client is answered from there:
 * the answer is held once here and once in hiredis's output buffer.
 */
static void idem_record(struct idem_ctx *ctx)
{
    size_t body_len = evbuffer_get_length(ctx->body), off = 0;
    long long reclen = -1;

    ctx->state = IDEM_RECORDING;
    /* a body over the limit is not even encoded; an answer the record format cannot
     * hold is kept as "not replayable" too: a retry must not execute it again */
    if (body_len <= ctx->pol->max_record)
        reclen = record_encoded_len(ctx->status, &ctx->head, ctx->body);
    if (reclen >= 0 && (size_t)reclen <= ctx->pol->max_record) {
        if (store_record_prepare(ctx->store, &ctx->rec, ctx->rkey, ctx->token, ctx->fp,
                                 ctx->pol->retention_ms,
                                 (size_t)reclen + idem_seal_room(ctx)) < 0 ||
            record_encode_flat(idem_plain_at(ctx), (size_t)reclen, ctx->status, &ctx->head,
                               ctx->body, clock_unix_ms(), &off) < 0 ||
            idem_seal(ctx, (size_t)reclen) < 0)
            goto fail;
        if (ctx->seal->mode == SEAL_OFF) {
            /* the client is answered from the record's bytes; sealed, they are ciphertext
             * and ctx->body stays (the answer is held twice then) */
            ctx->body_at = ctx->rec.record + off;
            ctx->body_len = body_len;
            evbuffer_free(ctx->body);
            ctx->body = NULL;
        }
    } else {
        log_info("idem %s: answer %d (%zu body bytes) not replayable (over max-record or not "
                 "encodable); recorded as such",
                 ctx->id, ctx->status, body_len);
        if (idem_rec_too_large(ctx) < 0)
            goto fail;
    }
    idem_record_start(ctx);
    return;
fail:
    log_error("idem %s: could not encode the answer", ctx->id);
    idem_release(ctx, "encoding failed");
    store_record_cmd_free(&ctx->rec);
    idem_record_done(ctx);
}

/* Keep a proxy-made problem answer in ctx, as if the upstream had sent it: rendered as
 * frontend_problem would answer it (error-template), so the first answer and every
 * replay of the record are the same. */
static int idem_keep_problem(struct idem_ctx *ctx, enum problem_kind kind, const char *detail)
{
    struct http1_error err;
    struct evbuffer *head = evbuffer_new(), *hdrs = evbuffer_new();
    int status, rc = -1;

    if (!head || !hdrs)
        goto out;
    if (!ctx->body && !(ctx->body = evbuffer_new()))
        goto out;
    evbuffer_drain(ctx->body, evbuffer_get_length(ctx->body));
    status = frontend_problem_render(ctx->r, kind, detail, NULL, ctx->body, hdrs);
    /* hdrs ends in a NUL byte: the lines are all but the last byte */
    evbuffer_add_printf(head, "HTTP/1.1 %d %s\r\n", status, http1_reason(status));
    evbuffer_add(head, evbuffer_pullup(hdrs, -1), evbuffer_get_length(hdrs) - 1);
    evbuffer_add(head, "\r\n", 2);
    http1_head_clear(&ctx->head);
    if (http1_parse_response(&ctx->head, (const char *)evbuffer_pullup(head, -1),
                             evbuffer_get_length(head), &err) < 0)
        goto out;
    ctx->status = status;
    rc = 0;
out:
    if (head)
        evbuffer_free(head);
    if (hdrs)
        evbuffer_free(hdrs);
    return rc;
}

static void idem_renew_cb(enum redis_status st, const struct redisReply *reply, const char *errstr,
                          void *arg)
{
    struct idem_ctx *ctx = arg;
    long long value = idem_int_reply(&st, reply, &errstr);

    ctx->renew = NULL;
    if (st == REDIS_CMD_OK && value == 1) {
        ctx->lease_until = ctx->renew_sent + ctx->pol->lease_ms;
    } else if (st == REDIS_CMD_UNCONFIRMED && value == 1) {
        /* the primary extended it, its replicas may not have: a promoted replica would
         * let the older lease run out, so only that one surely lasts */
        log_warn("idem %s: lease renewal not confirmed by the replicas (%s)", ctx->id, errstr);
    } else if (st == REDIS_CMD_OK || st == REDIS_CMD_UNCONFIRMED) {
        ctx->lease_until = 0; /* the script says it is not ours: nothing left to protect */
        log_warn("idem %s: lease lost while %s (claimed by someone else?)", ctx->id,
                 idem_state_str(ctx->state));
    } else {
        log_warn("idem %s: lease renewal failed while %s: %s", ctx->id, idem_state_str(ctx->state),
                 errstr);
    }
}

static void idem_renew_tick(evutil_socket_t fd, short what, void *arg)
{
    struct idem_ctx *ctx = arg;

    if (!ctx->renew) {
        ctx->renew_sent = clock_mono_ms();
        ctx->renew =
            store_renew(ctx->store, ctx->rkey, ctx->token, ctx->pol->lease_ms, idem_renew_cb, ctx);
    }
}

/*
 * The answer outgrew max-record (and response-buffer) while arriving: it cannot be kept
 * for replay, so what is recorded now is that it exists and is too large — retries get
 * 502 response-not-replayable, never a second execution — and the frontend streams it
 * to the client.
 */
static void idem_stream_start(struct idem_ctx *ctx, const struct upstream_response *resp)
{
    ctx->status = resp->head->status;
    ctx->streamed = 1;
    if (policy_releases(ctx->pol, ctx->status)) {
        idem_stop_renewing(ctx);
        idem_release(ctx, "upstream answered a status that says it did not execute");
        return;
    }
    if (idem_rec_too_large(ctx) < 0) {
        log_error("idem %s: could not encode the 'too large' record", ctx->id);
        idem_stop_renewing(ctx);
        store_record_cmd_free(&ctx->rec);
        return;
    }
    log_info("idem %s: answer %d larger than max-record; streamed, recorded as not replayable",
             ctx->id, ctx->status);
    idem_record_start(ctx);
}

static void idem_upstream_done(const struct upstream_response *resp, void *arg)
{
    struct idem_ctx *ctx = arg;
    struct frontend_req *r = ctx->r;

    if (resp->result == UPSTREAM_STREAM) {
        idem_stream_start(ctx, resp);
        return;
    }
    switch (resp->result) {
    case UPSTREAM_STREAM: /* handled above */
    case UPSTREAM_OK:
        if (policy_releases(ctx->pol, resp->head->status)) {
            /* "not executed, try again" (429, 503 by default): the retry may execute */
            idem_stop_renewing(ctx);
            idem_release(ctx, "upstream answered a status that says it did not execute");
            r->outcome = "released";
            frontend_respond(r, resp->head->status, resp->head->reason, resp->head, NULL,
                             resp->body);
            return;
        }
        ctx->status = resp->head->status;
        ctx->head = *resp->head; /* take it over */
        memset(resp->head, 0, sizeof(*resp->head));
        ctx->body = evbuffer_new();
        if (!ctx->body) {
            idem_stop_renewing(ctx);
            idem_release(ctx, "out of memory");
            frontend_problem(r, PROBLEM_INTERNAL_ERROR, "out of memory", NULL);
            return;
        }
        evbuffer_add_buffer(ctx->body, resp->body);
        idem_record(ctx);
        return;
    case UPSTREAM_UNAVAILABLE:
        idem_stop_renewing(ctx);
        idem_release(ctx, "no upstream accepted the connection");
        frontend_problem(r, frontend_upstream_problem(resp->result), resp->error, NULL);
        return;
    case UPSTREAM_FAILED:
    case UPSTREAM_TIMEOUT:
        if (ctx->pol->ambiguous == IDEM_AMBIGUOUS_RELEASE) {
            idem_stop_renewing(ctx);
            idem_release(ctx, "outcome unknown, ambiguous release");
            r->outcome = "released";
            frontend_problem(r, frontend_upstream_problem(resp->result), resp->error, NULL);
            return;
        }
        /* The upstream may have executed it: retries must not execute it again. */
        log_warn("idem %s: outcome unknown (%s); recording 504", ctx->id, resp->error);
        r->outcome = "outcome-unknown";
        if (idem_keep_problem(ctx, PROBLEM_OUTCOME_UNKNOWN,
                              "the upstream received the request but its answer was lost; it "
                              "may or may not have been executed, and will not be executed "
                              "again for this key") < 0) {
            idem_stop_renewing(ctx);
            frontend_problem(r, PROBLEM_INTERNAL_ERROR, "out of memory", NULL);
            return;
        }
        idem_record(ctx);
        return;
    }
}

static void idem_forward(struct idem_ctx *ctx)
{
    struct frontend_req *r = ctx->r;
    struct timeval tv = clock_tv(ctx->pol->lease_ms / 3 ? ctx->pol->lease_ms / 3 : 1);

    ctx->state = IDEM_FORWARDING;
    ctx->renew_ev = event_new(ctx->h->base, -1, EV_PERSIST, idem_renew_tick, ctx);
    if (!ctx->renew_ev) {
        idem_release(ctx, "out of memory");
        frontend_problem(r, PROBLEM_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    /* keyed answers are buffered whole up to max-record, so they can be recorded */
    if (frontend_send_upstream(r, ctx->pol->max_record, idem_upstream_done, ctx) < 0) {
        idem_release(ctx, "could not start the upstream request");
        frontend_problem(r, PROBLEM_INTERNAL_ERROR, "could not start the upstream request", NULL);
        return;
    }
    event_add(ctx->renew_ev, &tv);
}

/* ---- claim ---- */

/* The key is pending and the route waits: park until it is done, released or its lease
 * (pttl ms, -1 unknown, -2 already gone) runs out. */
static void idem_pending_wait(struct idem_ctx *ctx, long long pttl)
{
    /* the PTTL came after the claim: what it measured may already be a record's
     * retention. Look again after at most one lease of ours (a claim never lasts longer
     * without renewals, which a live owner's publish would announce anyway). */
    if (pttl > (long long)ctx->pol->lease_ms)
        pttl = (long long)ctx->pol->lease_ms;
    if (idem_wait(ctx, pttl) < 0)
        return;
    if (ctx->wake_again || pttl == -2) {
        ctx->wake_again = 0;
        idem_claim(ctx);
    }
}

static void idem_pttl_cb(enum redis_status st, const struct redisReply *reply, const char *errstr,
                         void *arg)
{
    struct idem_ctx *ctx = arg;
    long long pttl = -1;

    ctx->cmd = NULL;
    ctx->r->redis_us += clock_mono_us() - ctx->redis_sent_us;
    /* an error only costs precision: the recheck then comes soon and claims again,
     * which meets the error itself if Redis is really failing */
    if (st != REDIS_CMD_OK || store_int_result(reply, &pttl) < 0)
        pttl = -1;
    idem_pending_wait(ctx, pttl);
}

/*
 * Our claim is on the primary, but fewer replicas than redis-wait asks have it: a
 * failover now could promote one that does not, and a retry would execute again. fail
 * (the default) gives the key back and answers 503 — nothing was executed; degrade goes
 * on, counted. 1 when r was answered.
 */
static int idem_claim_unconfirmed(struct idem_ctx *ctx, const char *why)
{
    const struct redis_conf *rc = redis_client_conf(store_client(ctx->store));

    if (rc->wait_policy == REDIS_WAIT_DEGRADE) {
        METRIC_INC(ctx->h->stats.claims_unconfirmed);
        log_warn("idem %s: claim not confirmed by the replicas (%s); forwarding anyway "
                 "(redis-wait-policy degrade)",
                 ctx->id, why);
        return 0;
    }
    idem_stop_watching(ctx);
    idem_release(ctx, "not confirmed by the replicas");
    METRIC_INC(ctx->h->stats.claims_failed_wait);
    log_warn("idem %s: 503 claim not confirmed by the replicas (%s)", ctx->id, why);
    ctx->r->outcome = "unconfirmed";
    frontend_problem(ctx->r, PROBLEM_STORE_UNAVAILABLE,
                     "the idempotency store could not confirm the claim on its replicas; the "
                     "request was not forwarded",
                     "Retry-After: 1\r\n");
    return 1;
}

static void idem_claim_cb(enum redis_status st, const struct redisReply *reply, const char *errstr,
                          void *arg)
{
    struct idem_ctx *ctx = arg;
    struct store_claim_result result, *res = &result;
    char retry[32];

    ctx->cmd = NULL;
    ctx->r->redis_us += clock_mono_us() - ctx->redis_sent_us;
    if ((st == REDIS_CMD_OK || st == REDIS_CMD_UNCONFIRMED) &&
        store_claim_result(reply, ctx->fp, ctx->legacy_fp, ctx->token, res) < 0) {
        /* Redis answered, so this is not an outage: something else wrote the key (another
         * application under the same key-prefix?). Neither forward nor take it over. */
        idem_stop_watching(ctx);
        log_error("idem %s: the key %s holds a value idemproxy did not write", ctx->id, ctx->rkey);
        ctx->r->outcome = "corrupt";
        frontend_problem(ctx->r, PROBLEM_INTERNAL_ERROR,
                         "the stored value for this key is not one idemproxy wrote", NULL);
        return;
    }
    if (st != REDIS_CMD_OK && st != REDIS_CMD_UNCONFIRMED) {
        idem_store_failed(ctx, errstr);
        return;
    }
    /* WAIT matters only for a claim we made: the other answers read what was there */
    if (st == REDIS_CMD_UNCONFIRMED && res->kind == STORE_CLAIMED &&
        idem_claim_unconfirmed(ctx, errstr))
        return;
    switch (res->kind) {
    case STORE_CLAIMED:
        idem_stop_watching(ctx);
        if (frontend_past_deadline(ctx->r->fe)) {
            /* The claim landed after drain-timeout (Redis was slow): forwarding now would
             * leave the request at the upstream as the replica exits, unrecorded. Give
             * the key back; the retry goes to another replica. */
            idem_release(ctx, "claimed after drain-timeout");
            ctx->r->outcome = "draining";
            frontend_problem(ctx->r, PROBLEM_DRAINING,
                             "this replica is shutting down; the request was not forwarded",
                             "Retry-After: 1\r\n");
            return;
        }
        ctx->r->outcome = "executed";
        ctx->lease_until = ctx->claim_sent + ctx->pol->lease_ms;
        log_debug("idem %s: claimed", ctx->id);
        idem_forward(ctx);
        return;
    case STORE_DONE:
        ctx->r->outcome = ctx->state == IDEM_WAITING ? "waited" : "replayed";
        idem_stop_watching(ctx);
        idem_replay(ctx, res);
        return;
    case STORE_MISMATCH:
        idem_stop_watching(ctx);
        ctx->r->outcome = "mismatch";
        log_info("idem %s: 422 key reused with a different request", ctx->id);
        frontend_problem(ctx->r, PROBLEM_KEY_REUSED,
                         "this Idempotency-Key was already used with a different request "
                         "(method, target, body or fingerprinted headers differ)",
                         NULL);
        return;
    case STORE_PENDING:
        if (ctx->pol->in_flight == IDEM_IN_FLIGHT_WAIT) {
            /* the recheck timer needs the other lease's time left: one PTTL, asked only
             * here, so the claim itself stays a single native command */
            ctx->redis_sent_us = clock_mono_us();
            if (!(ctx->cmd = store_pttl(ctx->store, ctx->rkey, idem_pttl_cb, ctx)))
                idem_pending_wait(ctx, -1);
            return;
        }
        /* The lease left (pttl) only bounds a crashed owner; a live one usually
         * finishes far sooner, so suggest the shortest wait HTTP can express. */
        snprintf(retry, sizeof(retry), "Retry-After: 1\r\n");
        log_info("idem %s: 409 in flight", ctx->id);
        ctx->r->outcome = "in-flight";
        frontend_problem(ctx->r, PROBLEM_KEY_IN_USE,
                         "a request with this Idempotency-Key is still being processed", retry);
        return;
    }
}

static void idem_claim(struct idem_ctx *ctx)
{
    ctx->claim_sent = clock_mono_ms();
    ctx->redis_sent_us = clock_mono_us();
    ctx->cmd = store_claim(ctx->store, ctx->rkey, ctx->fp, ctx->token, ctx->pol->lease_ms,
                           idem_claim_cb, ctx);
    if (!ctx->cmd)
        idem_store_failed(ctx, "redis unavailable");
}

/*
 * A claim token: unique per claim, across workers, replicas and restarts. 64 random bits
 * per thread (RAND_bytes once) and a 64-bit counter, in hex; cheaper than RAND_bytes per
 * request, which also makes a getpid() syscall each time. out holds 33 bytes.
 */
static int idem_token(char *out)
{
    static __thread uint64_t seed, counter;
    static __thread int ready;

    if (!ready) {
        if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1 ||
            RAND_bytes((unsigned char *)&counter, sizeof(counter)) != 1)
            return -1;
        ready = 1;
    }
    counter++;
    bytes_hex64(out, seed);
    bytes_hex64(out + 16, counter);
    out[32] = '\0';
    return 0;
}

/*
 * The body as the fingerprint sees it: itself (fingerprint-body raw), or its canonical
 * JSON (fingerprint-body json: member order and whitespace ignored) — the raw bytes
 * when it is not JSON. *canon: a buffer to free, or NULL.
 */
static struct evbuffer *idem_fp_body(const struct idem_policy *pol, struct evbuffer *body,
                                     struct evbuffer **canon)
{
    size_t len = evbuffer_get_length(body);

    *canon = NULL;
    if (pol->fingerprint_body != IDEM_FP_BODY_JSON || len == 0 || !(*canon = evbuffer_new()))
        return body;
    if (jsoncanon(*canon, (const char *)evbuffer_pullup(body, -1), len) == 0)
        return *canon;
    evbuffer_free(*canon);
    *canon = NULL;
    return body;
}

/*
 * A scope or fingerprint header that appears twice is refused (400): hashing one of them
 * would let a client pick whose scope its key lands in when a gateway in front appends
 * an identity header without removing the client's. 1 when r was answered.
 */
static int idem_repeated_header(struct frontend_req *r, char *const *names, size_t n,
                                const char *what)
{
    for (size_t i = 0; i < n; i++) {
        size_t count;
        char d[200];

        if (http1_header_get(&r->head, names[i], &count) && count > 1) {
            snprintf(d, sizeof(d), "more than one %.64s header (a %s header must be sent once)",
                     names[i], what);
            frontend_problem(r, PROBLEM_INVALID_HEADER, d, NULL);
            return 1;
        }
    }
    return 0;
}

/* on_req: take the requests whose method the policy names; answer them, keyed or (no
 * key, not required) as a plain forward. */
static int idem_on_req(struct frontend_handler *self, struct frontend_req *r)
{
    struct idem_handler *h = (struct idem_handler *)self;
    /* the route's policy (longest prefix), or the process's; NULL: not keyed here */
    const struct idem_policy *pol = policy_for(h->pol, r->head.target);
    struct idem_ctx *ctx;
    uint8_t id[IDKEY_HASH_LEN], fp[IDKEY_HASH_LEN], fp_host[IDKEY_HASH_LEN];
    struct evbuffer *canon;
    char hex[IDKEY_HEX_LEN + 1], key[4097];
    const char *value, *why = NULL;
    size_t n, plen;
    int keylen;

    if (!pol || !policy_method_applies(pol, r->head.method))
        return 0;
    value = http1_header_get(&r->head, pol->key_header, &n);
    if (!value) {
        if (pol->require_key) {
            char d[160];
            snprintf(d, sizeof(d), "%s requests must carry an %s header", r->head.method,
                     pol->key_header);
            r->outcome = "missing-key";
            frontend_problem(r, PROBLEM_MISSING_KEY, d, NULL);
            return 1;
        }
        frontend_forward(r);
        return 1;
    }
    if (n > 1) {
        r->outcome = "invalid-key";
        frontend_problem(r, PROBLEM_INVALID_KEY, "more than one key header", NULL);
        return 1;
    }
    if (idem_repeated_header(r, pol->scope_headers, pol->nscope_headers, "scope") ||
        idem_repeated_header(r, pol->fingerprint_headers, pol->nfingerprint_headers, "fingerprint"))
        return 1;
    /* key-max-length is at most 4096 (config table) */
    keylen = idkey_parse(value, (size_t)pol->key_max_length, key, sizeof(key), &why);
    if (keylen < 0) {
        r->outcome = "invalid-key";
        frontend_problem(r, PROBLEM_INVALID_KEY, why, NULL);
        return 1;
    }
    plen = strlen(pol->key_prefix);
    canon = NULL;
    ctx = calloc(1, sizeof(*ctx) + plen + IDKEY_HEX_LEN + 1);
    if (!ctx ||
        idkey_record_id(&r->head, pol->scope_headers, pol->nscope_headers, r->client_cert, key,
                        (size_t)keylen, id) < 0 ||
        idkey_fingerprint(&r->head, idem_fp_body(pol, r->body, &canon), pol->fingerprint_headers,
                          pol->nfingerprint_headers, fp) < 0 ||
        idkey_fingerprint_host(fp, &r->head, fp_host) < 0 || idem_token(ctx->token) < 0) {
        idem_ctx_free(ctx);
        if (canon)
            evbuffer_free(canon);
        frontend_problem(r, PROBLEM_INTERNAL_ERROR, "could not hash the request", NULL);
        return 1;
    }
    if (canon)
        evbuffer_free(canon);
    ctx->rkey = (char *)(ctx + 1);
    ctx->r = r;
    ctx->seq = r->seq;
    ctx->h = h;
    METRIC_INC(h->stats.in_flight);
    ctx->pol = pol;
    ctx->seal = h->seal;
    ctx->store = h->store;
    ctx->state = IDEM_CLAIMING;
    frontend_req_cleanup_add(r, &ctx->cleanup, idem_req_gone, ctx);
    idkey_hex(id, hex);
    memcpy(ctx->rkey, pol->key_prefix, plen);
    memcpy(ctx->rkey + plen, hex, IDKEY_HEX_LEN + 1);
    memcpy(ctx->id, hex, 16);
    ctx->id[16] = '\0';
    memcpy(r->record, ctx->id, sizeof(r->record));
    idkey_hex(fp_host, ctx->fp);
    idkey_hex(fp, ctx->legacy_fp);
    idem_claim(ctx);
    return 1;
}

struct frontend_handler *idem_handler_new(struct event_base *base, const struct idem_policy *pol,
                                          const struct seal_conf *seal, struct store *store)
{
    struct idem_handler *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->super.name = "idem";
    h->super.on_req = idem_on_req;
    h->base = base;
    h->pol = pol;
    h->seal = seal;
    h->store = store;
    TAILQ_INIT(&h->orphans);
    return &h->super;
}

void idem_handler_free(struct frontend_handler *self)
{
    struct idem_handler *h = (struct idem_handler *)self;
    struct idem_ctx *ctx;

    if (!h)
        return;
    while ((ctx = TAILQ_FIRST(&h->orphans))) {
        TAILQ_REMOVE(&h->orphans, ctx, link);
        METRIC_INC(h->stats.records_lost);
        log_error("idem %s: shutting down with answer %d not yet recorded", ctx->id, ctx->status);
        idem_ctx_free(ctx);
    }
    free(h);
}

void idem_handler_set_policy(struct frontend_handler *self, const struct idem_policy *pol,
                             const struct seal_conf *seal)
{
    ((struct idem_handler *)self)->pol = pol;
    ((struct idem_handler *)self)->seal = seal;
}

size_t idem_handler_pending(const struct frontend_handler *self, void (*on_idle)(void *arg),
                            void *arg)
{
    struct idem_handler *h = (struct idem_handler *)self;

    if (on_idle) {
        h->on_idle = on_idle;
        h->idle_arg = arg;
    }
    return h->norphans;
}

uint64_t idem_handler_oldest_seq(const struct frontend_handler *self)
{
    const struct idem_handler *h = (const struct idem_handler *)self;
    const struct idem_ctx *ctx;
    uint64_t oldest = UINT64_MAX;

    TAILQ_FOREACH(ctx, &h->orphans, link) /* few: records still being retried */
    {
        if (ctx->seq < oldest)
            oldest = ctx->seq;
    }
    return oldest;
}

void idem_handler_stats(const struct frontend_handler *self, struct idem_stats *out)
{
    const struct idem_handler *h = (const struct idem_handler *)self;

    out->record_retries = METRIC_GET(h->stats.record_retries);
    out->records_lost = METRIC_GET(h->stats.records_lost);
    out->in_flight = METRIC_GET(h->stats.in_flight);
    out->claims_failed_redis = METRIC_GET(h->stats.claims_failed_redis);
    out->claims_failed_wait = METRIC_GET(h->stats.claims_failed_wait);
    out->claims_unconfirmed = METRIC_GET(h->stats.claims_unconfirmed);
    out->records_unconfirmed = METRIC_GET(h->stats.records_unconfirmed);
    out->records_unreadable = METRIC_GET(h->stats.records_unreadable);
}
