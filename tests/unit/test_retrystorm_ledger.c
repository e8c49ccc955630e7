#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ledger.h"

#define MAX_SEEN 16

struct seen {
    char key[MAX_SEEN][64];
    uint64_t count[MAX_SEEN];
    int n;
};

static void collect(void *arg, const char *key, size_t len, uint64_t count)
{
    struct seen *s = arg;

    cr_assert_lt(s->n, MAX_SEEN);
    cr_assert_lt(len, sizeof(s->key[0]));
    memcpy(s->key[s->n], key, len);
    s->key[s->n][len] = '\0';
    s->count[s->n] = count;
    s->n++;
}

static struct seen seen;
static uint64_t total;
static char err[200];

static int parse(const char *json)
{
    memset(&seen, 0, sizeof(seen));
    err[0] = '\0';
    return ledger_parse(json, strlen(json), &total, collect, &seen, err, sizeof(err));
}

Test(ledger, the_documented_shape)
{
    cr_assert_eq(parse("{\"total\": 5, \"keys\": {\"a1-0\": 1, \"a1-1\": 4}}\n"), 0, "%s", err);
    cr_assert_eq(total, 5);
    cr_assert_eq(seen.n, 2);
    cr_assert_str_eq(seen.key[0], "a1-0");
    cr_assert_eq(seen.count[0], 1);
    cr_assert_str_eq(seen.key[1], "a1-1");
    cr_assert_eq(seen.count[1], 4);
}

Test(ledger, any_order_and_extra_members)
{
    cr_assert_eq(parse(" {\"replica\": \"b\", \"keys\": {}, \"nested\": {\"x\": [1, 2.5e3, "
                       "{\"y\": null}], \"t\": true, \"f\": false}, \"total\": 0} "),
                 0, "%s", err);
    cr_assert_eq(seen.n, 0);
    cr_assert_eq(total, 0);
}

Test(ledger, escaped_keys_are_decoded)
{
    cr_assert_eq(parse("{\"keys\": {\"a\\u002db\\\"c\\\\\": 2, \"\\u00e9\\ud83d\\ude00\": 1}}"), 0,
                 "%s", err);
    cr_assert_eq(seen.n, 2);
    cr_assert_str_eq(seen.key[0], "a-b\"c\\");
    cr_assert_str_eq(seen.key[1], "\xc3\xa9\xf0\x9f\x98\x80");
}

Test(ledger, malformed_documents)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"total\": 3}",                               /* no keys */
        "{\"keys\": []}",                               /* keys not an object */
        "{\"keys\": {\"a\": -1}}",                      /* negative count */
        "{\"keys\": {\"a\": 1.5}}",                     /* fractional count */
        "{\"keys\": {\"a\": \"1\"}}",                   /* string count */
        "{\"keys\": {\"a\": 1,}}",                      /* trailing comma */
        "{\"keys\": {\"a\" 1}}",                        /* missing colon */
        "{\"keys\": {\"a\": 1}",                        /* unterminated */
        "{\"keys\": {\"a\\x\": 1}}",                    /* bad escape */
        "{\"keys\": {\"a\\u12\": 1}}",                  /* short escape */
        "{\"keys\": {}} trailing",                      /* bytes after */
        "{\"total\": -4, \"keys\": {}}",                /* negative total */
        "{\"keys\": {}, \"x\": tru}",                   /* bad literal */
        "{\"keys\": {\"a\": 99999999999999999999999}}", /* overflow */
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(parse(bad[i]), -1, "accepted [%s]", bad[i]);
        cr_assert_neq(err[0], '\0', "no reason for [%s]", bad[i]);
    }
}

Test(ledger, deep_nesting_is_bounded)
{
    char doc[4096];
    size_t off = (size_t)snprintf(doc, sizeof(doc), "{\"keys\": {}, \"deep\": ");

    for (int i = 0; i < 1000; i++)
        doc[off++] = '[';
    doc[off] = '\0';
    cr_assert_eq(parse(doc), -1);
    cr_assert_not_null(strstr(err, "nested deeper"), "%s", err);
}

Test(ledger, control_bytes_in_strings_are_rejected)
{
    cr_assert_eq(parse("{\"keys\": {\"a\nb\": 1}}"), -1);
}
