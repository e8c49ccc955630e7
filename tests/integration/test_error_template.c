/*
 * error-template (issue 10): the proxy's own errors in the shape of the API in front of
 * it. On the wire: a recorded 504 outcome-unknown keeps the template's shape in its
 * record (the replay on the other replica is the same bytes), an early 400 and the
 * template's status are the template's. With a real client: stripe-node (tests/node,
 * installed with npm ci) driving two replicas — without the template, the old behaviour
 * (the proxy's 409/422/503 and a recorded 504 taken for successful objects, a recorded 504
 * retried), and with conf/error-templates/stripe.json — while this counts what reached
 * the proxies (access logs) and the upstream (its executions).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(error_template, .fini = stack_teardown, .timeout = 240);

#define STRIPE_TEMPLATE SOURCE_DIR "/conf/error-templates/stripe.json"

static char *body_of(const struct harness_resp *r)
{
    return strndup(r->body, r->body_len);
}

Test(error_template, a_recorded_504_keeps_the_templates_shape_on_both_replicas)
{
    const char *extra[] = {"--error-template", STRIPE_TEMPLATE, "--upstream-timeout", "300ms",
                           NULL};
    struct harness_keyed q = {.path = "/slow/2000", .key = "tmpl-504"};
    struct harness_resp first, again;
    char v[128], *b1, *b2;

    stack_start(extra, NULL);
    stack_post(stack.a_port, &q, &first);
    cr_assert_eq(first.status, 504, "%s", first.head);
    cr_assert_str_eq(harness_header(&first, "Content-Type", 0, v, sizeof(v)), "application/json");
    cr_assert_str_eq(harness_header(&first, "Stripe-Should-Retry", 0, v, sizeof(v)), "false");
    b1 = body_of(&first);
    cr_assert_eq(
        strncmp(b1, "{\"error\":{\"type\":\"api_error\",\"code\":\"outcome-unknown\",", 53), 0,
        "%s", b1);
    stack_post(stack.b_port, &q, &again);
    cr_assert_eq(again.status, 504, "%s", again.head);
    cr_assert(harness_replayed(&again), "%s", again.head);
    cr_assert_str_eq(harness_header(&again, "Stripe-Should-Retry", 0, v, sizeof(v)), "false",
                     "the template's headers are in the record");
    cr_assert_str_eq(harness_header(&again, "Content-Type", 0, v, sizeof(v)), "application/json");
    b2 = body_of(&again);
    cr_assert_str_eq(b2, b1, "the replay is the first answer, byte for byte");
    cr_assert_eq(harness_executions(stack.up_port, "tmpl-504"), 1);
    free(b1);
    free(b2);
    harness_resp_free(&first);
    harness_resp_free(&again);
}

Test(error_template, early_rejections_and_the_templates_status)
{
    const char *extra[] = {"--error-template", STRIPE_TEMPLATE, NULL};
    const char *bad = "POST /v1/charges HTTP/1.1\r\nHost: shop\r\nContent-Length: x\r\n\r\n";
    struct harness_keyed q = {.path = "/v1/charges", .key = "tmpl-422", .body = "amount=1"};
    struct harness_resp r;
    char v[128];

    stack_start(extra, NULL);
    /* fe_reject: a request the frontend refuses before any handler sees it */
    cr_assert_eq(harness_request(stack.a_port, bad, strlen(bad), &r, 5000), 0);
    cr_assert_eq(r.status, 400, "%s", r.head);
    cr_assert_str_eq(harness_header(&r, "Content-Type", 0, v, sizeof(v)), "application/json");
    cr_assert(strstr(r.body, "{\"error\":{\"type\":\"invalid_request_error\",\"code\":"
                             "\"invalid-content-length\","),
              "%s", r.body);
    harness_resp_free(&r);
    /* 422 key reused is answered 400, as Stripe does */
    stack_post(stack.a_port, &q, &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    q.body = "amount=2";
    stack_post(stack.b_port, &q, &r);
    cr_assert_eq(r.status, 400, "%s", r.head);
    cr_assert(strstr(r.body, "\"type\":\"idempotency_error\",\"code\":\"idempotency_key_reused\""),
              "%s", r.body);
    harness_resp_free(&r);
}

