/* Unit tests for demo-bank's ledger (tools/demo-bank/ledger.c) and amount parser (amount.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "amount.h"
#include "ledger.h"

/* ---- helpers ---- */

static struct ledger *L;

static void ledger_setup(void)
{
    L = ledger_new("r1");
    cr_assert_not_null(L);
}

static void ledger_teardown(void)
{
    ledger_free(L);
    L = NULL;
}

/* Append a payment with key (NULL: none) and fixed id/time so JSON is predictable. */
static uint64_t pay(const char *key, long long amount)
{
    struct ledger_entry e;

    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "pay_%016llx", (unsigned long long)(ledger_total(L) + 1));
    e.amount = amount;
    e.key = key;
    e.keylen = key ? strlen(key) : 0;
    e.unix_ms = 1764370000000LL + (int64_t)ledger_total(L);
    return ledger_append(L, &e);
}

static uint64_t count(const char *key)
{
    return ledger_count(L, key, strlen(key));
}

/* The document a writer produced, as a malloc'd C string. */
static char *render(int (*write)(const struct ledger *, struct evbuffer *))
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *s;

    cr_assert_not_null(b);
    cr_assert_eq(write(L, b), 0);
    n = evbuffer_get_length(b);
    s = malloc(n + 1);
    cr_assert_not_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void assert_render(int (*write)(const struct ledger *, struct evbuffer *), const char *want)
{
    char *got = render(write);

    cr_assert_str_eq(got, want);
    free(got);
}

/* ---- ledger ---- */

TestSuite(ledger, .init = ledger_setup, .fini = ledger_teardown);

Test(ledger, empty)
{
    cr_assert_eq(ledger_total(L), 0);
    cr_assert_eq(ledger_nkeys(L), 0);
    cr_assert_eq(count("k1"), 0);
    cr_assert_null(ledger_entry_at(L, 0));
    cr_assert_null(ledger_entry_at(L, 1));
    cr_assert_str_eq(ledger_replica(L), "r1");
    assert_render(ledger_write_counts, "{\"total\": 0, \"keys\": {}}");
    assert_render(ledger_write_entries, "[]");
}

Test(ledger, counts_per_key_and_total_with_keyless)
{
    cr_assert_eq(pay("k1", 100), 1);
    cr_assert_eq(pay("k2", 5), 2);
    cr_assert_eq(pay(NULL, 7), 3);
    cr_assert_eq(pay("k2", 5), 4);
    cr_assert_eq(pay(NULL, 7), 5);

    cr_assert_eq(ledger_total(L), 5);
    cr_assert_eq(ledger_nkeys(L), 2);
    cr_assert_eq(count("k1"), 1);
    cr_assert_eq(count("k2"), 2);
    cr_assert_eq(count("k3"), 0);
    cr_assert_eq(count("k"), 0, "a prefix is another key");
    cr_assert_eq(count("k10"), 0);
    cr_assert_eq(ledger_count(L, NULL, 0), 0);
    assert_render(ledger_write_counts, "{\"total\": 5, \"keys\": {\"k1\": 1, \"k2\": 2}}");
}

Test(ledger, keys_are_byte_strings)
{
    /* Same bytes up to a NUL, different lengths: different keys. The empty key is a key. */
    struct ledger_entry e = {.amount = 1, .key = "a\0b", .keylen = 3};

    strcpy(e.id, "pay_x");
    cr_assert_eq(ledger_append(L, &e), 1);
    e.keylen = 1;
    cr_assert_eq(ledger_append(L, &e), 2);
    cr_assert_eq(pay("", 1), 3);
    cr_assert_eq(ledger_count(L, "a\0b", 3), 1);
    cr_assert_eq(ledger_count(L, "a", 1), 1);
    cr_assert_eq(ledger_count(L, "", 0), 1);
    cr_assert_eq(ledger_nkeys(L), 3);
    assert_render(ledger_write_counts,
                  "{\"total\": 3, \"keys\": {\"a\\u0000b\": 1, \"a\": 1, \"\": 1}}");
}

