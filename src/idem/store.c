#include "idem/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "core/bytes.h"
#include "core/log.h"
#include "idem/idkey.h"

enum { SCRIPT_RECORD, SCRIPT_RELEASE, SCRIPT_RENEW, SCRIPT_INSPECT, SCRIPT_PURGE, SCRIPT_COUNT };

/* Values: "P" fp(64) token(32) | "D" fp(64) record. Each touches only KEYS[1];
 * completion is published on the channel named KEYS[1] (PUBLISH, or SPUBLISH for
 * redis-pubsub sharded: the channel is in the key's slot). The claim is not among them: it
 * is one native SET (store_claim). */
#define STORE_SCRIPTS(PUB)                                                                           \
    {                                                                                                \
        /* RECORD token retention_ms record fp → 1 stored | 2 already done for this request        \
         * (an earlier attempt of ours landed, or a later owner's) | 0 refused (not ours) */         \
        {"record",                                                                                   \
         "local v = redis.call('GET', KEYS[1])\n"                                                    \
         "if not v then return 0 end\n"                                                              \
         "if string.sub(v, 1, 1) == 'D' and string.sub(v, 2, 65) == ARGV[4] then return 2 end\n"     \
         "if string.sub(v, 1, 1) ~= 'P' or string.sub(v, 66) ~= ARGV[1] then return 0 end\n"         \
         "redis.call('SET', KEYS[1], 'D' .. string.sub(v, 2, 65) .. ARGV[3], 'PX', ARGV[2])\n"       \
         "redis.call('" PUB "', KEYS[1], 'done')\n"                                                  \
         "return 1\n"}, /* RELEASE token → 1 deleted | 0 not ours */                               \
            {"release",                                                                              \
             "local v = redis.call('GET', KEYS[1])\n"                                                \
             "if v and string.sub(v, 1, 1) == 'P' and string.sub(v, 66) == ARGV[1] then\n"           \
             "  redis.call('DEL', KEYS[1])\n"                                                        \
             "  redis.call('" PUB "', KEYS[1], 'released')\n"                                        \
             "  return 1\n"                                                                          \
             "end\n"                                                                                 \
             "return 0\n"}, /* RENEW token lease_ms → 1 extended | 0 not ours */                   \
            {"renew",                                                                                \
             "local v = redis.call('GET', KEYS[1])\n"                                                \
             "if v and string.sub(v, 1, 1) == 'P' and string.sub(v, 66) == ARGV[1] then\n"           \
             "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"                                    \
             "end\n"                                                                                 \
             "return 0\n"}, /* INSPECT → {0} absent | {1, value, pttl} (for the admin endpoint) */ \
            {"inspect",                                                                              \
             "local v = redis.call('GET', KEYS[1])\n"                                                \
             "if not v then return {0} end\n"                                                        \
             "return {1, v, redis.call('PTTL', KEYS[1])}\n"}, /* PURGE force → 0 absent | 2        \
                                                                 pending and not forced | 1          \
                                                                 deleted (waiters woken) */          \
            {"purge", "local v = redis.call('GET', KEYS[1])\n"                                       \
                      "if not v then return 0 end\n"                                                 \
                      "if string.sub(v, 1, 1) == 'P' and ARGV[1] ~= '1' then return 2 end\n"         \
                      "redis.call('DEL', KEYS[1])\n"                                                 \
                      "redis.call('" PUB "', KEYS[1], 'released')\n"                                 \
                      "return 1\n"},                                                                 \
    }
const struct redis_script store_scripts[SCRIPT_COUNT] = STORE_SCRIPTS("PUBLISH");
const struct redis_script store_scripts_sharded[SCRIPT_COUNT] = STORE_SCRIPTS("SPUBLISH");
const size_t store_nscripts = SCRIPT_COUNT;

const struct redis_script *store_scripts_for(const struct redis_conf *conf)
{
    return conf->pubsub == REDIS_PUBSUB_SHARDED ? store_scripts_sharded : store_scripts;
}

struct store {
    struct redis_client *rc;
};

