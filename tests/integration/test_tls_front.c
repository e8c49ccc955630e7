/*
 * TLS on the client side (issue 17, part 2): tls-listen with ECDSA and RSA certificates
 * made by scripts/make-certs.sh, driven by real clients — curl, `openssl s_client`, and a
 * keep-alive OpenSSL client of the test's own for what the CLIs cannot hold open across
 * a SIGHUP. Keyed requests over TLS execute once and replay; a wrong trust, an old
 * protocol, plain HTTP on the TLS port, and a handshake that never finishes each fail as
 * they should, without forwarding anything; tickets resume sessions across workers and
 * reloads and rotate by file; client certificates are required and scope keys; a
 * SIGHUP swaps the certificate without dropping a connection, and a bad one is refused.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(tls_front, .fini = stack_teardown, .timeout = 120);

static char certs[400];
static uint16_t tls_port;
static char tls_listen[32];

#define cert harness_cert

static void make_certs(void)
{
    const char *dir = harness_make_certs();

    cr_assert(dir, "make-certs.sh failed");
    snprintf(certs, sizeof(certs), "%s", dir);
}

/* The stack (no TLS) and a replica "proxyT" with tls-listen, the certificate crt with
 * its key, and whatever more says. Returns its pid. */
static pid_t start_tls_files(const char *crt, const char *key, const char *const more[])
{
    const char *extra[40] = {"--tls-listen",   tls_listen, "--tls-cert-file", crt,
                             "--tls-key-file", key};
    uint16_t port;
    pid_t pid;
    int n = 6;

    stack_start(NULL, NULL);
    tls_port = harness_free_port();
    snprintf(tls_listen, sizeof(tls_listen), "127.0.0.1:%u", tls_port);
    for (; more && *more && n < 39; more++)
        extra[n++] = *more;
    extra[n] = NULL;
    cr_assert_gt(pid = harness_stack_proxy(&stack, &port, "proxyT", extra), 0);
    cr_assert_eq(harness_wait_port(tls_port, 5000), 0, "tls-listen not listening");
    return pid;
}

/* The same with new certificates and the server's (ECDSA) one. */
static pid_t start_tls(const char *const more[])
{
    make_certs();
    return start_tls_files(cert("server.crt"), cert("server.key"), more);
}

