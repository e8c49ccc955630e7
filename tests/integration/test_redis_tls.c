/*
 * Redis over TLS (issue 17, part 4) against a real redis-server with tls-port and
 * tls-auth-clients yes, certificates made by scripts/make-certs.sh (the openssl CLI):
 * keyed requests work with a client certificate; a certificate that does not chain, a
 * wrong name, no client certificate, or plaintext to the TLS port each fail closed (503,
 * nothing forwarded) with the reason logged; a Redis frozen between claim and record
 * over TLS executes nothing twice.
 *
 * Redis listens on both a plain port (the test's own checks, with hiredis) and a TLS
 * port (the replicas'): a plaintext connection to a TLS port does not work, so every
 * answer through the replicas came over TLS.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(redis_tls, .fini = stack_teardown, .timeout = 120);

static char certs[400], tls_arg[32];
static char ca[450], other_ca[450], client_crt[450], client_key[450];

static void make_certs(void)
{
    char cmd[1000];

    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    snprintf(cmd, sizeof(cmd), "bash %s/scripts/make-certs.sh %s", SOURCE_DIR, certs);
    cr_assert_eq(system(cmd), 0, "make-certs.sh failed");
    snprintf(ca, sizeof(ca), "%s/ca.crt", certs);
    snprintf(other_ca, sizeof(other_ca), "%s/other-ca.crt", certs);
    snprintf(client_crt, sizeof(client_crt), "%s/client.crt", certs);
    snprintf(client_key, sizeof(client_key), "%s/client.key", certs);
}

/* The stack on a Redis that also listens with TLS (server certificate "server" or
 * "wrong-name"), its replicas on the TLS port with the CA and the client certificate,
 * plus proxy_more. */
static void start_tls(const char *server, const char *const proxy_more[])
{
    static char tls_port[8], crt[450], key[450];
    const char *redis_extra[] = {"--tls-port",
                                 tls_port,
                                 "--tls-cert-file",
                                 crt,
                                 "--tls-key-file",
                                 key,
                                 "--tls-ca-cert-file",
                                 ca,
                                 "--tls-auth-clients",
                                 "yes",
                                 NULL};
    const char *proxy[24] = {"--redis",
                             tls_arg,
                             "--redis-tls",
                             "yes",
                             "--redis-tls-ca-file",
                             ca,
                             "--redis-tls-cert-file",
                             client_crt,
                             "--redis-tls-key-file",
                             client_key};
    int n = 10;
    uint16_t port = harness_free_port();

    make_certs();
    snprintf(tls_port, sizeof(tls_port), "%u", port);
    snprintf(tls_arg, sizeof(tls_arg), "127.0.0.1:%u", port);
    snprintf(crt, sizeof(crt), "%s/%s.crt", certs, server);
    snprintf(key, sizeof(key), "%s/%s.key", certs, server);
    for (; proxy_more && *proxy_more && n < 23; proxy_more++)
        proxy[n++] = *proxy_more;
    proxy[n] = NULL;
    stack_start(proxy, redis_extra);
}

static void pay(uint16_t port, const char *key, struct harness_resp *r)
{
    struct harness_keyed q = {.path = "/pay", .key = key, .body = "{\"amount\":1}"};

    stack_post(port, &q, r);
}

/* One more replica (logged as logname) on the TLS port with exactly these Redis TLS
 * settings (the stack's --redis is overridden); a keyed request to it must fail closed,
 * with want in its log. */
static void fails_closed_as(const char *logname, const char *const tls[], const char *want)
{
    const char *extra[16] = {"--redis", tls_arg};
    struct harness_resp r;
    uint16_t port;
    pid_t pid;
    char *log = NULL;
    int n = 2;

    for (; *tls && n < 15; tls++)
        extra[n++] = *tls;
    extra[n] = NULL;
    cr_assert_gt(pid = harness_stack_proxy(&stack, &port, logname, extra), 0);
    pay(port, "refused", &r);
    cr_assert_eq(r.status, 503, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "store-unavailable"), "%s", r.body);
    harness_resp_free(&r);
    for (double t0 = harness_now_s(); !(log = harness_read_log(logname)) || !strstr(log, want);
         usleep(50 * 1000)) {
        cr_assert_lt(harness_now_s() - t0, 5.0, "no '%s' in:\n%s", want, log);
        free(log);
    }
    free(log);
    cr_assert_eq(harness_executions(stack.up_port, "refused"), 0, "forwarded unprotected");
    cr_assert(harness_stop_clean(pid, logname, 10000));
}

