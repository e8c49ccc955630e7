/*
 * The admin endpoint (issue 10, part): /metrics checked by a real consumer (promtool)
 * on a live scrape, with values that move as requests are made; /healthz; /readyz
 * following Redis and the drain; never reachable through the proxy port.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(admin, .fini = stack_teardown, .timeout = 60);

static uint16_t admin_port;
static char admin_arg[32];

/* token and more_upstream: NULL for none */
static void start_with2(const char *token, const char *more_upstream)
{
    const char *extra[7] = {"--admin-listen", admin_arg};
    int n = 2;

    if (more_upstream) {
        extra[n++] = "--upstream";
        extra[n++] = more_upstream;
    }
    if (token) {
        extra[n++] = "--admin-token";
        extra[n++] = token;
    }

    admin_port = harness_free_port();
    snprintf(admin_arg, sizeof(admin_arg), "127.0.0.1:%u", admin_port);
    stack_start(NULL, NULL);
    /* replica A again, with the admin endpoint (one port: B cannot have it too) */
    cr_assert(harness_stop_clean(stack.a_pid, "proxyA", 10000), "proxyA did not exit cleanly");
    stack.a_pid = harness_stack_proxy(&stack, &stack.a_port, "proxyA2", extra);
    cr_assert_gt(stack.a_pid, 0);
    /* the admin listener comes up after the workers */
    cr_assert_eq(harness_wait_port(admin_port, 5000), 0, "the admin endpoint did not listen");
}

static void start_with(const char *token)
{
    start_with2(token, NULL);
}

static void start(void)
{
    start_with(NULL);
}

static void get(uint16_t port, const char *path, struct harness_resp *r)
{
    char raw[256];

    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n", path);
    cr_assert_eq(harness_request(port, raw, strlen(raw), r, 5000), 0, "no answer for %s", path);
}

static char *scrape(void)
{
    struct harness_resp r;
    char buf[128], *text;

    get(admin_port, "/metrics", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(harness_header(&r, "Content-Type", 0, buf, sizeof(buf)),
                     "text/plain; version=0.0.4");
    text = strdup(r.body);
    harness_resp_free(&r);
    return text;
}

static void promtool_check(const char *text)
{
    char path[512], cmd[1200];
    FILE *f;
    int st;

    snprintf(path, sizeof(path), "%s/metrics.txt", harness_tmpdir());
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s.out 2>&1", path, path);
    st = system(cmd);
    if (st != 0) {
        snprintf(cmd, sizeof(cmd), "cat %s.out >&2", path);
        (void)!system(cmd);
    }
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool check metrics failed (%d)", st);
}

Test(admin, metrics_pass_promtool_and_move_with_requests)
{
    struct harness_keyed q = {.method = "POST", .path = "/pay", .key = "m1", .body = "{}"};
    struct harness_resp r;
    char *before, *after;

    start();
    before = scrape();
    promtool_check(before);
    stack_post(stack.a_port, &q, &r); /* executed */
    harness_resp_free(&r);
    stack_post(stack.a_port, &q, &r); /* replayed */
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    get(stack.a_port, "/free", &r); /* keyless */
    harness_resp_free(&r);
    after = scrape();
    promtool_check(after);
    cr_assert_eq(harness_metric(after, "idemproxy_requests_total{outcome=\"executed\"}"), 1, "%s",
                 after);
    {
        char series[96];
        snprintf(series, sizeof(series), "idemproxy_redis_node_workers{node=\"%s\"}",
                 stack.redis_arg);
        cr_assert_eq(harness_metric(after, series), 2, "%s", after); /* both workers */
    }
    cr_assert_eq(harness_metric(after, "idemproxy_requests_total{outcome=\"replayed\"}"), 1, "%s",
                 after);
    cr_assert_eq(harness_metric(after, "idemproxy_requests_total{outcome=\"keyless\"}"), 1, "%s",
                 after);
    cr_assert_eq(harness_metric(after, "idemproxy_request_duration_seconds_count") -
                     harness_metric(before, "idemproxy_request_duration_seconds_count"),
                 3);
    cr_assert_eq(harness_metric(after, "idemproxy_upstream_duration_seconds_count"), 2, "%s",
                 after);
    cr_assert_eq(harness_metric(after, "idemproxy_redis_duration_seconds_count"), 2, "%s", after);
    cr_assert_geq(harness_metric(after, "idemproxy_redis_commands_total") -
                      harness_metric(before, "idemproxy_redis_commands_total"),
                  3, "claim, record, claim");
    cr_assert_eq(harness_metric(after, "idemproxy_redis_ready_workers"), 2, "%s", after);
    cr_assert_eq(harness_metric(after, "idemproxy_keyed_requests_in_flight"), 0, "%s", after);
    cr_assert_geq(harness_metric(after, "idemproxy_upstream_connections_opened_total"), 1);
    cr_assert(strstr(after, "idemproxy_build_info{version=\""), "%s", after);
    cr_assert_eq(harness_metric(after, "idemproxy_redis_errors_total"), 0, "%s", after);
    free(before);
    free(after);
    /* Redis full (noeviction): the claim fails with an OOM error reply, counted */
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "CONFIG SET maxmemory 1"), 0);
    q.key = "m2";
    stack_post(stack.a_port, &q, &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    harness_resp_free(&r);
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "CONFIG SET maxmemory 0"), 0);
    after = scrape();
    promtool_check(after);
    cr_assert_geq(harness_metric(after, "idemproxy_redis_errors_total"), 1, "%s", after);
    free(after);
}