Test(ledger, entries_intern_the_key)
{
    char key[8] = "kk";
    const struct ledger_entry *a, *b;

    cr_assert_eq(pay(key, 1), 1);
    key[0] = 'X'; /* the ledger must not point at the caller's buffer */
    cr_assert_eq(pay("kk", 2), 2);
    a = ledger_entry_at(L, 1);
    b = ledger_entry_at(L, 2);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_str_eq(a->key, "kk");
    cr_assert_eq(a->keylen, 2);
    cr_assert_eq(a->key, b->key, "one copy per distinct key");
    cr_assert_eq(a->seq, 1);
    cr_assert_eq(b->seq, 2);
    cr_assert_eq(b->amount, 2);
    cr_assert_str_eq(b->id, "pay_0000000000000002");
    cr_assert_eq(count("kk"), 2);
    cr_assert_eq(count("Xk"), 0);
}

Test(ledger, counts_json_escapes_keys)
{
    /* A quote, a backslash, control characters, DEL; ASCII punctuation stays. */
    cr_assert_eq(pay("a\"b", 1), 1);
    cr_assert_eq(pay("c\\d", 1), 2);
    cr_assert_eq(pay("e\x01\nf\t\x7f", 1), 3);
    cr_assert_eq(pay("c\\d", 1), 4);
    cr_assert_eq(pay("x/y:z", 1), 5);
    assert_render(ledger_write_counts, "{\"total\": 5, \"keys\": {\"a\\\"b\": 1, \"c\\\\d\": 2, "
                                       "\"e\\u0001\\nf\\t\\u007f\": 1, \"x/y:z\": 1}}");
}

Test(ledger, entries_json)
{
    cr_assert_eq(pay("k\"1", 100), 1);
    cr_assert_eq(pay(NULL, 25), 2);
    assert_render(ledger_write_entries,
                  "[\n"
                  "{\"seq\":1,\"id\":\"pay_0000000000000001\",\"amount\":100,\"key\":\"k\\\"1\","
                  "\"replica\":\"r1\",\"unix_ms\":1764370000000},\n"
                  "{\"seq\":2,\"id\":\"pay_0000000000000002\",\"amount\":25,\"key\":null,"
                  "\"replica\":\"r1\",\"unix_ms\":1764370000001}\n"
                  "]");
}

Test(ledger, entry_json_escapes_replica)
{
    struct ledger *l = ledger_new("r\"\\2");
    struct ledger_entry e = {.amount = 3, .unix_ms = 42};
    struct evbuffer *b = evbuffer_new();
    const char *want = "{\"seq\":1,\"id\":\"pay_1\",\"amount\":3,\"key\":null,"
                       "\"replica\":\"r\\\"\\\\2\",\"unix_ms\":42}";

    cr_assert_not_null(l);
    strcpy(e.id, "pay_1");
    cr_assert_eq(ledger_append(l, &e), 1);
    cr_assert_eq(ledger_write_entry(l, ledger_entry_at(l, 1), b), 0);
    cr_assert_eq(evbuffer_get_length(b), strlen(want));
    cr_assert_eq(memcmp(evbuffer_pullup(b, -1), want, strlen(want)), 0);
    evbuffer_free(b);
    ledger_free(l);
}

/* The retry storm: 2,000 keys x 6 duplicates, interleaved like concurrent clients. */
Test(ledger, storm_of_duplicates)
{
    char key[32];

    for (int round = 0; round < 6; round++) {
        for (int k = 0; k < 2000; k++) {
            snprintf(key, sizeof(key), "storm-%d", k);
            cr_assert_neq(pay(key, 10), 0);
        }
    }
    cr_assert_eq(ledger_total(L), 12000);
    cr_assert_eq(ledger_nkeys(L), 2000);
    for (int k = 0; k < 2000; k++) {
        snprintf(key, sizeof(key), "storm-%d", k);
        cr_assert_eq(count(key), 6, "key %s", key);
    }
}

