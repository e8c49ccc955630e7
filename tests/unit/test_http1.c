#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "http/http1.h"

static int parse_req(struct http1_head *h, const char *raw, struct http1_error *err)
{
    return http1_parse_request(h, raw, strlen(raw), err);
}

/* Parse raw as a request head and return its framing verdict (status or 0). */
static int framing_status(const char *raw, enum http1_body *kind, uint64_t *len)
{
    struct http1_head h;
    struct http1_error err;
    int st = 0;

    if (parse_req(&h, raw, &err) < 0)
        return err.status;
    if (http1_request_framing(&h, kind, len, &err) < 0)
        st = err.status;
    http1_head_clear(&h);
    return st;
}

Test(http1, parses_request_line_and_headers)
{
    struct http1_head h;
    struct http1_error err;
    const char *raw = "POST /pay?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Empty:\r\n"
                      "X-Pad:   spaced value \t \r\n\r\n";

    cr_assert_eq(parse_req(&h, raw, &err), 0, "%s", err.detail);
    cr_assert_str_eq(h.method, "POST");
    cr_assert_str_eq(h.target, "/pay?x=1");
    cr_assert_eq(h.minor, 1);
    cr_assert_eq(h.nheaders, 3);
    cr_assert_str_eq(h.headers[0].name, "Host");
    cr_assert_str_eq(h.headers[0].value, "a.example");
    cr_assert_str_eq(h.headers[1].value, "");
    cr_assert_str_eq(h.headers[2].value, "spaced value");
    cr_assert_str_eq(http1_header_get(&h, "x-pad", NULL), "spaced value");
    http1_head_clear(&h);
}

Test(http1, rejects_malformed_heads)
{
    static const struct {
        const char *raw;
        int status;
        const char *slug;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "invalid-header"},
        {"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, "bad-request"},
        {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, "invalid-header"},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "invalid-header"},
        {"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400, "invalid-header"},
        {"GET / HTTP/1.1\r\n: a\r\n\r\n", 400, "invalid-header"},
        {"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400, "invalid-header"},
        {"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", 400, "invalid-header"},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version-not-supported"},
        {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "version-not-supported"},
        {"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400, "bad-request"},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad-request"},
        {"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400, "bad-request"},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad-request"},
        {"GET relative HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad-request"},
        {"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad-request"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http1_head h;
        struct http1_error err;
        cr_assert_eq(parse_req(&h, cases[i].raw, &err), -1, "case %zu accepted", i);
        cr_assert_eq(err.status, cases[i].status, "case %zu: %d", i, err.status);
        cr_assert_str_eq(err.slug, cases[i].slug, "case %zu: %s", i, err.slug);
        cr_assert_null(h.buf);
    }
}

Test(http1, rejects_nul_in_header_value)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    struct http1_head h;
    struct http1_error err;

    cr_assert_eq(http1_parse_request(&h, raw, sizeof(raw) - 1, &err), -1);
    cr_assert_eq(err.status, 400);
    cr_assert(strstr(err.detail, "NUL"));
}

/* The head is scanned eight bytes at a time: a bad byte is found at every offset within
 * a word, and at the very end of a value, as it is byte by byte. */
Test(http1, bad_bytes_are_found_at_every_offset)
{
    static const struct {
        char byte;
        int status;
        const char *slug;
    } bad[] = {
        {'\x01', 400, "invalid-header"}, {'\x1f', 400, "invalid-header"},
        {'\x7f', 400, "invalid-header"}, {'\n', 400, "bad-request"},
        {'\r', 400, "invalid-header"},   {'\0', 400, "invalid-header"},
    };

    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        for (size_t at = 0; at < 24; at++) {
            char raw[128], value[25];
            struct http1_head h;
            struct http1_error err;
            int n;

            memset(value, 'v', 24);
            value[24] = '\0';
            n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-Long: %s\r\n\r\n",
                         value);
            raw[n - 4 - 24 + at] = bad[b].byte; /* inside the value */
            cr_assert_eq(http1_parse_request(&h, raw, (size_t)n, &err), -1,
                         "byte 0x%02x at %zu accepted", (unsigned char)bad[b].byte, at);
            cr_assert_eq(err.status, bad[b].status, "byte 0x%02x at %zu: %d %s",
                         (unsigned char)bad[b].byte, at, err.status, err.detail);
            cr_assert_str_eq(err.slug, bad[b].slug, "byte 0x%02x at %zu: %s",
                             (unsigned char)bad[b].byte, at, err.detail);
        }
    }
    /* HTAB and obs-text are field content, not control bytes */
    {
        static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\xe9\xff c\r\n\r\n";
        struct http1_head h;
        struct http1_error err;

        cr_assert_eq(http1_parse_request(&h, raw, sizeof(raw) - 1, &err), 0, "%s", err.detail);
        http1_head_clear(&h);
    }
}