/* Per upstream: a replica that refuses connections shows its failovers and back-off. */
Test(admin, per_upstream_failovers_backoffs_and_up)
{
    char dead[32], series[96], live[32], *m;
    struct harness_resp r;

    snprintf(dead, sizeof(dead), "127.0.0.1:%u", harness_free_port()); /* nobody listens */
    start_with2(NULL, dead);
    snprintf(live, sizeof(live), "%s", stack.up_arg);
    for (int i = 0; i < 6; i++) {
        get(stack.a_port, "/free", &r); /* round robin: some try the dead one first */
        cr_assert_eq(r.status, 200);
        harness_resp_free(&r);
    }
    m = scrape();
    promtool_check(m);
    snprintf(series, sizeof(series), "idemproxy_upstream_failovers_total{upstream=\"%s\"}", dead);
    cr_assert_geq(harness_metric(m, series), 1, "%s", m);
    snprintf(series, sizeof(series), "idemproxy_upstream_backoffs_total{upstream=\"%s\"}", dead);
    cr_assert_geq(harness_metric(m, series), 1, "%s", m);
    snprintf(series, sizeof(series), "idemproxy_upstream_up{upstream=\"%s\"}", dead);
    cr_assert_eq(harness_metric(m, series), 0, "%s", m);
    snprintf(series, sizeof(series), "idemproxy_upstream_failovers_total{upstream=\"%s\"}", live);
    cr_assert_eq(harness_metric(m, series), 0, "%s", m);
    snprintf(series, sizeof(series), "idemproxy_upstream_up{upstream=\"%s\"}", live);
    cr_assert_eq(harness_metric(m, series), 1, "%s", m);
    free(m);
}