/* ---- stripe-node ---- */

/* Lines of the access log at path whose target is target (and outcome, unless NULL). */
static int log_count(const char *path, const char *target, const char *outcome)
{
    FILE *f = fopen(path, "r");
    char line[8192], t[256], o[64];
    int n = 0;

    cr_assert_not_null(f, "%s", path);
    snprintf(t, sizeof(t), "\"target\":\"%s\"", target);
    snprintf(o, sizeof(o), "\"outcome\":\"%s\"", outcome ? outcome : "");
    while (fgets(line, sizeof(line), f))
        n += strstr(line, t) && (!outcome || strstr(line, o));
    fclose(f);
    return n;
}

struct node_run {
    char log[2][512]; /* access logs: A and B (one file), the replica without Redis */
    char run[64];     /* the key prefix */
    uint16_t up_port;
};

/*
 * The stack (A and B: upstream-timeout 4s, the template or none, one access log) plus a
 * third replica whose Redis is a closed port (its own access log), then
 * tests/node/stripe_errors.mjs in mode. The replicas are stopped (their logs flushed)
 * before this returns.
 */
static void run_stripe_node(struct node_run *nr, const char *mode, const char *template_path)
{
    char a[16], b[16], dead[16], dead_redis[32], logname[32], *out;
    const char *extra[16];
    uint16_t dead_port;
    pid_t dead_pid, pid;
    int n = 0, st;

    snprintf(nr->run, sizeof(nr->run), "%s-%d-%ld", mode, (int)getpid(), (long)time(NULL));
    for (int i = 0; i < 2; i++) {
        snprintf(nr->log[i], sizeof(nr->log[i]), "%s/access-%s-%d.log", harness_tmpdir(), mode, i);
        unlink(nr->log[i]);
    }
    extra[n++] = "--upstream-timeout";
    extra[n++] = "4s"; /* the in-use request (2.5 s) keeps 1.5 s of margin on a loaded machine */
    if (template_path) {
        extra[n++] = "--error-template";
        extra[n++] = template_path;
    }
    extra[n++] = "--access-log";
    extra[n++] = nr->log[0];
    extra[n] = NULL;
    stack_start(extra, NULL);
    snprintf(dead_redis, sizeof(dead_redis), "127.0.0.1:%u", harness_free_port());
    extra[n - 1] = nr->log[1];
    extra[n++] = "--redis"; /* after the stack's own --redis: the later one counts */
    extra[n++] = dead_redis;
    extra[n++] = "--redis-timeout";
    extra[n++] = "100ms";
    extra[n] = NULL;
    dead_pid = harness_stack_proxy(&stack, &dead_port, "proxyDead", extra);
    cr_assert_gt(dead_pid, 0);
    nr->up_port = stack.up_port;

    snprintf(a, sizeof(a), "%u", stack.a_port);
    snprintf(b, sizeof(b), "%u", stack.b_port);
    snprintf(dead, sizeof(dead), "%u", dead_port);
    snprintf(logname, sizeof(logname), "node-%s", mode);
    {
        char *argv[] = {"/bin/bash",
                        SOURCE_DIR "/tests/node/run.sh",
                        "stripe_errors.mjs",
                        "--mode",
                        (char *)mode,
                        "--a",
                        a,
                        "--b",
                        b,
                        "--dead",
                        dead,
                        "--run",
                        nr->run,
                        NULL};
        pid = harness_spawn(logname, argv);
    }
    cr_assert_gt(pid, 0);
    /* npm ci the first time (a download), then about 6 s of scenarios */
    st = harness_stop(pid, 0, 180000);
    out = harness_read_log(logname);
    cr_assert_not_null(out);
    fprintf(stderr, "%s", out);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "stripe_errors.mjs --mode %s failed:\n%s", mode, out);
    cr_assert(strstr(out, "all checks passed"), "%s", out);
    free(out);
    /* stop the replicas: each flushes its access log on the way out */
    cr_assert(harness_stop_clean(dead_pid, "proxyDead", 10000));
    cr_assert(harness_stop_clean(stack.a_pid, "proxyA", 10000));
    cr_assert(harness_stop_clean(stack.b_pid, "proxyB", 10000));
    stack.a_pid = stack.b_pid = 0;
}

