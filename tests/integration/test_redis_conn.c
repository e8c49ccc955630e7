/*
 * The Redis connection layer (issue 16, parts 1, 5, 6, 7) against real redis-servers:
 * a frozen Redis is seen by the idle PING (/readyz 503 within 2 s), ACL users, WAIT with
 * a real replica, and without one under both redis-wait-policy values.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(redis_conn, .fini = stack_teardown, .timeout = 90);

static void get(uint16_t port, const char *path, struct harness_resp *r)
{
    char raw[256];

    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n", path);
    cr_assert_eq(harness_request(port, raw, strlen(raw), r, 5000), 0, "no answer for %s", path);
}

static int readyz(uint16_t admin)
{
    struct harness_resp r;
    int st;

    get(admin, "/readyz", &r);
    st = r.status;
    harness_resp_free(&r);
    return st;
}

/* A third replica on the stack with an admin endpoint and extra (NULL-terminated). */
static pid_t proxy_with_admin(const char *logname, uint16_t *port, uint16_t *admin,
                              const char *const extra[])
{
    const char *args[24] = {"--admin-listen"};
    char admin_arg[32];
    int n = 1;
    pid_t pid;

    *admin = harness_free_port();
    snprintf(admin_arg, sizeof(admin_arg), "127.0.0.1:%u", *admin);
    args[n++] = admin_arg;
    for (; extra && *extra && n < 23; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    pid = harness_stack_proxy(&stack, port, logname, args);
    cr_assert_gt(pid, 0, "%s did not start", logname);
    cr_assert_eq(harness_wait_port(*admin, 5000), 0, "the admin endpoint did not listen");
    return pid;
}

static char *scrape(uint16_t admin)
{
    struct harness_resp r;
    char *text;

    get(admin, "/metrics", &r);
    cr_assert_eq(r.status, 200);
    text = strdup(r.body);
    harness_resp_free(&r);
    return text;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* A Redis that stops answering while its socket stays open (SIGSTOP) is noticed without
 * any traffic: the idle connection's PING misses redis-timeout. Red without the PING:
 * /readyz stays 200 for as long as the process is frozen. */
Test(redis_conn, frozen_redis_turns_readyz_503_within_2s)
{
    uint16_t port, admin;
    pid_t pid;
    double t0, seen = -1;

    stack_start(NULL, NULL);
    pid = proxy_with_admin("proxyC", &port, &admin, NULL);
    for (int i = 0; i < 50 && readyz(admin) != 200; i++)
        usleep(100 * 1000);
    cr_assert_eq(readyz(admin), 200);
    cr_assert_eq(kill(stack.redis_pid, SIGSTOP), 0);
    t0 = harness_now_s();
    while (harness_now_s() - t0 < 5) {
        if (readyz(admin) == 503) {
            seen = harness_now_s() - t0;
            break;
        }
        usleep(50 * 1000);
    }
    kill(stack.redis_pid, SIGCONT);
    cr_assert_geq(seen, 0, "/readyz still 200 5 s after Redis froze");
    cr_assert_leq(seen, 2.0, "/readyz 503 only %.2f s after Redis froze", seen);
    /* and ready again once it answers */
    t0 = harness_now_s();
    while (readyz(admin) != 200 && harness_now_s() - t0 < 5)
        usleep(50 * 1000);
    cr_assert_eq(readyz(admin), 200, "not ready again after SIGCONT");
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* redis-user: AUTH user password (an ACL user, as managed Redis services hand out). The
 * connections really are that user's; a wrong password refuses keyed requests (503),
 * runs nothing as the default user, and is logged once per worker, not per attempt. */
Test(redis_conn, acl_user)
{
    const char *good[] = {"--redis-user", "idem", "--redis-password", "pw-1", NULL};
    const char *bad[] = {"--redis-user", "idem", "--redis-password", "wrong", NULL};
    struct harness_keyed q = {.path = "/pay", .key = "acl-1", .body = "{}"};
    struct harness_resp r;
    uint16_t port, admin;
    pid_t pid;
    char list[8192], *log;

    stack_start(NULL, NULL);
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "ACL SETUSER idem on >pw-1 ~* &* +@all"),
                  0);
    pid = proxy_with_admin("proxyC", &port, &admin, good);
    stack_post(port, &q, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    harness_resp_free(&r);
    stack_post(stack.a_port, &q, &r); /* the record is the same, whoever wrote it */
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_gt(harness_redis(stack.redis_port, list, sizeof(list), "CLIENT LIST"), 0);
    cr_assert(strstr(list, "user=idem "), "no connection as user idem:\n%s", list);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));

    pid = proxy_with_admin("proxyD", &port, &admin, bad);
    q.key = "acl-2";
    stack_post(port, &q, &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert_not_null(harness_header(&r, "Retry-After", 0, list, sizeof(list)));
    harness_resp_free(&r);
    cr_assert_eq(readyz(admin), 503, "ready although AUTH fails");
    usleep(2500 * 1000); /* several reconnect attempts */
    log = harness_read_log("proxyD");
    cr_assert(log && strstr(log, "AUTH failed on 127.0.0.1:"), "%s", log ? log : "");
    cr_assert(strstr(log, "as user idem: WRONGPASS"), "%s", log);
    /* one client per worker (2) and the main thread's (admin /keys): logged once each,
     * while the back-off made several attempts */
    cr_assert_leq(count(log, "AUTH failed"), 3, "%s", log);
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyD", 10000));
    cr_assert_eq(harness_executions(stack.up_port, "acl-2"), 0);
}

/* The first key the record value names in Redis at port (KEYS is fine on a test node). */
static int keys_on(uint16_t port, char *buf, size_t len)
{
    return (int)harness_redis(port, buf, len, "KEYS *");
}

/* redis-wait 1 with a real replica: the claim and the record are acknowledged by it
 * before the client is answered, so the replica holds the record when the answer comes. */
Test(redis_conn, wait_with_a_replica)
{
    /* the replica's acknowledgement is a round trip through it (REPLCONF GETACK): on a
     * loaded machine (CI, the ASan pass beside other tests) 200 ms was sometimes short */
    const char *extra[] = {"--redis-wait", "1,1000ms", "--redis-timeout", "2500ms", NULL};
    struct harness_keyed q = {.path = "/pay", .key = "w-1", .body = "{\"amount\":1}"};
    struct harness_resp r;
    uint16_t rport, port, admin;
    char arg[64], buf[8192], *m;
    pid_t rpid, pid;
    const char *replica_extra[3] = {"--replicaof", arg, NULL};

    stack_start(NULL, NULL);
    snprintf(arg, sizeof(arg), "127.0.0.1 %u", stack.redis_port);
    rpid = harness_start_redis(&rport, "replica", replica_extra);
    cr_assert_gt(rpid, 0);
    for (int i = 0; i < 100; i++) {
        if (harness_redis(stack.redis_port, buf, sizeof(buf), "INFO replication") > 0 &&
            strstr(buf, "state=online"))
            break;
        usleep(100 * 1000);
    }
    cr_assert(strstr(buf, "state=online"), "the replica did not sync:\n%s", buf);
    pid = proxy_with_admin("proxyC", &port, &admin, extra);
    stack_post(port, &q, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(!harness_replayed(&r));
    harness_resp_free(&r);
    /* at once, no polling: WAIT confirmed the record on the replica before the answer */
    cr_assert_eq(keys_on(rport, buf, sizeof(buf)), 1, "the replica has no record yet");
    stack_post(port, &q, &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    m = scrape(admin);
    /* claim + record of the first request; the replay's claim writes nothing but is
     * followed by WAIT too */
    cr_assert_geq(harness_metric(m, "idemproxy_redis_wait_total{result=\"ok\"}"), 2, "%s", m);
    cr_assert_eq(harness_metric(m, "idemproxy_redis_wait_total{result=\"short\"}"), 0, "%s", m);
    free(m);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
    cr_assert_eq(harness_executions(stack.up_port, "w-1"), 1);
    harness_stop(rpid, SIGTERM, 5000);
}

/* redis-wait 1 with no replica, policy fail (the default): the claim is not confirmed,
 * so it is given back and answered 503 + Retry-After; nothing is forwarded. */
Test(redis_conn, wait_without_replica_fails_closed)
{
    const char *extra[] = {"--redis-wait", "1,50ms", NULL};
    struct harness_keyed q = {.path = "/pay", .key = "w-2", .body = "{}"};
    struct harness_resp r;
    uint16_t port, admin;
    char buf[256], *m;
    pid_t pid;

    stack_start(NULL, NULL);
    pid = proxy_with_admin("proxyC", &port, &admin, extra);
    stack_post(port, &q, &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert(strstr(r.body, "could not confirm the claim on its replicas"), "%s", r.body);
    cr_assert_str_eq(harness_header(&r, "Retry-After", 0, buf, sizeof(buf)), "1");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "w-2"), 0);
    /* the claim was released: a proxy without WAIT executes the retry */
    for (int i = 0; i < 20 && keys_on(stack.redis_port, buf, sizeof(buf)) != 0; i++)
        usleep(50 * 1000);
    cr_assert_eq(keys_on(stack.redis_port, buf, sizeof(buf)), 0, "the claim was not released");
    m = scrape(admin);
    cr_assert_eq(harness_metric(m, "idemproxy_claims_failed_closed_total{reason=\"wait\"}"), 1,
                 "%s", m);
    cr_assert_geq(harness_metric(m, "idemproxy_redis_wait_total{result=\"short\"}"), 1, "%s", m);
    free(m);
    stack_post(stack.a_port, &q, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "w-2"), 1);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* policy degrade: forwarded and counted; the record is not confirmed either, so the
 * client gets its answer at once while the record is asked again until the lease ends
 * (then counted as unconfirmed). A retry replays it (it is on the primary). */
Test(redis_conn, wait_without_replica_degrades)
{
    const char *extra[] = {"--redis-wait", "1,50ms", "--redis-wait-policy", "degrade", "--lease",
                           "1s",           NULL};
    struct harness_keyed q = {.path = "/pay", .key = "w-3", .body = "{}"};
    struct harness_resp r;
    uint16_t port, admin;
    char *m = NULL, *first;
    pid_t pid;

    stack_start(NULL, NULL);
    pid = proxy_with_admin("proxyC", &port, &admin, extra);
    stack_post(port, &q, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_gt(r.body_len, 0, "no body");
    first = strdup(r.body);
    harness_resp_free(&r);
    stack_post(stack.a_port, &q, &r);
    cr_assert(harness_replayed(&r), "%d %s", r.status, r.body);
    cr_assert_str_eq(r.body, first, "the answer given before the record was confirmed differs");
    free(first);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "w-3"), 1);
    for (int i = 0; i < 40; i++) {
        free(m);
        m = scrape(admin);
        if (harness_metric(m, "idemproxy_records_unconfirmed_total") >= 1)
            break;
        usleep(100 * 1000);
    }
    cr_assert_eq(harness_metric(m, "idemproxy_claims_unconfirmed_total"), 1, "%s", m);
    cr_assert_eq(harness_metric(m, "idemproxy_records_unconfirmed_total"), 1, "%s", m);
    cr_assert_geq(harness_metric(m, "idemproxy_records_retried_total"), 1, "%s", m);
    free(m);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* WAIT blocks its connection for its whole timeout when replicas are short: WAITs sent
 * one per command would queue up (8 claims x 200 ms, past redis-timeout), the connection
 * would be dropped and every command on it lost — as a storm across a Sentinel crash
 * showed (records lost until the lease ran out, then executed again). One WAIT at a time
 * covers every command sent before it: 8 concurrent claims are all answered. */
Test(redis_conn, short_waits_do_not_time_out_the_connection)
{
    const char *extra[] = {
        "--redis-wait", "1,200ms", "--redis-wait-policy", "degrade", "--workers", "1", NULL};
    struct harness_keyed q = {.path = "/pay", .body = "{}"};
    struct harness_resp r;
    uint16_t port, admin;
    char keys[8][16], *log;
    int fds[8];
    pid_t pid;

    stack_start(NULL, NULL);
    pid = proxy_with_admin("proxyC", &port, &admin, extra);
    for (int i = 0; i < 8; i++) {
        snprintf(keys[i], sizeof(keys[i]), "ws-%d", i);
        q.key = keys[i];
        cr_assert_geq(fds[i] = harness_keyed_send(port, &q), 0);
    }
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(harness_read_response(fds[i], &r, 0, 10000), 0);
        cr_assert_eq(r.status, 200, "%s: %d %s", keys[i], r.status, r.body);
        harness_resp_free(&r);
        close(fds[i]);
        cr_assert_eq(harness_executions(stack.up_port, keys[i]), 1);
    }
    log = harness_read_log("proxyC");
    cr_assert_null(strstr(log, "no answer within redis-timeout"), "%s", log);
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* A connection whose SCRIPT LOAD is refused (here the ACL forbids SCRIPT; in production
 * a Redis still loading its data answers LOADING) is made again until it works: before,
 * it stayed connected and not ready until something else broke it. */
Test(redis_conn, refused_script_load_is_retried_until_ready)
{
    const char *extra[] = {"--redis-user", "idem", "--redis-password", "pw-1", NULL};
    uint16_t port, admin;
    pid_t pid;
    double t0;
    char *log;

    stack_start(NULL, NULL);
    cr_assert_geq(
        harness_redis(stack.redis_port, NULL, 0, "ACL SETUSER idem on >pw-1 ~* &* +@all -script"),
        0);
    pid = proxy_with_admin("proxyC", &port, &admin, extra);
    usleep(500 * 1000);
    cr_assert_eq(readyz(admin), 503, "ready without its scripts");
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "ACL SETUSER idem +script"), 0);
    t0 = harness_now_s();
    while (readyz(admin) != 200 && harness_now_s() - t0 < 5)
        usleep(50 * 1000);
    cr_assert_eq(readyz(admin), 200, "not ready once SCRIPT LOAD is allowed");
    log = harness_read_log("proxyC");
    cr_assert(log && strstr(log, "SCRIPT LOAD"), "%s", log ? log : "");
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* Issue 16, part 2: a claim whose connection is lost after Redis ran it (its reply never
 * arrives: a relay cuts the stream there) is sent again on the next connection, finds
 * its own token and reads CLAIMED: the request goes on and executes once. Before, it
 * was answered 503 while its claim held the key until the lease ran out (the client's
 * retry: 409). */
Test(redis_conn, a_claim_whose_reply_was_lost_is_sent_again)
{
    char redis_arg[32], *m;
    const char *extra[] = {"--redis", redis_arg, "--workers", "1", NULL};
    struct harness_keyed q = {.path = "/pay", .key = "lost-reply", .body = "{}"};
    struct harness_relay *relay;
    struct harness_resp r;
    uint16_t port, admin;
    double t0;
    pid_t pid;

    stack_start(NULL, NULL);
    cr_assert_not_null(relay = harness_relay_start(stack.redis_port));
    snprintf(redis_arg, sizeof(redis_arg), "127.0.0.1:%u", harness_relay_port(relay));
    pid = proxy_with_admin("proxyC", &port, &admin, extra);
    for (t0 = harness_now_s(); readyz(admin) != 200; usleep(20 * 1000))
        cr_assert_lt(harness_now_s() - t0, 5.0, "not ready through the relay");
    harness_relay_cut(relay, "$3\r\nSET\r\n"); /* the claim: SET key P... NX GET PX */
    stack_post(port, &q, &r);
    cr_assert_eq(harness_relay_cuts(relay), 1, "the claim's reply was not cut");
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "lost-reply"), 1);
    stack_post(port, &q, &r);
    cr_assert(harness_replayed(&r), "%d %s", r.status, r.body);
    harness_resp_free(&r);
    m = scrape(admin);
    cr_assert_eq(harness_metric(m, "idemproxy_redis_resends_total"), 1, "%s", m);
    free(m);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
    harness_relay_stop(relay);
}