Test(admin, health_and_readiness_follow_redis_and_the_drain)
{
    struct harness_resp r;
    int fd, st;
    char raw[] = "GET /slow/2500 HTTP/1.1\r\nHost: a\r\n\r\n";

    start();
    get(admin_port, "/healthz", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "{\"status\":\"ok\"}\n");
    harness_resp_free(&r);
    /* ready once every worker's Redis connection has its scripts (a condition: under
     * ASan the admin listener can be up before the workers are connected) */
    for (int i = 0; i < 100; i++) {
        get(admin_port, "/readyz", &r);
        if (r.status == 200)
            break;
        harness_resp_free(&r);
        usleep(50 * 1000);
    }
    cr_assert_eq(r.status, 200, "%s", r.body);
    {
        char want[64];
        snprintf(want, sizeof(want), "\"redis\":[\"%s\"]", stack.redis_arg);
        cr_assert(strstr(r.body, want), "readiness does not name the node: %s", r.body);
    }
    harness_resp_free(&r);
    /* Redis gone: not ready (the proxy keeps serving keyless traffic) */
    cr_assert_geq(harness_stop(stack.redis_pid, SIGKILL, 5000), 0);
    usleep(300 * 1000);
    get(admin_port, "/readyz", &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert(strstr(r.body, "redis not ready"), "%s", r.body);
    harness_resp_free(&r);
    cr_assert_gt(harness_restart_redis(stack.redis_port, "redis"), 0);
    /* the reconnect back-off is at most 200 ms; 10 s bounds a loaded machine */
    for (int i = 0; i < 100; i++) {
        get(admin_port, "/readyz", &r);
        st = r.status;
        harness_resp_free(&r);
        if (st == 200)
            break;
        usleep(100 * 1000);
    }
    cr_assert_eq(st, 200, "ready again once Redis is back");
    /* draining: 503 while the in-flight request finishes */
    fd = harness_connect(stack.a_port);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    usleep(200 * 1000);
    kill(stack.a_pid, SIGTERM);
    usleep(200 * 1000);
    get(admin_port, "/readyz", &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert(strstr(r.body, "\"draining\""), "%s", r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    close(fd);
    st = harness_stop(stack.a_pid, 0, 5000);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %d", st);
    stack.a_pid = 0;
}

Test(admin, only_on_its_own_listener)
{
    struct harness_resp r;

    start();
    get(stack.a_port, "/metrics", &r); /* the proxy port forwards it to the upstream */
    cr_assert_null(strstr(r.body, "idemproxy_build_info"), "metrics leaked to the proxy port");
    harness_resp_free(&r);
    get(admin_port, "/nope", &r);
    cr_assert_eq(r.status, 404);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, NULL), 0);
}

/* POST path on the admin port with body and (token NULL: no) Authorization. */
static void admin_post(const char *path, const char *token, const char *body,
                       struct harness_resp *r)
{
    char raw[2048], auth[128] = "";

    if (token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
    snprintf(raw, sizeof(raw),
             "POST %s HTTP/1.1\r\nHost: admin\r\n%sContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             path, auth, strlen(body), body);
    cr_assert_eq(harness_request(admin_port, raw, strlen(raw), r, 5000), 0, "no answer");
}

static void keyed_as(uint16_t port, const char *path, const char *key, const char *auth,
                     struct harness_resp *r)
{
    struct harness_keyed q = {
        .method = "POST", .path = path, .key = key, .auth = auth, .body = "{}"};

    stack_post(port, &q, r);
}

Test(admin, keys_routes_are_off_without_a_token)
{
    struct harness_resp r;

    start();
    admin_post("/keys/inspect", "anything", "{\"key\":\"k\",\"scope\":{}}", &r);
    cr_assert_eq(r.status, 403, "%s", r.body);
    harness_resp_free(&r);
}

Test(admin, inspect_and_purge_a_key)
{
    const char *tok = "s3cret-admin";
    const char *mine = "{\"key\":\"order-9\",\"scope\":{\"Authorization\":\"Bearer alice\"}}";
    struct harness_resp r;
    char *log;
    int fd;

    start_with(tok);
    keyed_as(stack.a_port, "/pay", "order-9", "Bearer alice", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    /* the token is required, and compared */
    admin_post("/keys/inspect", NULL, mine, &r);
    cr_assert_eq(r.status, 401);
    harness_resp_free(&r);
    admin_post("/keys/inspect", "s3cret-admiN", mine, &r);
    cr_assert_eq(r.status, 401);
    harness_resp_free(&r);
    /* inspect: state, status, size, time left; the body only when asked for */
    admin_post("/keys/inspect", tok, mine, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strstr(r.body, "\"state\":\"done\"") && strstr(r.body, "\"status\":200") &&
                  strstr(r.body, "\"size\":") && strstr(r.body, "\"ttl_ms\":") &&
                  strstr(r.body, "\"age_ms\":"),
              "%s", r.body);
    cr_assert_null(strstr(r.body, "body_base64"), "the body was shown unasked: %s", r.body);
    harness_resp_free(&r);
    admin_post("/keys/inspect", tok,
               "{\"key\":\"order-9\",\"scope\":{\"Authorization\":\"Bearer alice\"},"
               "\"body\":true}",
               &r);
    cr_assert(strstr(r.body, "\"body_base64\":\""), "%s", r.body);
    harness_resp_free(&r);
    /* another caller's scope is another key */
    admin_post("/keys/inspect", tok,
               "{\"key\":\"order-9\",\"scope\":{\"Authorization\":\"Bearer bob\"}}", &r);
    cr_assert(strstr(r.body, "\"state\":\"absent\""), "%s", r.body);
    harness_resp_free(&r);
    /* purge a recorded key: the next request executes again */
    admin_post("/keys/purge", tok, mine, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    harness_resp_free(&r);
    keyed_as(stack.b_port, "/pay", "order-9", "Bearer alice", &r);
    cr_assert_not(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "order-9"), 2);
    /* a pending key: only with force */
    {
        struct harness_keyed q = {.method = "POST",
                                  .path = "/slow/1500",
                                  .key = "stuck",
                                  .auth = "Bearer alice",
                                  .body = "{}"};
        fd = harness_keyed_send(stack.a_port, &q);
        cr_assert_geq(fd, 0);
    }
    usleep(300 * 1000);
    admin_post("/keys/purge", tok,
               "{\"key\":\"stuck\",\"scope\":{\"Authorization\":\"Bearer alice\"}}", &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    harness_resp_free(&r);
    admin_post("/keys/purge", tok,
               "{\"key\":\"stuck\",\"scope\":{\"Authorization\":\"Bearer alice\"},\"force\":true}",
               &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    harness_resp_free(&r);
    close(fd);
    /* bad bodies */
    admin_post("/keys/inspect", tok, "{\"key\":\"x\",\"scop\":{}}", &r);
    cr_assert_eq(r.status, 400);
    harness_resp_free(&r);
    admin_post("/keys/inspect", tok, "{\"key\":\"x\",\"scope\":{\"Bad Name\":\"v\"}}", &r);
    cr_assert_eq(r.status, 400);
    harness_resp_free(&r);
    admin_post("/keys/inspect", tok, "not json", &r);
    cr_assert_eq(r.status, 400);
    harness_resp_free(&r);
    /* every purge is logged, never with the key */
    log = harness_read_log("proxyA2");
    cr_assert(log && strstr(log, "purged record") && strstr(log, "(forced)"), "%s", log);
    cr_assert_null(strstr(log, "order-9"), "the raw key reached the log");
    free(log);
}