Test(http1, too_many_headers_is_431)
{
    char raw[8192] = "GET / HTTP/1.1\r\nHost: a\r\n";
    struct http1_head h;
    struct http1_error err;

    for (int i = 0; i < HTTP1_MAX_HEADERS; i++)
        sprintf(raw + strlen(raw), "X-%d: v\r\n", i);
    strcat(raw, "\r\n");
    cr_assert_eq(parse_req(&h, raw, &err), -1);
    cr_assert_eq(err.status, 431);
}

Test(http1, framing_rules)
{
    enum http1_body kind;
    uint64_t len;

    cr_assert_eq(
        framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", &kind, &len), 0);
    cr_assert_eq(kind, HTTP1_BODY_LENGTH);
    cr_assert_eq(len, 12);
    cr_assert_eq(
        framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &kind, &len), 0);
    cr_assert_eq(kind, HTTP1_BODY_NONE);
    cr_assert_eq(framing_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
                                &kind, &len),
                 0);
    cr_assert_eq(kind, HTTP1_BODY_CHUNKED);
    cr_assert_eq(framing_status("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &kind, &len), 0);
    cr_assert_eq(kind, HTTP1_BODY_NONE);
    cr_assert_eq(framing_status("GET / HTTP/1.0\r\n\r\n", &kind, &len), 0);

    /* both → 400 */
    cr_assert_eq(framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n",
                                &kind, &len),
                 400);
    /* duplicates, lists, signs, junk → 400 */
    cr_assert_eq(framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                "Content-Length: 3\r\n\r\n",
                                &kind, &len),
                 400);
    cr_assert_eq(
        framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", &kind, &len),
        400);
    cr_assert_eq(
        framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", &kind, &len),
        400);
    cr_assert_eq(
        framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", &kind, &len),
        400);
    cr_assert_eq(
        framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\n", &kind, &len),
        400);
    cr_assert_eq(
        framing_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", &kind, &len), 400);
    cr_assert_eq(framing_status("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Content-Length: 99999999999999999999999\r\n\r\n",
                                &kind, &len),
                 400);
    /* codings other than a single chunked → 501 */
    cr_assert_eq(framing_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                                &kind, &len),
                 501);
    cr_assert_eq(framing_status("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: gzip, chunked\r\n\r\n",
                                &kind, &len),
                 501);
    cr_assert_eq(framing_status("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                                &kind, &len),
                 501);
    /* Host rules */
    cr_assert_eq(framing_status("GET / HTTP/1.1\r\n\r\n", &kind, &len), 400);
    cr_assert_eq(framing_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &kind, &len), 400);
}

Test(http1, response_framing)
{
    struct http1_head h;
    struct http1_error err;
    enum http1_body kind;
    uint64_t len;
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    const char *noreason = "HTTP/1.1 204\r\n\r\n";
    const char *close = "HTTP/1.0 200 OK\r\n\r\n";
    const char *conflict = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";

    cr_assert_eq(http1_parse_response(&h, ok, strlen(ok), &err), 0);
    cr_assert_eq(h.status, 200);
    cr_assert_str_eq(h.reason, "OK");
    cr_assert_eq(http1_response_framing(&h, 0, &kind, &len, &err), 0);
    cr_assert_eq(kind, HTTP1_BODY_LENGTH);
    cr_assert_eq(len, 5);
    cr_assert_eq(http1_response_framing(&h, 1, &kind, &len, &err), 0);
    cr_assert_eq(kind, HTTP1_BODY_NONE, "HEAD answers have no body");
    http1_head_clear(&h);

    cr_assert_eq(http1_parse_response(&h, noreason, strlen(noreason), &err), 0);
    cr_assert_eq(h.status, 204);
    cr_assert_str_eq(h.reason, "");
    cr_assert_eq(http1_response_framing(&h, 0, &kind, &len, &err), 0);
    cr_assert_eq(kind, HTTP1_BODY_NONE);
    http1_head_clear(&h);

    cr_assert_eq(http1_parse_response(&h, close, strlen(close), &err), 0);
    cr_assert_eq(http1_response_framing(&h, 0, &kind, &len, &err), 0);
    cr_assert_eq(kind, HTTP1_BODY_CLOSE);
    cr_assert_eq(http1_keepalive(&h), 0);
    http1_head_clear(&h);

    cr_assert_eq(http1_parse_response(&h, conflict, strlen(conflict), &err), 0);
    cr_assert_eq(http1_response_framing(&h, 0, &kind, &len, &err), -1);
    cr_assert_eq(err.status, 502);
    http1_head_clear(&h);

    cr_assert_eq(http1_parse_response(&h, "HTTP/1.1 2000 OK\r\n\r\n", 20, &err), -1);
    cr_assert_eq(err.status, 502);
}

