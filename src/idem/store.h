/*
 * store — the idempotency operations on Redis, for one worker: the claim (one native
 * SET NX GET), the Lua scripts for the steps that compare-and-set (record, release,
 * renew, and the admin's inspect and purge), their arguments and what their replies mean. The
 * connection, deadlines, reconnects and pub/sub belong to the generic client (redis/redis.h); this
 * module only speaks the data model.
 *
 * Data model: one Redis string per record, key = key-prefix + hex(record id); every
 * command touches only that key (Redis Cluster-safe). The value is
 *   "P" fingerprint(64 hex) token(32 hex)    pending: claimed, the upstream is working
 *   "D" fingerprint(64 hex) record bytes      done: the answer (record.h)
 * Completion (record or release) is PUBLISHed on a channel named like the key: watch it
 * with redis_watch(store_client(s), key, ...).
 *
 * Calling convention: as redis.h — a command returns a handle (redis_cancel() forgets its
 * callback) or NULL when nothing could be sent; the callback gets the raw reply, which
 * store_claim_result() / store_int_result() turn into what it means.
 */
#ifndef IDEMPROXY_IDEM_STORE_H
#define IDEMPROXY_IDEM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "idem/policy.h"
#include "redis/redis.h"

struct event_base;
struct store;

enum store_claim {
    STORE_CLAIMED = 1,  /* we own it now: forward */
    STORE_PENDING = 2,  /* someone else is executing it */
    STORE_DONE = 3,     /* recorded: replay */
    STORE_MISMATCH = 4, /* same key, different request */
};

struct store_claim_result {
    enum store_claim kind;
    const char *record; /* DONE: the record bytes, valid only during the callback */
    size_t record_len;
    const char *fp; /* DONE: the fingerprint stored before them (IDKEY_HEX_LEN, no NUL) */
};

/* A store on the client rc (borrowed; must outlive the store). check_server: ask once
 * for the server's version and maxmemory-policy and warn when they cannot keep the
 * promise (one worker per process does). NULL on allocation failure. Leases and
 * retentions come with each call: a route may have its own. */
struct store *store_new(struct redis_client *rc, int check_server);
void store_free(struct store *s);
struct redis_client *store_client(struct store *s);

/* The scripts, for redis_client_new (the client loads them on every connection). */
extern const struct redis_script store_scripts[];
extern const struct redis_script store_scripts_sharded[]; /* SPUBLISH: redis-pubsub sharded */
extern const size_t store_nscripts;
/* The scripts for conf's redis-pubsub. */
const struct redis_script *store_scripts_for(const struct redis_conf *conf);

#define STORE_TOKEN_LEN 32 /* claim tokens are at most this many bytes */

/* CLAIM: take key for token (storing fp_hex, IDKEY_HEX_LEN bytes) if it is free, for
 * lease_ms; the reply tells what was there (store_claim_result). One SET NX GET PX. */
struct redis_cmd *store_claim(struct store *s, const char *key, const char *fp_hex,
                              const char *token, uint64_t lease_ms, redis_reply_cb cb, void *arg);
/* PTTL key: what is left of a pending claim's lease (store_int_result: ms, -2 gone). */
struct redis_cmd *store_pttl(struct store *s, const char *key, redis_reply_cb cb, void *arg);
/*
 * RECORD (compare-and-set on token, then publish), RELEASE (compare-and-delete, publish),
 * RENEW (compare-and-PEXPIRE). Their reply: 1 done, 0 refused (not pending or not ours);
 * RECORD also 2: the key is already done for this fingerprint — safe to send again after
 * a failure that may have applied it.
 *
 * A RECORD command is built once, in Redis's wire format, with room for the encoded
 * answer (the caller writes reclen bytes at rc->record), then sent as often as needed:
 * the answer is held once by the proxy and once by hiredis's output buffer, never more.
 * rc->buf must outlive every send's callback (or its redis_cancel).
 */
struct store_record_cmd {
    char *buf; /* owned */
    size_t len;
    uint8_t *record; /* inside buf: where the record's reclen bytes go */
};
int store_record_prepare(struct store *s, struct store_record_cmd *rc, const char *key,
                         const char *token, const char *fp_hex, uint64_t retention_ms,
                         size_t reclen);
struct redis_cmd *store_record_send(struct store *s, const struct store_record_cmd *rc,
                                    redis_reply_cb cb, void *arg);
void store_record_cmd_free(struct store_record_cmd *rc);
struct redis_cmd *store_release(struct store *s, const char *key, const char *token,
                                redis_reply_cb cb, void *arg);
struct redis_cmd *store_renew(struct store *s, const char *key, const char *token,
                              uint64_t lease_ms, redis_reply_cb cb, void *arg);

/* The admin endpoint's operations, on any client that loaded store_scripts. INSPECT
 * tells what is stored; PURGE deletes it (a pending claim only when force), waking the
 * requests waiting for it: its reply is 1 deleted, 0 absent, 2 pending and not forced. */
struct redis_cmd *store_inspect(struct redis_client *rc, const char *key, redis_reply_cb cb,
                                void *arg);
struct redis_cmd *store_purge(struct redis_client *rc, const char *key, int force,
                              redis_reply_cb cb, void *arg);
struct store_inspect_result {
    int state;          /* 0 absent, STORE_PENDING, or STORE_DONE */
    long long pttl_ms;  /* time left */
    const char *record; /* STORE_DONE: the record bytes, valid during the callback */
    size_t record_len;
    const char *fp; /* STORE_DONE: the fingerprint stored before them (no NUL) */
};
int store_inspect_result(const struct redisReply *reply, struct store_inspect_result *res);

/* Read a CLAIM reply into res (record borrows the reply). What was there is the same
 * request when its fingerprint is fp_hex or legacy_fp_hex (the host-less one the previous
 * release stored); a pending claim holding token is our own (an earlier attempt of this
 * claim that landed): CLAIMED. 0, or -1 if it is malformed (not a value this module
 * writes). */
int store_claim_result(const struct redisReply *reply, const char *fp_hex,
                       const char *legacy_fp_hex, const char *token,
                       struct store_claim_result *res);
/* Read a RECORD/RELEASE/RENEW/PTTL reply. 0, or -1 if it is not an integer. */
int store_int_result(const struct redisReply *reply, long long *value);

#endif
