/*
 * The idempotency engine when things break: a replica killed or frozen mid-request,
 * Redis frozen or restarted, the maxmemory-policy warning.
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
#include "stack_fixture.h"

TestSuite(failures, .fini = stack_teardown, .timeout = 120);

/* POST path with key and the body {} (no Content-Type). */
static struct harness_keyed keyed(const char *path, const char *key)
{
    return (struct harness_keyed){.method = "POST", .path = path, .key = key, .body = "{}"};
}

static void post(uint16_t port, const char *path, const char *key, struct harness_resp *r)
{
    struct harness_keyed q = keyed(path, key);

    stack_post(port, &q, r);
}

/* Send a keyed request and leave it running; returns the client fd. */
static int post_async(uint16_t port, const char *path, const char *key)
{
    struct harness_keyed q = keyed(path, key);
    int fd = harness_keyed_send(port, &q);

    cr_assert_geq(fd, 0, "could not send %s %s", path, key);
    return fd;
}

/* Send path/key to replica A, and SIGKILL A once the upstream has the request (not after
 * a fixed sleep: a loaded machine may not have forwarded it yet). */
static void kill_a_with_request_at_upstream(const char *path, const char *key)
{
    int fd = post_async(stack.a_port, path, key);
    double t0 = harness_now_s();

    while (harness_executions(stack.up_port, key) < 1) {
        cr_assert_lt(harness_now_s() - t0, 5.0, "replica A never forwarded the request");
        usleep(20 * 1000);
    }
    cr_assert_eq(harness_stop(stack.a_pid, SIGKILL, 5000) >= 0, 1);
    stack.a_pid = 0;
    close(fd);
}

Test(failures, claim_of_a_killed_replica_expires_with_its_lease)
{
    const char *extra[] = {"--lease", "1s", NULL};
    struct harness_resp r;
    double t0;

    stack_start(extra, NULL);
    kill_a_with_request_at_upstream("/slow/3000", "orphan");
    post(stack.b_port, "/slow/3000", "orphan", &r);
    cr_assert_eq(r.status, 409, "the dead replica's claim should still hold: %d", r.status);
    harness_resp_free(&r);
    /* after the lease, the key is free again (the crash may have cost an execution) */
    t0 = harness_now_s();
    for (;;) {
        post(stack.b_port, "/status/201", "orphan2", &r); /* a different key: proves B works */
        harness_resp_free(&r);
        post(stack.b_port, "/slow/3000", "orphan", &r);
        if (r.status == 200)
            break;
        cr_assert_eq(r.status, 409);
        harness_resp_free(&r);
        cr_assert_lt(harness_now_s() - t0, 5.0, "claim did not expire");
        usleep(200 * 1000);
    }
    cr_assert_not(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "orphan"), 2);
}

/* How many times Redis ran cmd since the last CONFIG RESETSTAT (INFO commandstats). */
static long redis_calls(const char *cmd)
{
    char info[8192], want[64];
    const char *at;

    cr_assert_gt(harness_redis(stack.redis_port, info, sizeof(info), "INFO commandstats"), 0);
    snprintf(want, sizeof(want), "cmdstat_%s:calls=", cmd);
    at = strstr(info, want);
    return at ? atol(at + strlen(want)) : 0;
}

/*
 * In wait mode, the claim of a replica that died publishes nothing: the waiter must look
 * again when that lease runs out — known from one PTTL after its claim found the key
 * pending — and then execute it. Not sooner and not by polling: a handful of claims, not
 * one every 50 ms.
 */
