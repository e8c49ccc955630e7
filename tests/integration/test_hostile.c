/*
 * Bad and hostile input, closed properly (issue 9): each case over a real socket, with
 * the answer a client can read. Before, each of these either dropped the answer, held
 * the connection, or let a request through unprotected.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(hostile, .fini = stack_teardown, .timeout = 60);

static void expect_problem(const struct harness_resp *r, int status, const char *slug)
{
    char want[128];

    cr_assert_eq(r->status, status, "want %d %s, got %d: %s", status, slug, r->status, r->body);
    snprintf(want, sizeof(want), "problem:%s\"", slug);
    cr_assert(strstr(r->body, want), "want %s: %s", slug, r->body);
}

/* One raw request on a fresh connection, one answer within timeout_ms. */
static void raw_request(uint16_t port, const char *raw, struct harness_resp *r, int timeout_ms)
{
    cr_assert_eq(harness_request(port, raw, strlen(raw), r, timeout_ms), 0, "no answer to %s", raw);
}

/* A client that writes its whole (too large) body before reading, as most do without
 * Expect: 100-continue. Before, the proxy closed with unread data and the client got a
 * connection reset instead of the 413. */
Test(hostile, a_body_over_max_body_sent_whole_still_gets_its_413)
{
    const char *extra[] = {"--max-body", "1k", NULL};
    const size_t body_len = 24 * 1024 * 1024; /* more than the socket buffers hold */
    char head[128];
    char *body = malloc(body_len);
    struct harness_resp r;
    int fd;

    cr_assert_not_null(body);
    memset(body, 'x', body_len);
    stack_start(extra, NULL);
    fd = harness_connect(stack.a_port);
    cr_assert_geq(fd, 0);
    snprintf(head, sizeof(head), "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n",
             body_len);
    cr_assert_eq(harness_send(fd, head, strlen(head)), 0);
    cr_assert_eq(harness_send(fd, body, body_len), 0, "the proxy reset the upload");
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0, "the 413 was lost");
    expect_problem(&r, 413, "body-too-large");
    harness_resp_free(&r);
    cr_assert(harness_wait_closed(fd, 7000), "lingering must end");
    close(fd);
    free(body);
}

/* client-timeout bounds the whole head: a byte every 200 ms used to re-arm it forever. */
Test(hostile, a_trickled_head_is_bounded_by_client_timeout)
{
    const char *extra[] = {"--client-timeout", "1s", NULL};
    const char *trickle = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    struct harness_resp r;
    double t0;
    int fd, answered = 0;

    stack_start(extra, NULL);
    fd = harness_connect(stack.a_port);
    cr_assert_geq(fd, 0);
    t0 = harness_now_s();
    for (size_t i = 0; i < strlen(trickle) && !answered; i++) {
        struct pollfd p = {fd, POLLIN, 0};
        if (send(fd, trickle + i, 1, MSG_NOSIGNAL) != 1)
            break; /* closed on us: the answer is waiting */
        answered = poll(&p, 1, 200) == 1;
    }
    cr_assert_eq(harness_read_response(fd, &r, 0, 2000), 0, "no 408 while trickling");
    expect_problem(&r, 408, "request-timeout");
    cr_assert_lt(harness_now_s() - t0, 4.0, "the head deadline did not hold");
    harness_resp_free(&r);
    close(fd);
}

/* A head whose lines end in a bare LF can never end: 400 at once, not 408 a minute later. */
Test(hostile, a_bare_lf_head_is_refused_at_once)
{
    struct harness_resp r;

    stack_start(NULL, NULL);
    raw_request(stack.a_port, "GET / HTTP/1.1\nHost: a\n\n", &r, 3000);
    expect_problem(&r, 400, "bad-request");
    harness_resp_free(&r);
    raw_request(stack.a_port, "GET / HTTP/1.1\r\nHost: a\nX: y\r\n", &r, 3000);
    expect_problem(&r, 400, "bad-request");
    harness_resp_free(&r);
}