/* Growth far past the initial table; each key's count and order must survive rehashing. */
Test(ledger, many_keys, .timeout = 60)
{
    enum { N = 300000 };
    char key[32];
    char *json;
    const char *p;

    for (int k = 0; k < N; k++) {
        snprintf(key, sizeof(key), "%08x-key", (unsigned)k * 2654435761u);
        cr_assert_neq(pay(key, 1), 0);
        if (k % 3 == 0)
            cr_assert_neq(pay(key, 1), 0);
    }
    cr_assert_eq(ledger_nkeys(L), N);
    cr_assert_eq(ledger_total(L), N + (N + 2) / 3);
    for (int k = 0; k < N; k++) {
        snprintf(key, sizeof(key), "%08x-key", (unsigned)k * 2654435761u);
        cr_assert_eq(count(key), k % 3 == 0 ? 2 : 1, "key %s", key);
    }
    cr_assert_eq(count("nope"), 0);

    /* Keys come out in first-seen order. */
    json = render(ledger_write_counts);
    snprintf(key, sizeof(key), "\"%08x-key\": 2", 0u);
    p = strstr(json, key);
    cr_assert_not_null(p);
    snprintf(key, sizeof(key), "\"%08x-key\": 1", 1u * 2654435761u);
    cr_assert_not_null(strstr(p, key));
    snprintf(key, sizeof(key), "\"%08x-key\": 1", (unsigned)(N - 1) * 2654435761u);
    cr_assert_not_null(strstr(json, key));
    free(json);
}

/* ---- bank_parse_amount ---- */

static void assert_amount(const char *json, long long want)
{
    long long got = -1;
    const char *why = NULL;
    int rc = bank_parse_amount(json, strlen(json), &got, &why);

    cr_assert_eq(rc, 0, "body [%s] rejected: %s", json, why ? why : "(no reason)");
    cr_assert_eq(got, want, "body [%s]", json);
}

static void assert_rejected(const char *json, size_t len, const char *reason)
{
    long long got = -12345;
    const char *why = NULL;
    int rc = bank_parse_amount(json, len, &got, &why);

    cr_assert_eq(rc, -1, "body [%.*s] accepted as %lld", (int)len, json, got);
    cr_assert_eq(got, -12345, "body [%.*s]: *out written on failure", (int)len, json);
    cr_assert_not_null(why, "body [%.*s]: no reason", (int)len, json);
    cr_assert_str_eq(why, reason, "body [%.*s]", (int)len, json);
}

#define REJECT(json, reason) assert_rejected(json, strlen(json), reason)

Test(amount, plain)
{
    assert_amount("{\"amount\": 100}", 100);
    assert_amount("{\"amount\":1}", 1);
    assert_amount("{\"amount\":1000000000}", BANK_AMOUNT_MAX);
    assert_amount("{\"amount\":9}", 9);
}

Test(amount, whitespace)
{
    assert_amount(" \t\r\n{ \n\"amount\"\t:\r\n 42 \n}\n\n", 42);
    assert_amount("{\"amount\" :7 }", 7);
}

Test(amount, other_members)
{
    assert_amount("{\"currency\": \"EUR\", \"amount\": 250}", 250);
    assert_amount("{\"amount\": 250, \"currency\": \"EUR\", \"note\": null}", 250);
    assert_amount("{\"a\": [1, -2.5e+3, true, false, null, {\"b\": []}], \"amount\": 3, "
                  "\"z\": {}}",
                  3);
    /* "amount" inside a nested value or as a string value does not count. */
    assert_amount("{\"meta\": {\"amount\": -1}, \"amount\": 8, \"list\": [{\"amount\": 0}]}", 8);
    assert_amount("{\"label\": \"amount\", \"amount\": 11}", 11);
    /* Near-miss names are other members. */
    assert_amount("{\"amountx\": 1, \"amoun\": 2, \"Amount\": 3, \"amount\": 4}", 4);
}

Test(amount, escapes_in_strings)
{
    assert_amount("{\"\\u0061mount\": 5}", 5);
    assert_amount("{\"am\\u006Funt\": 6}", 6);
    assert_amount("{\"s\": \"q\\\"uote \\\\ \\/ \\b\\f\\n\\r\\t \\u00e9\", \"amount\": 12}", 12);
    assert_amount("{\"caf\xc3\xa9\": 1, \"amount\": 13}", 13);
}

