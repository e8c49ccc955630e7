#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* ---- URLs ---- */

Test(wire_url, host_port_path)
{
    struct wire_url u;
    char err[160];

    cr_assert_eq(wire_url_parse("http://127.0.0.1:8080/pay?x=1", "/payments", &u, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 8080);
    cr_assert_str_eq(u.path, "/pay?x=1");
    cr_assert_str_eq(u.hostport, "127.0.0.1:8080");
    cr_assert_str_eq(u.text, "http://127.0.0.1:8080/pay?x=1");
}

Test(wire_url, defaults_and_ipv6)
{
    struct wire_url u;
    char err[160];

    cr_assert_eq(wire_url_parse("http://localhost", "/payments", &u, err, sizeof(err)), 0);
    cr_assert_eq(u.port, 80);
    cr_assert_str_eq(u.path, "/payments");
    cr_assert_eq(wire_url_parse("HTTP://[::1]:9/", "/payments", &u, err, sizeof(err)), 0);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_str_eq(u.path, "/");
    cr_assert_str_eq(u.hostport, "[::1]:9");
}

Test(wire_url, rejects)
{
    static const char *const bad[] = {
        "127.0.0.1:8080",  "https://127.0.0.1/", "http://",     "http://:80/",  "http://h:0/",
        "http://h:65536/", "http://h:80x/",      "http://u@h/", "http://h/a b", "http://h/#frag",
        "http://[::1/",    "ftp://h/",           "http://h:/",
    };
    struct wire_url u;
    char err[160];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(wire_url_parse(bad[i], "/p", &u, err, sizeof(err)), -1, "accepted %s", bad[i]);
        cr_assert_neq(err[0], '\0', "no reason for %s", bad[i]);
    }
}

/* ---- response parser ---- */

struct sink {
    char buf[4096];
    size_t len;
};

