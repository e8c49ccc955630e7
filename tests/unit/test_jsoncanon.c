/*
 * jsoncanon: texts that differ only in member order or whitespace get one form; what
 * differs otherwise stays apart; what is not JSON (or is ambiguous) is refused.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "idem/jsoncanon.h"

/* The canonical form of in, malloc'd (NULL when refused). */
static char *canon(const char *in, size_t len)
{
    struct evbuffer *out = evbuffer_new();
    char *s = NULL;

    evbuffer_add(out, "x", 1); /* appended to, never touched before */
    if (jsoncanon(out, in, len) == 0) {
        size_t n = evbuffer_get_length(out);
        s = malloc(n);
        evbuffer_copyout(out, s, n);
        cr_assert_eq(s[0], 'x');
        memmove(s, s + 1, n - 1);
        s[n - 1] = '\0';
    } else {
        cr_assert_eq(evbuffer_get_length(out), 1, "out changed on failure");
    }
    evbuffer_free(out);
    return s;
}

static void expect(const char *in, const char *want)
{
    char *got = canon(in, strlen(in));

    cr_assert_not_null(got, "refused: %s", in);
    cr_assert_str_eq(got, want, "for %s", in);
    free(got);
}

static void refused(const char *in, size_t len)
{
    char *got = canon(in, len);

    cr_assert_null(got, "accepted %.*s as %s", (int)len, in, got);
}

Test(jsoncanon, member_order_and_whitespace_do_not_count)
{
    expect("{\"b\": 1, \"a\": [true, false, null]}", "{\"a\":[true,false,null],\"b\":1}");
    expect(" \r\n\t{ \"a\" :\n{\"z\":\"1\",\"y\":{}}, \"b\":[ ] } ",
           "{\"a\":{\"y\":{},\"z\":\"1\"},\"b\":[]}");
    expect("[3, {\"b\":2,\"a\":1}]", "[3,{\"a\":1,\"b\":2}]");
    /* names sort by their bytes once unescaped: "\u0061" is "a" */
    expect("{\"b\":0,\"\\u0061\":1,\"ab\":2,\"\":3}", "{\"\":3,\"a\":1,\"ab\":2,\"b\":0}");
}

Test(jsoncanon, what_differs_stays_apart)
{
    expect("{\"n\": 1.0}", "{\"n\":1.0}");
    expect("{\"n\": 1}", "{\"n\":1}");
    expect("[1,2]", "[1,2]");
    expect("[2,1]", "[2,1]");
    expect("-0.5e+10", "-0.5e+10");
    expect("\"a b\"", "\"a b\"");
}

Test(jsoncanon, strings_have_one_spelling)
{
    expect("\"\\/\\u00e9\\u0041\\n\\u001f\\\"\\\\\"", "\"/\xc3\xa9"
                                                      "A\\n\\u001f\\\"\\\\\"");
    expect("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\""); /* a surrogate pair */
    expect("\"\xc3\xa9\"", "\"\xc3\xa9\"");
    expect("\"\\u0000\"", "\"\\u0000\"");
}

Test(jsoncanon, not_json_is_refused)
{
    static const char *bad[] = {
        "",           "{",     "}",       "{\"a\"}",   "{\"a\":}",    "{a:1}",       "[1,]",
        "[,1]",       "01",    "1.",      ".5",        "+1",          "1e",          "tru",
        "nul",        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "{\"a\":1,}",
        "{\"a\":1}}", "1 2",   "[1] x",   "'a'",       "\"a\tb\"",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        refused(bad[i], strlen(bad[i]));
    refused("\"a\0b\"", 5); /* a raw NUL inside a string */
}

Test(jsoncanon, a_duplicate_member_name_is_refused)
{
    refused("{\"a\":1,\"a\":2}", 13);
    refused("{\"a\":1,\"\\u0061\":2}", 18);
}

Test(jsoncanon, nesting_is_bounded)
{
    char deep[2 * (JSONCANON_MAX_DEPTH + 1) + 1];
    size_t n = 0;

    for (int i = 0; i < JSONCANON_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i < JSONCANON_MAX_DEPTH; i++)
        deep[n++] = ']';
    deep[n] = '\0';
    {
        char *ok = canon(deep, n);
        cr_assert_not_null(ok, "%d levels refused", JSONCANON_MAX_DEPTH);
        free(ok);
    }
    n = 0;
    for (int i = 0; i <= JSONCANON_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i <= JSONCANON_MAX_DEPTH; i++)
        deep[n++] = ']';
    refused(deep, n);
}
