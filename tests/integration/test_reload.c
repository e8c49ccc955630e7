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
static void start_with(const char *lines)
{
    const char *extra[] = {conf_path, NULL};

    snprintf(conf_path, sizeof(conf_path), "%s/reload.conf", harness_tmpdir());
    admin_port = harness_free_port();
    stack_start(NULL, NULL);
    cr_assert_gt(harness_start_upstream(&up2_port, "two"), 0);
    cr_assert(harness_stop_clean(stack.a_pid, "proxyA", 10000));
    write_conf(lines, stack.up_port);
    stack.a_pid = harness_start_proxy(&stack.a_port, "proxyR", extra);
    cr_assert_gt(stack.a_pid, 0);
    cr_assert_eq(harness_wait_port(admin_port, 5000), 0, "the admin endpoint did not listen");
}

static void start(void)
{
    start_with("");
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

/* Issue 18, part 4: a generation is freed once the last request that started under it is
 * done — not before (a slow request holds it), and not at exit only. */
Test(reload, an_old_generation_is_freed_when_its_last_request_is_done)
{
    static const char slow[] = "GET /slow/1500 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    struct harness_resp r;
    char *log = NULL;
    double t0;
    long before;
    int fd;

    start_with("log-level debug\n");
    before = harness_upstream_stat(stack.up_port, "requests");
    fd = harness_connect(stack.a_port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, slow, strlen(slow)), 0); /* under generation 1 */
    for (t0 = harness_now_s(); harness_upstream_stat(stack.up_port, "requests") <= before;
         usleep(10 * 1000))
        cr_assert_lt(harness_now_s() - t0, 5.0, "the slow request never reached the upstream");
    write_conf("log-level debug\n", up2_port);
    cr_assert_eq(kill(stack.a_pid, SIGHUP), 0);
    for (t0 = harness_now_s(); !(log = harness_read_log("proxyR")) || !strstr(log, "reloaded");
         usleep(20 * 1000)) {
        free(log);
        cr_assert_lt(harness_now_s() - t0, 5.0, "no reload");
    }
    free(log);
    usleep(1100 * 1000); /* a collection pass ran: the slow request still holds it */
    log = harness_read_log("proxyR");
    cr_assert_null(strstr(log, "configuration generation 1 freed"), "freed under a request");
    free(log);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    close(fd);
    for (t0 = harness_now_s();
         !(log = harness_read_log("proxyR")) || !strstr(log, "configuration generation 1 freed");
         usleep(50 * 1000)) {
        free(log);
        cr_assert_lt(harness_now_s() - t0, 5.0, "generation 1 was never freed");
    }
    free(log);
    cr_assert(harness_stop_clean(stack.a_pid, "proxyR", 10000));
    stack.a_pid = 0;
}

/* How many times "needle" is in proxyR's log. */
static int log_count(const char *needle)
{
    char *log = harness_read_log("proxyR"), *p = log;
    int n = 0;

    while (p && (p = strstr(p, needle))) {
        n++;
        p += strlen(needle);
    }
    free(log);
    return n;
}

/* Once the generations before the one in force (but one) are freed, proxyR's RSS. */
static long rss_once_collected(void)
{
    double t0 = harness_now_s();

    while (log_count(" freed\n") < log_count("reloaded ") - 1) {
        cr_assert_lt(harness_now_s() - t0, 10.0, "%d generations freed after %d reloads",
                     log_count(" freed\n"), log_count("reloaded "));
        usleep(50 * 1000);
    }
    return harness_rss_kb(stack.a_pid);
}

/* 1,000 reloads under traffic leave the memory bounded: each generation (a whole
 * configuration — here with 300 routes — and its pools) is freed once its requests are
 * done. Kept until exit (the code before), the 800 after the first 200 held tens of MB
 * more (measured: +59 MB unpaced). */