static void store_policy_cb(enum redis_status st, const struct redisReply *reply,
                            const char *errstr, void *arg)
{
    if (st != REDIS_CMD_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return; /* CONFIG may be disabled on managed Redis: nothing to check then */
    if (strcmp(reply->element[1]->str, "noeviction") != 0)
        log_warn("redis: maxmemory-policy is '%s': Redis may evict records, and an evicted "
                 "record means a duplicate execution; set maxmemory-policy noeviction",
                 reply->element[1]->str);
}

static void store_version_cb(enum redis_status st, const struct redisReply *reply,
                             const char *errstr, void *arg)
{
    const char *v;

    if (st != REDIS_CMD_OK || reply->type != REDIS_REPLY_STRING)
        return;
    v = strstr(reply->str, "redis_version:");
    if (v && atoi(v + 14) < 7)
        log_error("redis: version %.*s is too old: idemproxy needs Redis 7.0 or later (its "
                  "claim is a SET NX GET); every keyed request will fail",
                  (int)strcspn(v + 14, "\r\n"), v + 14);
}

struct store *store_new(struct redis_client *rc, int check_server)
{
    struct store *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->rc = rc;
    if (check_server) {
        const char *policy[] = {"CONFIG", "GET", "maxmemory-policy"};
        size_t policy_len[] = {6, 3, 16};
        const char *info[] = {"INFO", "server"};
        size_t info_len[] = {4, 6};
        redis_command(rc, 3, policy, policy_len, 0, store_policy_cb, NULL);
        redis_command(rc, 2, info, info_len, 0, store_version_cb, NULL);
    }
    return s;
}

void store_free(struct store *s)
{
    free(s);
}

struct redis_client *store_client(struct store *s)
{
    return s->rc;
}

/*
 * The claim is one native command, atomic on its own since Redis 7.0:
 *   SET key "P" fp token NX GET PX lease
 * It takes the key when it is free and answers what was there (nil when nothing was). The
 * comparison with the stored fingerprint and the pending/done decision are made here, in
 * store_claim_result. A script did the same until 0.2; as a plain command Redis spends a
 * fraction of the CPU on it (docs/BENCHMARKS.md).
 */
struct redis_cmd *store_claim(struct store *s, const char *key, const char *fp_hex,
                              const char *token, uint64_t lease_ms, redis_reply_cb cb, void *arg)
{
    char value[1 + IDKEY_HEX_LEN + STORE_TOKEN_LEN], lease[24];
    size_t fplen = strlen(fp_hex), toklen = strlen(token);
    const char *argv[] = {"SET", key, value, "NX", "GET", "PX", lease};
    size_t lens[] = {3, strlen(key), 1 + fplen + toklen, 2, 3, 2, bytes_u64(lease, lease_ms)};

    if (fplen != IDKEY_HEX_LEN || toklen > STORE_TOKEN_LEN)
        return NULL;
    value[0] = 'P';
    memcpy(value + 1, fp_hex, fplen);
    memcpy(value + 1 + fplen, token, toklen);
    return redis_command(s->rc, 7, argv, lens, REDIS_F_WAIT | REDIS_F_RESEND, cb, arg);
}

struct redis_cmd *store_pttl(struct store *s, const char *key, redis_reply_cb cb, void *arg)
{
    const char *argv[] = {"PTTL", key};
    size_t lens[] = {4, strlen(key)};

    return redis_command(s->rc, 2, argv, lens, 0, cb, arg);
}

int store_record_prepare(struct store *s, struct store_record_cmd *out, const char *key,
                         const char *token, const char *fp_hex, uint64_t retention_ms,
                         size_t reclen)
{
    const char *sha = redis_script_sha(s->rc, SCRIPT_RECORD);
    char retention[24];
    /* the record's bytes (args[6]) are left for the caller to write in place */
    const char *args[] = {"EVALSHA", sha, "1", key, token, retention, NULL, fp_hex};
    size_t lens[sizeof(args) / sizeof(args[0])], n = sizeof(args) / sizeof(args[0]);
    char *p;

    memset(out, 0, sizeof(*out));
    if (!sha)
        return -1;
    retention[bytes_u64(retention, retention_ms)] = '\0';
    for (size_t i = 0; i < n; i++)
        lens[i] = args[i] ? strlen(args[i]) : reclen;
    out->len = redis_format(NULL, (int)n, args, lens);
    if (!(out->buf = malloc(out->len)))
        return -1;
    p = redis_put_array(out->buf, n);
    for (size_t i = 0; i < n; i++) {
        p = redis_put_bulk(p, args[i], lens[i]);
        if (!args[i])
            out->record = (uint8_t *)p - 2 - reclen;
    }
    return 0;
}

void store_record_cmd_free(struct store_record_cmd *rc)
{
    free(rc->buf);
    memset(rc, 0, sizeof(*rc));
}

struct redis_cmd *store_record_send(struct store *s, const struct store_record_cmd *rc,
                                    redis_reply_cb cb, void *arg)
{
    return redis_eval_formatted(s->rc, SCRIPT_RECORD, rc->buf, rc->len, REDIS_F_WAIT, cb, arg);
}

struct redis_cmd *store_release(struct store *s, const char *key, const char *token,
                                redis_reply_cb cb, void *arg)
{
    const char *args[] = {token};
    size_t lens[] = {strlen(token)};

    return redis_eval(s->rc, SCRIPT_RELEASE, key, 1, args, lens, 0, cb, arg);
}

struct redis_cmd *store_renew(struct store *s, const char *key, const char *token,
                              uint64_t lease_ms, redis_reply_cb cb, void *arg)
{
    char lease[24];
    const char *args[] = {token, lease};
    size_t lens[] = {strlen(token), bytes_u64(lease, lease_ms)};

    return redis_eval(s->rc, SCRIPT_RENEW, key, 2, args, lens, REDIS_F_WAIT, cb, arg);
}

struct redis_cmd *store_inspect(struct redis_client *rc, const char *key, redis_reply_cb cb,
                                void *arg)
{
    return redis_eval(rc, SCRIPT_INSPECT, key, 0, NULL, NULL, 0, cb, arg);
}

struct redis_cmd *store_purge(struct redis_client *rc, const char *key, int force,
                              redis_reply_cb cb, void *arg)
{
    const char *args[] = {force ? "1" : "0"};
    size_t lens[] = {1};

    return redis_eval(rc, SCRIPT_PURGE, key, 1, args, lens, 0, cb, arg);
}

int store_inspect_result(const struct redisReply *reply, struct store_inspect_result *res)
{
    memset(res, 0, sizeof(*res));
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER)
        return -1;
    if (reply->element[0]->integer == 0)
        return 0; /* absent */
    if (reply->elements < 3 || reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[1]->len < 65 || reply->element[2]->type != REDIS_REPLY_INTEGER)
        return -1;
    res->state = reply->element[1]->str[0] == 'P' ? STORE_PENDING : STORE_DONE;
    res->pttl_ms = reply->element[2]->integer;
    if (res->state == STORE_DONE) {
        res->record = reply->element[1]->str + 65;
        res->record_len = reply->element[1]->len - 65;
        res->fp = reply->element[1]->str + 1;
    }
    return 0;
}

