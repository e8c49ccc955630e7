/*
 * The idempotency engine end to end: a real redis-server, a test upstream that counts
 * executions per Idempotency-Key, and two idemproxy replicas (2 workers each).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "harness.h"
#include "http/http1.h"
#include "idem/idkey.h"
#include "idem/record.h"
#include "stack_fixture.h"

TestSuite(idem, .init = stack_setup, .fini = stack_teardown, .timeout = 90);

/* POST path with key (NULL: none), auth (NULL: none) and a JSON body. */
static void post(uint16_t port, const char *method, const char *path, const char *key,
                 const char *auth, const char *body, struct harness_resp *r)
{
    struct harness_keyed q = {.method = method,
                              .path = path,
                              .key = key,
                              .auth = auth,
                              .content_type = "application/json",
                              .body = body};

    stack_post(port, &q, r);
}

static void expect_problem(const struct harness_resp *r, int status, const char *slug)
{
    char buf[64], want[128];

    cr_assert_eq(r->status, status, "want %d %s, got %d: %s", status, slug, r->status, r->body);
    cr_assert_str_eq(harness_header(r, "Content-Type", 0, buf, sizeof(buf)),
                     "application/problem+json");
    snprintf(want, sizeof(want), "problem:%s\"", slug);
    cr_assert(strstr(r->body, want), "%s", r->body);
}

Test(idem, replay_on_the_same_and_the_other_replica)
{
    struct harness_resp first, again, other;

    post(stack.a_port, "POST", "/payments", "pay-1", NULL, "{\"amount\": 10}", &first);
    cr_assert_eq(first.status, 200);
    cr_assert_not(harness_replayed(&first));
    cr_assert(strstr(first.body, "[\"Idempotency-Key\", \"pay-1\"]"),
              "the key must reach the upstream unchanged: %s", first.body);
    post(stack.a_port, "POST", "/payments", "pay-1", NULL, "{\"amount\": 10}", &again);
    post(stack.b_port, "POST", "/payments", "pay-1", NULL, "{\"amount\": 10}", &other);
    cr_assert_eq(again.status, 200);
    cr_assert_eq(other.status, 200);
    cr_assert(harness_replayed(&again) && harness_replayed(&other));
    cr_assert_eq(again.body_len, first.body_len);
    cr_assert_str_eq(again.body, first.body);
    cr_assert_str_eq(other.body, first.body);
    cr_assert_eq(harness_executions(stack.up_port, "pay-1"), 1);
    /* one Redis key per record, with the configured prefix and a hex id */
    {
        char buf[256];
        cr_assert_eq(harness_redis(stack.redis_port, NULL, 0, "DBSIZE"), 1);
        cr_assert_gt(harness_redis(stack.redis_port, buf, sizeof(buf), "RANDOMKEY"), 0);
        cr_assert_eq(strncmp(buf, "idem:", 5), 0, "%s", buf);
        cr_assert_eq(strlen(buf), 5 + 64, "%s", buf);
        cr_assert_null(strstr(buf, "pay-1"), "the raw key must not be stored");
    }
    /* the replay is logged with level, worker and record id — never the raw key */
    {
        char *log = harness_read_log("proxyB");
        cr_assert(log && strstr(log, "info  w"), "no level/worker in:\n%s", log);
        cr_assert(strstr(log, ": replay 200"), "%s", log);
        cr_assert_null(strstr(log, "pay-1"), "the raw key reached the log:\n%s", log);
        free(log);
    }
    harness_resp_free(&first);
    harness_resp_free(&again);
    harness_resp_free(&other);
}