/* Run a shell command; its exit status, and its output (stdout + stderr) in out. */
static int run(char *out, size_t len, const char *fmt, ...)
{
    char cmd[2000];
    va_list ap;
    FILE *p;
    size_t n = 0;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    cr_assert(p = popen(cmd, "r"));
    while (n + 1 < len && !feof(p)) {
        size_t got = fread(out + n, 1, len - n - 1, p);
        if (got == 0)
            break;
        n += got;
    }
    out[n] = '\0';
    while (fgetc(p) != EOF) {
    }
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* curl a keyed POST /pay over TLS, trusting ca; more: further curl options. Returns
 * curl's exit status; out has the head and body. */
static int curl_pay(char *out, size_t len, const char *ca, const char *key, const char *more)
{
    return run(out, len,
               "curl -sS -i --max-time 10 --cacert %s %s -H 'Idempotency-Key: %s' "
               "-H 'Content-Type: application/json' -d '{\"amount\":1}' https://localhost:%u/pay",
               ca, more ? more : "", key, tls_port);
}

/* openssl s_client against the TLS port with these options; its output. */
static int s_client(char *out, size_t len, const char *opts)
{
    /* a whole exchange, so that s_client reads what follows the handshake (a TLS 1.3
     * ticket) before the server closes */
    return run(out, len,
               "printf 'GET /ok HTTP/1.1\\r\\nHost: shop\\r\\nConnection: close\\r\\n\\r\\n' | "
               "timeout 10 openssl s_client -ign_eof -connect 127.0.0.1:%u -servername localhost "
               "-CAfile %s %s",
               tls_port, cert("ca.crt"), opts);
}

static void wait_log(const char *logname, const char *want, int count)
{
    char *log = NULL;

    for (double t0 = harness_now_s();; usleep(50 * 1000)) {
        int n = 0;
        free(log);
        log = harness_read_log(logname);
        for (const char *p = log; p && (p = strstr(p, want)); p++)
            n++;
        if (n >= count)
            break;
        cr_assert_lt(harness_now_s() - t0, 10.0, "no %d× '%s' in:\n%s", count, want, log);
    }
    free(log);
}

Test(tls_front, keyed_requests_over_tls_execute_once_with_either_key_type)
{
    const char *rsa[5];
    pid_t pid;
    char out[8192];

    make_certs();
    rsa[0] = "--tls-cert-file";
    rsa[1] = cert("server-rsa.crt");
    rsa[2] = "--tls-key-file";
    rsa[3] = cert("server-rsa.key");
    rsa[4] = NULL;
    pid = start_tls_files(cert("server.crt"), cert("server.key"), rsa);
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "tls-1", NULL), 0, "%s", out);
    cr_assert(strstr(out, "HTTP/1.1 200"), "%s", out);
    /* the upstream is told the client came over TLS */
    cr_assert(strstr(out, "[\"X-Forwarded-Proto\", \"https\"]"), "%s", out);
    cr_assert_null(strstr(out, "Idempotent-Replayed"), "%s", out);
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "tls-1", NULL), 0, "%s", out);
    cr_assert(strstr(out, "Idempotent-Replayed: true"), "%s", out);
    cr_assert_eq(harness_executions(stack.up_port, "tls-1"), 1);

    /* both key types are served: each client gets the one it can verify */
    cr_assert_eq(s_client(out, sizeof(out), "-tls1_2 -sigalgs ECDSA+SHA256"), 0, "%s", out);
    cr_assert(strstr(out, "Peer signature type: ECDSA"), "%s", out);
    cr_assert(strstr(out, "Verify return code: 0 (ok)"), "%s", out);
    cr_assert_eq(s_client(out, sizeof(out), "-tls1_2 -sigalgs RSA-PSS+SHA256"), 0, "%s", out);
    cr_assert(strstr(out, "Peer signature type: RSA-PSS"), "%s", out);
    cr_assert(strstr(out, "Verify return code: 0 (ok)"), "%s", out);
    cr_assert_eq(s_client(out, sizeof(out), "-tls1_3"), 0, "%s", out);
    cr_assert(strstr(out, "TLSv1.3"), "%s", out);
    /* TLS 1.1 and older are refused */
    cr_assert_neq(s_client(out, sizeof(out), "-tls1_1"), 0, "%s", out);
    cr_assert(strstr(out, "alert protocol version") || strstr(out, "no protocols available"), "%s",
              out);

    /* a client that does not trust the certificate sends nothing */
    cr_assert_eq(curl_pay(out, sizeof(out), cert("other-ca.crt"), "tls-2", NULL), 60, "%s", out);
    cr_assert_eq(harness_executions(stack.up_port, "tls-2"), 0);
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

Test(tls_front, tls_protocols_and_ciphers_are_the_configured_ones)
{
    const char *only13[] = {"--tls-protocols", "TLSv1.3", NULL};
    pid_t pid = start_tls(only13);
    char out[8192];

    cr_assert_neq(s_client(out, sizeof(out), "-tls1_2"), 0, "%s", out);
    cr_assert_eq(s_client(out, sizeof(out), "-tls1_3"), 0, "%s", out);
    cr_assert(strstr(out, "New, TLSv1.3"), "%s", out);
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

Test(tls_front, plain_http_to_the_tls_port_is_answered_400_in_plain_http)
{
    struct harness_resp r;
    const char req[] = "POST /pay HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: plain-1\r\n"
                       "Content-Length: 2\r\n\r\n{}";
    pid_t pid = start_tls(NULL);

    cr_assert_eq(harness_request(tls_port, req, sizeof(req) - 1, &r, 5000), 0);
    cr_assert_eq(r.status, 400, "%d %s", r.status, r.head);
    cr_assert(strstr(r.body, "https://"), "%s", r.body);
    cr_assert(r.closed);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "plain-1"), 0);
    wait_log("proxyT", "plain HTTP sent to the TLS port", 1);
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

