/*
 * problem — the RFC 9457 documents the proxy writes itself: the exact JSON of
 * problem_body() and every escaping rule of problem_json_escape().
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/problem.h"

/* The whole buffer as a NUL-terminated string (caller frees, NULL); the buffer is drained. */
static char *drain_str(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);

    cr_assert_not_null(s);
    cr_assert_eq(evbuffer_remove(b, s, n), (int)n);
    s[n] = '\0';
    return s;
}

/* problem_json_escape() of len bytes of s, as a string. */
static char *escape(const char *s, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    char *out;

    cr_assert_not_null(b);
    problem_json_escape(b, s, len);
    out = drain_str(b);
    evbuffer_free(b);
    return out;
}

static void expect_escape(const char *in, size_t len, const char *want)
{
    char *got = escape(in, len);

    cr_assert_str_eq(got, want);
    free(got);
}

Test(problem_escape, plain_text_is_copied_unchanged)
{
    const char *s = "Request body over max-body (1m): see /docs, {ok} 'fine' ~";

    expect_escape(s, strlen(s), s);
    expect_escape("", 0, "");
}

Test(problem_escape, quote_and_backslash)
{
    expect_escape("\"", 1, "\\\"");
    expect_escape("\\", 1, "\\\\");
    expect_escape("a\"b\\c\"", 6, "a\\\"b\\\\c\\\"");
    /* "\\\"" must not be read as an already-escaped quote */
    expect_escape("\\\"", 2, "\\\\\\\"");
}

Test(problem_escape, newline_return_and_tab_have_short_forms)
{
    expect_escape("a\nb\rc\td", 7, "a\\nb\\rc\\td");
}

Test(problem_escape, other_control_characters_are_u00xx_lower_case)
{
    for (int c = 0; c < 0x20; c++) {
        char in[3] = {'<', (char)c, '>'}, want[16];

        if (c == '\n' || c == '\r' || c == '\t')
            continue;
        snprintf(want, sizeof(want), "<\\u%04x>", c);
        expect_escape(in, sizeof(in), want);
    }
    expect_escape("\x1b[0m", 4, "\\u001b[0m");
}

Test(problem_escape, nul_is_escaped_not_a_terminator)
{
    expect_escape("a\0b", 3, "a\\u0000b");
    expect_escape("\0", 1, "\\u0000");
}

Test(problem_escape, del_is_escaped)
{
    expect_escape("\x7f", 1, "\\u007f");
    expect_escape("x\x7fy", 3, "x\\u007fy");
}

Test(problem_escape, bytes_above_ascii_pass_through)
{
    /* UTF-8 stays UTF-8 (JSON allows it raw); no byte of it is a control character */
    expect_escape("caf\xc3\xa9 \xe2\x82\xac", 9, "caf\xc3\xa9 \xe2\x82\xac");
    expect_escape("\x80\xff", 2, "\x80\xff");
}

Test(problem_escape, only_len_bytes_are_read)
{
    expect_escape("abc\"def", 3, "abc");
    expect_escape("abc\"def", 4, "abc\\\"");
}

Test(problem_escape, runs_between_escapes_are_kept_in_order)
{
    expect_escape("\"\"\n\x01x\x7f", 6, "\\\"\\\"\\n\\u0001x\\u007f");
    expect_escape("start\"middle\\end", 16, "start\\\"middle\\\\end");
}

Test(problem_body, full_document)
{
    struct evbuffer *b = evbuffer_new();
    char *s;
    int n;

    n = problem_body(b, PROBLEM_KEY_IN_USE, "retry in 1 s", "/payments?id=7", NULL);
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"tag:idemproxy.dev,2026:problem:idempotency-key-in-use\","
                        "\"title\":\"A request with this Idempotency-Key is still being "
                        "processed\",\"status\":409,\"detail\":\"retry in 1 s\","
                        "\"instance\":\"/payments?id=7\"}\n");
    cr_assert_eq(n, (int)strlen(s));
    free(s);
    evbuffer_free(b);
}