static long executions(const struct node_run *nr, const char *scenario)
{
    char key[128];

    snprintf(key, sizeof(key), "%s-%s", nr->run, scenario);
    return harness_executions(nr->up_port, key);
}

/* The reproduction: RFC 9457 bodies have no "error" member, so stripe-node resolves the
 * proxy's errors as objects, and it retries a recorded 504 that can never change. */
Test(error_template, stripe_node_without_a_template_takes_errors_for_objects)
{
    struct node_run nr;

    run_stripe_node(&nr, "plain", NULL);
    /* the recorded 504: 3 attempts per call; executed once, then 5 replays */
    cr_assert_eq(log_count(nr.log[0], "/slow/5000?s=unknown", NULL), 6);
    cr_assert_eq(log_count(nr.log[0], "/slow/5000?s=unknown", "outcome-unknown"), 1);
    cr_assert_eq(log_count(nr.log[0], "/slow/5000?s=unknown", "replayed"), 5);
    cr_assert_eq(executions(&nr, "unknown"), 1);
    cr_assert_eq(log_count(nr.log[0], "/slow/2500?s=inuse", "in-flight"), 3);
    cr_assert_eq(log_count(nr.log[1], "/v1/charges?s=store", "store-unavailable"), 3);
    cr_assert_eq(executions(&nr, "store"), 0);
}

Test(error_template, stripe_node_with_the_stripe_template)
{
    struct node_run nr;

    run_stripe_node(&nr, "stripe", STRIPE_TEMPLATE);
    /* a recorded 504: one attempt per call (Stripe-Should-Retry: false) */
    cr_assert_eq(log_count(nr.log[0], "/slow/5000?s=unknown", NULL), 2);
    cr_assert_eq(log_count(nr.log[0], "/slow/5000?s=unknown", "outcome-unknown"), 1);
    cr_assert_eq(log_count(nr.log[0], "/slow/5000?s=unknown", "replayed"), 1);
    cr_assert_eq(executions(&nr, "unknown"), 1);
    /* 409: three attempts while the first request ran, which executed once */
    cr_assert_eq(log_count(nr.log[0], "/slow/2500?s=inuse", "in-flight"), 3);
    cr_assert_eq(log_count(nr.log[0], "/slow/2500?s=inuse", NULL), 4);
    cr_assert_eq(executions(&nr, "inuse"), 1);
    /* 409, then a retry answered from the record */
    cr_assert_geq(log_count(nr.log[0], "/slow/1000?s=replay", "in-flight"), 1);
    cr_assert_eq(log_count(nr.log[0], "/slow/1000?s=replay", "replayed"), 1);
    cr_assert_eq(executions(&nr, "replay"), 1);
    /* 422 (answered 400): one attempt */
    cr_assert_eq(log_count(nr.log[0], "/v1/charges?s=reused", "mismatch"), 1);
    cr_assert_eq(log_count(nr.log[0], "/v1/charges?s=reused", NULL), 2);
    cr_assert_eq(executions(&nr, "reused"), 1);
    /* 503 store-unavailable: retried, nothing forwarded */
    cr_assert_eq(log_count(nr.log[1], "/v1/charges?s=store", "store-unavailable"), 3);
    cr_assert_eq(executions(&nr, "store"), 0);
}