static void fails_closed(const char *const tls[], const char *want)
{
    fails_closed_as("proxyC", tls, want);
}

/* Redis's total_connections_received (INFO stats). */
static long connections_received(void)
{
    char buf[8192], *p;

    cr_assert_gt(harness_redis(stack.redis_port, buf, sizeof(buf), "INFO stats"), 0);
    cr_assert_not_null(p = strstr(buf, "total_connections_received:"));
    return atol(p + strlen("total_connections_received:"));
}

Test(redis_tls, keyed_requests_over_tls_with_a_client_certificate)
{
    struct harness_resp r;
    char *log;
    long before;

    start_tls("server", NULL);
    pay(stack.a_port, "tls-1", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert(!harness_replayed(&r));
    harness_resp_free(&r);
    pay(stack.b_port, "tls-1", &r);
    cr_assert(harness_replayed(&r), "%d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "tls-1"), 1);
    /* the record is in Redis (read over the plain port) */
    cr_assert_eq(harness_redis(stack.redis_port, NULL, 0, "DBSIZE"), 1);
    /* steady state: no handshake per request (the connections stay) */
    before = connections_received();
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof(k), "steady-%d", i);
        pay(i % 2 ? stack.a_port : stack.b_port, k, &r);
        cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
        harness_resp_free(&r);
    }
    /* (each harness_redis call is a connection of its own: the one below counts once) */
    cr_assert_eq(connections_received(), before + 1, "new Redis connections during the requests");
    log = harness_read_log("proxyA");
    cr_assert_null(strstr(log, "redis: "), "%s", log);
    free(log);
}

Test(redis_tls, a_certificate_from_another_ca_fails_closed)
{
    const char *tls[] = {"--redis-tls",
                         "yes",
                         "--redis-tls-ca-file",
                         other_ca,
                         "--redis-tls-cert-file",
                         client_crt,
                         "--redis-tls-key-file",
                         client_key,
                         NULL};

    start_tls("server", NULL);
    fails_closed(tls, "TLS handshake: certificate verify failed");
}

/* The replicas' TLS flags with the test CA and the client certificate. */
#define TLS_TRUSTED                                                                                \
    "--redis-tls", "yes", "--redis-tls-ca-file", ca, "--redis-tls-cert-file", client_crt,          \
        "--redis-tls-key-file", client_key

Test(redis_tls, a_certificate_for_another_name_fails_closed)
{
    const char *tls[] = {TLS_TRUSTED, NULL};
    const char *named[] = {TLS_TRUSTED, "--redis-tls-server-name", "localhost", NULL};

    /* Redis shows a certificate for elsewhere.example; we connect to 127.0.0.1 */
    start_tls("wrong-name", NULL);
    fails_closed(tls, "certificate verify failed: IP address mismatch");
    /* and with a name given, that name is what must match */
    fails_closed_as("proxyD", named, "certificate verify failed: hostname mismatch");
}

/* A connection Redis closed is made again resuming the node's TLS session (not a full
 * handshake), and /metrics counts both. */