Test(tls_front, a_handshake_that_never_finishes_is_closed_and_blocks_nobody)
{
    const char *fast[] = {"--tls-handshake-timeout", "500ms", NULL};
    pid_t pid = start_tls(fast);
    int silent = harness_connect(tls_port), partial = harness_connect(tls_port);
    const unsigned char hello_start[] = {22, 3, 1, 0, 200, 1}; /* a ClientHello, cut short */
    char out[8192];

    cr_assert_geq(silent, 0);
    cr_assert_geq(partial, 0);
    cr_assert_eq(harness_send(partial, hello_start, sizeof(hello_start)), 0);
    /* meanwhile other clients are served */
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "hs-1", NULL), 0, "%s", out);
    cr_assert(strstr(out, "HTTP/1.1 200"), "%s", out);
    cr_assert_eq(harness_wait_closed(silent, 5000), 1, "a silent client was not closed");
    cr_assert_eq(harness_wait_closed(partial, 5000), 1, "a half handshake was not closed");
    close(silent);
    close(partial);
    wait_log("proxyT", "TLS handshake did not finish within tls-handshake-timeout", 2);
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

/* s_client -sess_in: "Reused" or "New" (more: further options) */
static int resumed_with(const char *sess, const char *more)
{
    char out[8192], opt[600];

    snprintf(opt, sizeof(opt), "-sess_in %s %s", sess, more);
    cr_assert_eq(s_client(out, sizeof(out), opt), 0, "%s", out);
    cr_assert(strstr(out, "Reused,") || strstr(out, "New,"), "%s", out);
    return strstr(out, "Reused,") != NULL;
}

static int resumed(const char *sess)
{
    return resumed_with(sess, "");
}

static void new_session_with(const char *sess, const char *more)
{
    char out[8192], opt[600];

    snprintf(opt, sizeof(opt), "-sess_out %s %s", sess, more);
    cr_assert_eq(s_client(out, sizeof(out), opt), 0, "%s", out);
    cr_assert(strstr(out, "New,"), "%s", out);
    cr_assert(strstr(out, "TLS session ticket:"), "no ticket:\n%s", out);
    cr_assert_eq(access(sess, R_OK), 0, "no session was saved:\n%s", out);
}

static void new_session(const char *sess)
{
    new_session_with(sess, "");
}