int store_claim_result(const struct redisReply *reply, const char *fp_hex,
                       const char *legacy_fp_hex, const char *token, struct store_claim_result *res)
{
    memset(res, 0, sizeof(*res));
    if (reply->type == REDIS_REPLY_NIL) {
        res->kind = STORE_CLAIMED;
        return 0;
    }
    /* "P" fp token or "D" fp record: anything else is not ours to interpret */
    if (reply->type != REDIS_REPLY_STRING || reply->len < 1 + IDKEY_HEX_LEN ||
        (reply->str[0] != 'P' && reply->str[0] != 'D'))
        return -1;
    if (memcmp(reply->str + 1, fp_hex, IDKEY_HEX_LEN) != 0 &&
        memcmp(reply->str + 1, legacy_fp_hex, IDKEY_HEX_LEN) != 0) {
        res->kind = STORE_MISMATCH;
        return 0;
    }
    if (reply->str[0] == 'P') {
        size_t toklen = strlen(token);
        /* our own earlier attempt of this claim landed (it was resent after a timeout,
         * a lost connection, a failover): the key is ours */
        res->kind = reply->len == 1 + IDKEY_HEX_LEN + toklen &&
                            memcmp(reply->str + 1 + IDKEY_HEX_LEN, token, toklen) == 0
                        ? STORE_CLAIMED
                        : STORE_PENDING;
        return 0;
    }
    res->kind = STORE_DONE;
    res->record = reply->str + 1 + IDKEY_HEX_LEN;
    res->record_len = reply->len - 1 - IDKEY_HEX_LEN;
    res->fp = reply->str + 1;
    return 0;
}

int store_int_result(const struct redisReply *reply, long long *value)
{
    if (reply->type != REDIS_REPLY_INTEGER)
        return -1;
    *value = reply->integer;
    return 0;
}