Test(reload, a_thousand_reloads_under_traffic_leave_rss_flat)
{
    struct load l = {0};
    pthread_t t;
    long rss_early = 0, rss_late = 0;
    char *routes = malloc(300 * 64), *log, *p;
    size_t len = 0;
    int freed = 0;

    cr_assert_not_null(routes);
    len += (size_t)sprintf(routes, "log-level debug\n");
    for (int i = 0; i < 300; i++)
        len += (size_t)sprintf(routes + len, "route /r%03d/some/longer/prefix lease 20s\n", i);

#ifdef IDEMPROXY_SANITIZED
    cr_skip_test("the sanitizers keep freed memory in quarantine: RSS means nothing here");
#endif
    start_with(routes);
    l.port = stack.a_port;
    cr_assert_eq(pthread_create(&t, NULL, load_main, &l), 0);
    /* in bursts of 100, each followed by the collection passes (every second) and read
     * once they caught up: what RSS shows then is what the live generation and the heap's
     * fragments hold, not how far the collector lagged behind on a loaded machine */
    for (int i = 0; i < 1000; i++) {
        write_conf(routes, i % 2 ? up2_port : stack.up_port);
        cr_assert_eq(kill(stack.a_pid, SIGHUP), 0);
        usleep(3 * 1000);
        if (i % 100 == 99) {
            long rss = rss_once_collected();
            /* the floor of each end: a burst's peak comes and goes (measured beside two
             * CPU hogs: 8.2, 8.2, 11.3, 8.3 MB at 500-reload steps), a leak raises it */
            if (i >= 199 && i < 500 && (!rss_early || rss < rss_early))
                rss_early = rss;
            if (i >= 699 && (!rss_late || rss < rss_late))
                rss_late = rss;
        }
    }
    l.stop = 1;
    pthread_join(t, NULL);
    free(routes);
    cr_assert_eq(l.bad, 0, "%d of %d requests failed during the reloads", l.bad, l.sent);
    cr_assert_gt(l.sent, 0);
    log = harness_read_log("proxyR");
    for (p = log; (p = strstr(p, "configuration generation ")) && (p = strstr(p, " freed")); p++)
        freed++;
    free(log);
    cr_log_info("RSS floor over reloads 200-500 %ld kB, over 700-1000 %ld kB; %d generations freed",
                rss_early, rss_late, freed);
    cr_assert_gt(freed, 0, "no generation was freed");
    cr_assert_lt(rss_late - rss_early, 4096, "RSS's floor grew %ld kB over 500 reloads",
                 rss_late - rss_early);
    cr_assert(harness_stop_clean(stack.a_pid, "proxyR", 10000));
    stack.a_pid = 0;
}

/* POST body to the admin endpoint's path with bearer tok-1 (start_with's admin-token). */
static void admin_keys(const char *path, const char *body, struct harness_resp *r)
{
    char raw[1024];

    snprintf(raw, sizeof(raw),
             "POST %s HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer tok-1\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             path, strlen(body), body);
    cr_assert_eq(harness_request(admin_port, raw, strlen(raw), r, 5000), 0);
    cr_assert_eq(r->status, 200, "%s", r->body);
}

/* /keys computes a record's Redis key with the key-prefix and scope-headers of the last
 * SIGHUP. Before, the admin thread kept the start-time policy: after a reload it looked
 * under the old prefix and scope, and answered "absent" for a recorded key. */
Test(reload, keys_inspect_follows_the_reloaded_prefix_and_scope)
{
    struct harness_keyed q = {.path = "/pay", .key = "after-1", .body = "{}"};
    char raw[512];
    struct harness_resp r;
    int n;

    start_with("admin-token tok-1\n");
    write_conf("admin-token tok-1\nkey-prefix v2:\nscope-headers X-Tenant\n", stack.up_port);
    n = log_count("reloaded ");
    cr_assert_eq(kill(stack.a_pid, SIGHUP), 0);
    for (double t0 = harness_now_s(); log_count("reloaded ") <= n; usleep(20 * 1000))
        cr_assert_lt(harness_now_s() - t0, 5.0, "no reload");
    harness_keyed_format(raw, sizeof(raw), &q);
    {
        /* the tenant header after the request line (harness_keyed has no field for it) */
        char with[600], *eol = strstr(raw, "\r\n");

        snprintf(with, sizeof(with), "%.*s\r\nX-Tenant: acme%s", (int)(eol - raw), raw, eol);
        cr_assert_eq(harness_request(stack.a_port, with, strlen(with), &r, 5000), 0);
    }
    cr_assert_eq(r.status, 200, "%s", r.body);
    harness_resp_free(&r);
    admin_keys("/keys/inspect", "{\"key\":\"after-1\",\"scope\":{\"X-Tenant\":\"acme\"}}", &r);
    cr_assert(strstr(r.body, "\"state\":\"done\""), "not found under the new prefix: %s", r.body);
    harness_resp_free(&r);
    /* another tenant is another key, under the new scope */
    admin_keys("/keys/inspect", "{\"key\":\"after-1\",\"scope\":{\"X-Tenant\":\"other\"}}", &r);
    cr_assert(strstr(r.body, "\"state\":\"absent\""), "%s", r.body);
    harness_resp_free(&r);
    /* and purge finds it too: the next request executes again */
    admin_keys("/keys/purge", "{\"key\":\"after-1\",\"scope\":{\"X-Tenant\":\"acme\"}}", &r);
    harness_resp_free(&r);
    cr_assert_eq(harness_redis(stack.redis_port, NULL, 0, "DBSIZE"), 0);
    cr_assert(harness_stop_clean(stack.a_pid, "proxyR", 10000));
    stack.a_pid = 0;
}