Test(idem, binary_answer_is_replayed_byte_exact)
{
    struct harness_resp first, other;
    char b1[64], b2[64];

    post(stack.a_port, "POST", "/bytes/200000", "bin-1", NULL, "x", &first);
    cr_assert_eq(first.status, 200);
    cr_assert_eq(first.body_len, 200000);
    post(stack.b_port, "POST", "/bytes/200000", "bin-1", NULL, "x", &other);
    cr_assert_eq(other.status, 200);
    cr_assert(harness_replayed(&other));
    cr_assert_eq(other.body_len, 200000);
    cr_assert_eq(memcmp(first.body, other.body, 200000), 0, "replayed bytes differ");
    cr_assert_str_eq(harness_header(&other, "Content-Type", 0, b2, sizeof(b2)),
                     harness_header(&first, "Content-Type", 0, b1, sizeof(b1)));
    cr_assert_eq(harness_executions(stack.up_port, "bin-1"), 1);
    harness_resp_free(&first);
    harness_resp_free(&other);
}

Test(idem, same_key_different_request_is_422)
{
    struct harness_resp r;

    post(stack.a_port, "POST", "/payments", "k-422", NULL, "{\"amount\": 10}", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/payments", "k-422", NULL, "{\"amount\": 11}", &r);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
    post(stack.a_port, "POST", "/payments/other", "k-422", NULL, "{\"amount\": 10}", &r);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
    post(stack.a_port, "PATCH", "/payments", "k-422", NULL, "{\"amount\": 10}", &r);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
    post(stack.a_port, "POST", "/payments?x=1", "k-422", NULL, "{\"amount\": 10}", &r);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "k-422"), 1);
}