Test(failures, a_waiter_takes_over_a_dead_replicas_claim_when_its_lease_ends)
{
    const char *extra[] = {"--lease", "1s", "--in-flight", "wait", "--wait-timeout", "10s", NULL};
    struct harness_resp r;
    double t0;

    stack_start(extra, NULL);
    kill_a_with_request_at_upstream("/slow/1500", "widow");
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "CONFIG RESETSTAT"), 0);
    t0 = harness_now_s();
    post(stack.b_port, "/slow/1500", "widow", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert_not(harness_replayed(&r));
    harness_resp_free(&r);
    /* the lease had most of 1 s left; then 1.5 s at the upstream */
    cr_assert_lt(harness_now_s() - t0, 6.0);
    cr_assert_eq(harness_executions(stack.up_port, "widow"), 2);
    cr_assert_geq(redis_calls("pttl"), 1, "the lease left was never asked");
    cr_assert_leq(redis_calls("set"), 4, "the waiter polled: %ld claims", redis_calls("set"));
}

/* A key that holds something idemproxy never writes (another application under the same
 * key-prefix) is neither taken over nor forwarded: 500, and the value stays. */
Test(failures, a_value_idemproxy_did_not_write_is_500_and_left_alone)
{
    struct harness_resp r;
    char key[256], value[64];

    stack_start(NULL, NULL);
    post(stack.a_port, "/p", "foreign", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    cr_assert_gt(harness_redis(stack.redis_port, key, sizeof(key), "RANDOMKEY"), 0);
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "SET %s %s", key, "hello"), 0);
    post(stack.b_port, "/p", "foreign", &r);
    cr_assert_eq(r.status, 500, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "not one idemproxy wrote"), "%s", r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "foreign"), 1);
    cr_assert_eq(harness_redis(stack.redis_port, value, sizeof(value), "GET %s", key), 5);
    cr_assert_str_eq(value, "hello");
}

/*
 * The PTTL a waiter sends after its claim found the key pending only sets when it looks
 * again; when it fails (here Redis refuses it: the command is renamed away), the waiter
 * still gets the owner's answer when it is recorded, and nothing executes twice.
 */
Test(failures, a_waiter_whose_pttl_fails_still_gets_the_answer)
{
    const char *extra[] = {"--in-flight", "wait", "--wait-timeout", "10s", NULL};
    const char *redis_extra[] = {"--rename-command", "PTTL", "idemtest-no-pttl", NULL};
    struct harness_resp owner, waiter;
    char *log;
    int fd;
    double t0;

    stack_start(extra, redis_extra);
    fd = post_async(stack.a_port, "/slow/800", "no-pttl");
    t0 = harness_now_s();
    while (harness_executions(stack.up_port, "no-pttl") < 1) {
        cr_assert_lt(harness_now_s() - t0, 5.0, "replica A never forwarded the request");
        usleep(20 * 1000);
    }
    post(stack.b_port, "/slow/800", "no-pttl", &waiter);
    cr_assert_eq(harness_read_response(fd, &owner, 0, 5000), 0);
    close(fd);
    cr_assert_eq(owner.status, 200);
    cr_assert_eq(waiter.status, 200, "%d %s", waiter.status, waiter.body);
    cr_assert(harness_replayed(&waiter), "the waiter executed it again");
    cr_assert_str_eq(waiter.body, owner.body);
    harness_resp_free(&owner);
    harness_resp_free(&waiter);
    cr_assert_eq(harness_executions(stack.up_port, "no-pttl"), 1);
    log = harness_read_log("proxyB");
    cr_assert(log && strstr(log, "PTTL failed"), "the PTTL never failed:\n%s", log);
    free(log);
}