Test(tls_front, tickets_resume_sessions_across_workers_and_reloads)
{
    const char *two[] = {"--workers", "2", NULL};
    char sess[450];
    pid_t pid = start_tls(two);

    snprintf(sess, sizeof(sess), "%s/sess.pem", certs);
    new_session(sess);
    /* SO_REUSEPORT spreads these over both workers: one key for the whole process */
    for (int i = 0; i < 6; i++)
        cr_assert(resumed(sess), "connection %d was not resumed", i);
    kill(pid, SIGHUP);
    wait_log("proxyT", "reloaded", 1);
    cr_assert(resumed(sess), "not resumed after a reload");
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

/* A resumed TLS 1.3 connection gets a new ticket (tickets are for one use), so a client
 * can resume again with it; a resumed TLS 1.2 one keeps its ticket (not renewed). */
Test(tls_front, a_resumed_tls13_connection_gets_a_new_ticket)
{
    char sess[450], next[460], out[8192], opt[1000];
    pid_t pid = start_tls(NULL);

    snprintf(sess, sizeof(sess), "%s/sess13.pem", certs);
    snprintf(next, sizeof(next), "%s.next", sess);
    new_session_with(sess, "-tls1_3");
    snprintf(opt, sizeof(opt), "-tls1_3 -msg -sess_in %s -sess_out %s", sess, next);
    cr_assert_eq(s_client(out, sizeof(out), opt), 0, "%s", out);
    cr_assert(strstr(out, "Reused, TLSv1.3"), "%s", out);
    cr_assert(strstr(out, "NewSessionTicket"), "no new ticket after a resumption:\n%s", out);
    cr_assert(resumed_with(next, "-tls1_3"), "the new ticket does not resume");
    new_session_with(sess, "-tls1_2");
    snprintf(opt, sizeof(opt), "-tls1_2 -msg -sess_in %s", sess);
    cr_assert_eq(s_client(out, sizeof(out), opt), 0, "%s", out);
    cr_assert(strstr(out, "Reused, TLSv1.2"), "%s", out);
    cr_assert_null(strstr(out, "NewSessionTicket"), "TLS 1.2 renewed:\n%s", out);
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

Test(tls_front, tickets_off_means_full_handshakes)
{
    const char *off[] = {"--tls-session-tickets", "off", NULL};
    char out[8192];
    pid_t pid = start_tls(off);

    /* no ticket in either protocol, and no session id (no server cache) to resume */
    cr_assert_eq(s_client(out, sizeof(out), "-tls1_3"), 0, "%s", out);
    cr_assert(strstr(out, "New, TLSv1.3"), "%s", out);
    cr_assert_null(strstr(out, "TLS session ticket:"), "%s", out);
    cr_assert_eq(s_client(out, sizeof(out), "-tls1_2"), 0, "%s", out);
    cr_assert_null(strstr(out, "TLS session ticket:"), "%s", out);
    cr_assert(strstr(out, "Session-ID: \n"), "%s", out);
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

static void random_file(const char *path, size_t n)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "head -c %zu /dev/urandom > %s", n, path);
    cr_assert_eq(system(cmd), 0);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1000];

    snprintf(cmd, sizeof(cmd), "cp %s %s.tmp && mv %s.tmp %s", from, to, to, to);
    cr_assert_eq(system(cmd), 0);
}