static void sink_fn(void *arg, const char *data, size_t n)
{
    struct sink *s = arg;

    cr_assert_leq(s->len + n, sizeof(s->buf));
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

/* Feed text in pieces of step bytes; returns the final state and the bytes left over. */
static enum wire_state feed(struct wire_resp *r, const char *text, size_t len, size_t step,
                            size_t *left)
{
    size_t off = 0;
    enum wire_state st = WIRE_MORE;

    while (off < len && st == WIRE_MORE) {
        size_t n = len - off < step ? len - off : step, used;

        st = wire_resp_feed(r, text + off, n, &used);
        cr_assert_leq(used, n);
        if (st == WIRE_MORE)
            cr_assert_eq(used, n, "MORE must consume everything");
        off += used;
    }
    *left = len - off;
    return st;
}

static struct wire_resp resp;
static struct sink body;

static enum wire_state parse_all(const char *text, size_t step, size_t *left)
{
    memset(&body, 0, sizeof(body));
    wire_resp_init(&resp, 0, sink_fn, &body);
    return feed(&resp, text, strlen(text), step, left);
}

Test(wire_resp, content_length_any_split)
{
    static const char msg[] = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                              "Content-Length: 11\r\nIdempotent-Replayed: true\r\n"
                              "Retry-After: 3\r\n\r\n{\"ok\":true}";

    for (size_t step = 1; step <= sizeof(msg); step++) {
        size_t left;

        cr_assert_eq(parse_all(msg, step, &left), WIRE_DONE, "step %zu: %s", step, resp.err);
        cr_assert_eq(left, 0);
        cr_assert_eq(resp.status, 201);
        cr_assert_eq(resp.minor, 1);
        cr_assert_eq(resp.keep_alive, 1);
        cr_assert_eq(resp.replayed, 1);
        cr_assert_eq(resp.retry_after, 3);
        cr_assert_eq(resp.body_len, 11);
        cr_assert_eq(body.len, 11);
        cr_assert_eq(memcmp(body.buf, "{\"ok\":true}", 11), 0);
        cr_assert_eq(resp.body_hash, wire_fnv(WIRE_FNV_INIT, "{\"ok\":true}", 11));
    }
}

Test(wire_resp, chunked_equals_plain)
{
    static const char msg[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "4;ext=1\r\n{\"ok\r\n7\r\n\":true}\r\n0\r\nX-Trailer: 1\r\n\r\n";

    for (size_t step = 1; step <= sizeof(msg); step++) {
        size_t left;

        cr_assert_eq(parse_all(msg, step, &left), WIRE_DONE, "step %zu: %s", step, resp.err);
        cr_assert_eq(left, 0);
        cr_assert_eq(resp.body_len, 11);
        cr_assert_eq(resp.body_hash, wire_fnv(WIRE_FNV_INIT, "{\"ok\":true}", 11));
        cr_assert_eq(resp.keep_alive, 1);
    }
}

Test(wire_resp, pipelined_bytes_are_left_over)
{
    static const char msg[] = "HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200";
    size_t left;

    cr_assert_eq(parse_all(msg, sizeof(msg), &left), WIRE_DONE);
    cr_assert_eq(left, strlen("HTTP/1.1 200"));
    cr_assert_eq(resp.status, 409);
    cr_assert_eq(resp.retry_after, -1);
    cr_assert_eq(resp.replayed, 0);
}

Test(wire_resp, close_delimited_body)
{
    static const char msg[] = "HTTP/1.0 200 OK\r\n\r\nuntil the end";
    size_t left;

    cr_assert_eq(parse_all(msg, 3, &left), WIRE_MORE);
    cr_assert_eq(wire_resp_eof(&resp), WIRE_DONE);
    cr_assert_eq(resp.keep_alive, 0);
    cr_assert_eq(resp.body_len, strlen("until the end"));
}

Test(wire_resp, connection_semantics)
{
    size_t left;

    cr_assert_eq(
        parse_all("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 7, &left),
        WIRE_DONE);
    cr_assert_eq(resp.keep_alive, 0);
    cr_assert_eq(parse_all("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                           7, &left),
                 WIRE_DONE);
    cr_assert_eq(resp.keep_alive, 1);
    cr_assert_eq(parse_all("HTTP/1.1 204 No Content\r\n\r\n", 7, &left), WIRE_DONE);
    cr_assert_eq(resp.body_len, 0);
}

Test(wire_resp, bare_lf_and_no_reason)
{
    size_t left;

    cr_assert_eq(parse_all("HTTP/1.1 503\nRetry-After: 1\nContent-Length: 1\n\nx", 1, &left),
                 WIRE_DONE, "%s", resp.err);
    cr_assert_eq(resp.status, 503);
    cr_assert_eq(resp.retry_after, 1);
}

Test(wire_resp, interim_1xx_is_skipped)
{
    size_t left;

    cr_assert_eq(parse_all("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                           "Content-Length: 2\r\n\r\nok",
                           5, &left),
                 WIRE_DONE, "%s", resp.err);
    cr_assert_eq(resp.status, 201);
    cr_assert_eq(body.len, 2);
}

Test(wire_resp, head_response_has_no_body)
{
    size_t left;

    memset(&body, 0, sizeof(body));
    wire_resp_init(&resp, 1, sink_fn, &body);
    cr_assert_eq(feed(&resp, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 39, 39, &left),
                 WIRE_DONE);
    cr_assert_eq(resp.body_len, 0);
}

Test(wire_resp, retry_after_date_is_absent)
{
    size_t left;

    cr_assert_eq(parse_all("HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
                           "Content-Length: 0\r\n\r\n",
                           64, &left),
                 WIRE_DONE);
    cr_assert_eq(resp.retry_after, -1);
}

Test(wire_resp, garbage_is_an_error)
{
    static const char *const bad[] = {
        "SSH-2.0-OpenSSH\r\n",
        "HTTP/2 200\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 101 Switching\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t left;

        cr_assert_eq(parse_all(bad[i], 1, &left), WIRE_ERROR, "accepted #%zu [%s]", i, bad[i]);
        cr_assert_neq(resp.err[0], '\0');
        /* an error sticks */
        cr_assert_eq(wire_resp_feed(&resp, "x", 1, &left), WIRE_ERROR);
        cr_assert_eq(wire_resp_eof(&resp), WIRE_ERROR);
    }
}

Test(wire_resp, nul_in_head_is_an_error)
{
    static const char msg[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n";
    size_t left;

    memset(&body, 0, sizeof(body));
    wire_resp_init(&resp, 0, sink_fn, &body);
    cr_assert_eq(feed(&resp, msg, sizeof(msg) - 1, 4, &left), WIRE_ERROR);
}

Test(wire_resp, limits)
{
    size_t n = WIRE_LINE_MAX + 64, left;
    char *big = malloc(n + 64);

    cr_assert_not_null(big);
    strcpy(big, "HTTP/1.1 200 OK\r\nX: ");
    memset(big + strlen(big), 'a', n);
    big[n] = '\0';
    cr_assert_eq(parse_all(big, 1000, &left), WIRE_ERROR, "a huge header line");
    free(big);

    /* too many headers */
    {
        char msg[8192];
        size_t off = (size_t)snprintf(msg, sizeof(msg), "HTTP/1.1 200 OK\r\n");

        for (int i = 0; i <= WIRE_HEADERS_MAX; i++)
            off += (size_t)snprintf(msg + off, sizeof(msg) - off, "X-%d: 1\r\n", i);
        snprintf(msg + off, sizeof(msg) - off, "\r\n");
        cr_assert_eq(parse_all(msg, 100, &left), WIRE_ERROR);
    }
}

Test(wire_resp, eof_too_early)
{
    size_t left;

    cr_assert_eq(parse_all("", 1, &left), WIRE_MORE);
    cr_assert_eq(wire_resp_eof(&resp), WIRE_ERROR);
    cr_assert_str_eq(resp.err, "connection closed before any answer");
    cr_assert_eq(parse_all("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 1, &left), WIRE_MORE);
    cr_assert_eq(wire_resp_eof(&resp), WIRE_ERROR);
}

/* Random bytes, and random mutations of a valid answer: never a crash or overread, and
 * every verdict is one of the three states. ASan makes this meaningful. */
Test(wire_resp, fuzz_does_not_crash)
{
    static const char valid[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                "Retry-After: 2\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    char buf[sizeof(valid)];

    for (int round = 0; round < 20000; round++) {
        size_t len = sizeof(valid) - 1, left;
        enum wire_state st;

        memcpy(buf, valid, len);
        for (int m = 0; m < 1 + round % 4; m++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[x % len] = (char)(x >> 24);
        }
        memset(&body, 0, sizeof(body));
        wire_resp_init(&resp, 0, sink_fn, &body);
        st = feed(&resp, buf, len, 1 + round % 9, &left);
        cr_assert(st == WIRE_MORE || st == WIRE_DONE || st == WIRE_ERROR);
        if (st == WIRE_MORE)
            st = wire_resp_eof(&resp);
        cr_assert(st == WIRE_DONE || st == WIRE_ERROR);
        if (st == WIRE_DONE)
            cr_assert_eq(resp.body_len, body.len);
    }
}