Test(redis_tls, a_reconnect_resumes_the_tls_session)
{
    char aport[8], raw[128];
    const char *extra[] = {TLS_TRUSTED, "--admin-listen", NULL, "--workers", "1", NULL};
    uint16_t admin = harness_free_port(), port;
    struct harness_resp r;
    char k[32];
    pid_t pid;
    int served = 0, tries = 0;

    start_tls("server", NULL);
    snprintf(aport, sizeof(aport), "%u", admin);
    {
        static char listen[32];
        snprintf(listen, sizeof(listen), "127.0.0.1:%s", aport);
        extra[9] = listen;
    }
    {
        const char *args[16] = {"--redis", tls_arg};
        int n = 2;
        for (int i = 0; extra[i]; i++)
            args[n++] = extra[i];
        args[n] = NULL;
        cr_assert_gt(pid = harness_stack_proxy(&stack, &port, "proxyR", args), 0);
    }
    pay(port, "resume-1", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    /* Redis drops every client connection but this one: ours comes back, resumed */
    cr_assert_gt(harness_redis(stack.redis_port, NULL, 0, "CLIENT KILL TYPE normal"), 0);
    for (double t0 = harness_now_s(); !served; usleep(50 * 1000)) {
        snprintf(k, sizeof(k), "resume-%d", 2 + tries++);
        pay(port, k, &r);
        served = r.status == 200;
        harness_resp_free(&r);
        cr_assert_lt(harness_now_s() - t0, 10.0, "not served again after the connections were cut");
    }
    snprintf(raw, sizeof(raw), "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    cr_assert_eq(harness_request(admin, raw, strlen(raw), &r, 5000), 0);
    cr_assert_geq(harness_metric(r.body, "idemproxy_redis_tls_handshakes_total"), 2, "%s", r.body);
    cr_assert_geq(harness_metric(r.body, "idemproxy_redis_tls_resumed_total"), 1, "%s", r.body);
    harness_resp_free(&r);
    cr_assert(harness_stop_clean(pid, "proxyR", 10000));
}

Test(redis_tls, without_a_client_certificate_redis_refuses)
{
    const char *tls[] = {"--redis-tls", "yes", "--redis-tls-ca-file", ca, NULL};

    start_tls("server", NULL);
    fails_closed(tls, "alert certificate required");
}

Test(redis_tls, plaintext_to_the_tls_port_fails_closed)
{
    const char *tls[] = {"--redis-tls", "no", NULL};

    start_tls("server", NULL);
    fails_closed(tls, "redis: connection to 127.0.0.1:");
}

/* The Redis-stall fault over TLS: claims at the upstream, Redis frozen (SIGSTOP) past
 * redis-timeout while the answers arrive (connections dropped and made again, each with
 * a new handshake), then resumed: every record lands, every retry replays. */
Test(redis_tls, redis_frozen_between_claim_and_record_over_tls_executes_once)
{
    const char *more[] = {"--lease", "8s", "--redis-timeout", "300ms", NULL};
    enum { N = 10 };
    struct harness_keyed q = {.path = "/status/201", .key = "warm", .body = "{}"};
    struct harness_resp r;
    char key[N][32], path[N][32];
    int fds[N];
    double t0;

    start_tls("server", more);
    stack_post(stack.a_port, &q, &r); /* the connection made, its scripts loaded */
    cr_assert_eq(r.status, 201, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    for (int i = 0; i < N; i++) {
        snprintf(key[i], sizeof(key[i]), "tstall-%d", i);
        snprintf(path[i], sizeof(path[i]), "/slow/%d", 1500 + 100 * i);
        q.path = path[i];
        q.key = key[i];
        cr_assert_geq(fds[i] = harness_keyed_send(stack.a_port, &q), 0);
    }
    t0 = harness_now_s();
    for (int i = 0; i < N; i++)
        while (harness_executions(stack.up_port, key[i]) < 1) {
            cr_assert_lt(harness_now_s() - t0, 1.4, "%s not at the upstream in time", key[i]);
            usleep(5 * 1000);
        }
    cr_assert_eq(kill(stack.redis_pid, SIGSTOP), 0);
    usleep(3000 * 1000);
    cr_assert_eq(kill(stack.redis_pid, SIGCONT), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(harness_read_response(fds[i], &r, 0, 10000), 0, "%s: no answer", key[i]);
        cr_assert_eq(r.status, 200, "%s: %d %s", key[i], r.status, r.body);
        harness_resp_free(&r);
        close(fds[i]);
    }
    for (int i = 0; i < N; i++) {
        q.path = path[i];
        q.key = key[i];
        stack_post(stack.b_port, &q, &r);
        cr_assert(harness_replayed(&r), "%s: %d %s", key[i], r.status, r.body);
        harness_resp_free(&r);
        cr_assert_eq(harness_executions(stack.up_port, key[i]), 1, "%s executed twice", key[i]);
    }
}

/* redis as the URL a managed service hands out: rediss://USER:PASS@HOST:PORT turns TLS on
 * and authenticates as that ACL user. */
Test(redis_tls, a_rediss_url_with_an_acl_user)
{
    char url[160], clients[8192];
    const char *extra[] = {"--redis",
                           url,
                           "--redis-tls-ca-file",
                           ca,
                           "--redis-tls-cert-file",
                           client_crt,
                           "--redis-tls-key-file",
                           client_key,
                           NULL};
    struct harness_resp r;
    uint16_t port;
    pid_t pid;

    start_tls("server", NULL);
    cr_assert_gt(
        harness_redis(stack.redis_port, NULL, 0, "ACL SETUSER idem on >s3cr@t ~* &* +@all"), 0);
    snprintf(url, sizeof(url), "rediss://idem:s3cr%%40t@%s", tls_arg);
    cr_assert_gt(pid = harness_stack_proxy(&stack, &port, "proxyC", extra), 0);
    pay(port, "url-1", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert_gt(harness_redis(stack.redis_port, clients, sizeof(clients), "CLIENT LIST"), 0);
    cr_assert(strstr(clients, " user=idem "), "%s", clients);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}
