/*
 * Strict framing and bad input: each gets a problem+json answer with a stable type, the
 * connection closes where framing is in doubt, and nothing reaches the upstream.
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
    const char *args[] = {"--upstream",
                          up,
                          "--max-body",
                          "1k",
                          "--max-headers",
                          "1k",
                          "--client-timeout",
                          "400ms",
                          "--upstream-timeout",
                          "500ms",
                          NULL};

    up_pid = harness_start_upstream(&up_port, "upstream");
    cr_assert_gt(up_pid, 0);
    snprintf(up, sizeof(up), "127.0.0.1:%u", up_port);
    px_pid = harness_start_proxy(&px_port, "proxy", args);
    cr_assert_gt(px_pid, 0);
}

static void teardown(void)
{
    cr_expect(harness_stop_clean(px_pid, "proxy", 10000), "idemproxy did not exit cleanly");
    harness_cleanup();
}

TestSuite(framing, .init = setup, .fini = teardown, .timeout = 60);

static long upstream_requests(void)
{
    long v = harness_upstream_stat(up_port, "requests");

    cr_assert_geq(v, 0, "no stats from the test upstream");
    return v;
}

/* Send raw on a fresh connection; expect status + problem slug, and (if must_close) the
 * connection closed afterwards even though the client asked for keep-alive. */
static void expect_problem(const void *raw, size_t len, int status, const char *slug,
                           int must_close)
{
    struct harness_resp r;
    char buf[256], want[128];
    int fd = harness_connect(px_port);

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, len), 0);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0, "no answer for %s", slug);
    cr_assert_eq(r.status, status, "%s: got %d\n%s%s", slug, r.status, r.head, r.body);
    cr_assert_str_eq(harness_header(&r, "Content-Type", 0, buf, sizeof(buf)),
                     "application/problem+json");
    snprintf(want, sizeof(want), "\"type\":\"tag:idemproxy.dev,2026:problem:%s\"", slug);
    cr_assert(strstr(r.body, want), "%s", r.body);
    snprintf(want, sizeof(want), "\"status\":%d", status);
    cr_assert(strstr(r.body, want), "%s", r.body);
    if (must_close) {
        cr_assert_str_eq(harness_header(&r, "Connection", 0, buf, sizeof(buf)), "close");
        cr_assert(harness_wait_closed(fd, 2000), "%s: connection left open", slug);
    }
    harness_resp_free(&r);
    close(fd);
}

#define EXPECT(raw, status, slug) expect_problem(raw, sizeof(raw) - 1, status, slug, 1)

Test(framing, bad_requests_never_reach_the_upstream)
{
    long before = upstream_requests();

    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\n\r\n",
           400, "conflicting-framing");
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
           "invalid-content-length");
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400,
           "invalid-content-length");
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400,
           "invalid-content-length");
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400,
           "invalid-content-length");
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
           "unsupported-transfer-encoding");
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
           "unsupported-transfer-encoding");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\rb\r\n\r\n", 400, "invalid-header");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\0b\r\n\r\n", 400, "invalid-header");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\nb\r\n\r\n", 400, "bad-request");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n\r\n", 400, "invalid-header");
    EXPECT("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "invalid-header");
    EXPECT("GET / HTTP/1.1\r\n\r\n", 400, "missing-host");
    EXPECT("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version-not-supported");
    EXPECT("GARBAGE\r\n\r\n", 400, "bad-request");
    EXPECT("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501, "method-not-supported");
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nab\r\n", 400,
           "bad-request");
    cr_assert_eq(upstream_requests(), before, "a rejected request reached the upstream");
}

Test(framing, body_over_max_body_is_413)
{
    char raw[4096];
    long before = upstream_requests();
    int n;

    /* announced too large: refused before the body is read */
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n", 413, "body-too-large");
    /* chunked, growing past the limit */
    n = snprintf(raw, sizeof(raw),
                 "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "200\r\n%0512d\r\n200\r\n%0512d\r\n200\r\n%0512d\r\n0\r\n\r\n",
                 0, 0, 0);
    expect_problem(raw, (size_t)n, 413, "body-too-large", 1);
    cr_assert_eq(upstream_requests(), before);

    /* exactly at the limit passes */
    {
        struct harness_resp r;
        n = snprintf(raw, sizeof(raw),
                     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\nConnection: close\r\n"
                     "\r\n%01024d",
                     0);
        cr_assert_eq(harness_request(px_port, raw, (size_t)n, &r, 5000), 0);
        cr_assert_eq(r.status, 200);
        cr_assert(strstr(r.body, "\"body_len\": 1024"), "%s", r.body);
        harness_resp_free(&r);
    }
}

Test(framing, headers_over_max_headers_is_431)
{
    char raw[4096];
    int n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: %01100d\r\n\r\n", 0);

    expect_problem(raw, (size_t)n, 431, "headers-too-large", 1);
}

Test(framing, slow_client_gets_408_and_idle_client_is_closed)
{
    struct harness_resp r;
    int fd = harness_connect(px_port);
    const char *partial = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc";

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, partial, strlen(partial)), 0);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 408);
    cr_assert(strstr(r.body, "request-timeout"));
    cr_assert(harness_wait_closed(fd, 2000));
    harness_resp_free(&r);
    close(fd);

    /* an idle keep-alive connection is closed without an answer */
    fd = harness_connect(px_port);
    cr_assert_geq(fd, 0);
    {
        char buf[16];
        cr_assert(harness_wait_closed(fd, 3000), "idle connection not closed");
        cr_assert_eq(read(fd, buf, sizeof(buf)) > 0, 0);
    }
    close(fd);
}

Test(framing, truncated_upstream_answer_is_502_never_complete)
{
    struct harness_resp r;
    const char *raw = "GET /truncate HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    cr_assert_eq(harness_request(px_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 502);
    cr_assert(strstr(r.body, "upstream-failed"), "%s", r.body);
    cr_assert(strstr(r.body, "truncated"), "%s", r.body);
    harness_resp_free(&r);
}

Test(framing, slow_upstream_is_504)
{
    struct harness_resp r;
    const char *raw = "GET /slow/3000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    cr_assert_eq(harness_request(px_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 504);
    cr_assert(strstr(r.body, "upstream-timeout"), "%s", r.body);
    harness_resp_free(&r);
}
