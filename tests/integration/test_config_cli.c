/*
 * The command line as other tools use it: -t, --version, --help, exit codes and messages.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "harness.h"

TestSuite(cli, .fini = harness_cleanup, .timeout = 60);

/* Run idemproxy with args, capture stdout+stderr; returns exit code. */
static int run(char **out, const char *const args[])
{
    char *argv[32];
    int n = 0, st;
    pid_t pid;
    static int seq;
    char name[32];

    argv[n++] = IDEMPROXY_BIN;
    for (int i = 0; args[i]; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    snprintf(name, sizeof(name), "cli%d", seq++);
    pid = harness_spawn(name, argv);
    cr_assert_gt(pid, 0);
    st = harness_stop(pid, 0, 10000);
    *out = harness_read_log(name);
    cr_assert_not_null(*out);
    cr_assert(st >= 0 && WIFEXITED(st), "no normal exit");
    return WEXITSTATUS(st);
}

static char *write_conf(const char *text)
{
    static char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/t.conf", harness_tmpdir());
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

Test(cli, check_mode_accepts_the_shipped_config_with_an_upstream)
{
    char *out;
    const char *args[] = {"-t", SOURCE_DIR "/conf/idemproxy.conf", "--upstream", "127.0.0.1:9",
                          NULL};
    cr_assert_eq(run(&out, args), 0, "%s", out);
    cr_assert(strstr(out, "ok"), "%s", out);
    free(out);
}

Test(cli, check_mode_reports_file_and_line)
{
    char *out;
    char *path = write_conf("upstream 127.0.0.1:9\n# comment\nmax-body 12q\n");
    const char *args[] = {"-t", path, NULL};
    char want[300];

    cr_assert_eq(run(&out, args), 1, "%s", out);
    snprintf(want, sizeof(want), "%s:3:", path);
    cr_assert(strstr(out, want), "%s", out);
    cr_assert(strstr(out, "max-body"), "%s", out);
    free(out);
}

/* error-template: the shipped template passes -t; a broken one fails -t and startup with
 * its file, line and column (the config file itself is fine). */
Test(cli, error_template_is_checked_with_its_position)
{
    char *out, tmpl[300], want[400];
    char *path = write_conf("upstream 127.0.0.1:9\nerror-template " SOURCE_DIR
                            "/conf/error-templates/stripe.json\n");
    const char *ok[] = {"-t", path, NULL};
    const char *bad[] = {"-t", "--upstream", "127.0.0.1:9", "--error-template", tmpl, NULL};
    const char *start[] = {"--listen",         "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                           "--error-template", tmpl,          NULL};
    const char *missing[] = {
        "-t", "--upstream", "127.0.0.1:9", "--error-template", "/nonexistent/e.json", NULL};
    FILE *f;

    cr_assert_eq(run(&out, ok), 0, "%s", out);
    free(out);
    snprintf(tmpl, sizeof(tmpl), "%s/broken.json", harness_tmpdir());
    f = fopen(tmpl, "w");
    cr_assert_not_null(f);
    fputs("{\n  \"body\": {\"error\": \"{{detail}}\"},\n  \"headers\": {\"X-A\": 1}\n}\n", f);
    fclose(f);
    snprintf(want, sizeof(want),
             "error-template: %s:3:22: headers \"X-A\": the value must be a "
             "string, not a number",
             tmpl);
    cr_assert_eq(run(&out, bad), 1, "%s", out);
    cr_assert(strstr(out, want), "%s", out);
    cr_assert(strstr(out, "configuration test failed"), "%s", out);
    free(out);
    cr_assert_eq(run(&out, start), 1, "%s", out);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    cr_assert_eq(run(&out, missing), 1, "%s", out);
    cr_assert(strstr(out, "error-template: /nonexistent/e.json: No such file or directory"), "%s",
              out);
    free(out);
}

/* record-keys: -t and startup read the key file and name the line of a bad key; sealing
 * without keys is refused; a key file others can read is warned about. */
Test(cli, record_keys_are_checked_with_their_line)
{
    char *out, keys[300], want[400];
    const char *bad[] = {"-t",          "--upstream",    "127.0.0.1:9", "--record-encryption",
                         "aes-256-gcm", "--record-keys", keys,          NULL};
    const char *start[] = {
        "--listen", "127.0.0.1:0",         "--upstream",  "127.0.0.1:9", "--record-keys",
        keys,       "--record-encryption", "aes-256-gcm", NULL};
    const char *nokeys[] = {"-t",          "--upstream", "127.0.0.1:9", "--record-encryption",
                            "aes-256-gcm", NULL};
    FILE *f;

    snprintf(keys, sizeof(keys), "%s/record.keys", harness_tmpdir());
    cr_assert_not_null(f = fopen(keys, "w"));
    fputs("# rotation: the new key first\n2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
          "1 not-a-key\n",
          f);
    fclose(f);
    chmod(keys, 0600);
    snprintf(want, sizeof(want), "record-keys: %s:3: key 1 is not 32 bytes in base64", keys);
    cr_assert_eq(run(&out, bad), 1, "%s", out);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    cr_assert_eq(run(&out, start), 1, "%s", out);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    cr_assert_eq(run(&out, nokeys), 1, "%s", out);
    cr_assert(strstr(out, "record-encryption aes-256-gcm needs record-keys FILE"), "%s", out);
    free(out);
    cr_assert_not_null(f = fopen(keys, "w"));
    fputs("2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", f);
    fclose(f);
    chmod(keys, 0644);
    cr_assert_eq(run(&out, bad), 0, "%s", out);
    cr_assert(strstr(out, "can be read by other users (mode 644)"), "%s", out);
    free(out);
}

/* redis-tls: the CA file and the client certificate are read by -t and at start. */
Test(cli, redis_tls_files_are_checked)
{
    char *out;
    const char *missing_ca[] = {"-t",  "--upstream",          "127.0.0.1:9",         "--redis-tls",
                                "yes", "--redis-tls-ca-file", "/nonexistent/ca.crt", NULL};
    const char *half_cert[] = {"-t",
                               "--upstream",
                               "127.0.0.1:9",
                               "--redis-tls",
                               "yes",
                               "--redis-tls-cert-file",
                               "/nonexistent/c.crt",
                               NULL};
    const char *no_tls[] = {
        "-t", "--upstream", "127.0.0.1:9", "--redis-tls-ca-file", "/nonexistent/ca.crt", NULL};

    cr_assert_eq(run(&out, missing_ca), 1, "%s", out);
    cr_assert(strstr(out, "redis-tls: CA file /nonexistent/ca.crt:"), "%s", out);
    free(out);
    cr_assert_eq(run(&out, half_cert), 1, "%s", out);
    cr_assert(strstr(out, "redis-tls: a client certificate needs both its file and its key file"),
              "%s", out);
    free(out);
    cr_assert_eq(run(&out, no_tls), 0, "redis-tls no: the files are not read: %s", out);
    free(out);
}

Test(cli, tls_listen_settings_are_checked)
{
    char *out, certs[400], crt[450], key[450], cmd[1000];
    const char *no_cert[] = {"-t",           "--upstream",  "127.0.0.1:9",
                             "--tls-listen", "127.0.0.1:0", NULL};
    const char *missing[] = {"-t",
                             "--upstream",
                             "127.0.0.1:9",
                             "--tls-listen",
                             "127.0.0.1:0",
                             "--tls-cert-file",
                             "/nonexistent/s.crt",
                             "--tls-key-file",
                             "/nonexistent/s.key",
                             NULL};
    const char *mismatch[] = {"-t",          "--upstream",
                              "127.0.0.1:9", "--tls-listen",
                              "127.0.0.1:0", "--tls-cert-file",
                              crt,           "--tls-key-file",
                              key,           NULL};
    const char *proto[] = {"-t",          "--upstream",      "127.0.0.1:9", "--tls-listen",
                           "127.0.0.1:0", "--tls-cert-file", crt,           "--tls-key-file",
                           crt + 0,       "--tls-protocols", "TLSv1.1",     NULL};
    const char *ca_without_cert[] = {"-t",  "--upstream", "127.0.0.1:9", "--tls-auth-clients",
                                     "yes", NULL};
    const char *scope[] = {"-t",          "--upstream", "127.0.0.1:9", "--scope-headers",
                           ":client-crt", NULL};

    snprintf(certs, sizeof(certs), "%s/certs", harness_tmpdir());
    snprintf(cmd, sizeof(cmd), "bash %s/scripts/make-certs.sh %s", SOURCE_DIR, certs);
    cr_assert_eq(system(cmd), 0);
    snprintf(crt, sizeof(crt), "%s/server.crt", certs);
    snprintf(key, sizeof(key), "%s/client.key", certs); /* another certificate's key */

    cr_assert_eq(run(&out, no_cert), 1, "%s", out);
    cr_assert(strstr(out, "tls-listen needs tls-cert-file and tls-key-file"), "%s", out);
    free(out);
    cr_assert_eq(run(&out, missing), 1, "%s", out);
    cr_assert(strstr(out, "tls-cert-file /nonexistent/s.crt: No such file or directory"), "%s",
              out);
    free(out);
    cr_assert_eq(run(&out, mismatch), 1, "%s", out);
    cr_assert(strstr(out, "tls-key-file"), "%s", out);
    cr_assert(strstr(out, "key values mismatch"), "%s", out);
    free(out);
    cr_assert_eq(run(&out, proto), 1, "%s", out);
    cr_assert(strstr(out, "tls-protocols: \"TLSv1.1\" is not one of TLSv1.2 TLSv1.3"), "%s", out);
    free(out);
    cr_assert_eq(run(&out, ca_without_cert), 1, "%s", out);
    cr_assert(strstr(out, "need tls-cert-file"), "%s", out);
    free(out);
    cr_assert_eq(run(&out, scope), 1, "%s", out);
    cr_assert(strstr(out, "':client-crt' is not a header name (nor :client-cert"), "%s", out);
    free(out);
}

Test(cli, unknown_directive_and_flag_are_errors)
{
    char *out;
    char *path = write_conf("upstream 127.0.0.1:9\nlisen 127.0.0.1:1\n");
    const char *a1[] = {"-t", path, NULL};
    const char *a2[] = {"-t", "--upstream", "127.0.0.1:9", "--no-such", "1", NULL};

    cr_assert_eq(run(&out, a1), 1);
    cr_assert(strstr(out, "unknown directive 'lisen'"), "%s", out);
    free(out);
    cr_assert_eq(run(&out, a2), 1);
    cr_assert(strstr(out, "--no-such"), "%s", out);
    free(out);
}

Test(cli, missing_upstream_is_an_error)
{
    char *out;
    const char *args[] = {"--listen", "127.0.0.1:0", NULL};

    cr_assert_eq(run(&out, args), 1);
    cr_assert(strstr(out, "upstream"), "%s", out);
    free(out);
}

Test(cli, version_and_help)
{
    char *out;
    const char *v[] = {"--version", NULL};
    const char *h[] = {"--help", NULL};

    cr_assert_eq(run(&out, v), 0);
    cr_assert(strstr(out, "idemproxy " IDEMPROXY_VERSION), "%s", out);
    free(out);
    cr_assert_eq(run(&out, h), 0);
    cr_assert(strstr(out, "upstream-connect-timeout"), "%s", out);
    cr_assert(strstr(out, "drain-timeout"), "%s", out);
    free(out);
}

Test(cli, busy_port_fails_at_startup_with_a_message)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof(sa);
    char *out, listen_arg[32];

    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 1), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    snprintf(listen_arg, sizeof(listen_arg), "127.0.0.1:%u", ntohs(sa.sin_port));
    {
        const char *args[] = {"--listen", listen_arg, "--upstream", "127.0.0.1:9", NULL};
        cr_assert_eq(run(&out, args), 1, "%s", out);
    }
    cr_assert(strstr(out, "Address already in use"), "%s", out);
    free(out);
    close(fd);
}