Test(tls_front, ticket_keys_rotate_by_file_on_sighup)
{
    char k1[450], k2[450], a[450], sess[450];
    const char *keys[] = {"--tls-ticket-key-file", k1, "--tls-ticket-key-file", k2, NULL};
    pid_t pid;

    make_certs();
    snprintf(k1, sizeof(k1), "%s/ticket1.key", certs);
    snprintf(k2, sizeof(k2), "%s/ticket2.key", certs);
    snprintf(a, sizeof(a), "%s/ticketA.key", certs);
    snprintf(sess, sizeof(sess), "%s/sess.pem", certs);
    random_file(k1, 80); /* A: encrypts */
    random_file(k2, 48); /* (nginx's shorter kind) */
    copy_file(k1, a);
    pid = start_tls_files(cert("server.crt"), cert("server.key"), keys);
    new_session(sess);
    cr_assert(resumed(sess));
    /* step 1: a new key first, A second: A's tickets still open */
    random_file(k1, 80);
    copy_file(a, k2);
    kill(pid, SIGHUP);
    wait_log("proxyT", "reloaded", 1);
    cr_assert(resumed(sess), "a ticket of the second key was not accepted");
    /* step 2: A is gone: its tickets are refused, a full handshake follows */
    random_file(k2, 80);
    kill(pid, SIGHUP);
    wait_log("proxyT", "reloaded", 2);
    cr_assert_not(resumed(sess), "a ticket of a removed key was accepted");
    /* a key file of the wrong size is refused, and the keys in force stay */
    random_file(k2, 79);
    new_session(sess);
    kill(pid, SIGHUP);
    wait_log("proxyT", "holds 79 bytes", 1);
    cr_assert(resumed(sess));
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

/* A certificate's SHA-256 in lower-case hex, from `openssl x509 -fingerprint`. */
static const char *cert_sha256(const char *file)
{
    static char hex[8][65];
    static int k;
    char out[256], *p = hex[k++ % 8], *f;
    size_t n = 0;

    cr_assert_eq(
        run(out, sizeof(out), "openssl x509 -noout -fingerprint -sha256 -in %s", cert(file)), 0,
        "%s", out);
    cr_assert(f = strchr(out, '='), "%s", out);
    for (f++; *f && n < 64; f++)
        if (*f != ':' && *f != '\n')
            p[n++] = (char)tolower((unsigned char)*f);
    p[n] = '\0';
    cr_assert_eq(n, 64, "%s", out);
    return p;
}

/* /keys/inspect of key m-1 scoped by the certificate fingerprint fp: the answer body. */
static const char *inspect(uint16_t admin, const char *fp)
{
    static char body[4096];
    char raw[1024], json[256];
    struct harness_resp r;

    snprintf(json, sizeof(json), "{\"key\":\"m-1\",\"scope\":{\":client-cert\":\"%s\"}}", fp);
    snprintf(raw, sizeof(raw),
             "POST /keys/inspect HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer tok\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n"
             "\r\n%s",
             strlen(json), json);
    cr_assert_eq(harness_request(admin, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    snprintf(body, sizeof(body), "%s", r.body);
    harness_resp_free(&r);
    return body;
}

Test(tls_front, client_certificates_are_required_and_scope_keys)
{
    char admin_listen[32];
    const char *mtls[] = {"--tls-client-ca-file",
                          NULL,
                          "--tls-auth-clients",
                          "yes",
                          "--scope-headers",
                          ":client-cert",
                          "--admin-listen",
                          admin_listen,
                          "--admin-token",
                          "tok",
                          NULL};
    char out[8192], one[1000], two[1000];
    uint16_t admin = harness_free_port();
    pid_t pid;

    make_certs();
    mtls[1] = cert("ca.crt");
    snprintf(admin_listen, sizeof(admin_listen), "127.0.0.1:%u", admin);
    pid = start_tls_files(cert("server.crt"), cert("server.key"), mtls);

    snprintf(one, sizeof(one), "--cert %s --key %s", cert("client.crt"), cert("client.key"));
    snprintf(two, sizeof(two), "--cert %s --key %s", cert("client2.crt"), cert("client2.key"));
    /* no certificate: no request */
    cr_assert_neq(curl_pay(out, sizeof(out), cert("ca.crt"), "m-1", NULL), 0, "%s", out);
    cr_assert_eq(harness_executions(stack.up_port, "m-1"), 0);
    /* a certificate of another CA: refused too */
    {
        char other[1000];
        snprintf(other, sizeof(other), "--cert %s --key %s", cert("other-server.crt"),
                 cert("other-server.key"));
        cr_assert_neq(curl_pay(out, sizeof(out), cert("ca.crt"), "m-1", other), 0, "%s", out);
        cr_assert_eq(harness_executions(stack.up_port, "m-1"), 0);
    }
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "m-1", one), 0, "%s", out);
    cr_assert(strstr(out, "HTTP/1.1 200"), "%s", out);
    cr_assert_eq(harness_executions(stack.up_port, "m-1"), 1);
    /* the same key from another certificate is another caller's key */
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "m-1", two), 0, "%s", out);
    cr_assert(strstr(out, "HTTP/1.1 200"), "%s", out);
    cr_assert_null(strstr(out, "Idempotent-Replayed"), "%s", out);
    cr_assert_eq(harness_executions(stack.up_port, "m-1"), 2);
    /* and each replays its own */
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "m-1", one), 0, "%s", out);
    cr_assert(strstr(out, "Idempotent-Replayed: true"), "%s", out);
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "m-1", two), 0, "%s", out);
    cr_assert(strstr(out, "Idempotent-Replayed: true"), "%s", out);
    cr_assert_eq(harness_executions(stack.up_port, "m-1"), 2);
    /* the admin endpoint finds each by the certificate's SHA-256, as openssl prints it */
    cr_assert(strstr(inspect(admin, cert_sha256("client.crt")), "\"state\":\"done\""));
    cr_assert(strstr(inspect(admin, cert_sha256("client2.crt")), "\"state\":\"done\""));
    cr_assert(strstr(inspect(admin, cert_sha256("ca.crt")), "\"state\":\"absent\""));
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}