Test(amount, not_nul_terminated)
{
    const char buf[] = "{\"amount\": 77}garbage";
    long long got = 0;
    const char *why = NULL;

    cr_assert_eq(bank_parse_amount(buf, 14, &got, &why), 0, "%s", why ? why : "");
    cr_assert_eq(got, 77);
    assert_rejected(buf, 12, "malformed JSON: expected ',' or '}'");
}

Test(amount, not_an_object)
{
    assert_rejected("", 0, "empty body (expected a JSON object with \"amount\")");
    REJECT(" \r\n\t ", "empty body (expected a JSON object with \"amount\")");
    REJECT("[]", "body must be a JSON object");
    REJECT("[{\"amount\": 1}]", "body must be a JSON object");
    REJECT("100", "body must be a JSON object");
    REJECT("\"amount\"", "body must be a JSON object");
    REJECT("null", "body must be a JSON object");
    REJECT("amount=100", "malformed JSON: invalid value");
}

Test(amount, missing)
{
    REJECT("{}", "missing \"amount\" member");
    REJECT("{\"amt\": 100}", "missing \"amount\" member");
    REJECT("{\"x\": {\"amount\": 100}}", "missing \"amount\" member");
}

Test(amount, duplicate)
{
    REJECT("{\"amount\": 1, \"amount\": 2}", "duplicate \"amount\" member");
    REJECT("{\"amount\": 1, \"\\u0061mount\": 1}", "duplicate \"amount\" member");
}

Test(amount, not_positive)
{
    REJECT("{\"amount\": 0}", "amount must be positive");
    REJECT("{\"amount\": -0}", "amount must be positive");
    REJECT("{\"amount\": -5}", "amount must be positive");
    REJECT("{\"amount\": -99999999999999999999}", "amount must be positive");
}

Test(amount, not_integer)
{
    REJECT("{\"amount\": 1.5}", "amount must be an integer (no fraction or exponent)");
    REJECT("{\"amount\": 100.0}", "amount must be an integer (no fraction or exponent)");
    REJECT("{\"amount\": 1e3}", "amount must be an integer (no fraction or exponent)");
    REJECT("{\"amount\": 1E+3}", "amount must be an integer (no fraction or exponent)");
    REJECT("{\"amount\": -1.5}", "amount must be an integer (no fraction or exponent)");
    REJECT("{\"amount\": \"100\"}", "amount must be an integer");
    REJECT("{\"amount\": null}", "amount must be an integer");
    REJECT("{\"amount\": true}", "amount must be an integer");
    REJECT("{\"amount\": [100]}", "amount must be an integer");
    REJECT("{\"amount\": {\"value\": 100}}", "amount must be an integer");
}

Test(amount, too_large)
{
    REJECT("{\"amount\": 1000000001}", "amount too large (at most 1000000000)");
    REJECT("{\"amount\": 99999999999999999999999999}", "amount too large (at most 1000000000)");
}

Test(amount, malformed_numbers)
{
    REJECT("{\"amount\": 0100}", "malformed JSON: number with a leading zero");
    REJECT("{\"amount\": 00}", "malformed JSON: number with a leading zero");
    REJECT("{\"amount\": -}", "malformed JSON: invalid number");
    REJECT("{\"amount\": 0 1}", "malformed JSON: expected ',' or '}'");
    REJECT("{\"amount\": -5", "malformed JSON: expected ',' or '}'");
    REJECT("{\"amount\": 1.}", "malformed JSON: invalid number");
    REJECT("{\"amount\": 1e}", "malformed JSON: invalid number");
    REJECT("{\"amount\": +1}", "malformed JSON: invalid value");
    REJECT("{\"amount\": 12abc}", "malformed JSON: expected ',' or '}'");
    REJECT("{\"amount\": 1 2}", "malformed JSON: expected ',' or '}'");
    REJECT("{\"amount\": 0x10}", "malformed JSON: expected ',' or '}'");
    REJECT("{\"x\": .5, \"amount\": 1}", "malformed JSON: invalid value");
    REJECT("{\"x\": 01, \"amount\": 1}", "malformed JSON: number with a leading zero");
}

