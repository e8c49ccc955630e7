/*
 * Reload on SIGHUP (issue 10, part): the file is read again and its upstreams, routes and
 * policy apply to new requests, under load, without losing a connection or a request; an
 * invalid file keeps the running configuration and says why with file:line.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(reload, .fini = stack_teardown, .timeout = 60);

static char conf_path[512];
static uint16_t up2_port, admin_port;

static void write_conf(const char *extra_lines, uint16_t upstream)
{
    FILE *f = fopen(conf_path, "w");

    cr_assert_not_null(f);
    fprintf(f, "upstream 127.0.0.1:%u\nredis %s\nadmin-listen 127.0.0.1:%u\n%s", upstream,
            stack.redis_arg, admin_port, extra_lines);
    fclose(f);
}

/* The stack's replica A again, reading its upstream, Redis and policy from a file only
 * (flags would override the file on every reload). */
static void start(void)
{
    const char *extra[] = {conf_path, NULL};

    snprintf(conf_path, sizeof(conf_path), "%s/reload.conf", harness_tmpdir());
    admin_port = harness_free_port();
    stack_start(NULL, NULL);
    cr_assert_gt(harness_start_upstream(&up2_port, "two"), 0);
    cr_assert(harness_stop_clean(stack.a_pid, "proxyA", 10000));
    write_conf("", stack.up_port);
    stack.a_pid = harness_start_proxy(&stack.a_port, "proxyR", extra);
    cr_assert_gt(stack.a_pid, 0);
    cr_assert_eq(harness_wait_port(admin_port, 5000), 0, "the admin endpoint did not listen");
}

/* Upstream connections opened so far, from /metrics. */
static long connections_opened(void)
{
    const char *raw = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    struct harness_resp r;
    double v;

    cr_assert_eq(harness_request(admin_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 200);
    v = harness_metric(r.body, "idemproxy_upstream_connections_opened_total");
    cr_assert_geq(v, 0, "%s", r.body);
    harness_resp_free(&r);
    return (long)v;
}

static const char get_close[] = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

static const char *upstream_of(const struct harness_resp *r, char *buf, size_t len)
{
    return harness_header(r, "X-Upstream-Id", 0, buf, len);
}

/* Keep-alive GETs on one connection until told to stop; every answer must be a 200. */
struct load {
    uint16_t port;
    volatile int stop;
    int sent, bad;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    const char *req = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    int fd = harness_connect(l->port);

    if (fd < 0) {
        l->bad++;
        return NULL;
    }
    for (int i = 0; i < 5000 && !l->stop; i++) {
        struct harness_resp r;
        if (harness_send(fd, req, strlen(req)) != 0 ||
            harness_read_response(fd, &r, 0, 5000) != 0) {
            l->bad++;
            break;
        }
        l->bad += r.status != 200;
        l->sent++;
        harness_resp_free(&r);
    }
    close(fd);
    return NULL;
}

Test(reload, sighup_applies_new_upstreams_and_routes_under_load)
{
    struct load l = {0};
    pthread_t t;
    struct harness_resp r;
    char buf[64], *log;
    int fd;
    long before;
    struct harness_keyed slow = {
        .method = "POST", .path = "/slow/800", .key = "across", .body = "{}"};

    start();
    cr_assert_eq(harness_request(stack.a_port, get_close, strlen(get_close), &r, 5000), 0);
    cr_assert_str_eq(upstream_of(&r, buf, sizeof(buf)), "upstream");
    harness_resp_free(&r);

    l.port = stack.a_port;
    cr_assert_eq(pthread_create(&t, NULL, load_main, &l), 0);
    fd = harness_keyed_send(stack.a_port, &slow); /* in flight across the reload */
    cr_assert_geq(fd, 0);
    usleep(200 * 1000);
    before = connections_opened();
    cr_assert_geq(before, 2, "the load and the slow request have their own connections");
    write_conf("route /x off\nroute /keyed methods POST PUT\n", up2_port);
    cr_assert_eq(kill(stack.a_pid, SIGHUP), 0);
    usleep(400 * 1000);
    l.stop = 1;
    pthread_join(t, NULL);
    cr_assert_eq(l.bad, 0, "%d of %d requests failed across the reload", l.bad, l.sent);
    cr_assert_gt(l.sent, 10);
    /* the request in flight finished where it started, and was recorded */
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    close(fd);
    cr_assert_eq(harness_executions(stack.up_port, "across"), 1);
    /* new requests: the new upstream, the new routes */
    cr_assert_eq(harness_request(stack.a_port, get_close, strlen(get_close), &r, 5000), 0);
    cr_assert_str_eq(upstream_of(&r, buf, sizeof(buf)), "two");
    harness_resp_free(&r);
    {
        struct harness_keyed put = {.method = "PUT", .path = "/keyed/1", .key = "p1", .body = "{}"};
        stack_post(stack.a_port, &put, &r);
        harness_resp_free(&r);
        stack_post(stack.a_port, &put, &r);
        cr_assert(harness_replayed(&r), "the reloaded route makes PUT keyed under /keyed");
        harness_resp_free(&r);
    }
    /* the counters carried over to the new pool: they never go backwards */
    cr_assert_gt(connections_opened(), before);
    log = harness_read_log("proxyR");
    cr_assert(log && strstr(log, "reloaded "), "%s", log);
    free(log);
}

Test(reload, an_invalid_file_keeps_the_running_configuration)
{
    struct harness_resp r;
    char buf[64], *log, want[600];

    start();
    write_conf("lisen 127.0.0.1:1\n", up2_port);
    cr_assert_eq(kill(stack.a_pid, SIGHUP), 0);
    usleep(300 * 1000);
    cr_assert_eq(harness_request(stack.a_port, get_close, strlen(get_close), &r, 5000), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(upstream_of(&r, buf, sizeof(buf)), "upstream", "the old upstream stays");
    harness_resp_free(&r);
    log = harness_read_log("proxyR");
    snprintf(want, sizeof(want), "reload failed: %s:4: unknown directive 'lisen'", conf_path);
    cr_assert(log && strstr(log, want), "want '%s' in:\n%s", want, log);
    free(log);
}