Test(failures, a_stale_owner_cannot_overwrite_the_record)
{
    /* leases long enough that a loaded CI machine (ASan, parallel tests) cannot starve
     * a live owner past one, short enough for a quick test */
    const char *extra[] = {"--lease", "1s", NULL};
    struct harness_resp r, winner;
    int fd;
    char *log;

    stack_start(extra, NULL);
    fd = post_async(stack.a_port, "/slow/1500", "stale");
    usleep(200 * 1000);
    kill(stack.a_pid, SIGSTOP); /* frozen: cannot renew its lease */
    usleep(1500 * 1000);        /* A renewed last at 0.33 s at the latest: its lease is over */
    post(stack.b_port, "/slow/1500", "stale", &winner); /* claims after the lease ran out */
    cr_assert_eq(winner.status, 200);
    cr_assert_not(harness_replayed(&winner));
    kill(stack.a_pid, SIGCONT);
    cr_assert_eq(harness_read_response(fd, &r, 0, 10000), 0);
    cr_assert_eq(r.status, 200, "the stale owner still answers its client");
    harness_resp_free(&r);
    close(fd);
    usleep(200 * 1000);
    log = harness_read_log("proxyA");
    cr_assert(log && strstr(log, "stale owner"), "no stale-owner refusal logged:\n%s", log);
    free(log);
    /* the record is the winner's */
    post(stack.a_port, "/slow/1500", "stale", &r);
    cr_assert(harness_replayed(&r), "%d %s", r.status, r.body);
    cr_assert_str_eq(r.body, winner.body);
    harness_resp_free(&r);
    harness_resp_free(&winner);
    cr_assert_eq(harness_executions(stack.up_port, "stale"), 2);
}

