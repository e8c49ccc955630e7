/*
 * SIGTERM: stop accepting, finish in-flight requests (bounded by drain-timeout), exit 0.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(drain, .fini = harness_cleanup, .timeout = 60);

static pid_t start(uint16_t *px, const char *drain)
{
    uint16_t up;
    static char a[32];

    cr_assert_gt(harness_start_upstream(&up, "up"), 0);
    snprintf(a, sizeof(a), "127.0.0.1:%u", up);
    const char *args[] = {"--upstream", a, "--drain-timeout", drain, NULL};
    return harness_start_proxy(px, "proxy", args);
}

Test(drain, inflight_request_completes_then_exit_0)
{
    uint16_t px;
    pid_t pid = start(&px, "10s");
    struct harness_resp r;
    int fd, idle, st;
    const char *raw = "GET /slow/700 HTTP/1.1\r\nHost: a\r\n\r\n";

    cr_assert_gt(pid, 0);
    idle = harness_connect(px); /* an idle keep-alive client: closed at once on drain */
    fd = harness_connect(px);
    cr_assert(idle >= 0 && fd >= 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    usleep(200 * 1000);
    kill(pid, SIGTERM);
    cr_assert(harness_wait_closed(idle, 2000), "idle connection not closed on drain");
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200, "in-flight request lost on SIGTERM");
    cr_assert(r.closed || harness_wait_closed(fd, 2000));
    harness_resp_free(&r);
    st = harness_stop(pid, 0, 5000); /* already signalled: just wait */
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    cr_assert_eq(harness_connect(px), -1, "still accepting after drain");
    close(fd);
    close(idle);
}

Test(drain, drain_timeout_bounds_the_wait)
{
    uint16_t px;
    pid_t pid = start(&px, "300ms");
    int fd, st;
    double t0;
    const char *raw = "GET /slow/20000 HTTP/1.1\r\nHost: a\r\n\r\n";

    cr_assert_gt(pid, 0);
    fd = harness_connect(px);
    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    usleep(200 * 1000);
    t0 = harness_now_s();
    st = harness_stop(pid, SIGTERM, 8000);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    cr_assert_lt(harness_now_s() - t0, 7.0, "drain-timeout not honoured");
    close(fd);
}
