/*
 * TLS to the upstreams (issue 17, part 3), against real nginx terminating TLS in front of
 * the test upstream (idemproxy → https → nginx → http → test-upstream, which counts
 * executions). Certificates by scripts/make-certs.sh. Keyed requests over https execute
 * once and replay; new connections resume the last session (nginx's $ssl_session_reused
 * says so); a certificate that does not verify (wrong name, another CA, expired) sends not one
 * request byte and releases the key; verification off encrypts without checking; a
 * client certificate is shown to an nginx that requires one.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pthread.h>

#include <openssl/ssl.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(tls_upstream, .fini = stack_teardown, .timeout = 120);

static char certs[400], nginx_dir[450], https_arg[64];
static uint16_t nginx_port;

#define cert harness_cert

/* nginx with TLS (certificate name) in front of the stack's upstream; each connection
 * carries one request (keepalive_timeout 0), so every request is a new TLS connection.
 * more: extra server-block lines. */
static void start_nginx(const char *name, const char *more)
{
    char cmd[1000], conf[500];
    FILE *f;
    char *const argv[] = {"/usr/sbin/nginx", "-p", nginx_dir, "-c", conf, "-g",
                          "daemon off;",     NULL};

    snprintf(nginx_dir, sizeof(nginx_dir), "%s/nginx", harness_tmpdir());
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/logs", nginx_dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(conf, sizeof(conf), "%s/nginx.conf", nginx_dir);
    nginx_port = harness_free_port();
    cr_assert(f = fopen(conf, "w"));
    fprintf(f,
            "worker_processes 1;\nerror_log %s/logs/error.log info;\npid %s/nginx.pid;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            "  log_format t '$ssl_session_reused $ssl_protocol $ssl_client_s_dn $request_uri';\n"
            "  access_log %s/logs/access.log t;\n"
            "  keepalive_timeout 0;\n"
            "  server {\n"
            "    listen 127.0.0.1:%u ssl;\n"
            "    ssl_certificate %s/%s.crt;\n"
            "    ssl_certificate_key %s/%s.key;\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    %s\n"
            "    location / { proxy_pass http://127.0.0.1:%u; }\n"
            "  }\n"
            "}\n",
            nginx_dir, nginx_dir, nginx_dir, nginx_port, certs, name, certs, name, more ? more : "",
            stack.up_port);
    fclose(f);
    cr_assert_gt(harness_spawn("nginx", argv), 0);
    cr_assert_eq(harness_wait_port(nginx_port, 5000), 0, "nginx did not start");
}

/* lines of nginx's access log (requests that reached it) */
static char *access_log(void)
{
    char path[500], *buf;
    FILE *f;
    long n;

    snprintf(path, sizeof(path), "%s/logs/access.log", nginx_dir);
    if (!(f = fopen(path, "r")))
        return strdup("");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    cr_assert(buf = calloc(1, (size_t)n + 1));
    n = (long)fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* nginx's access log once it has lines lines (it logs after answering: a moment later) */
static char *access_log_of(int lines)
{
    char *log = access_log();

    for (double t0 = harness_now_s(); count(log, "\n") < lines; usleep(20 * 1000)) {
        cr_assert_lt(harness_now_s() - t0, 5.0, "nginx logged %d requests, not %d:\n%s",
                     count(log, "\n"), lines, log);
        free(log);
        log = access_log();
    }
    return log;
}

/* certificates, the stack, nginx with certificate name, and a replica "proxyS" that
 * forwards to it over TLS with these more flags (NULL-terminated). */
static pid_t start(const char *name, const char *nginx_more, const char *const more[])
{
    const char *args[32] = {"--upstream", https_arg, "--redis", NULL, "--workers", "1"};
    uint16_t port;
    pid_t pid;
    int n = 6;

    cr_assert(harness_make_certs(), "make-certs.sh failed");
    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    stack_start(NULL, NULL);
    start_nginx(name, nginx_more);
    snprintf(https_arg, sizeof(https_arg), "https://localhost:%u", nginx_port);
    args[3] = stack.redis_arg;
    for (; more && *more && n < 31; more++)
        args[n++] = *more;
    args[n] = NULL;
    cr_assert_gt(pid = harness_start_proxy(&port, "proxyS", args), 0);
    stack.b_port = port; /* (the stack's own B is not used here) */
    return pid;
}

static void pay(uint16_t port, const char *key, struct harness_resp *r)
{
    struct harness_keyed q = {.path = "/pay", .key = key, .body = "{\"amount\":1}"};

    stack_post(port, &q, r);
}

Test(tls_upstream, keyed_requests_over_https_execute_once_and_resume_sessions)
{
    const char *ca[] = {"--upstream-tls-ca-file", NULL, NULL};
    struct harness_resp r;
    char key[32], *log;
    uint16_t port;
    pid_t pid;

    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    ca[1] = cert("ca.crt");
    pid = start("server", NULL, ca);
    port = stack.b_port;
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "https-%d", i);
        pay(port, key, &r);
        cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
        harness_resp_free(&r);
    }
    pay(port, "https-0", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "https-0"), 1);
    /* one connection per request (nginx closes each): the first is a full handshake,
     * every later one resumes the session the one before received */
    log = access_log_of(8);
    cr_assert_eq(count(log, "\n"), 8, "%s", log);
    cr_assert_eq(count(log, "r TLSv1.3"), 7, "not resumed:\n%s", log);
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyS", 10000));
}