/* Host as RFC 9112 §3.2 has it; an absolute-form target's authority must agree with it,
 * and the upstream sees the origin-form: never two different hosts. */
Test(hostile, host_is_validated_and_absolute_form_agrees_with_it)
{
    static const char *bad[] = {"a b",     "a,b", "a/b",  "user@a", "a:x",
                                "a:99999", "a:",  "[::1", "[zz]:1", "a%zz"};
    static const char *good[] = {"a.example", "a.example:8080",     "10.0.0.1:1", "[::1]:80",
                                 "",          "xn--caf-dma.example"};
    struct harness_resp r;
    char raw[256];

    stack_start(NULL, NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                 bad[i]);
        raw_request(stack.a_port, raw, &r, 3000);
        cr_assert_eq(r.status, 400, "Host '%s' accepted: %d", bad[i], r.status);
        harness_resp_free(&r);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                 good[i]);
        raw_request(stack.a_port, raw, &r, 3000);
        cr_assert_eq(r.status, 200, "Host '%s' refused: %d %s", good[i], r.status, r.body);
        harness_resp_free(&r);
    }
    raw_request(stack.a_port,
                "GET http://shop.example/p?q=1 HTTP/1.1\r\nHost: shop.example\r\n"
                "Connection: close\r\n\r\n",
                &r, 3000);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "\"uri\": \"/p?q=1\""), "the upstream got: %s", r.body);
    harness_resp_free(&r);
    raw_request(stack.a_port,
                "GET http://other.example/p HTTP/1.1\r\nHost: shop.example\r\n"
                "Connection: close\r\n\r\n",
                &r, 3000);
    expect_problem(&r, 400, "bad-request");
    harness_resp_free(&r);
}

/* A second scope header used to be ignored (the first one counted): behind a gateway
 * that appends an identity header, a client could pick another caller's scope. */
Test(hostile, a_repeated_scope_or_fingerprint_header_is_refused)
{
    const char *extra[] = {"--fingerprint-headers", "X-Account", NULL};
    struct harness_resp r;

    stack_start(extra, NULL);
    raw_request(stack.a_port,
                "POST /p HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k1\r\n"
                "Authorization: Bearer mine\r\nAuthorization: Bearer theirs\r\n"
                "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                &r, 3000);
    expect_problem(&r, 400, "invalid-header");
    harness_resp_free(&r);
    raw_request(stack.a_port,
                "POST /p HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k2\r\nX-Account: 1\r\n"
                "X-Account: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                &r, 3000);
    expect_problem(&r, 400, "invalid-header");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, NULL), 0, "refused requests were forwarded");
}

/* "post" is not POST to the grammar, but many servers treat it so: it is keyed too. */
Test(hostile, a_keyed_method_in_another_case_is_protected)
{
    const char *raw = "post /p HTTP/1.1\r\nHost: a\r\nIdempotency-Key: lower\r\n"
                      "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    struct harness_resp r;

    int status;

    stack_start(NULL, NULL);
    raw_request(stack.a_port, raw, &r, 3000);
    status = r.status; /* whatever the upstream makes of "post" (evhttp refuses it) */
    cr_assert_not(harness_replayed(&r));
    harness_resp_free(&r);
    raw_request(stack.b_port, raw, &r, 3000);
    cr_assert_eq(r.status, status);
    cr_assert(harness_replayed(&r), "'post' was forwarded unprotected (%d)", r.status);
    harness_resp_free(&r);
}

/* shutdown(SHUT_WR) after a complete request is legal HTTP/1.1: the answer still comes. */
Test(hostile, a_client_that_half_closes_still_gets_its_answer)
{
    const char *raw = "GET /slow/200 HTTP/1.1\r\nHost: a\r\n\r\n";
    struct harness_resp r;
    int fd;

    stack_start(NULL, NULL);
    fd = harness_connect(stack.a_port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0, "the answer was dropped");
    cr_assert_eq(r.status, 200);
    cr_assert(r.closed || harness_wait_closed(fd, 2000));
    harness_resp_free(&r);
    close(fd);
}
