/*
 * Pass-through behaviour against a real test upstream and a real idemproxy (2 workers).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static uint16_t up_port, px_port;
static pid_t up_pid, px_pid;

static void setup(void)
{
    char up[32];
    const char *args[] = {"--upstream", up, NULL};

    up_pid = harness_start_upstream(&up_port, "upstream");
    cr_assert_gt(up_pid, 0, "test upstream did not start");
    snprintf(up, sizeof(up), "127.0.0.1:%u", up_port);
    px_pid = harness_start_proxy(&px_port, "proxy", args);
    cr_assert_gt(px_pid, 0, "idemproxy did not start");
}

/* A clean stop is part of every test: SIGTERM → exit 0 (and, under ASan, no leaks). */
static void teardown(void)
{
    cr_expect(harness_stop_clean(px_pid, "proxy", 10000), "idemproxy did not exit cleanly");
    harness_cleanup();
}

TestSuite(proxy, .init = setup, .fini = teardown, .timeout = 60);

static void get(const char *raw, struct harness_resp *r)
{
    cr_assert_eq(harness_request(px_port, raw, strlen(raw), r, 5000), 0, "no answer to: %s", raw);
}

static long upstream_stat(const char *field)
{
    long v = harness_upstream_stat(up_port, field);

    cr_assert_geq(v, 0, "no %s from the test upstream", field);
    return v;
}

Test(proxy, every_method_passes_through)
{
    static const char *methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char raw[256], want[64], buf[64];
        struct harness_resp r;

        snprintf(raw, sizeof(raw),
                 "%s /things/7?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n"
                 "Connection: close\r\n\r\nhello",
                 methods[i]);
        get(raw, &r);
        cr_assert_eq(r.status, 200, "%s: %d", methods[i], r.status);
        snprintf(want, sizeof(want), "\"method\": \"%s\"", methods[i]);
        cr_assert(strstr(r.body, want), "%s: %s", methods[i], r.body);
        cr_assert(strstr(r.body, "\"uri\": \"/things/7?x=1\""), "%s", r.body);
        cr_assert(strstr(r.body, "\"body\": \"hello\""), "%s: %s", methods[i], r.body);
        cr_assert_str_eq(harness_header(&r, "Content-Type", 0, buf, sizeof(buf)),
                         "application/json");
        harness_resp_free(&r);
    }
}

Test(proxy, head_has_no_body_but_keeps_length)
{
    struct harness_resp r;
    char buf[32];
    int fd = harness_connect(px_port);
    const char *raw = "HEAD /bytes/1234 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n";

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    cr_assert_eq(harness_read_response(fd, &r, 1, 5000), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(harness_header(&r, "Content-Length", 0, buf, sizeof(buf)), "1234");
    cr_assert_eq(r.body_len, 0);
    harness_resp_free(&r);
    /* the next response on the same connection proves no body bytes were sent */
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, 3);
    harness_resp_free(&r);
    close(fd);
}