Test(http1, keepalive_rules)
{
    struct http1_head h;
    struct http1_error err;

    cr_assert_eq(parse_req(&h, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", &err), 0);
    cr_assert_eq(http1_keepalive(&h), 1);
    http1_head_clear(&h);
    cr_assert_eq(parse_req(&h, "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n", &err),
                 0);
    cr_assert_eq(http1_keepalive(&h), 0);
    http1_head_clear(&h);
    cr_assert_eq(parse_req(&h, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &err), 0);
    cr_assert_eq(http1_keepalive(&h), 1);
    http1_head_clear(&h);
}

Test(http1, head_end_incremental_and_limit)
{
    struct evbuffer *b = evbuffer_new();
    const char *raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
    size_t scan = 0;
    long n = 0;

    /* feed byte by byte: found exactly once, at the right length */
    for (size_t i = 0; i < strlen(raw) && n == 0; i++) {
        evbuffer_add(b, raw + i, 1);
        n = http1_head_end(b, &scan, 1024, 1);
    }
    cr_assert_eq(n, (long)strlen("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    evbuffer_free(b);

    b = evbuffer_new();
    scan = 0;
    evbuffer_add_printf(b, "GET / HTTP/1.1\r\nX: %0200d\r\n", 0);
    cr_assert_eq(http1_head_end(b, &scan, 100, 1), -1);
    evbuffer_free(b);
}

static int decode_all(const char *wire, size_t max_body, char *out, size_t *outlen,
                      struct http1_error *err)
{
    struct http1_chunked c = {0};
    struct evbuffer *in = evbuffer_new(), *body = evbuffer_new();
    uint64_t total = 0;
    int r = 0;

    /* one byte at a time: the decoder must keep state across calls */
    for (size_t i = 0; wire[i] && r == 0; i++) {
        evbuffer_add(in, wire + i, 1);
        r = http1_chunked_decode(&c, in, body, max_body, &total, 1024, err);
    }
    *outlen = evbuffer_get_length(body);
    evbuffer_remove(body, out, *outlen);
    evbuffer_free(in);
    evbuffer_free(body);
    return r;
}

Test(http1, chunked_decoding)
{
    char out[256];
    size_t n;
    struct http1_error err;

    cr_assert_eq(
        decode_all("5;ext=1\r\nhello\r\n1\r\n \r\n0\r\nX-Trailer: t\r\n\r\n", 100, out, &n, &err),
        1);
    cr_assert_eq(n, 6);
    cr_assert_eq(memcmp(out, "hello ", 6), 0);

    cr_assert_eq(decode_all("A\r\n0123456789\r\n0\r\n\r\n", 100, out, &n, &err), 1);
    cr_assert_eq(n, 10);

    cr_assert_eq(decode_all("5\r\nhelloXX\r\n0\r\n\r\n", 100, out, &n, &err), -1);
    cr_assert_eq(err.status, 400);
    cr_assert_eq(decode_all("zz\r\nhello\r\n", 100, out, &n, &err), -1);
    cr_assert_eq(err.status, 400);
    cr_assert_eq(decode_all("5\nhello\r\n", 100, out, &n, &err), -1);
    cr_assert_eq(err.status, 400);
    cr_assert_eq(decode_all("fffffffffffffffff\r\n", 100, out, &n, &err), -1);
    cr_assert_eq(err.status, 400);
    cr_assert_eq(decode_all("6\r\nhello!\r\n6\r\nhello!\r\n0\r\n\r\n", 10, out, &n, &err), -1);
    cr_assert_eq(err.status, 413);
    cr_assert_eq(decode_all("0\r\nbad trailer\r\n\r\n", 10, out, &n, &err), -1);
    cr_assert_eq(err.status, 400);
}

Test(http1, tchar_and_reason)
{
    cr_assert(http1_is_tchar('a'));
    cr_assert(http1_is_tchar('~'));
    cr_assert_not(http1_is_tchar(' '));
    cr_assert_not(http1_is_tchar(':'));
    cr_assert_not(http1_is_tchar('('));
    cr_assert_str_eq(http1_reason(431), "Request Header Fields Too Large");
    cr_assert_str_eq(http1_reason(799), "Unknown");
}