/* ---- a keep-alive TLS client (OpenSSL), for a connection held across a reload ---- */

static SSL *tls_open(SSL_CTX **ctxp, const char *ca)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl;
    int fd = harness_connect(tls_port);

    cr_assert(ctx);
    cr_assert_geq(fd, 0);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    cr_assert_eq(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
    cr_assert(ssl = SSL_new(ctx));
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    cr_assert_eq(SSL_connect(ssl), 1, "TLS handshake failed");
    *ctxp = ctx;
    return ssl;
}

/* GET /ok on ssl (keep-alive); the status, or 0 when the connection failed */
static int tls_get(SSL *ssl)
{
    const char req[] = "GET /ok HTTP/1.1\r\nHost: shop\r\n\r\n";
    char buf[8192];
    size_t n = 0;
    char *end, *cl;

    if (SSL_write(ssl, req, (int)sizeof(req) - 1) <= 0)
        return 0;
    for (;;) {
        int got = SSL_read(ssl, buf + n, (int)(sizeof(buf) - 1 - n));
        if (got <= 0)
            return 0;
        n += (size_t)got;
        buf[n] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) && (cl = strcasestr(buf, "\r\nContent-Length: ")) &&
            n >= (size_t)(end + 4 - buf) + strtoul(cl + 18, NULL, 10))
            break;
    }
    return atoi(buf + 9);
}

static void tls_close(SSL *ssl, SSL_CTX *ctx)
{
    int fd = SSL_get_fd(ssl);

    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
}

Test(tls_front, sighup_swaps_the_certificate_and_keeps_connections)
{
    char crt[450], key[450], out[8192];
    SSL_CTX *ctx;
    SSL *ssl;
    pid_t pid;

    /* the certificate the flags name is a copy the test rewrites */
    make_certs();
    snprintf(crt, sizeof(crt), "%s/live.crt", certs);
    snprintf(key, sizeof(key), "%s/live.key", certs);
    copy_file(cert("server.crt"), crt);
    copy_file(cert("server.key"), key);
    pid = start_tls_files(crt, key, NULL);
    ssl = tls_open(&ctx, cert("ca.crt"));
    cr_assert_eq(tls_get(ssl), 200);

    /* a new certificate (another CA's) on SIGHUP: new connections get it */
    copy_file(cert("other-server.crt"), crt);
    copy_file(cert("other-server.key"), key);
    kill(pid, SIGHUP);
    wait_log("proxyT", "reloaded", 1);
    cr_assert_eq(tls_get(ssl), 200, "the open connection was dropped by the reload");
    cr_assert_eq(curl_pay(out, sizeof(out), cert("other-ca.crt"), "swap-1", NULL), 0, "%s", out);
    cr_assert(strstr(out, "HTTP/1.1 200"), "%s", out);
    cr_assert_eq(curl_pay(out, sizeof(out), cert("ca.crt"), "swap-2", NULL), 60, "%s", out);

    /* a broken certificate is refused: the one in force keeps serving */
    {
        FILE *f = fopen(crt, "w");
        cr_assert(f);
        fputs("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n", f);
        fclose(f);
    }
    kill(pid, SIGHUP);
    wait_log("proxyT", "reload failed", 1);
    cr_assert_eq(curl_pay(out, sizeof(out), cert("other-ca.crt"), "swap-3", NULL), 0, "%s", out);
    cr_assert(strstr(out, "HTTP/1.1 200"), "%s", out);
    cr_assert_eq(tls_get(ssl), 200);
    tls_close(ssl, ctx);
    cr_assert(harness_stop_clean(pid, "proxyT", 10000));
}
