/*
 * Running out of file descriptors: idemproxy keeps serving the connections it has,
 * does not spin on the listening socket, and accepts again once descriptors free up.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(limits, .fini = harness_cleanup, .timeout = 60);

static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    FILE *f;
    long ut = 0, st = 0;
    char *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    p = strrchr(buf, ')'); /* fields after the command name */
    cr_assert_not_null(p);
    cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st), 2);
    return ut + st;
}

Test(limits, out_of_descriptors_pauses_accepting_then_recovers)
{
    uint16_t up, px = harness_free_port();
    char cmd[512];
    int fds[80], n = 0;
    long t0, t1, hz = sysconf(_SC_CLK_TCK);
    pid_t pid;
    struct harness_resp r;
    const char *raw = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    cr_assert_gt(harness_start_upstream(&up, "up"), 0);
    /* 40 descriptors: the proxy's own (listeners, epoll, pipes, Redis) plus a few clients */
    snprintf(cmd, sizeof(cmd),
             "ulimit -n 40 && exec %s --listen 127.0.0.1:%u --workers 1 --upstream 127.0.0.1:%u",
             IDEMPROXY_BIN, px, up);
    {
        char *argv[] = {"/bin/sh", "-c", cmd, NULL};
        pid = harness_spawn("proxy", argv);
    }
    cr_assert_gt(pid, 0);
    cr_assert_eq(harness_wait_port(px, 10000), 0, "proxy did not start");
    /* a client connected before the limit keeps working throughout */
    fds[n++] = harness_connect(px);
    cr_assert_geq(fds[0], 0);
    while (n < 80) {
        int fd = harness_connect(px);
        if (fd < 0)
            break;
        fds[n++] = fd;
    }
    usleep(300 * 1000); /* the kernel queued connections the proxy cannot accept */
    t0 = cpu_ticks(pid);
    usleep(1000 * 1000);
    t1 = cpu_ticks(pid);
    cr_assert_lt(t1 - t0, hz / 2, "the proxy spins while out of descriptors (%ld ticks/s)",
                 t1 - t0);
    {
        char *log = harness_read_log("proxy");
        cr_assert(log && strstr(log, "pausing accepts"), "%s", log ? log : "");
        free(log);
    }
    /* release everything but the first client; new connections are accepted again */
    for (int i = 1; i < n; i++)
        close(fds[i]);
    close(fds[0]);
    usleep(300 * 1000);
    cr_assert_eq(harness_request(px, raw, strlen(raw), &r, 5000), 0, "not accepting again");
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    cr_assert(harness_stop_clean(pid, "proxy", 10000));
}
