/*
 * store_claim_result: what a claim's reply (the value SET NX GET found) means. A claim
 * sent again after an ambiguous first attempt (its deadline passed, the connection was
 * lost, a failover or a redirect came in between) may find the value its own first
 * attempt wrote: that is ours (CLAIMED), not someone else's request in flight (PENDING).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "idem/idkey.h"
#include "idem/store.h"

#define FP     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LEGACY "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define OTHER  "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define TOKEN  "0123456789abcdef0123456789abcdef"

static int classify(const char *value, const char *token, struct store_claim_result *res)
{
    static char buf[256]; /* res.record points into it */
    redisReply r = {.type = REDIS_REPLY_STRING, .str = buf};

    if (!value) {
        r.type = REDIS_REPLY_NIL;
        r.str = NULL;
    } else {
        r.len = strlen(value);
        memcpy(buf, value, r.len + 1);
    }
    return store_claim_result(&r, FP, LEGACY, token, res);
}

Test(store, nothing_there_is_claimed)
{
    struct store_claim_result res;

    cr_assert_eq(classify(NULL, TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_CLAIMED);
}

Test(store, own_token_is_claimed_not_pending)
{
    struct store_claim_result res;

    cr_assert_eq(classify("P" FP TOKEN, TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_CLAIMED, "our own earlier attempt read as %d", res.kind);
    /* the host-less fingerprint of the previous release, with our token: ours too */
    cr_assert_eq(classify("P" LEGACY TOKEN, TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_CLAIMED);
}

Test(store, another_token_is_pending)
{
    struct store_claim_result res;

    cr_assert_eq(classify("P" FP "ffffffffffffffffffffffffffffffff", TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_PENDING);
    /* a prefix of our token is not our token */
    cr_assert_eq(classify("P" FP "0123456789abcdef", TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_PENDING);
    cr_assert_eq(classify("P" FP TOKEN "0", TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_PENDING);
}

Test(store, other_fingerprint_is_a_mismatch_even_with_our_token)
{
    struct store_claim_result res;

    cr_assert_eq(classify("P" OTHER TOKEN, TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_MISMATCH);
    cr_assert_eq(classify("D" OTHER "rec", TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_MISMATCH);
}

Test(store, done_gives_the_record)
{
    struct store_claim_result res;

    cr_assert_eq(classify("D" FP "the-record", TOKEN, &res), 0);
    cr_assert_eq(res.kind, STORE_DONE);
    cr_assert_eq(res.record_len, 10);
    cr_assert_eq(memcmp(res.record, "the-record", 10), 0);
}

Test(store, foreign_values_are_refused)
{
    struct store_claim_result res;

    cr_assert_eq(classify("hello", TOKEN, &res), -1);
    cr_assert_eq(classify("X" FP TOKEN, TOKEN, &res), -1);
    cr_assert_eq(classify("P"
                          "aaaa",
                          TOKEN, &res),
                 -1);
}