Test(problem_body, detail_and_instance_are_optional_and_independent)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    problem_body(b, PROBLEM_STORE_UNAVAILABLE, NULL, NULL, NULL);
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"" PROBLEM_TYPE_BASE "store-unavailable\",\"title\":"
                        "\"Idempotency store unavailable\",\"status\":503}\n");
    free(s);
    problem_body(b, PROBLEM_STORE_UNAVAILABLE, NULL, "/p", NULL);
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"" PROBLEM_TYPE_BASE "store-unavailable\",\"title\":"
                        "\"Idempotency store unavailable\",\"status\":503,\"instance\":\"/p\"}\n");
    free(s);
    problem_body(b, PROBLEM_STORE_UNAVAILABLE, "", NULL, NULL);
    s = drain_str(b);
    cr_assert(strstr(s, ",\"status\":503,\"detail\":\"\"}\n"), "%s", s);
    free(s);
    evbuffer_free(b);
}

Test(problem_body, detail_and_instance_are_escaped)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    problem_body(b, PROBLEM_INVALID_HEADER, "bad byte \x01 in \"X-A\"\r\n", "/a\"b\\c\x7f", NULL);
    s = drain_str(b);
    cr_assert(strstr(s, ",\"detail\":\"bad byte \\u0001 in \\\"X-A\\\"\\r\\n\","), "%s", s);
    cr_assert(strstr(s, ",\"instance\":\"/a\\\"b\\\\c\\u007f\"}\n"), "%s", s);
    free(s);
    evbuffer_free(b);
}

Test(problem_body, appends_and_returns_only_its_own_bytes)
{
    struct evbuffer *b = evbuffer_new();
    char *s;
    int n;

    evbuffer_add(b, "prefix:", 7);
    n = problem_body(b, PROBLEM_INTERNAL_ERROR, NULL, NULL, NULL);
    cr_assert_eq((size_t)n + 7, evbuffer_get_length(b));
    s = drain_str(b);
    cr_assert_eq(strncmp(s, "prefix:{\"type\":", 15), 0, "%s", s);
    cr_assert_eq(s[strlen(s) - 1], '\n');
    free(s);
    evbuffer_free(b);
}

Test(problem_body, a_kind_outside_the_table_is_an_internal_error)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    problem_body(b, (enum problem_kind)PROBLEM_KIND_COUNT, NULL, NULL, NULL);
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"" PROBLEM_TYPE_BASE "internal-error\",\"title\":\"Internal "
                        "proxy error\",\"status\":500}\n");
    free(s);
    evbuffer_free(b);
}

/* The README's error table, row by row: one kind per slug, with its status. */
Test(problem_type, every_row_of_the_readme_table)
{
    static const struct {
        const char *slug;
        int status;
    } rows[] = {
        {"bad-request", 400},
        {"invalid-header", 400},
        {"missing-host", 400},
        {"conflicting-framing", 400},
        {"invalid-content-length", 400},
        {"unsupported-transfer-encoding", 501},
        {"method-not-supported", 501},
        {"version-not-supported", 505},
        {"body-too-large", 413},
        {"headers-too-large", 431},
        {"request-timeout", 408},
        {"upstream-unavailable", 502},
        {"upstream-failed", 502},
        {"upstream-timeout", 504},
        {"invalid-idempotency-key", 400},
        {"missing-idempotency-key", 400},
        {"idempotency-key-in-use", 409},
        {"idempotency-key-reused", 422},
        {"store-unavailable", 503},
        {"outcome-unknown", 504},
        {"response-not-replayable", 502},
        {"record-unreadable", 502},
        {"internal-error", 500},
        {"draining", 503},
    };

    cr_assert_eq(sizeof(rows) / sizeof(rows[0]), PROBLEM_KIND_COUNT,
                 "a kind was added or removed: update the README table and this test");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int k = problem_kind_by_slug(rows[i].slug);
        const struct problem_type *t;

        cr_assert_geq(k, 0, "no kind for %s", rows[i].slug);
        t = problem_type((enum problem_kind)k);
        cr_assert_str_eq(t->slug, rows[i].slug);
        cr_assert_eq(t->status, rows[i].status, "%s: %d", rows[i].slug, t->status);
        cr_assert_gt(strlen(t->title), 0, "%s", rows[i].slug);
    }
    cr_assert_str_eq(problem_type(PROBLEM_BODY_TOO_LARGE)->title, "Request body too large");
    cr_assert_str_eq(problem_type(PROBLEM_KEY_REUSED)->title,
                     "Idempotency-Key reused with a different request");
    /* exact match only */
    cr_assert_eq(problem_kind_by_slug(""), -1);
    cr_assert_eq(problem_kind_by_slug("Body-Too-Large"), -1);
    cr_assert_eq(problem_kind_by_slug("body-too-larg"), -1);
}
