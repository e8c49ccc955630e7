/*
 * store — the Redis side of the idempotency engine, for one worker.
 *
 * Two hiredis async connections on the worker's event_base: one for commands (every
 * command an EVALSHA of one of four Lua scripts, pipelined), one for pub/sub (only
 * while requests wait for another replica's answer). Scripts are loaded with SCRIPT LOAD
 * on every (re)connect; EVALSHA falls back to EVAL on NOSCRIPT.
 *
 * Data model: one Redis string per record, key = key-prefix + hex(record id); every
 * script touches only KEYS[1] (Redis Cluster-safe). The value is
 *   "P" fingerprint(64 hex) token(32 hex)    pending: claimed, the upstream is working
 *   "D" fingerprint(64 hex) record bytes      done: the answer (record.h)
 * Completion (record or release) is PUBLISHed on a channel named like the key.
 *
 * Deadlines: hiredis 0.14 has no async timeouts, so every command carries its own timer
 * (redis-timeout). When one fires, that command fails with STORE_TIMEOUT and the whole
 * connection is dropped — hiredis then fails every other pending command at once — and
 * a new one is made with back-off. A context is never freed inside its own callback.
 *
 * Calling convention: a command function returns a handle, or NULL when the store is
 * down (nothing was sent; the callback will NOT be called). Otherwise the callback is
 * called exactly once, later, from the event loop. store_cancel() forgets the callback
 * (the command itself may still run in Redis).
 */
#ifndef IDEMPROXY_STORE_H
#define IDEMPROXY_STORE_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
struct store;
struct store_cmd;
struct store_watch;

enum store_status {
    STORE_OK = 0,
    STORE_TIMEOUT, /* no answer within redis-timeout */
    STORE_DOWN,    /* connection lost before the answer */
    STORE_ERROR,   /* Redis answered with an error (e.g. OOM under noeviction) */
};

enum store_claim {
    STORE_CLAIMED = 1,  /* we own it now: forward */
    STORE_PENDING = 2,  /* someone else is executing it */
    STORE_DONE = 3,     /* recorded: replay */
    STORE_MISMATCH = 4, /* same key, different request */
};

struct store_claim_result {
    enum store_claim kind;
    long long pttl_ms;  /* PENDING: time left on the other claim's lease (-1 unknown) */
    const char *record; /* DONE: the record bytes, valid only during the callback */
    size_t record_len;
};

/* st != STORE_OK: res is NULL and errstr says why. */
typedef void (*store_claim_cb)(enum store_status st, const struct store_claim_result *res,
                               const char *errstr, void *arg);
/* RECORD/RELEASE/RENEW: value 1 = done, 0 = refused (not pending or not our token). */
typedef void (*store_int_cb)(enum store_status st, long long value, const char *errstr, void *arg);
/* A watched key completed (or the subscription became active: check again). */
typedef void (*store_wake_cb)(void *arg);

/* Connect (asynchronously; failures are retried with back-off). worker_id is for logs
 * and the once-per-process maxmemory-policy check (worker 1). NULL on allocation failure. */
struct store *store_new(struct event_base *base, const struct config *cfg, int worker_id);

/* Drop both connections; pending callbacks are NOT called (cancel them first or
 * accept that their args are never seen again). */
void store_free(struct store *s);

struct store_cmd *store_claim(struct store *s, const char *key, const char *fp_hex,
                              const char *token, store_claim_cb cb, void *arg);
struct store_cmd *store_record(struct store *s, const char *key, const char *token,
                               const void *record, size_t len, store_int_cb cb, void *arg);
struct store_cmd *store_release(struct store *s, const char *key, const char *token,
                                store_int_cb cb, void *arg);
struct store_cmd *store_renew(struct store *s, const char *key, const char *token, store_int_cb cb,
                              void *arg);
void store_cancel(struct store_cmd *c);

/*
 * Call cb(arg) when key completes. The subscription is made on first use per key;
 * cb is also called once the subscription is active (so a completion that happened
 * before it is not missed: check again then). Returns a handle or NULL (no pub/sub
 * connection: rely on timers). store_unwatch may be called from inside cb.
 */
struct store_watch *store_watch(struct store *s, const char *key, store_wake_cb cb, void *arg);
void store_unwatch(struct store_watch *w);

/* Counters for logs and tests. */
struct store_stats {
    uint64_t commands, timeouts, reconnects;
};
void store_get_stats(const struct store *s, struct store_stats *out);

#endif