Test(idem, invalid_keys_are_400_and_never_reach_redis)
{
    static const char *bad[] = {"\"\"", "\"unterminated", "\"a\"b", "\"bad\\escape\"", "a,b", "a b",
                                NULL};
    char longkey[300];
    struct harness_resp r;
    char raw[512];

    for (int i = 0; bad[i]; i++) {
        post(stack.a_port, "POST", "/p", bad[i], NULL, "{}", &r);
        expect_problem(&r, 400, "invalid-idempotency-key");
        harness_resp_free(&r);
    }
    memset(longkey, 'k', 256);
    longkey[256] = '\0';
    post(stack.a_port, "POST", "/p", longkey, NULL, "{}", &r);
    expect_problem(&r, 400, "invalid-idempotency-key");
    harness_resp_free(&r);
    longkey[255] = '\0'; /* exactly key-max-length is fine */
    post(stack.a_port, "POST", "/p", longkey, NULL, "{}", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    /* two key headers */
    snprintf(raw, sizeof(raw),
             "POST /p HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n"
             "Content-Length: 0\r\nConnection: close\r\n\r\n");
    cr_assert_eq(harness_request(stack.a_port, raw, strlen(raw), &r, 5000), 0);
    expect_problem(&r, 400, "invalid-idempotency-key");
    harness_resp_free(&r);
    /* only the one valid request made a record; the invalid ones executed nothing */
    cr_assert_eq(harness_redis(stack.redis_port, NULL, 0, "DBSIZE"), 1);
    cr_assert_eq(harness_executions(stack.up_port, NULL), 1);
}

Test(idem, quoted_and_bare_forms_are_the_same_key)
{
    struct harness_resp r;

    post(stack.a_port, "POST", "/p", "\"same-key\"", NULL, "{}", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/p", "same-key", NULL, "{}", &r);
    cr_assert(harness_replayed(&r), "sf-string \"same-key\" and token same-key differ");
    harness_resp_free(&r);
}

Test(idem, keys_are_scoped_by_authorization)
{
    struct harness_resp r1, r2, r3;

    post(stack.a_port, "POST", "/p", "shared", "Bearer alice", "{}", &r1);
    post(stack.a_port, "POST", "/p", "shared", "Bearer bob", "{}", &r2);
    post(stack.b_port, "POST", "/p", "shared", "Bearer alice", "{}", &r3);
    cr_assert_eq(r1.status, 200);
    cr_assert_eq(r2.status, 200);
    cr_assert_not(harness_replayed(&r2), "bob saw alice's answer");
    cr_assert(harness_replayed(&r3));
    cr_assert_str_eq(r3.body, r1.body);
    cr_assert_eq(harness_executions(stack.up_port, "shared"), 2);
    harness_resp_free(&r1);
    harness_resp_free(&r2);
    harness_resp_free(&r3);
}

Test(idem, unkeyed_traffic_never_touches_redis)
{
    struct harness_resp r;
    char raw[256];

    post(stack.a_port, "POST", "/p", NULL, NULL, "{}", &r); /* no key */
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    snprintf(raw, sizeof(raw),
             "GET /p HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: g1\r\n"
             "Connection: close\r\n\r\n"); /* GET is not a keyed method */
    cr_assert_eq(harness_request(stack.a_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_not(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_request(stack.b_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_not(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_redis(stack.redis_port, NULL, 0, "DBSIZE"), 0);
    cr_assert_eq(harness_executions(stack.up_port, "g1"), 2);
}

/* The statuses that say "not executed, try again" (release-statuses: 429 503) release
 * the key; every other final answer — a 500 after side effects, a 502/504 from a load
 * balancer in front of an app that goes on working — is recorded: at most once. */
Test(idem, only_not_executed_statuses_release_the_key)
{
    static const struct {
        const char *path, *key;
        int executions;
    } cases[] = {
        {"/status/503", "k-503", 2}, {"/status/429", "k-429", 2}, {"/status/500", "k-500", 1},
        {"/status/502", "k-502", 1}, {"/status/504", "k-504", 1}, {"/status/404", "k-404", 1},
    };
    struct harness_resp r;
    char want[32];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int status = atoi(cases[i].path + 8);
        post(stack.a_port, "POST", cases[i].path, cases[i].key, NULL, "{}", &r);
        cr_assert_eq(r.status, status, "%s: %d", cases[i].path, r.status);
        cr_assert_not(harness_replayed(&r));
        harness_resp_free(&r);
        post(stack.b_port, "POST", cases[i].path, cases[i].key, NULL, "{}", &r);
        cr_assert_eq(r.status, status);
        snprintf(want, sizeof(want), "status %d\n", status);
        cr_assert_str_eq(r.body, want);
        if (cases[i].executions == 1)
            cr_assert(harness_replayed(&r), "%s must be recorded and replayed", cases[i].path);
        else
            cr_assert_not(harness_replayed(&r), "%s must release the key", cases[i].path);
        harness_resp_free(&r);
        cr_assert_eq(harness_executions(stack.up_port, cases[i].key), cases[i].executions, "%s",
                     cases[i].path);
    }
}

/* One virtual host's recorded answer is never replayed for another: the same key and
 * caller on another Host is another request (422). The same host in another case is the
 * same one. */
Test(idem, a_key_is_bound_to_its_virtual_host)
{
    const char *fmt = "POST /pay HTTP/1.1\r\nHost: %s\r\nIdempotency-Key: vhost\r\n"
                      "Authorization: Bearer same\r\nContent-Length: 2\r\n"
                      "Connection: close\r\n\r\n{}";
    struct harness_resp r;
    char raw[256];

    snprintf(raw, sizeof(raw), fmt, "api-one.example");
    cr_assert_eq(harness_request(stack.a_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    snprintf(raw, sizeof(raw), fmt, "api-two.example");
    cr_assert_eq(harness_request(stack.b_port, raw, strlen(raw), &r, 5000), 0);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
    snprintf(raw, sizeof(raw), fmt, "API-ONE.example:8443"); /* same host, another port */
    cr_assert_eq(harness_request(stack.b_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "vhost"), 1);
}

/*
 * A record the previous release wrote stored the host-less fingerprint: it still
 * replays after the upgrade (a retry that crosses the upgrade is never executed again).
 * The record is written here as that release would have, straight into Redis.
 */
Test(idem, a_record_from_before_the_host_fingerprint_still_replays)
{
    const char *raw = "POST /pay HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: old-one\r\n"
                      "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    struct http1_head head, ans;
    struct http1_error err;
    struct evbuffer *body = evbuffer_new(), *rec = evbuffer_new(), *reply = evbuffer_new();
    uint8_t id[IDKEY_HASH_LEN], fp[IDKEY_HASH_LEN];
    char idhex[IDKEY_HEX_LEN + 1], fphex[IDKEY_HEX_LEN + 1], rkey[128];
    char *scope[] = {"Authorization"};
    const char *ans_raw = "HTTP/1.1 201 Created\r\nX-Old: yes\r\n\r\n";
    struct harness_resp r;
    size_t hlen = strstr(raw, "\r\n\r\n") + 4 - raw;

    cr_assert_eq(http1_parse_request(&head, raw, hlen, &err), 0, "%s", err.detail);
    evbuffer_add(body, "{}", 2);
    cr_assert_eq(idkey_record_id(&head, scope, 1, NULL, "old-one", 7, id), 0);
    cr_assert_eq(idkey_fingerprint(&head, body, NULL, 0, fp), 0);
    cr_assert_eq(http1_parse_response(&ans, ans_raw, strlen(ans_raw), &err), 0);
    evbuffer_add(reply, "made before the upgrade", 23);
    cr_assert_eq(record_encode(rec, 201, &ans, reply, 1700000000000ULL), 0);
    snprintf(rkey, sizeof(rkey), "idem:%s", idkey_hex(id, idhex));
    idkey_hex(fp, fphex);
    evbuffer_prepend(rec, fphex, IDKEY_HEX_LEN);
    evbuffer_prepend(rec, "D", 1);
    cr_assert_eq(harness_redis(stack.redis_port, NULL, 0, "SET %s %b PX 60000", rkey,
                               evbuffer_pullup(rec, -1), evbuffer_get_length(rec)),
                 2 /* "OK" */);
    cr_assert_eq(harness_request(stack.a_port, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 201, "%d %s", r.status, r.body);
    cr_assert(harness_replayed(&r));
    cr_assert_str_eq(r.body, "made before the upgrade");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "old-one"), 0);
    http1_head_clear(&head);
    http1_head_clear(&ans);
    evbuffer_free(body);
    evbuffer_free(rec);
    evbuffer_free(reply);
}

/* A replay is byte-exact down to the status line: the standard phrase (410 Gone) and an
 * upstream's own phrase alike. */
Test(idem, replay_keeps_the_reason_phrase)
{
    static const struct {
        const char *path, *key, *line;
    } cases[] = {
        {"/status/410", "k-410", "HTTP/1.1 410 Gone\r\n"},
        {"/reason/402", "k-402", "HTTP/1.1 402 Custom Reason\r\n"},
    };
    struct harness_resp r;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        post(stack.a_port, "POST", cases[i].path, cases[i].key, NULL, "{}", &r);
        cr_assert_eq(strncmp(r.head, cases[i].line, strlen(cases[i].line)), 0, "%s", r.head);
        harness_resp_free(&r);
        post(stack.b_port, "POST", cases[i].path, cases[i].key, NULL, "{}", &r);
        cr_assert(harness_replayed(&r));
        cr_assert_eq(strncmp(r.head, cases[i].line, strlen(cases[i].line)), 0, "replayed as: %.40s",
                     r.head);
        harness_resp_free(&r);
    }
}

/* A status outside 100-599 is not an answer: 502, and since the request reached the
 * upstream, its outcome is unknown — recorded as such, never executed again. */
Test(idem, status_outside_100_599_is_an_invalid_answer)
{
    struct harness_resp r;
    const char *get = "GET /status/600 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    cr_assert_eq(harness_request(stack.a_port, get, strlen(get), &r, 5000), 0);
    expect_problem(&r, 502, "upstream-failed");
    harness_resp_free(&r);
    post(stack.a_port, "POST", "/status/600", "k-600", NULL, "{}", &r);
    expect_problem(&r, 504, "outcome-unknown");
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/status/600", "k-600", NULL, "{}", &r);
    expect_problem(&r, 504, "outcome-unknown");
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "k-600"), 1);
}

Test(idem, client_abort_then_retry_gets_the_recorded_answer)
{
    struct harness_resp r;
    const char *raw = "POST /slow/600 HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: abort-1\r\n"
                      "Content-Length: 2\r\n\r\nhi";
    int fd = harness_connect(stack.a_port);

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    usleep(150 * 1000);
    close(fd); /* the client gives up */
    /* retry like a client would, until the first execution's answer is recorded */
    for (int i = 0; i < 50; i++) {
        usleep(200 * 1000);
        post(stack.b_port, "POST", "/slow/600", "abort-1", NULL, "hi", &r);
        if (r.status != 409)
            break;
        harness_resp_free(&r);
    }
    cr_assert_eq(r.status, 200);
    cr_assert(harness_replayed(&r), "the abandoned request's answer was not recorded");
    cr_assert_eq(harness_executions(stack.up_port, "abort-1"), 1);
    harness_resp_free(&r);
}

Test(idem, in_flight_duplicate_is_409_with_retry_after)
{
    struct harness_resp r;
    char buf[16];
    const char *raw = "POST /slow/800 HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: busy\r\n"
                      "Content-Length: 2\r\n\r\nhi";
    int fd = harness_connect(stack.a_port);

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    usleep(200 * 1000);
    post(stack.b_port, "POST", "/slow/800", "busy", NULL, "hi", &r);
    expect_problem(&r, 409, "idempotency-key-in-use");
    cr_assert_not_null(harness_header(&r, "Retry-After", 0, buf, sizeof(buf)));
    cr_assert_geq(atoi(buf), 1);
    harness_resp_free(&r);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    close(fd);
    cr_assert_eq(harness_executions(stack.up_port, "busy"), 1);
}

/* ---- 20 concurrent duplicates across both replicas ---- */

struct dup_arg {
    uint16_t port;
    const char *key;
    int status, replayed;
    char body[2048];
};

static void *dup_thread(void *p)
{
    struct dup_arg *d = p;
    struct harness_resp r;
    char raw[512];

    snprintf(raw, sizeof(raw),
             "POST /slow/300 HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: %s\r\n"
             "Content-Length: 13\r\nConnection: close\r\n\r\n{\"amount\": 5}",
             d->key);
    if (harness_request(d->port, raw, strlen(raw), &r, 20000) == 0) {
        d->status = r.status;
        d->replayed = harness_replayed(&r);
        snprintf(d->body, sizeof(d->body), "%s", r.body);
        harness_resp_free(&r);
    }
    return NULL;
}

static void run_duplicates(const char *key, int *n200, int *n409)
{
    pthread_t th[20];
    static struct dup_arg args[20];

    *n200 = *n409 = 0;
    for (int i = 0; i < 20; i++) {
        args[i] = (struct dup_arg){.port = i % 2 ? stack.b_port : stack.a_port, .key = key};
        pthread_create(&th[i], NULL, dup_thread, &args[i]);
    }
    for (int i = 0; i < 20; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 20; i++) {
        if (args[i].status == 200) {
            (*n200)++;
            for (int j = 0; j < i; j++)
                if (args[j].status == 200)
                    cr_assert_str_eq(args[i].body, args[j].body, "two different answers");
        } else {
            cr_assert_eq(args[i].status, 409, "unexpected status %d", args[i].status);
            (*n409)++;
        }
    }
}

Test(idem, twenty_concurrent_duplicates_execute_once_reject_mode)
{
    int n200, n409;

    run_duplicates("storm-1", &n200, &n409);
    cr_assert_eq(harness_executions(stack.up_port, "storm-1"), 1);
    cr_assert_geq(n200, 1);
    cr_assert_eq(n200 + n409, 20);
}

/* A second stack in wait mode: every duplicate gets the one answer, none gets 409. */
TestSuite(idem_wait, .fini = stack_teardown, .timeout = 90);

Test(idem_wait, twenty_concurrent_duplicates_execute_once_wait_mode)
{
    const char *extra[] = {"--in-flight", "wait", "--wait-timeout", "10s", NULL};
    int n200, n409;

    stack_start(extra, NULL);
    run_duplicates("storm-2", &n200, &n409);
    cr_assert_eq(harness_executions(stack.up_port, "storm-2"), 1);
    cr_assert_eq(n200, 20, "%d answers were 409 in wait mode", n409);
}

Test(idem_wait, wait_timeout_gives_409)
{
    const char *extra[] = {"--in-flight", "wait", "--wait-timeout", "300ms", NULL};
    struct harness_resp r;
    const char *raw = "POST /slow/1500 HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: long\r\n"
                      "Content-Length: 0\r\n\r\n";
    int fd;

    stack_start(extra, NULL);
    fd = harness_connect(stack.a_port);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    usleep(200 * 1000);
    post(stack.b_port, "POST", "/slow/1500", "long", NULL, "", &r);
    expect_problem(&r, 409, "idempotency-key-in-use");
    harness_resp_free(&r);
    cr_assert_eq(harness_read_response(fd, &r, 0, 5000), 0);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    close(fd);
}

/* ---- retention and policy knobs ---- */

TestSuite(idem_policy, .fini = stack_teardown, .timeout = 90);

Test(idem_policy, record_expires_after_retention)
{
    const char *extra[] = {"--retention", "1s", "--lease", "500ms", NULL};
    struct harness_resp r;

    stack_start(extra, NULL);
    post(stack.a_port, "POST", "/p", "short-lived", NULL, "{}", &r);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/p", "short-lived", NULL, "{}", &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    usleep(1300 * 1000);
    post(stack.b_port, "POST", "/p", "short-lived", NULL, "{}", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_not(harness_replayed(&r), "record outlived its retention");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "short-lived"), 2);
}

/* fingerprint-body json: a client that re-serialises the same JSON (another member
 * order, other whitespace) is the same request; another value is not. raw (the default)
 * tells them apart. */
Test(idem_policy, fingerprint_body_json_ignores_member_order_and_whitespace)
{
    const char *extra[] = {"--fingerprint-body", "json", NULL};
    struct harness_resp r;

    stack_start(extra, NULL);
    post(stack.a_port, "POST", "/pay", "j1", NULL, "{\"amount\": 10, \"to\": \"bob\"}", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/pay", "j1", NULL, "{\"to\":\"bob\",\n \"amount\":10}", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert(harness_replayed(&r), "the same JSON, re-serialised, was refused or executed");
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/pay", "j1", NULL, "{\"to\":\"bob\",\"amount\":11}", &r);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
    /* not JSON: the raw bytes count */
    post(stack.a_port, "POST", "/pay", "j2", NULL, "amount=10", &r);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/pay", "j2", NULL, "amount=10 ", &r);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "j1"), 1);
}

Test(idem_policy, fingerprint_body_raw_is_the_default)
{
    struct harness_resp r;

    stack_start(NULL, NULL);
    post(stack.a_port, "POST", "/pay", "r1", NULL, "{\"amount\": 10, \"to\": \"bob\"}", &r);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/pay", "r1", NULL, "{\"to\":\"bob\",\"amount\":10}", &r);
    expect_problem(&r, 422, "idempotency-key-reused");
    harness_resp_free(&r);
}

/* Routes: a prefix not keyed at all, one that requires a key, one with its own methods. */
Test(idem_policy, routes_set_the_policy_per_path_prefix)
{
    const char *extra[] = {"--route", "/free off",        "--route", "/strict require-key yes",
                           "--route", "/put methods PUT", NULL};
    struct harness_resp r;

    stack_start(extra, NULL);
    /* /free: not keyed, the key is only a header to pass on (two executions) */
    for (int i = 0; i < 2; i++) {
        post(stack.a_port, "POST", "/free/x", "rk", NULL, "{}", &r);
        cr_assert_eq(r.status, 200);
        cr_assert_not(harness_replayed(&r));
        harness_resp_free(&r);
    }
    cr_assert_eq(harness_executions(stack.up_port, "rk"), 2);
    /* elsewhere the same key is protected */
    post(stack.a_port, "POST", "/paid", "rk2", NULL, "{}", &r);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/paid", "rk2", NULL, "{}", &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    /* /strict: a key is required there, and only there */
    post(stack.a_port, "POST", "/strict/pay", NULL, NULL, "{}", &r);
    expect_problem(&r, 400, "missing-idempotency-key");
    harness_resp_free(&r);
    post(stack.a_port, "POST", "/loose/pay", NULL, NULL, "{}", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    /* /put: PUT is keyed there (POST is not) */
    post(stack.a_port, "PUT", "/put/1", "rk3", NULL, "{}", &r);
    harness_resp_free(&r);
    post(stack.b_port, "PUT", "/put/1", "rk3", NULL, "{}", &r);
    cr_assert(harness_replayed(&r), "PUT under /put must be keyed");
    harness_resp_free(&r);
    post(stack.a_port, "POST", "/put/2", "rk4", NULL, "{}", &r);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/put/2", "rk4", NULL, "{}", &r);
    cr_assert_not(harness_replayed(&r), "POST under /put is not keyed");
    harness_resp_free(&r);
}

Test(idem_policy, require_key_and_release_statuses)
{
    const char *extra[] = {"--require-key", "yes", "--release-statuses", "500", NULL};
    struct harness_resp r;

    stack_start(extra, NULL);
    post(stack.a_port, "POST", "/p", NULL, NULL, "{}", &r);
    expect_problem(&r, 400, "missing-idempotency-key");
    harness_resp_free(&r);
    post(stack.a_port, "POST", "/status/500", "k500", NULL, "{}", &r);
    cr_assert_eq(r.status, 500);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/status/500", "k500", NULL, "{}", &r);
    cr_assert_eq(r.status, 500);
    cr_assert_not(harness_replayed(&r), "release-statuses 500 must release a 500");
    harness_resp_free(&r);
    /* the list replaces the default: 503 is now recorded */
    post(stack.a_port, "POST", "/status/503", "k503", NULL, "{}", &r);
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/status/503", "k503", NULL, "{}", &r);
    cr_assert_eq(r.status, 503);
    cr_assert(harness_replayed(&r), "503 is not in release-statuses 500: recorded");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, NULL), 3);
}

Test(idem_policy, answer_over_max_record_is_answered_once_then_502)
{
    const char *extra[] = {"--max-record", "4k", NULL};
    struct harness_resp r;

    stack_start(extra, NULL);
    post(stack.a_port, "POST", "/bytes/10000", "big", NULL, "{}", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, 10000, "the first client must get the whole answer");
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/bytes/10000", "big", NULL, "{}", &r);
    expect_problem(&r, 502, "response-not-replayable");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "big"), 1);
}

Test(idem_policy, ambiguous_outcome_is_recorded_as_504)
{
    struct harness_resp r;

    stack_start(NULL, NULL);
    post(stack.a_port, "POST", "/reset", "amb", NULL, "{}", &r);
    expect_problem(&r, 504, "outcome-unknown");
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/reset", "amb", NULL, "{}", &r);
    expect_problem(&r, 504, "outcome-unknown");
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "amb"), 1);
}

Test(idem_policy, ambiguous_release_lets_the_retry_execute)
{
    const char *extra[] = {"--ambiguous", "release", NULL};
    struct harness_resp r;

    stack_start(extra, NULL);
    post(stack.a_port, "POST", "/reset", "amb2", NULL, "{}", &r);
    expect_problem(&r, 502, "upstream-failed");
    harness_resp_free(&r);
    post(stack.b_port, "POST", "/reset", "amb2", NULL, "{}", &r);
    expect_problem(&r, 502, "upstream-failed");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "amb2"), 2);
}