Test(amount, malformed_structure)
{
    REJECT("{", "malformed JSON: expected a member name");
    REJECT("{\"amount\"", "malformed JSON: expected ':'");
    REJECT("{\"amount\":", "malformed JSON: unexpected end");
    REJECT("{\"amount\": 1", "malformed JSON: expected ',' or '}'");
    REJECT("{\"amount\": 1,}", "malformed JSON: expected a member name");
    REJECT("{\"amount\" 1}", "malformed JSON: expected ':'");
    REJECT("{amount: 1}", "malformed JSON: expected a member name");
    REJECT("{'amount': 1}", "malformed JSON: expected a member name");
    REJECT("{\"amount\": 1} x", "malformed JSON: data after the object");
    REJECT("{\"amount\": 1}{}", "malformed JSON: data after the object");
    REJECT("{\"amount\": 1};", "malformed JSON: data after the object");
    REJECT("{\"a\": [1, 2,], \"amount\": 1}", "malformed JSON: invalid value");
    REJECT("{\"a\": [1 2], \"amount\": 1}", "malformed JSON: expected ',' or ']'");
    REJECT("{\"a\": tru, \"amount\": 1}", "malformed JSON: invalid value");
    REJECT("{\"a\": nul}", "malformed JSON: invalid value");
    REJECT("{\"amount\": {\"x\" 1}}", "malformed JSON: expected ':'");
    REJECT("{\"amount\": [1,}", "malformed JSON: invalid value");
    assert_rejected("{\"amount\": 1}\0", 14, "malformed JSON: data after the object");
    assert_rejected("{\"amount\":\0 1}", 14, "malformed JSON: invalid value");
}

Test(amount, malformed_strings)
{
    REJECT("{\"amount\": 1, \"s\": \"abc}", "malformed JSON: unterminated string");
    REJECT("{\"amou", "malformed JSON: unterminated string");
    REJECT("{\"s\": \"a\\", "malformed JSON: unterminated string");
    REJECT("{\"s\": \"a\nb\", \"amount\": 1}", "malformed JSON: control character in string");
    REJECT("{\"s\": \"a\x01\", \"amount\": 1}", "malformed JSON: control character in string");
    REJECT("{\"s\": \"\\x41\", \"amount\": 1}", "malformed JSON: invalid escape in string");
    REJECT("{\"s\": \"\\'\", \"amount\": 1}", "malformed JSON: invalid escape in string");
    REJECT("{\"s\": \"\\u12\", \"amount\": 1}", "malformed JSON: invalid \\u escape");
    REJECT("{\"s\": \"\\u12G4\", \"amount\": 1}", "malformed JSON: invalid \\u escape");
    REJECT("{\"s\": \"\\u12", "malformed JSON: invalid \\u escape");
}

/* {"amount": 1, "x": [[...0...]]} with arrays nested arrays deep (0 at depth arrays + 2). */
static void nested(char *buf, size_t len, int arrays)
{
    size_t n = (size_t)snprintf(buf, len, "{\"amount\": 1, \"x\": ");

    cr_assert_lt(n + 2 * (size_t)arrays + 3, len);
    for (int i = 0; i < arrays; i++)
        buf[n++] = '[';
    buf[n++] = '0';
    for (int i = 0; i < arrays; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
}

Test(amount, nesting_limit)
{
    char buf[1024];

    /* The body is depth 1: BANK_JSON_MAX_DEPTH levels in all are fine, one more is not. */
    nested(buf, sizeof(buf), BANK_JSON_MAX_DEPTH - 2);
    assert_amount(buf, 1);
    nested(buf, sizeof(buf), BANK_JSON_MAX_DEPTH - 1);
    REJECT(buf, "malformed JSON: nested too deeply");
    nested(buf, sizeof(buf), 400);
    REJECT(buf, "malformed JSON: nested too deeply");
}
