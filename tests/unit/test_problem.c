/*
 * problem — the RFC 9457 documents the proxy writes itself: the exact JSON of
 * problem_body() and every escaping rule of problem_json_escape().
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "problem.h"

/* The whole buffer as a NUL-terminated string (caller frees); the buffer is drained. */
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

    n = problem_body(b, 409, "idempotency-key-in-use", "retry in 1 s", "/payments?id=7");
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

    problem_body(b, 503, "store-unavailable", NULL, NULL);
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"" PROBLEM_TYPE_BASE "store-unavailable\",\"title\":"
                        "\"Idempotency store unavailable\",\"status\":503}\n");
    free(s);
    problem_body(b, 503, "store-unavailable", NULL, "/p");
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"" PROBLEM_TYPE_BASE "store-unavailable\",\"title\":"
                        "\"Idempotency store unavailable\",\"status\":503,\"instance\":\"/p\"}\n");
    free(s);
    problem_body(b, 503, "store-unavailable", "", NULL);
    s = drain_str(b);
    cr_assert(strstr(s, ",\"status\":503,\"detail\":\"\"}\n"), "%s", s);
    free(s);
    evbuffer_free(b);
}

Test(problem_body, detail_and_instance_are_escaped)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    problem_body(b, 400, "invalid-header", "bad byte \x01 in \"X-A\"\r\n", "/a\"b\\c\x7f");
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
    n = problem_body(b, 500, "internal-error", NULL, NULL);
    cr_assert_eq((size_t)n + 7, evbuffer_get_length(b));
    s = drain_str(b);
    cr_assert_eq(strncmp(s, "prefix:{\"type\":", 15), 0, "%s", s);
    cr_assert_eq(s[strlen(s) - 1], '\n');
    free(s);
    evbuffer_free(b);
}

Test(problem_body, unknown_slug_keeps_its_type_with_a_generic_title)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    cr_assert_null(problem_title("no-such-kind"));
    problem_body(b, 418, "no-such-kind", NULL, NULL);
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"" PROBLEM_TYPE_BASE "no-such-kind\",\"title\":\"Error\","
                        "\"status\":418}\n");
    free(s);
    evbuffer_free(b);
}

Test(problem_title, every_slug_the_proxy_answers_with_has_a_title)
{
    /* the slugs of the README's error table */
    static const char *slugs[] = {
        "bad-request",
        "invalid-header",
        "missing-host",
        "conflicting-framing",
        "invalid-content-length",
        "unsupported-transfer-encoding",
        "method-not-supported",
        "version-not-supported",
        "body-too-large",
        "headers-too-large",
        "request-timeout",
        "upstream-unavailable",
        "upstream-failed",
        "upstream-timeout",
        "invalid-idempotency-key",
        "missing-idempotency-key",
        "idempotency-key-in-use",
        "idempotency-key-reused",
        "store-unavailable",
        "outcome-unknown",
        "response-not-replayable",
        "internal-error",
    };

    for (size_t i = 0; i < sizeof(slugs) / sizeof(slugs[0]); i++) {
        const char *t = problem_title(slugs[i]);

        cr_assert_not_null(t, "no title for %s", slugs[i]);
        cr_assert_gt(strlen(t), 0, "%s", slugs[i]);
    }
    cr_assert_str_eq(problem_title("body-too-large"), "Request body too large");
    cr_assert_str_eq(problem_title("idempotency-key-reused"),
                     "Idempotency-Key reused with a different request");
    /* exact match only */
    cr_assert_null(problem_title(""));
    cr_assert_null(problem_title("Body-Too-Large"));
    cr_assert_null(problem_title("body-too-larg"));
}