Test(proxy, request_headers_are_rewritten)
{
    struct harness_resp r;

    get("POST /h HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
        "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
        "Upgrade: websocket\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
        "Via: 1.0 edge\r\nX-Custom: kept\r\nContent-Length: 2\r\n\r\nok",
        &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "[\"X-Custom\", \"kept\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "[\"Host\", \"shop.example\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "[\"X-Forwarded-For\", \"203.0.113.9, 127.0.0.1\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "[\"X-Forwarded-Proto\", \"http\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "[\"X-Forwarded-Host\", \"shop.example\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "[\"Via\", \"1.0 edge, 1.1 idemproxy\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "[\"Content-Length\", \"2\"]"), "%s", r.body);
    cr_assert_null(strstr(r.body, "X-Hop"), "%s", r.body);
    cr_assert_null(strstr(r.body, "Keep-Alive"), "%s", r.body);
    cr_assert_null(strstr(r.body, "Proxy-Connection"), "%s", r.body);
    cr_assert_null(strstr(r.body, "\"TE\""), "%s", r.body);
    cr_assert_null(strstr(r.body, "Upgrade"), "%s", r.body);
    cr_assert_null(strstr(r.body, "https"), "%s", r.body);
    harness_resp_free(&r);
}

Test(proxy, response_hop_by_hop_removed_end_to_end_kept)
{
    struct harness_resp r;
    char buf[64];

    get("GET /hop HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "hop\n");
    cr_assert_str_eq(harness_header(&r, "X-End", 0, buf, sizeof(buf)), "1");
    cr_assert_str_eq(harness_header(&r, "Set-Cookie", 0, buf, sizeof(buf)), "a=1");
    cr_assert_str_eq(harness_header(&r, "Set-Cookie", 1, buf, sizeof(buf)), "b=2");
    cr_assert_null(harness_header(&r, "X-Secret-Hop", 0, buf, sizeof(buf)));
    cr_assert_null(harness_header(&r, "Keep-Alive", 0, buf, sizeof(buf)));
    cr_assert_null(harness_header(&r, "Proxy-Connection", 0, buf, sizeof(buf)));
    cr_assert_null(harness_header(&r, "Upgrade", 0, buf, sizeof(buf)));
    cr_assert_null(harness_header(&r, "Trailer", 0, buf, sizeof(buf)));
    harness_resp_free(&r);
}

static void check_bytes(const struct harness_resp *r, size_t n)
{
    cr_assert_eq(r->body_len, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq((unsigned char)r->body[i], (unsigned char)((i * 31 + 7) % 256),
                     "byte %zu differs", i);
}

Test(proxy, binary_and_chunked_bodies_are_exact)
{
    struct harness_resp r;
    char buf[32];

    get("GET /bytes/300000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    check_bytes(&r, 300000);
    harness_resp_free(&r);

    /* a chunked upstream answer is re-framed with Content-Length */
    get("GET /chunked/70000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(harness_header(&r, "Content-Length", 0, buf, sizeof(buf)), "70000");
    cr_assert_null(harness_header(&r, "Transfer-Encoding", 0, buf, sizeof(buf)));
    check_bytes(&r, 70000);
    harness_resp_free(&r);
}

Test(proxy, chunked_request_is_forwarded_with_length)
{
    struct harness_resp r;

    get("POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "4\r\nabcd\r\n3;ext=x\r\nefg\r\n0\r\nX-Trailer: 1\r\n\r\n",
        &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"body\": \"abcdefg\""), "%s", r.body);
    cr_assert(strstr(r.body, "[\"Content-Length\", \"7\"]"), "%s", r.body);
    cr_assert_null(strstr(r.body, "Transfer-Encoding"), "%s", r.body);
    harness_resp_free(&r);
}

Test(proxy, keepalive_and_pipelining_on_both_sides)
{
    struct harness_resp r;
    int fd = harness_connect(px_port);
    long conns_before = upstream_stat("connections");
    char raw[4096] = "";

    cr_assert_geq(fd, 0);
    /* 20 pipelined requests in one write; answers must come back in order */
    for (int i = 0; i < 20; i++)
        snprintf(raw + strlen(raw), sizeof(raw) - strlen(raw),
                 "GET /seq/%d HTTP/1.1\r\nHost: a\r\n\r\n", i);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    for (int i = 0; i < 20; i++) {
        char want[32];
        cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0, "answer %d missing", i);
        cr_assert_eq(r.status, 200);
        snprintf(want, sizeof(want), "\"/seq/%d\"", i);
        cr_assert(strstr(r.body, want), "answer %d out of order: %s", i, r.body);
        cr_assert_eq(r.closed, 0);
        harness_resp_free(&r);
    }
    close(fd);
    /* one client connection is served by one worker: its pool needs one upstream
     * connection, reused 20 times (the /stats probes add their own) */
    cr_assert_leq(upstream_stat("connections") - conns_before, 2, "upstream keep-alive not used");
}

Test(proxy, upstream_errors_pass_through_untouched)
{
    struct harness_resp r;
    char buf[64];

    get("GET /status/503 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(r.status, 503);
    cr_assert_str_eq(r.body, "status 503\n");
    cr_assert_str_eq(harness_header(&r, "Content-Type", 0, buf, sizeof(buf)), "text/plain");
    harness_resp_free(&r);

    get("GET /status/204 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(r.status, 204);
    cr_assert_null(harness_header(&r, "Content-Length", 0, buf, sizeof(buf)));
    harness_resp_free(&r);
}

Test(proxy, http10_client_without_host)
{
    struct harness_resp r;

    get("GET /old HTTP/1.0\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"uri\": \"/old\""));
    cr_assert(strstr(r.body, "[\"Host\", \"127.0.0.1:"), "%s", r.body);
    harness_resp_free(&r);
}

Test(proxy, expect_100_continue_is_answered)
{
    struct harness_resp r;
    char buf[64];
    int fd = harness_connect(px_port);
    const char *head = "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                       "Content-Length: 3\r\nConnection: close\r\n\r\n";
    ssize_t n;

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, head, strlen(head)), 0);
    /* the interim answer comes before we send the body */
    n = read(fd, buf, 25);
    cr_assert_eq(n, 25);
    cr_assert(strncmp(buf, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0);
    cr_assert_eq(harness_send(fd, "abc", 3), 0);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"body\": \"abc\""));
    cr_assert_null(strstr(r.body, "Expect"), "Expect must not reach the upstream");
    harness_resp_free(&r);
    close(fd);
}

Test(proxy, http10_keepalive_is_acknowledged)
{
    struct harness_resp r;
    char buf[32];
    int fd = harness_connect(px_port);
    const char *raw = "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

    cr_assert_geq(fd, 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
        cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0, "answer %d missing", i);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(harness_header(&r, "Connection", 0, buf, sizeof(buf)), "keep-alive");
        harness_resp_free(&r);
    }
    close(fd);
    /* without asking, an HTTP/1.0 connection closes after the answer */
    fd = harness_connect(px_port);
    cr_assert_eq(harness_send(fd, "GET /c HTTP/1.0\r\n\r\n", 19), 0);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(harness_wait_closed(fd, 2000));
    harness_resp_free(&r);
    close(fd);
}
