#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http/headers.h"
#include "http/http1.h"
#include "core/problem.h"

static char *drain_str(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void parse(struct http1_head *h, const char *raw, int request)
{
    struct http1_error err;
    int rc = request ? http1_parse_request(h, raw, strlen(raw), &err)
                     : http1_parse_response(h, raw, strlen(raw), &err);
    cr_assert_eq(rc, 0, "%s", err.detail);
}

Test(headers, request_drops_hop_by_hop_and_adds_forwarding)
{
    struct http1_head h;
    struct evbuffer *out = evbuffer_new();
    char *s;

    parse(&h,
          "POST /p?q=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Hop\r\n"
          "X-Hop: secret\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\n"
          "Trailer: X-T\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
          "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nVia: 1.0 edge\r\n"
          "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nIdempotency-Key: k1\r\n\r\n",
          1);
    headers_write_request(out, &h, "192.0.2.7", 0, 1, 42, "up:1", NULL);
    s = drain_str(out);
    cr_assert(strncmp(s, "POST /p?q=1 HTTP/1.1\r\n", 22) == 0, "%s", s);
    cr_assert(strstr(s, "\r\nHost: shop.example\r\n"));
    cr_assert(strstr(s, "\r\nIdempotency-Key: k1\r\n"));
    cr_assert(strstr(s, "\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n"), "%s", s);
    cr_assert(strstr(s, "\r\nVia: 1.0 edge, 1.1 idemproxy\r\n"), "%s", s);
    cr_assert(strstr(s, "\r\nX-Forwarded-Proto: http\r\n"));
    cr_assert(strstr(s, "\r\nX-Forwarded-Host: shop.example\r\n"));
    cr_assert(strstr(s, "\r\nContent-Length: 42\r\n"));
    cr_assert(strcmp(s + strlen(s) - 4, "\r\n\r\n") == 0);
    cr_assert_null(strstr(s, "X-Hop"), "%s", s);
    cr_assert_null(strstr(s, "Keep-Alive"));
    cr_assert_null(strstr(s, "Connection:"));
    cr_assert_null(strstr(s, "TE:"));
    cr_assert_null(strstr(s, "Trailer"));
    cr_assert_null(strstr(s, "Upgrade"));
    cr_assert_null(strstr(s, "Transfer-Encoding"));
    cr_assert_null(strstr(s, "Expect"));
    cr_assert_null(strstr(s, "https"));
    cr_assert_null(strstr(s, "evil"));
    free(s);
    http1_head_clear(&h);
    evbuffer_free(out);
}

Test(headers, request_without_body_gets_no_length_and_default_host)
{
    struct http1_head h;
    struct evbuffer *out = evbuffer_new();
    char *s;

    parse(&h, "GET / HTTP/1.0\r\n\r\n", 1);
    headers_write_request(out, &h, "::1", 0, 0, 0, "127.0.0.1:9", NULL);
    s = drain_str(out);
    cr_assert(strstr(s, "GET / HTTP/1.1\r\n"));
    cr_assert(strstr(s, "\r\nHost: 127.0.0.1:9\r\n"));
    cr_assert(strstr(s, "\r\nX-Forwarded-For: ::1\r\n"));
    cr_assert_null(strstr(s, "Content-Length"));
    cr_assert_null(strstr(s, "X-Forwarded-Host"));
    free(s);
    http1_head_clear(&h);

    /* POST with an empty body still says so */
    parse(&h, "POST / HTTP/1.1\r\nHost: a\r\n\r\n", 1);
    headers_write_request(out, &h, "1.2.3.4", 1, 0, 0, NULL, NULL);
    s = drain_str(out);
    cr_assert(strstr(s, "\r\nContent-Length: 0\r\n"));
    /* (and it came over TLS) */
    cr_assert(strstr(s, "\r\nX-Forwarded-Proto: https\r\n"), "%s", s);
    free(s);
    http1_head_clear(&h);
    evbuffer_free(out);
}

Test(headers, response_filtering_and_length)
{
    struct http1_head h;
    struct evbuffer *out = evbuffer_new();
    char *s;

    parse(&h,
          "HTTP/1.1 201 Created\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: t=5\r\n"
          "Transfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
          "Content-Length: 999\r\nUpgrade: h2c\r\n\r\n",
          0);
    headers_write_response(out, 201, h.reason, &h, "X-Extra: 1\r\n", 7, 0, 0);
    s = drain_str(out);
    cr_assert(strncmp(s, "HTTP/1.1 201 Created\r\n", 22) == 0, "%s", s);
    cr_assert(strstr(s, "\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"));
    cr_assert(strstr(s, "\r\nX-Extra: 1\r\n"));
    cr_assert(strstr(s, "\r\nContent-Length: 7\r\n"));
    cr_assert(strstr(s, "\r\nConnection: close\r\n"));
    cr_assert_null(strstr(s, "999"));
    cr_assert_null(strstr(s, "Secret"));
    cr_assert_null(strstr(s, "Keep-Alive"));
    cr_assert_null(strstr(s, "Transfer-Encoding"));
    cr_assert_null(strstr(s, "Upgrade"));
    free(s);

    /* HEAD / 304: upstream length kept as is */
    headers_write_response(out, 200, NULL, &h, NULL, 0, 1, 1);
    s = drain_str(out);
    cr_assert(strstr(s, "HTTP/1.1 200 OK\r\n"));
    cr_assert(strstr(s, "\r\nContent-Length: 999\r\n"));
    cr_assert_null(strstr(s, "Connection"));
    free(s);

    /* 204: no length at all */
    headers_write_response(out, 204, NULL, NULL, NULL, 0, 0, 1);
    s = drain_str(out);
    cr_assert_str_eq(s, "HTTP/1.1 204 No Content\r\n\r\n");
    free(s);
    http1_head_clear(&h);
    evbuffer_free(out);
}

/* Heads are written through a 4 KiB staging buffer: fields that cross its end, and one
 * larger than it, come out whole and in order. */
Test(headers, heads_larger_than_the_staging_buffer_are_written_whole)
{
    struct http1_head h;
    struct evbuffer *out = evbuffer_new(), *raw = evbuffer_new(), *want = evbuffer_new();
    char big[6001], *s, *w, *rawstr;

    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    evbuffer_add_printf(raw, "HTTP/1.1 200 OK\r\n");
    evbuffer_add_printf(want, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 100; i++) { /* 100 lines of 31 bytes: crosses 4096 once */
        evbuffer_add_printf(raw, "X-Field-%03d: 0123456789abcdef\r\n", i);
        evbuffer_add_printf(want, "X-Field-%03d: 0123456789abcdef\r\n", i);
    }
    evbuffer_add_printf(raw, "X-Big: %s\r\nX-After: 1\r\n\r\n", big);
    evbuffer_add_printf(want, "X-Big: %s\r\nX-After: 1\r\nContent-Length: 2\r\n\r\n", big);
    rawstr = drain_str(raw);
    parse(&h, rawstr, 0);
    headers_write_response(out, 200, "OK", &h, NULL, 2, 0, 1);
    s = drain_str(out);
    w = drain_str(want);
    cr_assert_eq(strlen(s), strlen(w));
    cr_assert_str_eq(s, w);
    free(s);
    free(w);
    free(rawstr);
    http1_head_clear(&h);
    evbuffer_free(out);
    evbuffer_free(raw);
    evbuffer_free(want);
}

Test(problem, document_is_escaped_json)
{
    struct evbuffer *b = evbuffer_new();
    char *s;

    cr_assert_gt(problem_body(b, PROBLEM_BODY_TOO_LARGE, "limit \"1m\"\n\x01", "/p", NULL), 0);
    s = drain_str(b);
    cr_assert_str_eq(s, "{\"type\":\"" PROBLEM_TYPE_BASE "body-too-large\",\"title\":\"Request "
                        "body too large\",\"status\":413,\"detail\":\"limit \\\"1m\\\"\\n\\u0001\","
                        "\"instance\":\"/p\"}\n");
    free(s);
    evbuffer_free(b);
}