Test(tls_upstream, session_reuse_off_means_full_handshakes)
{
    const char *off[] = {"--upstream-tls-ca-file", NULL, "--upstream-tls-session-reuse", "off",
                         NULL};
    struct harness_resp r;
    char key[32], *log;
    pid_t pid;

    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    off[1] = cert("ca.crt");
    pid = start("server", NULL, off);
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "full-%d", i);
        pay(stack.b_port, key, &r);
        cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
        harness_resp_free(&r);
    }
    log = access_log_of(3);
    cr_assert_eq(count(log, ". TLSv1.3"), 3, "%s", log);
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyS", 10000));
}

/* A certificate that does not verify: nothing reaches nginx, the answer says no upstream
 * took the request, and the key is released (the retry fails the same way, not 409). */
static void refused(const char *name, const char *ca_file, const char *want)
{
    const char *ca[] = {"--upstream-tls-ca-file", NULL, NULL};
    struct harness_resp r;
    char *log;
    pid_t pid;

    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    ca[1] = cert(ca_file);
    pid = start(name, NULL, ca);
    for (int i = 0; i < 2; i++) {
        pay(stack.b_port, "unverified", &r);
        cr_assert(r.status == 502 || r.status == 503, "%d %s", r.status, r.body);
        cr_assert(strstr(r.body, "upstream-unavailable"), "%s", r.body);
        harness_resp_free(&r);
    }
    log = access_log();
    cr_assert_eq(log[0], '\0', "a request reached nginx:\n%s", log);
    free(log);
    cr_assert_eq(harness_upstream_stat(stack.up_port, "requests"), 0);
    log = harness_read_log("proxyS");
    cr_assert(strstr(log, want), "no '%s' in:\n%s", want, log);
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyS", 10000));
}

Test(tls_upstream, a_wrong_name_sends_no_request_byte)
{
    refused("wrong-name", "ca.crt", "certificate verify failed");
}

Test(tls_upstream, an_expired_certificate_sends_no_request_byte)
{
    refused("expired", "ca.crt", "certificate verify failed: certificate has expired");
}

Test(tls_upstream, another_ca_sends_no_request_byte)
{
    refused("server", "other-ca.crt", "certificate verify failed");
}

Test(tls_upstream, verification_off_encrypts_without_checking)
{
    const char *off[] = {"--upstream-tls-verify", "off", NULL};
    struct harness_resp r;
    pid_t pid = start("wrong-name", NULL, off);

    pay(stack.b_port, "unchecked", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "unchecked"), 1);
    cr_assert(harness_stop_clean(pid, "proxyS", 10000));
}

Test(tls_upstream, a_client_certificate_is_shown_to_an_upstream_that_requires_one)
{
    char more[1000];
    const char *mtls[] = {"--upstream-tls-ca-file",
                          NULL,
                          "--upstream-tls-cert-file",
                          NULL,
                          "--upstream-tls-key-file",
                          NULL,
                          NULL};
    struct harness_resp r;
    char *log;
    pid_t pid;

    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    mtls[1] = cert("ca.crt");
    mtls[3] = cert("client.crt");
    mtls[5] = cert("client.key");
    snprintf(more, sizeof(more), "ssl_verify_client on; ssl_client_certificate %s;",
             cert("ca.crt"));
    pid = start("server", more, mtls);
    pay(stack.b_port, "mtls-1", &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "mtls-1"), 1);
    log = access_log_of(1);
    cr_assert(strstr(log, "CN=idemproxy"), "%s", log);
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyS", 10000));
}

/* ---- an upstream of the test's own that ends a close-delimited answer with or without
 * TLS's close_notify ---- */

struct cutter {
    int lfd;
    SSL_CTX *ctx;
    int notify; /* send close_notify before closing */
};

static void *cutter_run(void *arg)
{
    struct cutter *c = arg;
    const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial answer";

    for (;;) {
        char buf[4096];
        size_t n = 0;
        int fd = accept(c->lfd, NULL, NULL);
        SSL *ssl;
        if (fd < 0)
            return NULL;
        ssl = SSL_new(c->ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            while (n < sizeof(buf) - 1) {
                int got = SSL_read(ssl, buf + n, (int)(sizeof(buf) - 1 - n));
                if (got <= 0)
                    break;
                n += (size_t)got;
                buf[n] = '\0';
                if (strstr(buf, "\r\n\r\n"))
                    break;
            }
            SSL_write(ssl, answer, (int)sizeof(answer) - 1);
            if (c->notify)
                SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd); /* without notify: the TCP close alone, as a crash would */
    }
}