Test(failures, frozen_redis_gives_503_fast_and_keyless_traffic_flows)
{
    const char *extra[] = {"--redis-timeout", "300ms", NULL};
    struct harness_resp r;
    char buf[16];
    double t0;
    const char *get = "GET /free HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    stack_start(extra, NULL);
    post(stack.a_port, "/p", "before", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    kill(stack.redis_pid, SIGSTOP);
    t0 = harness_now_s();
    post(stack.a_port, "/p", "during", &r);
    cr_assert_lt(harness_now_s() - t0, 2.0, "503 took too long");
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert(strstr(r.body, "store-unavailable"));
    cr_assert_str_eq(harness_header(&r, "Retry-After", 0, buf, sizeof(buf)), "1");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "during"), 0, "forwarded without protection");
    /* keyless requests do not need Redis */
    cr_assert_eq(harness_request(stack.a_port, get, strlen(get), &r, 5000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    kill(stack.redis_pid, SIGCONT);
    /* recovers by itself */
    t0 = harness_now_s();
    for (;;) {
        post(stack.a_port, "/p", "after", &r);
        if (r.status == 200)
            break;
        harness_resp_free(&r);
        cr_assert_lt(harness_now_s() - t0, 10.0, "no recovery after Redis resumed");
        usleep(100 * 1000);
    }
    harness_resp_free(&r);
    post(stack.b_port, "/p", "before", &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
}

Test(failures, redis_restart_recovers_without_restarting_the_proxy)
{
    struct harness_resp r;
    double t0;

    stack_start(NULL, NULL);
    post(stack.a_port, "/p", "persisted", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    /* appendonly yes (conf/redis.conf): the record survives a clean restart */
    cr_assert_geq(harness_stop(stack.redis_pid, SIGTERM, 10000), 0);
    post(stack.a_port, "/p", "while-down", &r);
    cr_assert_eq(r.status, 503);
    harness_resp_free(&r);
    stack.redis_pid = harness_restart_redis(stack.redis_port, "redis");
    cr_assert_gt(stack.redis_pid, 0);
    t0 = harness_now_s();
    for (;;) {
        post(stack.b_port, "/p", "persisted", &r);
        if (r.status == 200)
            break;
        harness_resp_free(&r);
        cr_assert_lt(harness_now_s() - t0, 10.0, "no recovery after Redis restarted");
        usleep(100 * 1000);
    }
    cr_assert(harness_replayed(&r), "record lost across a Redis restart");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "persisted"), 1);
}

Test(failures, on_redis_error_pass_forwards_unprotected)
{
    const char *extra[] = {"--on-redis-error", "pass", "--redis-timeout", "200ms", NULL};
    struct harness_resp r;
    char *log;

    stack_start(extra, NULL);
    kill(stack.redis_pid, SIGSTOP);
    post(stack.a_port, "/p", "unprotected", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    post(stack.a_port, "/p", "unprotected", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    kill(stack.redis_pid, SIGCONT);
    cr_assert_eq(harness_executions(stack.up_port, "unprotected"), 2);
    log = harness_read_log("proxyA");
    cr_assert(log && strstr(log, "UNPROTECTED"), "%s", log);
    free(log);
}

Test(failures, eviction_policy_warning)
{
    const char *redis_extra[] = {"--maxmemory-policy", "allkeys-lru", NULL};
    char *log;
    double t0 = harness_now_s();

    stack_start(NULL, redis_extra);
    for (;;) {
        log = harness_read_log("proxyA");
        if (log && strstr(log, "maxmemory-policy is 'allkeys-lru'"))
            break;
        free(log);
        cr_assert_lt(harness_now_s() - t0, 5.0, "no eviction warning");
        usleep(100 * 1000);
    }
    free(log);
}

/* The lease is renewed while the upstream works: a request that outlives its lease
 * keeps its claim, and a duplicate during it is still refused. */
Test(failures, a_long_request_keeps_its_claim_past_the_lease)
{
    const char *extra[] = {"--lease", "1s", NULL};
    struct harness_resp r;
    int fd;

    stack_start(extra, NULL);
    fd = post_async(stack.a_port, "/slow/3500", "long-runner");
    usleep(2200 * 1000); /* two leases later */
    post(stack.b_port, "/slow/3500", "long-runner", &r);
    cr_assert_eq(r.status, 409, "the claim lapsed although its owner was alive: %d", r.status);
    harness_resp_free(&r);
    cr_assert_eq(harness_read_response(fd, &r, 0, 10000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    close(fd);
    post(stack.b_port, "/slow/3500", "long-runner", &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "long-runner"), 1);
}

/* SCRIPT FLUSH empties Redis's script cache: EVALSHA answers NOSCRIPT and the proxy
 * must fall back to EVAL without failing the request. */
Test(failures, flushed_script_cache_falls_back_to_eval)
{
    struct harness_resp r;

    stack_start(NULL, NULL);
    post(stack.a_port, "/p", "before-flush", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "SCRIPT FLUSH"), 0);
    post(stack.a_port, "/p", "after-flush", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    harness_resp_free(&r);
    post(stack.b_port, "/p", "after-flush", &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "after-flush"), 1);
}

Test(failures, redis_auth_from_flag_or_environment)
{
    const char *extra[] = {"--redis-password", "s3cret pw", NULL};
    const char *redis_extra[] = {"--requirepass", "s3cret pw", NULL};
    const char *wrong[] = {"--redis-password", "nope", NULL};
    struct harness_resp r;
    uint16_t c_port, d_port;
    pid_t c_pid, d_pid;
    char *log;

    stack_start(extra, redis_extra);
    post(stack.a_port, "/p", "authed", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    harness_resp_free(&r);
    post(stack.b_port, "/p", "authed", &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);

    /* the environment variable stands in for the directive */
    setenv("IDEMPROXY_REDIS_PASSWORD", "s3cret pw", 1);
    c_pid = harness_stack_proxy(&stack, &c_port, "proxyC", NULL);
    unsetenv("IDEMPROXY_REDIS_PASSWORD");
    cr_assert_gt(c_pid, 0);
    post(c_port, "/p", "authed", &r);
    cr_assert(harness_replayed(&r), "%d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert(harness_stop_clean(c_pid, "proxyC", 10000));

    /* a wrong password: keyed requests are refused (503) and the log says why */
    d_pid = harness_stack_proxy(&stack, &d_port, "proxyD", wrong);
    cr_assert_gt(d_pid, 0);
    post(d_port, "/p", "denied", &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    harness_resp_free(&r);
    log = harness_read_log("proxyD");
    cr_assert(log && strstr(log, "AUTH failed"), "%s", log ? log : "");
    free(log);
    cr_assert(harness_stop_clean(d_pid, "proxyD", 10000));
    cr_assert_eq(harness_executions(stack.up_port, "denied"), 0);
}
