/*
 * Upstream replicas: round robin, failover when a replica refuses, and the never-resend
 * rule once a request may have reached an upstream.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(failover, .fini = harness_cleanup, .timeout = 60);

static long stat_of(uint16_t port, const char *field)
{
    long v = harness_upstream_stat(port, field);

    cr_assert_geq(v, 0, "no %s from the upstream on port %u", field, port);
    return v;
}

static void stop_proxy_cleanly(pid_t pid)
{
    cr_expect(harness_stop_clean(pid, "proxy", 10000), "idemproxy did not exit cleanly");
}

static int send_get(uint16_t port, const char *path, struct harness_resp *r)
{
    char raw[256];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", path);
    return harness_request(port, raw, strlen(raw), r, 10000);
}

Test(failover, round_robin_and_skip_a_refusing_replica)
{
    uint16_t a_port, b_port, dead = harness_free_port(), px;
    char a[32], b[32], d[32];
    pid_t px_pid;
    struct harness_resp r;

    cr_assert_gt(harness_start_upstream(&a_port, "a"), 0);
    cr_assert_gt(harness_start_upstream(&b_port, "b"), 0);
    snprintf(a, sizeof(a), "127.0.0.1:%u", a_port);
    snprintf(b, sizeof(b), "127.0.0.1:%u", b_port);
    snprintf(d, sizeof(d), "127.0.0.1:%u", dead);
    {
        const char *args[] = {"--upstream", a, "--upstream", d, "--upstream", b, NULL};
        px_pid = harness_start_proxy(&px, "proxy", args);
    }
    cr_assert_gt(px_pid, 0);
    for (int i = 0; i < 30; i++) {
        cr_assert_eq(send_get(px, "/x", &r), 0);
        cr_assert_eq(r.status, 200, "request %d: %d %s", i, r.status, r.body);
        harness_resp_free(&r);
    }
    /* both live replicas took a share; the dead one cost no failed answers */
    cr_assert_geq(stat_of(a_port, "requests"), 5);
    cr_assert_geq(stat_of(b_port, "requests"), 5);
    stop_proxy_cleanly(px_pid);
}

Test(failover, all_replicas_down_is_502_problem)
{
    uint16_t px, d1 = harness_free_port(), d2 = harness_free_port();
    char a[32], b[32];
    pid_t px_pid;
    struct harness_resp r;

    snprintf(a, sizeof(a), "127.0.0.1:%u", d1);
    snprintf(b, sizeof(b), "127.0.0.1:%u", d2);
    {
        const char *args[] = {"--upstream", a, "--upstream", b, NULL};
        px_pid = harness_start_proxy(&px, "proxy", args);
    }
    cr_assert_gt(px_pid, 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(send_get(px, "/x", &r), 0);
        cr_assert_eq(r.status, 502);
        cr_assert(strstr(r.body, "upstream-unavailable"), "%s", r.body);
        harness_resp_free(&r);
    }
    stop_proxy_cleanly(px_pid);
}

/* The replica reads the request and dies without answering: the request may have been
 * executed, so it must not be sent to the other replica. */
Test(failover, no_resend_after_reset)
{
    uint16_t a_port, b_port, px;
    char a[32], b[32];
    pid_t px_pid;
    struct harness_resp r;
    const char *raw = "POST /reset HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                      "Connection: close\r\n\r\nhi";

    cr_assert_gt(harness_start_upstream(&a_port, "a"), 0);
    cr_assert_gt(harness_start_upstream(&b_port, "b"), 0);
    snprintf(a, sizeof(a), "127.0.0.1:%u", a_port);
    snprintf(b, sizeof(b), "127.0.0.1:%u", b_port);
    {
        const char *args[] = {"--upstream", a, "--upstream", b, "--workers", "1", NULL};
        px_pid = harness_start_proxy(&px, "proxy", args);
    }
    cr_assert_gt(px_pid, 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(harness_request(px, raw, strlen(raw), &r, 10000), 0);
        cr_assert_eq(r.status, 502, "got %d", r.status);
        cr_assert(strstr(r.body, "upstream-failed"), "%s", r.body);
        harness_resp_free(&r);
    }
    /* 4 requests, 4 executions in total: none was sent twice */
    cr_assert_eq(stat_of(a_port, "requests") + stat_of(b_port, "requests"), 4);
    stop_proxy_cleanly(px_pid);
}

Test(failover, upstream_timeout_is_504_and_not_resent)
{
    uint16_t a_port, b_port, px;
    char a[32], b[32];
    pid_t px_pid;
    struct harness_resp r;

    cr_assert_gt(harness_start_upstream(&a_port, "a"), 0);
    cr_assert_gt(harness_start_upstream(&b_port, "b"), 0);
    snprintf(a, sizeof(a), "127.0.0.1:%u", a_port);
    snprintf(b, sizeof(b), "127.0.0.1:%u", b_port);
    {
        const char *args[] = {"--upstream",         a,       "--upstream", b,
                              "--upstream-timeout", "300ms", NULL};
        px_pid = harness_start_proxy(&px, "proxy", args);
    }
    cr_assert_gt(px_pid, 0);
    cr_assert_eq(send_get(px, "/slow/1500", &r), 0);
    cr_assert_eq(r.status, 504);
    cr_assert(strstr(r.body, "upstream-timeout"), "%s", r.body);
    harness_resp_free(&r);
    usleep(1500 * 1000); /* let the slow answer complete upstream-side */
    cr_assert_eq(stat_of(a_port, "requests") + stat_of(b_port, "requests"), 1);
    stop_proxy_cleanly(px_pid);
}