static uint16_t cutter_start(struct cutter *c, int notify)
{
    uint16_t port = harness_free_port();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    pthread_t t;
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->notify = notify;
    cr_assert(c->ctx = SSL_CTX_new(TLS_server_method()));
    cr_assert_eq(SSL_CTX_use_certificate_chain_file(c->ctx, cert("server.crt")), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey_file(c->ctx, cert("server.key"), SSL_FILETYPE_PEM), 1);
    cr_assert_geq(c->lfd = socket(AF_INET, SOCK_STREAM, 0), 0);
    setsockopt(c->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    cr_assert_eq(bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(c->lfd, 16), 0);
    cr_assert_eq(pthread_create(&t, NULL, cutter_run, c), 0);
    pthread_detach(t);
    return port;
}

/* an answer whose end is the close, over TLS: complete with close_notify, else cut */
static void close_delimited(int notify, int want_status)
{
    const char *args[] = {"--upstream", https_arg,   "--redis", NULL, "--upstream-tls-ca-file",
                          NULL,         "--workers", "1",       NULL};
    static struct cutter c;
    struct harness_resp r;
    uint16_t port, up;
    pid_t pid;

    cr_assert(harness_make_certs(), "make-certs.sh failed");
    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    stack_start(NULL, NULL);
    up = cutter_start(&c, notify);
    snprintf(https_arg, sizeof(https_arg), "https://localhost:%u", up);
    args[3] = stack.redis_arg;
    args[5] = cert("ca.crt");
    cr_assert_gt(pid = harness_start_proxy(&port, "proxyS", args), 0);
    pay(port, notify ? "whole" : "cut", &r);
    cr_assert_eq(r.status, want_status, "%d %s", r.status, r.body);
    if (notify)
        cr_assert_str_eq(r.body, "partial answer");
    else
        cr_assert_null(strstr(r.body, "partial answer"), "a cut answer was passed on: %s", r.body);
    harness_resp_free(&r);
    if (!notify) {
        /* keyless, the same cut answer is a 502 */
        const char get[] = "GET /x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n";
        cr_assert_eq(harness_request(port, get, sizeof(get) - 1, &r, 10000), 0);
        cr_assert_eq(r.status, 502, "%d %s", r.status, r.body);
        cr_assert_null(strstr(r.body, "partial answer"), "%s", r.body);
        harness_resp_free(&r);
    }
    cr_assert(harness_stop_clean(pid, "proxyS", 10000));
}

Test(tls_upstream, a_close_delimited_answer_with_close_notify_is_whole)
{
    close_delimited(1, 200);
}

/* Without close_notify the answer may have been cut: a keyed request's outcome is
 * unknown (504, recorded so: never executed again), a keyless one is a 502. */
Test(tls_upstream, a_close_delimited_answer_cut_without_close_notify_is_not_passed_on)
{
    close_delimited(0, 504);
}

Test(tls_upstream, mixed_schemes_and_bad_files_are_config_errors)
{
    struct harness_resp r;
    const char *mixed[] = {"--upstream", "https://127.0.0.1:1", "--upstream", "127.0.0.1:2", "-t",
                           NULL};
    const char *nofile[] = {
        "--upstream", "https://127.0.0.1:1", "--upstream-tls-ca-file", "/nonexistent/ca.crt", "-t",
        NULL};
    char *const argv1[] = {IDEMPROXY_BIN,
                           (char *)mixed[0],
                           (char *)mixed[1],
                           (char *)mixed[2],
                           (char *)mixed[3],
                           (char *)mixed[4],
                           NULL};
    char *const argv2[] = {IDEMPROXY_BIN,
                           (char *)nofile[0],
                           (char *)nofile[1],
                           (char *)nofile[2],
                           (char *)nofile[3],
                           (char *)nofile[4],
                           NULL};
    char *log;
    int st;
    pid_t pid;

    (void)r;
    cr_assert_gt(pid = harness_spawn("mixed", argv1), 0);
    st = harness_stop(pid, 0, 10000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    log = harness_read_log("mixed");
    cr_assert(strstr(log, "1 of 2 upstreams are https://"), "%s", log);
    free(log);
    cr_assert_gt(pid = harness_spawn("nofile", argv2), 0);
    st = harness_stop(pid, 0, 10000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    log = harness_read_log("nofile");
    cr_assert(strstr(log, "upstream-tls: CA file /nonexistent/ca.crt"), "%s", log);
    free(log);
}
