/*
 * Unit tests for config: the directive table, the tokenizer, every type's setter and every
 * error message a user can see. The .c is included (h2o-style) to reach the tokenizer and
 * the generic setters for types no directive uses yet (bool, string, string list).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/core/conf.c"
#include "config.h"

#define ERRLEN 512

static char err[ERRLEN];

/* Fresh defaults, then text parsed as "t.conf". */
/*
 * Tests often load into the same struct twice. Every struct the tests initialise is
 * tracked (each test runs in its own process, so the list starts empty): initialising
 * a tracked one first releases what it owns, and config_free untracks it, so a later
 * struct at the same stack address is not mistaken for it.
 */
static struct config *tracked[16];
static int ntracked;

static int track_find(struct config *c)
{
    for (int i = 0; i < ntracked; i++)
        if (tracked[i] == c)
            return i;
    return -1;
}

static void test_defaults(struct config *c)
{
    if (track_find(c) >= 0)
        config_free(c);
    else if (ntracked < 16)
        tracked[ntracked++] = c;
    config_defaults(c);
}

static void test_free(struct config *c)
{
    int i = track_find(c);

    config_free(c);
    if (i >= 0)
        tracked[i] = tracked[--ntracked];
}

#define config_defaults(c) test_defaults(c)
#define config_free(c)     test_free(c)

static int load(struct config *c, const char *text)
{
    config_defaults(c);
    err[0] = '\0';
    return config_load_string(c, "t.conf", text, err, sizeof(err));
}

/* Parse text expecting failure; returns err for strstr checks. */
static const char *load_err(const char *text)
{
    struct config c;
    int rc = load(&c, text);

    config_free(&c);
    cr_assert_eq(rc, -1, "expected '%s' to fail", text);
    cr_assert(strchr(err, '\n') == NULL, "error is one line: %s", err);
    return err;
}

/* Temp files of the running test; removed by the suite's .fini, even after a failure. */
static char tmp_paths[4][32];
static int ntmp;

static void remove_tmps(void)
{
    for (int i = 0; i < ntmp; i++)
        unlink(tmp_paths[i]);
    ntmp = 0;
}

TestSuite(config, .fini = remove_tmps);

/* Write len bytes of text to a fresh temp file; returns its path. */
static const char *write_tmp_len(const char *text, size_t len)
{
    char *path = tmp_paths[ntmp];
    int fd;

    cr_assert_lt(ntmp, 4);
    strcpy(path, "/tmp/test_config_XXXXXX");
    fd = mkstemp(path);
    cr_assert(fd >= 0);
    ntmp++;
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static const char *write_tmp(const char *text)
{
    return write_tmp_len(text, strlen(text));
}

/* config_from_argv over a NULL-terminated list (argv[0] is added). */
static int run_argv(struct config *c, struct conf_cli *cli, const char *const *args)
{
    char *argv[32];
    int argc = 0;

    argv[argc++] = "idemproxy";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    err[0] = '\0';
    return config_from_argv(c, cli, argc, argv, err, sizeof(err));
}

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static const char *astr(const struct conf_addr *a)
{
    static char buf[4][300];
    static int i;
    i = (i + 1) % 4;
    return conf_addr_str(a, buf[i], sizeof(buf[i]));
}

static void assert_defaults(const struct config *c, int check_workers, int check_upstreams)
{
    cr_assert_str_eq(astr(&c->worker.listen), "127.0.0.1:8080");
    if (check_workers)
        cr_assert_eq(c->worker.workers, online_cpus());
    if (check_upstreams) {
        cr_assert_eq(c->upstream.naddrs, 0);
        cr_assert_null(c->upstream.addrs);
    }
    cr_assert_str_eq(astr(&c->redis.addr), "127.0.0.1:6379");
    cr_assert_eq(c->frontend.max_body, 1024 * 1024);
    cr_assert_eq(c->frontend.max_headers, 16 * 1024);
    cr_assert_eq(c->frontend.response_buffer, 1024 * 1024);
    cr_assert_eq(c->frontend.client_timeout_ms, 60000);
    cr_assert_eq(c->upstream.timeout_ms, 30000);
    cr_assert_eq(c->upstream.connect_timeout_ms, 2000);
    cr_assert_eq(c->upstream.pool, 64);
    cr_assert_eq(c->worker.drain_timeout_ms, 30000);
    cr_assert_eq(c->log_level, LOG_LEVEL_INFO);
    /* the idempotency policy */
    cr_assert_eq(c->idem.nmethods, 2);
    cr_assert_str_eq(c->idem.methods[0], "POST");
    cr_assert_str_eq(c->idem.methods[1], "PATCH");
    cr_assert_eq(c->idem.require_key, 0);
    cr_assert_str_eq(c->idem.key_header, "Idempotency-Key");
    cr_assert_eq(c->idem.key_max_length, 255);
    cr_assert_eq(c->idem.nscope_headers, 1);
    cr_assert_str_eq(c->idem.scope_headers[0], "Authorization");
    cr_assert_str_eq(c->idem.key_prefix, "idem:");
    cr_assert_eq(c->idem.lease_ms, 10000);
    cr_assert_eq(c->idem.retention_ms, 24 * 3600 * 1000);
    cr_assert_eq(c->idem.max_record, 8 * 1024 * 1024);
    cr_assert_eq(c->redis.timeout_ms, 500);
    cr_assert_eq(c->idem.on_redis_error, IDEM_REDIS_REJECT);
    cr_assert_eq(c->idem.in_flight, IDEM_IN_FLIGHT_REJECT);
    cr_assert_eq(c->idem.wait_timeout_ms, 10000);
    cr_assert_eq(c->idem.nrelease_statuses, 2);
    cr_assert_eq(c->idem.release_statuses[0], 429);
    cr_assert_eq(c->idem.release_statuses[1], 503);
    cr_assert_eq(c->idem.ambiguous, IDEM_AMBIGUOUS_RECORD);
}

/* ---- defaults and the example file ---- */

Test(config, defaults)
{
    struct config c;

    config_defaults(&c);
    assert_defaults(&c, 1, 1);
    cr_assert_null(c.file);
    cr_assert_eq(c.worker.listen.port, 8080);
    cr_assert_str_eq(c.worker.listen.host, "127.0.0.1");
    cr_assert_str_eq(c.worker.listen.unix_path, "");
    config_free(&c);
}

Test(config, example_conf_parses_to_defaults)
{
    struct config c;

    config_defaults(&c);
    cr_assert_eq(config_load_file(&c, SOURCE_DIR "/conf/idemproxy.conf", err, sizeof(err)), 0, "%s",
                 err);
    assert_defaults(&c, 1, 1);
    cr_assert_str_eq(c.file, SOURCE_DIR "/conf/idemproxy.conf");
    config_free(&c);
}

/* Uncomment every "# directive value" line of the example: the documented values must be
 * the real defaults (workers is documented with an example count; upstream is required). */
Test(config, example_conf_documents_real_defaults)
{
    FILE *f = fopen(SOURCE_DIR "/conf/idemproxy.conf", "r");
    char line[512], text[8192] = "";
    struct config c;
    int seen = 0;

    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f)) {
        const struct conf_directive *d;
        char word[64];
        if (strncmp(line, "# ", 2) != 0 || sscanf(line + 2, "%63s", word) != 1 ||
            (d = conf_find(&config_schema, word, strlen(word), NULL)) == NULL ||
            strcmp(word, d->name) != 0)
            continue;
        strcat(text, line + 2);
        seen++;
    }
    fclose(f);
    cr_assert_eq(seen, (int)conf_count(&config_schema), "every directive documented once: %d",
                 seen);
    cr_assert_eq(load(&c, text), 0, "%s", err);
    assert_defaults(&c, 0, 0);
    cr_assert_eq(c.upstream.naddrs, 1);
    /* fingerprint-headers has no default; the example shows one */
    cr_assert_eq(c.idem.nfingerprint_headers, 1);
    config_free(&c);
}

/* ---- integers ---- */

Test(config, int_ok)
{
    struct config c;

    cr_assert_eq(load(&c, "workers 4\nupstream-pool 100000\n"), 0, "%s", err);
    cr_assert_eq(c.worker.workers, 4);
    cr_assert_eq(c.upstream.pool, 100000);
    cr_assert_eq(load(&c, "workers 1\nworkers 256"), 0, "%s", err);
    cr_assert_eq(c.worker.workers, 256, "later wins");
    config_free(&c);
}

Test(config, int_errors)
{
    cr_assert(strstr(load_err("workers abc"), "t.conf:1: workers: invalid integer 'abc'"), "%s",
              err);
    cr_assert(strstr(load_err("workers 4x"), "invalid integer '4x'"), "%s", err);
    cr_assert(strstr(load_err("workers +4"), "invalid integer '+4'"), "%s", err);
    cr_assert(strstr(load_err("workers ''"), "invalid integer ''"), "%s", err);
    cr_assert(strstr(load_err("workers 0"), "t.conf:1: workers: 0 is out of range (1..256)"), "%s",
              err);
    cr_assert(strstr(load_err("workers 257"), "257 is out of range (1..256)"), "%s", err);
    cr_assert(strstr(load_err("workers -1"), "-1 is out of range (1..256)"), "%s", err);
    cr_assert(strstr(load_err("workers 99999999999999999999"),
                     "99999999999999999999 is out of range (1..256)"),
              "%s", err);
    cr_assert(strstr(load_err("workers 9223372036854775808"), "is out of range"), "%s", err);
    cr_assert(strstr(load_err("upstream-pool 0"), "upstream-pool: 0 is out of range (1..100000)"),
              "%s", err);
}

/* ---- sizes ---- */

Test(config, size_suffixes)
{
    size_t v = 0;

    cr_assert_eq(conf_parse_size("0", &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(conf_parse_size("1000", &v), 0);
    cr_assert_eq(v, 1000);
    cr_assert_eq(conf_parse_size("16k", &v), 0);
    cr_assert_eq(v, 16384);
    cr_assert_eq(conf_parse_size("16K", &v), 0);
    cr_assert_eq(v, 16384);
    cr_assert_eq(conf_parse_size("3m", &v), 0);
    cr_assert_eq(v, 3 * 1024 * 1024);
    cr_assert_eq(conf_parse_size("3M", &v), 0);
    cr_assert_eq(v, 3 * 1024 * 1024);
    cr_assert_eq(conf_parse_size("2g", &v), 0);
    cr_assert_eq(v, 2ULL * 1024 * 1024 * 1024);
    cr_assert_eq(conf_parse_size("2G", &v), 0);
    cr_assert_eq(v, 2ULL * 1024 * 1024 * 1024);
}

Test(config, size_invalid_leaves_value)
{
    size_t v = 42;
    const char *bad[] = {"",
                         "k",
                         "1t",
                         "1kb",
                         "1.5m",
                         "-1",
                         "+1",
                         " 1k",
                         "1k ",
                         "0x10",
                         "99999999999999999999g",
                         "17179869184g",
                         "18446744073709551616"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(conf_parse_size(bad[i], &v), -1, "'%s' accepted", bad[i]);
        cr_assert_eq(v, 42, "'%s' wrote a partial result", bad[i]);
    }
}

Test(config, size_directives)
{
    struct config c;

    cr_assert_eq(load(&c, "max-body 0\nmax-headers 1k"), 0, "%s", err);
    cr_assert_eq(c.frontend.max_body, 0);
    cr_assert_eq(c.frontend.max_headers, 1024);
    cr_assert_eq(load(&c, "max-body 1g\nmax-headers 1m"), 0, "%s", err);
    cr_assert_eq(c.frontend.max_body, 1024 * 1024 * 1024);
    cr_assert_eq(c.frontend.max_headers, 1024 * 1024);
    config_free(&c);

    cr_assert(strstr(load_err("max-body abc"),
                     "t.conf:1: max-body: invalid size 'abc' (use a number with k, m or g)"),
              "%s", err);
    cr_assert(strstr(load_err("max-body 1t"), "invalid size '1t'"), "%s", err);
    cr_assert(strstr(load_err("max-body 1025m"), "max-body: 1025m is out of range (0..1g)"), "%s",
              err);
    cr_assert(strstr(load_err("max-headers 1023"), "max-headers: 1023 is out of range (1k..1m)"),
              "%s", err);
    cr_assert(strstr(load_err("max-headers 2m"), "2m is out of range (1k..1m)"), "%s", err);
    cr_assert(strstr(load_err("max-body 99999999999999999999g"),
                     "99999999999999999999g is out of range (0..1g)"),
              "%s", err);
    cr_assert(strstr(load_err("max-body 17179869184g"), "17179869184g is out of range"), "%s", err);
}

/* ---- durations ---- */

Test(config, duration_suffixes)
{
    uint64_t v = 0;

    cr_assert_eq(conf_parse_duration("1500ms", &v), 0);
    cr_assert_eq(v, 1500);
    cr_assert_eq(conf_parse_duration("45", &v), 0);
    cr_assert_eq(v, 45000, "bare number is seconds");
    cr_assert_eq(conf_parse_duration("45s", &v), 0);
    cr_assert_eq(v, 45000);
    cr_assert_eq(conf_parse_duration("2m", &v), 0);
    cr_assert_eq(v, 120000);
    cr_assert_eq(conf_parse_duration("3h", &v), 0);
    cr_assert_eq(v, 3 * 3600000ULL);
    cr_assert_eq(conf_parse_duration("1d", &v), 0);
    cr_assert_eq(v, 86400000ULL);
    cr_assert_eq(conf_parse_duration("10MS", &v), 0);
    cr_assert_eq(v, 10);
    cr_assert_eq(conf_parse_duration("0", &v), 0);
    cr_assert_eq(v, 0);
}

Test(config, duration_invalid_leaves_value)
{
    uint64_t v = 42;
    const char *bad[] = {"",
                         "ms",
                         "5x",
                         "5 s",
                         "1.5s",
                         "-1s",
                         "5sec",
                         "5msx",
                         "99999999999999999999d",
                         "18446744073709551615s"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(conf_parse_duration(bad[i], &v), -1, "'%s' accepted", bad[i]);
        cr_assert_eq(v, 42, "'%s' wrote a partial result", bad[i]);
    }
}

Test(config, duration_directives)
{
    struct config c;

    cr_assert_eq(load(&c, "client-timeout 1ms\nupstream-timeout 7d\n"
                          "upstream-connect-timeout 250ms\ndrain-timeout 0"),
                 0, "%s", err);
    cr_assert_eq(c.frontend.client_timeout_ms, 1);
    cr_assert_eq(c.upstream.timeout_ms, 7 * 86400000ULL);
    cr_assert_eq(c.upstream.connect_timeout_ms, 250);
    cr_assert_eq(c.worker.drain_timeout_ms, 0);
    config_free(&c);

    cr_assert(strstr(load_err("client-timeout 5x"),
                     "t.conf:1: client-timeout: invalid duration '5x' (use a number with ms, s, "
                     "m, h or d; a bare number is seconds)"),
              "%s", err);
    cr_assert(strstr(load_err("client-timeout 0"), "client-timeout: 0 is out of range (1ms..7d)"),
              "%s", err);
    cr_assert(strstr(load_err("upstream-timeout 8d"), "8d is out of range (1ms..7d)"), "%s", err);
    cr_assert(strstr(load_err("drain-timeout 169h"), "169h is out of range (0..7d)"), "%s", err);
    cr_assert(strstr(load_err("drain-timeout 99999999999999999999d"),
                     "99999999999999999999d is out of range (0..7d)"),
              "%s", err);
}

/* ---- enums ---- */

Test(config, log_level)
{
    struct config c;
    const char *names[] = {"debug", "info", "warn", "warning", "error", "DEBUG"};
    enum log_level want[] = {LOG_LEVEL_DEBUG, LOG_LEVEL_INFO,  LOG_LEVEL_WARN,
                             LOG_LEVEL_WARN,  LOG_LEVEL_ERROR, LOG_LEVEL_DEBUG};
    char line[64];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        enum log_level viaLog;
        snprintf(line, sizeof(line), "log-level %s", names[i]);
        cr_assert_eq(load(&c, line), 0, "%s", err);
        cr_assert_eq(c.log_level, want[i], "%s", names[i]);
        /* The table agrees with log.c's own parser. */
        cr_assert_eq(log_level_parse(names[i], &viaLog), 0);
        cr_assert_eq(viaLog, want[i]);
    }
    config_free(&c);
    cr_assert(strstr(load_err("log-level loud"),
                     "t.conf:1: log-level: invalid value 'loud' (use debug, info, warn or error)"),
              "%s", err);
}

/* ---- addresses ---- */

Test(config, addr_forms)
{
    struct conf_addr a;

    cr_assert_eq(conf_parse_addr("10.0.0.1:80", &a, 0, 0), 0);
    cr_assert_str_eq(a.host, "10.0.0.1");
    cr_assert_eq(a.port, 80);
    cr_assert_str_eq(a.unix_path, "");
    cr_assert_eq(conf_parse_addr("backend-1.example.com:65535", &a, 0, 0), 0);
    cr_assert_str_eq(a.host, "backend-1.example.com");
    cr_assert_eq(a.port, 65535);
    cr_assert_eq(conf_parse_addr("[::1]:80", &a, 0, 0), 0);
    cr_assert_str_eq(a.host, "::1");
    cr_assert_eq(a.port, 80);
    cr_assert_str_eq(astr(&a), "[::1]:80");
    cr_assert_eq(conf_parse_addr("[2001:db8::5]:8443", &a, 0, 0), 0);
    cr_assert_str_eq(astr(&a), "[2001:db8::5]:8443");
    cr_assert_eq(conf_parse_addr("0.0.0.0:0", &a, 0, 1), 0);
    cr_assert_eq(a.port, 0);
    cr_assert_eq(conf_parse_addr("unix:/tmp/r.sock", &a, 1, 0), 0);
    cr_assert_str_eq(a.unix_path, "/tmp/r.sock");
    cr_assert_str_eq(a.host, "");
    cr_assert_str_eq(astr(&a), "unix:/tmp/r.sock");
}

Test(config, addr_errors)
{
    struct {
        const char *line, *want;
    } cases[] = {
        {"upstream ''", "invalid address '': missing port"},
        {"upstream host", "invalid address 'host': missing port (expected HOST:PORT)"},
        {"upstream :80", "invalid address ':80': empty host"},
        {"upstream h:", "port must be a number from 1 to 65535"},
        {"upstream h:0", "invalid address 'h:0': port must be a number from 1 to 65535"},
        {"upstream h:65536", "port must be a number from 1 to 65535"},
        {"upstream h:99999999999999999999", "port must be a number from 1 to 65535"},
        {"upstream h:abc", "port must be a number from 1 to 65535"},
        {"upstream h:-1", "port must be a number from 1 to 65535"},
        {"listen h:65536", "listen: invalid address 'h:65536': port must be a number from 0 to"},
        {"upstream ::1:80", "IPv6 addresses need brackets, e.g. [::1]:80"},
        {"upstream [::1]", "expected ':' and a port after ']'"},
        {"upstream [::1", "missing ']' after the IPv6 address"},
        {"upstream []:80", "invalid IPv6 address"},
        {"upstream [zz::q]:80", "invalid IPv6 address"},
        {"listen http://h:80", "expected HOST:PORT without a scheme"},
        {"upstream ftp://h:80", "expected HOST:PORT without a scheme"},
        {"upstream https://h:443/v1", "a path is not part of an upstream"},
        {"upstream \"a b:80\"", "invalid character in host"},
        {"upstream unix:/tmp/s", "unix sockets are not supported here"},
        {"listen unix:/tmp/s", "t.conf:1: listen: invalid address 'unix:/tmp/s': unix sockets"},
        {"redis unix:", "redis: invalid address 'unix:': empty unix socket path"},
        {"redis h:0", "port must be a number from 1 to 65535"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert(strstr(load_err(cases[i].line), cases[i].want), "%s -> %s", cases[i].line, err);
}

Test(config, addr_too_long)
{
    char line[512], host[300];

    memset(host, 'a', 256);
    host[256] = '\0';
    snprintf(line, sizeof(line), "upstream %s:80", host);
    cr_assert(strstr(load_err(line), "host name too long"), "%s", err);
    host[255] = '\0';
    snprintf(line, sizeof(line), "upstream %s:80", host);
    struct config c;
    cr_assert_eq(load(&c, line), 0, "%s", err);
    cr_assert_eq(strlen(c.upstream.addrs[0].host), 255);
    config_free(&c);

    memset(host, 'p', 108);
    host[108] = '\0';
    snprintf(line, sizeof(line), "redis unix:%s", host);
    cr_assert(strstr(load_err(line), "unix socket path too long"), "%s", err);
}

Test(config, addr_directives)
{
    struct config c;

    cr_assert_eq(load(&c, "listen [::]:0\nredis unix:/run/redis.sock"), 0, "%s", err);
    cr_assert_str_eq(astr(&c.worker.listen), "[::]:0");
    cr_assert_str_eq(astr(&c.redis.addr), "unix:/run/redis.sock");
    cr_assert_eq(load(&c, "redis [::1]:6380"), 0, "%s", err);
    cr_assert_str_eq(astr(&c.redis.addr), "[::1]:6380");
    cr_assert_str_eq(c.redis.addr.unix_path, "");
    config_free(&c);
}

Test(config, upstream_list)
{
    struct config c;

    cr_assert_eq(load(&c, "upstream a:1\nupstream b:2 [::1]:3\n"), 0, "%s", err);
    cr_assert_eq(c.upstream.naddrs, 3);
    cr_assert_str_eq(astr(&c.upstream.addrs[0]), "a:1");
    cr_assert_str_eq(astr(&c.upstream.addrs[1]), "b:2");
    cr_assert_str_eq(astr(&c.upstream.addrs[2]), "[::1]:3");
    config_free(&c);
    cr_assert_null(c.upstream.addrs);
    cr_assert_eq(c.upstream.naddrs, 0);
    config_free(&c); /* idempotent */
}

Test(config, upstream_urls)
{
    struct config c;
    char e[300];

    cr_assert_eq(load(&c, "upstream https://api.internal https://b:8443/\n"), 0, "%s", err);
    cr_assert_eq(c.upstream.naddrs, 2);
    cr_assert_str_eq(astr(&c.upstream.addrs[0]), "api.internal:443");
    cr_assert_str_eq(astr(&c.upstream.addrs[1]), "b:8443");
    cr_assert_eq(c.upstream.tls, 1, "https:// speaks TLS");
    cr_assert_eq(config_validate(&c, e, sizeof(e)), 0, "%s", e);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream http://a\n"), 0, "%s", err);
    cr_assert_str_eq(astr(&c.upstream.addrs[0]), "a:80");
    cr_assert_eq(c.upstream.tls, 0);
    config_free(&c);
    /* one protocol per pool */
    cr_assert_eq(load(&c, "upstream https://a:1\nupstream b:2\n"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, e, sizeof(e)), -1);
    cr_assert(strstr(e, "1 of 2 upstreams are https://"), "%s", e);
    config_free(&c);
}

Test(config, upstream_bad_line_is_all_or_nothing)
{
    struct config c;

    config_defaults(&c);
    cr_assert_eq(config_load_string(&c, "t", "upstream a:1", err, sizeof(err)), 0);
    cr_assert_eq(config_load_string(&c, "t", "upstream b:2 c", err, sizeof(err)), -1);
    cr_assert(strstr(err, "t:1: upstream: invalid address 'c'"), "%s", err);
    cr_assert_eq(c.upstream.naddrs, 1);
    cr_assert_str_eq(astr(&c.upstream.addrs[0]), "a:1");
    config_free(&c);
}

/* ---- argument counts, unknown directives ---- */

Test(config, arg_counts)
{
    cr_assert(strstr(load_err("workers 1 2"), "t.conf:1: workers: expected 1 argument, got 2"),
              "%s", err);
    cr_assert(strstr(load_err("workers"), "t.conf:1: workers: expected 1 argument, got 0"), "%s",
              err);
    cr_assert(
        strstr(load_err("upstream"), "t.conf:1: upstream: expected at least 1 argument, got 0"),
        "%s", err);
}

Test(config, unknown_directive)
{
    cr_assert(strstr(load_err("\n\nlisen 1.2.3.4:5"),
                     "t.conf:3: unknown directive 'lisen' (did you mean 'listen'?)"),
              "%s", err);
    cr_assert(strstr(load_err("max_body 1m"), "did you mean 'max-body'?"), "%s", err);
    cr_assert(strstr(load_err("upstream-timout 1s"), "did you mean 'upstream-timeout'?"), "%s",
              err);
    load_err("frobnicate 1");
    cr_assert(strstr(err, "t.conf:1: unknown directive 'frobnicate'"), "%s", err);
    cr_assert_null(strstr(err, "did you mean"), "%s", err);
}

Test(config, directive_names_case_insensitive)
{
    struct config c;

    cr_assert_eq(load(&c, "Workers 3\nLOG-LEVEL warn"), 0, "%s", err);
    cr_assert_eq(c.worker.workers, 3);
    cr_assert_eq(c.log_level, LOG_LEVEL_WARN);
    config_free(&c);
}

/* ---- tokenizer ---- */

/* Split text (a copy) and compare with the expected words; n = -1 expects an error. */
static void check_split(const char *text, int n, const char *const *want)
{
    char *copy = strdup(text), **words = NULL;
    size_t cap = 0;
    int got = split_words(copy, &words, &cap);

    cr_assert_eq(got, n, "'%s': %d words, want %d", text, got, n);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(words[i], want[i], "'%s' word %d", text, i);
    free(words);
    free(copy);
}

#define WORDS(...) ((const char *const[]){__VA_ARGS__})

Test(config, split_plain)
{
    check_split("", 0, NULL);
    check_split("   \t  ", 0, NULL);
    check_split("# just a comment", 0, NULL);
    check_split("   # indented comment", 0, NULL);
    check_split("a", 1, WORDS("a"));
    check_split(" a\tb  c \r", 3, WORDS("a", "b", "c"));
    check_split("a b # c d", 2, WORDS("a", "b"));
    check_split("a b#c", 2, WORDS("a", "b#c"));
    check_split("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", 17,
                WORDS("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14",
                      "15", "16", "17"));
}

Test(config, split_double_quotes)
{
    check_split("a \"b c\" d", 3, WORDS("a", "b c", "d"));
    check_split("\"\"", 1, WORDS(""));
    check_split("\"# not a comment\"", 1, WORDS("# not a comment"));
    check_split("\"q\\\"q\" \"b\\\\s\"", 2, WORDS("q\"q", "b\\s"));
    check_split("\"\\n\\r\\t\"", 1, WORDS("\n\r\t"));
    check_split("\"\\x41\\x7a\\x7A\"", 1, WORDS("Azz"));
    check_split("\"\\xZZ\\q\"", 1, WORDS("xZZq"));
    check_split("\"it's\"", 1, WORDS("it's"));
    check_split("\"a\"\t\"b\"", 2, WORDS("a", "b"));
}

Test(config, split_single_quotes)
{
    check_split("'a b'", 1, WORDS("a b"));
    check_split("'it\\'s'", 1, WORDS("it's"));
    check_split("'\\n\\x41\"'", 1, WORDS("\\n\\x41\""));
    check_split("''", 1, WORDS(""));
}

Test(config, split_unbalanced)
{
    check_split("\"abc", -1, NULL);
    check_split("'abc", -1, NULL);
    check_split("\"abc\\\"", -1, NULL);
    check_split("'abc\\'", -1, NULL);
    check_split("\"a\"b", -1, NULL);
    check_split("'a'b", -1, NULL);
    check_split("\"a\"#", -1, NULL);
    check_split("\"abc\\", -1, NULL);
}

Test(config, quoting_in_files)
{
    struct config c;

    cr_assert_eq(load(&c, "# header\n\n  listen \"127.0.0.1:9\"   # trailing\r\n"
                          "redis 'unix:/tmp/a b.sock'\n"
                          "\tlog-level \"\\x64ebug\"\n"),
                 0, "%s", err);
    cr_assert_str_eq(astr(&c.worker.listen), "127.0.0.1:9");
    cr_assert_str_eq(c.redis.addr.unix_path, "/tmp/a b.sock");
    cr_assert_eq(c.log_level, LOG_LEVEL_DEBUG);
    config_free(&c);

    cr_assert(strstr(load_err("workers 2\n\nlisten \"127.0.0.1:9"), "t.conf:3: unbalanced quotes"),
              "%s", err);
    cr_assert(strstr(load_err("listen '127.0.0.1:9'x"), "t.conf:1: unbalanced quotes"), "%s", err);
}

Test(config, error_stays_one_line)
{
    load_err("upstream \"a\\nb:80\"");
    cr_assert(strstr(err, "invalid address 'a?b:80'"), "%s", err);
}

Test(config, error_truncates_safely)
{
    struct config c;
    char small[16];

    memset(small, 'X', sizeof(small));
    config_defaults(&c);
    cr_assert_eq(config_load_string(&c, "t.conf", "lisen x", small, sizeof(small)), -1);
    cr_assert_eq(strlen(small), sizeof(small) - 1);
    cr_assert_eq(strncmp(small, "t.conf:1: unkno", 15), 0, "%s", small);
    cr_assert_eq(config_load_string(&c, "t.conf", "lisen x", NULL, 0), -1);
    config_free(&c);
}

/* ---- files ---- */

Test(config, file_line_numbers)
{
    const char *path = write_tmp("# comment\nlisten 127.0.0.1:9\n\nworkers 1 2\n");
    char want[256];
    struct config c;

    config_defaults(&c);
    cr_assert_eq(config_load_file(&c, path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:4: workers: expected 1 argument, got 2", path);
    cr_assert_str_eq(err, want);
    cr_assert_str_eq(c.file, path);
    config_free(&c);
    cr_assert_null(c.file);
}

Test(config, file_ok)
{
    const char *path = write_tmp("listen 0.0.0.0:0\r\nupstream 10.0.0.1:80\r\nmax-body 2m");
    struct config c;

    config_defaults(&c);
    cr_assert_eq(config_load_file(&c, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(astr(&c.worker.listen), "0.0.0.0:0");
    cr_assert_eq(c.upstream.naddrs, 1);
    cr_assert_eq(c.frontend.max_body, 2 * 1024 * 1024);
    config_free(&c);
}

Test(config, file_missing)
{
    struct config c;
    char want[256];

    config_defaults(&c);
    cr_assert_eq(config_load_file(&c, "/nonexistent/idem.conf", err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "cannot open config file '/nonexistent/idem.conf': %s",
             strerror(ENOENT));
    cr_assert_str_eq(err, want);
    cr_assert_eq(config_load_file(&c, "/tmp", err, sizeof(err)), -1);
    cr_assert(strstr(err, "'/tmp'"), "%s", err);
    cr_assert(strstr(err, strerror(EISDIR)), "%s", err);
    config_free(&c);
}

Test(config, file_with_nul)
{
    const char *path = write_tmp_len("workers 2\n\0workers 3\n", 21);
    struct config c;

    config_defaults(&c);
    cr_assert_eq(config_load_file(&c, path, err, sizeof(err)), -1);
    cr_assert(strstr(err, "NUL byte"), "%s", err);
    config_free(&c);
}

/* ---- validate ---- */

Test(config, validate_needs_upstream)
{
    struct config c;

    config_defaults(&c);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "no upstream configured"), "%s", err);
    cr_assert(strstr(err, "--upstream HOST:PORT"), "%s", err);
    cr_assert(strstr(err, "'upstream' line"), "%s", err);
    cr_assert_eq(load(&c, "upstream a:1"), 0);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0);
    config_free(&c);
}

/* redis-wait: the parsed values, the bad forms with file:line, and the cross checks */
Test(config, redis_wait_and_user)
{
    struct config c;

    cr_assert_eq(load(&c, "redis-wait 1 100ms\nredis-wait-policy degrade"), 0, "%s", err);
    cr_assert_eq(c.redis.wait_replicas, 1);
    cr_assert_eq(c.redis.wait_timeout_ms, 100);
    cr_assert_eq(c.redis.wait_policy, REDIS_WAIT_DEGRADE);
    config_free(&c);
    cr_assert_eq(load(&c, "redis-wait 1 100ms\nredis-wait 0"), 0, "%s", err);
    cr_assert_eq(c.redis.wait_replicas, 0, "0 turns it off again");
    cr_assert_eq(c.redis.wait_policy, REDIS_WAIT_FAIL, "fail by default");
    config_free(&c);
    cr_assert(strstr(load_err("redis-wait 1"), "t.conf:1: redis-wait: expected REPLICAS TIMEOUT"),
              "%s", err);
    cr_assert(strstr(load_err("\nredis-wait x 10ms"), "t.conf:2: redis-wait: invalid replica "
                                                      "count 'x'"),
              "%s", err);
    cr_assert(strstr(load_err("redis-wait 65 10ms"), "invalid replica count '65'"), "%s", err);
    cr_assert(strstr(load_err("redis-wait 1 soon"), "invalid timeout 'soon'"), "%s", err);
    cr_assert(strstr(load_err("redis-wait-policy maybe"), "t.conf:1: redis-wait-policy"), "%s",
              err);
    /* WAIT holds the connection: a command may wait for the WAIT out, then its own; both
     * must fit in its deadline */
    cr_assert_eq(load(&c, "upstream a:1\nredis-wait 1 250ms"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "redis-wait: its timeout (250 ms) must be under half of redis-timeout "
                          "(500 ms)"),
              "%s", err);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nredis-wait 1 249ms"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nredis-wait 1 500ms\nredis-timeout 2s"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
    config_free(&c);
    /* an ACL user without a password could only AUTH as nobody */
    cr_assert_eq(load(&c, "upstream a:1\nredis-user app"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "redis-user: an ACL user needs redis-password"), "%s", err);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nredis-user app\nredis-password pw"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.redis.user, "app");
    config_free(&c);
}

/* Sentinel mode: the list needs a master name, and the name a list */
Test(config, redis_sentinel_needs_both_halves)
{
    struct config c;

    cr_assert_eq(load(&c, "upstream a:1\nredis-sentinel s1:26379 s2:26379\n"
                          "redis-sentinel s3:26379\nredis-sentinel-master m"),
                 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.redis.nsentinels, 3);
    cr_assert_eq(c.redis.sentinels[2].port, 26379);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nredis-sentinel s1:26379"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "redis-sentinel: needs redis-sentinel-master NAME"), "%s", err);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nredis-sentinel-master m"), 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "needs at least one redis-sentinel"), "%s", err);
    config_free(&c);
    cr_assert(strstr(load_err("\nredis-sentinel s1"), "t.conf:2: redis-sentinel"), "%s", err);
}

/* Cluster mode: seeds accumulate; one mode at a time */
Test(config, redis_cluster_is_one_mode)
{
    struct config c;

    cr_assert_eq(load(&c, "upstream a:1\nredis-cluster n1:7000 n2:7001\nredis-cluster n3:7002\n"
                          "redis-max-redirects 3\nredis-refresh 10s"),
                 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.redis.ncluster, 3);
    cr_assert_eq(c.redis.cluster[2].port, 7002);
    cr_assert_eq(c.redis.max_redirects, 3);
    cr_assert_eq(c.redis.refresh_ms, 10000);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nredis-cluster n1:7000\nredis-sentinel s1:26379\n"
                          "redis-sentinel-master m"),
                 0, "%s", err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "redis-cluster: cannot be used with redis-sentinel"), "%s", err);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nredis 10.0.0.1:6379\nredis-cluster n1:7000"), 0, "%s",
                 err);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "redis 10.0.0.1:6379: not used with redis-cluster"), "%s", err);
    config_free(&c);
    cr_assert(strstr(load_err("\nredis-max-redirects 17"), "t.conf:2: redis-max-redirects"), "%s",
              err);
}

/* redis-failover-time: a lease (base or route) under 3 x it is warned about, not refused */
Test(config, lease_shorter_than_three_failovers_is_warned_about)
{
    struct config c;
    char *buf = NULL;
    size_t len = 0;
    FILE *out;

    cr_assert_eq(load(&c, "upstream a:1\nredis-failover-time 5s\nroute /slow lease 20s\n"
                          "route /fast lease 2s\nroute /off off"),
                 0, "%s", err);
    policy_finalize(&c.idem);
    cr_assert_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_not_null(out = open_memstream(&buf, &len));
    cr_assert_eq(config_warnings(&c, out), 2);
    fclose(out);
    cr_assert(strstr(buf, "the lease 10000 ms is shorter than 3 x redis-failover-time"), "%s", buf);
    cr_assert(strstr(buf, "route /fast: lease 2000 ms"), "%s", buf);
    cr_assert_null(strstr(buf, "/slow"), "%s", buf);
    free(buf);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream a:1\nlease 2s"), 0, "%s", err);
    cr_assert_eq(config_warnings(&c, stderr), 0); /* not said: nothing to check against */
    config_free(&c);
}

/* ---- command line ---- */

Test(config, argv_flags_only)
{
    struct config c;
    struct conf_cli cli;

    cr_assert_eq(run_argv(&c, &cli,
                          ARGV("--upstream", "127.0.0.1:9000", "--listen=127.0.0.1:0", "--workers",
                               "3", "--max-body", "2k", "--client-timeout", "5m",
                               "--log-level=error", "--redis", "unix:/r.sock")),
                 0, "%s", err);
    cr_assert_null(c.file);
    cr_assert_eq(cli.test_only + cli.show_help + cli.show_version, 0);
    cr_assert_eq(c.upstream.naddrs, 1);
    cr_assert_str_eq(astr(&c.worker.listen), "127.0.0.1:0");
    cr_assert_eq(c.worker.workers, 3);
    cr_assert_eq(c.frontend.max_body, 2048);
    cr_assert_eq(c.frontend.client_timeout_ms, 300000);
    cr_assert_eq(c.log_level, LOG_LEVEL_ERROR);
    cr_assert_str_eq(c.redis.addr.unix_path, "/r.sock");
    config_free(&c);
}

Test(config, argv_file_then_flags)
{
    const char *path = write_tmp("workers 5\nmax-body 3k\nupstream a:1\nupstream b:2\n");
    struct config c;
    struct conf_cli cli;

    /* Flags before the file still override it; upstreams accumulate file first. */
    cr_assert_eq(
        run_argv(&c, &cli,
                 ARGV("--workers", "7", "--upstream", "c:3", path, "-t", "--upstream=d:4")),
        0, "%s", err);
    cr_assert_eq(cli.test_only, 1);
    cr_assert_str_eq(c.file, path);
    cr_assert_eq(c.worker.workers, 7);
    cr_assert_eq(c.frontend.max_body, 3 * 1024);
    cr_assert_eq(c.upstream.naddrs, 4);
    cr_assert_str_eq(astr(&c.upstream.addrs[0]), "a:1");
    cr_assert_str_eq(astr(&c.upstream.addrs[1]), "b:2");
    cr_assert_str_eq(astr(&c.upstream.addrs[2]), "c:3");
    cr_assert_str_eq(astr(&c.upstream.addrs[3]), "d:4");
    config_free(&c);
    cr_assert_null(c.file);
    cr_assert_null(c.upstream.addrs);
}

Test(config, argv_file_error)
{
    const char *path = write_tmp("upstream a:1\nlisen x\n");
    struct config c;
    struct conf_cli cli;
    char want[256];

    cr_assert_eq(run_argv(&c, &cli, ARGV(path)), -1);
    snprintf(want, sizeof(want), "%s:2: unknown directive 'lisen' (did you mean 'listen'?)", path);
    cr_assert_str_eq(err, want);
    config_free(&c);

    cr_assert_eq(run_argv(&c, &cli, ARGV("/nonexistent/x.conf", "--upstream", "a:1")), -1);
    cr_assert(strstr(err, "cannot open config file '/nonexistent/x.conf'"), "%s", err);
    cr_assert(strstr(err, strerror(ENOENT)), "%s", err);
    config_free(&c);
}

Test(config, argv_errors)
{
    struct config c;
    struct conf_cli cli;

    cr_assert_eq(run_argv(&c, &cli, ARGV("--listen")), -1);
    cr_assert_str_eq(err, "--listen: missing value");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--listen", "--workers", "2")), -1);
    cr_assert_str_eq(err, "--listen: missing value");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--foo", "1")), -1);
    cr_assert_str_eq(err, "unknown option '--foo'");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--foo=1")), -1);
    cr_assert_str_eq(err, "unknown option '--foo'");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--lisen", "x")), -1);
    cr_assert_str_eq(err, "unknown option '--lisen' (did you mean '--listen'?)");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("-x")), -1);
    cr_assert_str_eq(err, "unknown option '-x'");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("a.conf", "b.conf")), -1);
    cr_assert(strstr(err, "only one config file"), "%s", err);
    cr_assert(strstr(err, "'a.conf' and 'b.conf'"), "%s", err);
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--upstream", "a:1", "--max-body", "abc")), -1);
    cr_assert_str_eq(err, "--max-body: invalid size 'abc' (use a number with k, m or g)");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--upstream", "a:1", "--workers=0")), -1);
    cr_assert_str_eq(err, "--workers: 0 is out of range (1..256)");
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--upstream", "a")), -1);
    cr_assert(strstr(err, "--upstream: invalid address 'a'"), "%s", err);
    config_free(&c);
}

Test(config, argv_validates)
{
    struct config c;
    struct conf_cli cli;

    cr_assert_eq(run_argv(&c, &cli, ARGV("--workers", "2")), -1);
    cr_assert(strstr(err, "no upstream configured: give --upstream HOST:PORT"), "%s", err);
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("-t")), -1);
    cr_assert_eq(cli.test_only, 1);
    cr_assert(strstr(err, "no upstream configured"), "%s", err);
    config_free(&c);
}

Test(config, argv_help_version)
{
    struct config c;
    struct conf_cli cli;

    /* No upstream, a bad option and a missing file: help still wins, nothing is loaded. */
    cr_assert_eq(run_argv(&c, &cli, ARGV("--foo", "/nonexistent.conf", "--help")), 0, "%s", err);
    cr_assert_eq(cli.show_help, 1);
    cr_assert_eq(cli.show_version, 0);
    cr_assert_null(c.file);
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("-h")), 0, "%s", err);
    cr_assert_eq(cli.show_help, 1);
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("--version")), 0, "%s", err);
    cr_assert_eq(cli.show_version, 1);
    cr_assert_eq(cli.show_help, 0);
    config_free(&c);
    cr_assert_eq(run_argv(&c, &cli, ARGV("-v", "--workers", "0")), 0, "%s", err);
    cr_assert_eq(cli.show_version, 1);
    config_free(&c);
}

Test(config, print_help)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    char want[64];

    cr_assert_not_null(f);
    config_print_help(f);
    fclose(f);
    cr_assert(strstr(buf, "usage: idemproxy [-t] [CONFIG_FILE]"));
    cr_assert(strstr(buf, "--help"));
    cr_assert(strstr(buf, "--version"));
    for (size_t i = 0; i < conf_count(&config_schema); i++) {
        snprintf(want, sizeof(want), "  --%s %s ", conf_at(&config_schema, i)->name,
                 conf_at(&config_schema, i)->arg);
        cr_assert(strstr(buf, want), "missing '%s'", want);
    }
    cr_assert(strstr(buf, "clients connect here (port 0: any free port) [127.0.0.1:8080]"));
    cr_assert(strstr(buf, "time allowed to connect to an upstream [2s]"));
    snprintf(want, sizeof(want), "(default: online CPUs) [%d]", online_cpus());
    cr_assert(strstr(buf, want), "%s", buf);
    for (char *p = buf; (p = strchr(p, '\n')) != NULL; p++) {
        char *next = strchr(p + 1, '\n');
        cr_assert(next == NULL || next - p <= 101, "help lines fit in 100 columns");
    }
    free(buf);
}

/* ---- generic types no directive uses yet: bool, string, string list, non-repeatable ---- */

struct gen {
    int flag;
    int mode;
    char *name;
    char **methods;
    size_t nmethods;
    char **tags;
    size_t ntags;
    struct conf_addr *peers;
    size_t npeers;
};

static const struct conf_choice gen_modes[] = {{"reject", 1}, {"wait", 2}, {NULL, 0}};

static const struct conf_directive gen_table[] = {
    {.name = "flag", .type = CONF_T_BOOL, .off = offsetof(struct gen, flag)},
    {.name = "mode", .type = CONF_T_ENUM, .off = offsetof(struct gen, mode), .choices = gen_modes},
    {.name = "name", .type = CONF_T_STRING, .off = offsetof(struct gen, name)},
    {.name = "methods",
     .type = CONF_T_STRING_LIST,
     .off = offsetof(struct gen, methods),
     .count_off = offsetof(struct gen, nmethods)},
    {.name = "tag",
     .type = CONF_T_STRING_LIST,
     .flags = CONF_F_REPEATABLE,
     .off = offsetof(struct gen, tags),
     .count_off = offsetof(struct gen, ntags)},
    {.name = "peers",
     .type = CONF_T_ADDR_LIST,
     .off = offsetof(struct gen, peers),
     .count_off = offsetof(struct gen, npeers)},
};

enum { GEN_FLAG, GEN_MODE, GEN_NAME, GEN_METHODS, GEN_TAG, GEN_PEERS };

static int gen_set(struct gen *g, int row, const char *line)
{
    err[0] = '\0';
    return directive_set_line(&gen_table[row], g, gen_table[row].name, line, err, sizeof(err));
}

static void gen_free(struct gen *g)
{
    for (size_t i = 0; i < sizeof(gen_table) / sizeof(gen_table[0]); i++)
        directive_free(&gen_table[i], g);
}

Test(config, type_bool)
{
    struct gen g = {0};
    const char *yes[] = {"yes", "on", "true", "1", "YES", "True"};
    const char *no[] = {"no", "off", "false", "0", "No", "OFF"};

    for (size_t i = 0; i < 6; i++) {
        cr_assert_eq(gen_set(&g, GEN_FLAG, yes[i]), 0, "%s", err);
        cr_assert_eq(g.flag, 1, "%s", yes[i]);
        cr_assert_eq(gen_set(&g, GEN_FLAG, no[i]), 0, "%s", err);
        cr_assert_eq(g.flag, 0, "%s", no[i]);
    }
    g.flag = 1;
    cr_assert_eq(gen_set(&g, GEN_FLAG, "maybe"), -1);
    cr_assert_str_eq(err, "flag: invalid boolean 'maybe' (use yes or no)");
    cr_assert_eq(g.flag, 1);
    cr_assert_eq(gen_set(&g, GEN_FLAG, "yes no"), -1);
    cr_assert_str_eq(err, "flag: expected 1 argument, got 2");
}

Test(config, type_enum)
{
    struct gen g = {0};

    cr_assert_eq(gen_set(&g, GEN_MODE, "wait"), 0, "%s", err);
    cr_assert_eq(g.mode, 2);
    cr_assert_eq(gen_set(&g, GEN_MODE, "Reject"), 0, "%s", err);
    cr_assert_eq(g.mode, 1);
    cr_assert_eq(gen_set(&g, GEN_MODE, "queue"), -1);
    cr_assert_str_eq(err, "mode: invalid value 'queue' (use reject or wait)");
    cr_assert_eq(g.mode, 1);
}

Test(config, type_string)
{
    struct gen g = {0};

    cr_assert_eq(gen_set(&g, GEN_NAME, "\"a b\\tc\""), 0, "%s", err);
    cr_assert_str_eq(g.name, "a b\tc");
    cr_assert_eq(gen_set(&g, GEN_NAME, "second"), 0, "%s", err);
    cr_assert_str_eq(g.name, "second", "later wins, old string freed");
    cr_assert_eq(gen_set(&g, GEN_NAME, "''"), 0, "%s", err);
    cr_assert_str_eq(g.name, "");
    cr_assert_eq(gen_set(&g, GEN_NAME, ""), -1);
    cr_assert_str_eq(err, "name: expected 1 argument, got 0");
    gen_free(&g);
    cr_assert_null(g.name);
}

Test(config, type_string_list)
{
    struct gen g = {0};

    cr_assert_eq(gen_set(&g, GEN_METHODS, "POST PATCH"), 0, "%s", err);
    cr_assert_eq(g.nmethods, 2);
    cr_assert_str_eq(g.methods[0], "POST");
    cr_assert_str_eq(g.methods[1], "PATCH");
    cr_assert_eq(gen_set(&g, GEN_METHODS, "PUT"), 0, "%s", err);
    cr_assert_eq(g.nmethods, 1, "not repeatable: replaced");
    cr_assert_str_eq(g.methods[0], "PUT");
    cr_assert_eq(gen_set(&g, GEN_METHODS, ""), -1);
    cr_assert_str_eq(err, "methods: expected at least 1 argument, got 0");
    cr_assert_eq(g.nmethods, 1);

    cr_assert_eq(gen_set(&g, GEN_TAG, "a b"), 0, "%s", err);
    cr_assert_eq(gen_set(&g, GEN_TAG, "'c d'"), 0, "%s", err);
    cr_assert_eq(g.ntags, 3, "repeatable: appended");
    cr_assert_str_eq(g.tags[2], "c d");
    gen_free(&g);
    cr_assert_null(g.methods);
    cr_assert_null(g.tags);
    cr_assert_eq(g.nmethods + g.ntags, 0);
}

Test(config, type_addr_list_not_repeatable)
{
    struct gen g = {0};

    cr_assert_eq(gen_set(&g, GEN_PEERS, "a:1 b:2"), 0, "%s", err);
    cr_assert_eq(gen_set(&g, GEN_PEERS, "c:3"), 0, "%s", err);
    cr_assert_eq(g.npeers, 1);
    cr_assert_str_eq(astr(&g.peers[0]), "c:3");
    gen_free(&g);
    cr_assert_null(g.peers);
}

Test(config, format_units_bounds)
{
    char buf[32];

    cr_assert_str_eq(format_units(0, size_units, buf, sizeof(buf)), "0");
    cr_assert_str_eq(format_units(1000, size_units, buf, sizeof(buf)), "1000");
    cr_assert_str_eq(format_units(2048, size_units, buf, sizeof(buf)), "2k");
    cr_assert_str_eq(format_units(1ULL << 30, size_units, buf, sizeof(buf)), "1g");
    cr_assert_str_eq(format_units(1, duration_units, buf, sizeof(buf)), "1ms");
    cr_assert_str_eq(format_units(90000, duration_units, buf, sizeof(buf)), "90s");
    cr_assert_str_eq(format_units(7 * 86400000ULL, duration_units, buf, sizeof(buf)), "7d");
}

/* ---- the idempotency policy ---- */

Test(config, policy_lists_enums_and_validation)
{
    struct config c;
    struct conf_cli cli;
    char *a1[] = {"idemproxy",
                  "--upstream",
                  "h:1",
                  "--methods",
                  "POST, PUT DELETE",
                  "--in-flight",
                  "wait",
                  "--ambiguous",
                  "release",
                  "--release-statuses",
                  "500,502 503",
                  "--on-redis-error",
                  "pass",
                  NULL};
    char *a2[] = {"idemproxy", "--upstream", "h:1", "--methods", "PO ST(", NULL};
    char *a3[] = {"idemproxy", "--upstream", "h:1", "--lease", "2d", "--retention", "1d", NULL};
    char *a4[] = {"idemproxy", "--upstream", "h:1", "--in-flight", "maybe", NULL};
    char *a5[] = {"idemproxy", "--upstream", "h:1", "--key-header", "Bad Header", NULL};

    cr_assert_eq(config_from_argv(&c, &cli, 13, a1, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.idem.nmethods, 3);
    cr_assert_str_eq(c.idem.methods[0], "POST");
    cr_assert_str_eq(c.idem.methods[1], "PUT");
    cr_assert_str_eq(c.idem.methods[2], "DELETE");
    cr_assert_eq(c.idem.in_flight, IDEM_IN_FLIGHT_WAIT);
    cr_assert_eq(c.idem.ambiguous, IDEM_AMBIGUOUS_RELEASE);
    cr_assert_eq(c.idem.nrelease_statuses, 3);
    cr_assert_eq(c.idem.release_statuses[2], 503);
    cr_assert_eq(c.idem.on_redis_error, IDEM_REDIS_PASS);
    config_free(&c);

    cr_assert_eq(config_from_argv(&c, &cli, 5, a2, err, sizeof(err)), -1);
    cr_assert(strstr(err, "methods: 'ST(' is not a method name"), "%s", err);
    config_free(&c);
    cr_assert_eq(config_from_argv(&c, &cli, 7, a3, err, sizeof(err)), -1);
    cr_assert(strstr(err, "lease"), "%s", err);
    cr_assert(strstr(err, "shorter than retention"), "%s", err);
    config_free(&c);
    cr_assert_eq(config_from_argv(&c, &cli, 5, a4, err, sizeof(err)), -1);
    cr_assert(strstr(err, "--in-flight"), "%s", err);
    cr_assert(strstr(err, "maybe"), "%s", err);
    config_free(&c);
    cr_assert_eq(config_from_argv(&c, &cli, 5, a5, err, sizeof(err)), -1);
    cr_assert(strstr(err, "key-header"), "%s", err);
    config_free(&c);
}

Test(config, policy_from_file_lines)
{
    struct config c;

    cr_assert_eq(load(&c, "upstream h:1\nmethods POST\nscope-headers Authorization X-Tenant\n"
                          "fingerprint-headers X-Amount\nlease 3s\nmax-record 64k\n"),
                 0, "%s", err);
    cr_assert_eq(c.idem.nmethods, 1);
    cr_assert_eq(c.idem.nscope_headers, 2);
    cr_assert_str_eq(c.idem.scope_headers[1], "X-Tenant");
    cr_assert_eq(c.idem.nfingerprint_headers, 1);
    cr_assert_eq(c.idem.lease_ms, 3000);
    cr_assert_eq(c.idem.max_record, 64 * 1024);
    config_free(&c);
    cr_assert_eq(load(&c, "upstream h:1\nlease 10ms\n"), -1);
    cr_assert(strstr(err, ":2: lease:"), "%s", err);
    config_free(&c);
}

/* ---- routes ---- */

Test(config, routes_override_the_base_policy_wherever_they_are_written)
{
    struct config c;
    struct conf_cli cli;
    const struct idem_policy *p;
    const char *file = write_tmp("upstream a:1\n"
                                 "route /v1/refunds lease 30s\n"
                                 "route /v1/refunds require-key yes\n"
                                 "route /v1 methods POST PUT\n"
                                 "route /internal off\n"
                                 "retention 2h\n" /* after the routes: they still get it */
                                 "lease 5s\n");

    cr_assert_eq(run_argv(&c, &cli, ARGV(file)), 0, "%s", err);
    cr_assert_eq(c.idem.nroutes, 3);
    p = policy_for(&c.idem, "/v1/refunds/7?x=1");
    cr_assert_not_null(p);
    cr_assert_eq(p->lease_ms, 30000);
    cr_assert_eq(p->require_key, 1);
    cr_assert_eq(p->retention_ms, 2 * 3600 * 1000, "the base's value, set after the route");
    cr_assert_eq(p->nmethods, 2, "the base's methods: /v1/refunds is longer than /v1");
    p = policy_for(&c.idem, "/v1/charges");
    cr_assert_eq(p->nmethods, 2);
    cr_assert_str_eq(p->methods[1], "PUT");
    cr_assert_eq(p->lease_ms, 5000);
    cr_assert_eq(p->require_key, 0);
    cr_assert_null(policy_for(&c.idem, "/internal/jobs"), "route off: not keyed");
    cr_assert_eq(policy_for(&c.idem, "/other"), &c.idem);
    cr_assert_eq(policy_for(&c.idem, "/v"), &c.idem, "a prefix matches whole bytes only");
    config_free(&c);
    /* the same from flags */
    cr_assert_eq(run_argv(&c, &cli, ARGV("--upstream", "a:1", "--route", "/x off")), 0, "%s", err);
    cr_assert_null(policy_for(&c.idem, "/x/y"));
    config_free(&c);
}

Test(config, route_errors_name_the_line)
{
    struct config c;
    struct conf_cli cli;
    const char *bad[][2] = {
        {"route v1 lease 3s\n", ":2: route: the prefix 'v1' must start with '/'"},
        {"\nroute /v1 key-prefix x:\n", ":3: route: 'key-prefix' cannot be set per route"},
        {"route /v1 lease soon\n", ":2: route: lease: invalid duration 'soon'"},
        {"route /v1\n", ":2: route: expected PREFIX and a directive (or off)"},
        {"retention 1h\nroute /v1 lease 2h\n",
         "route /v1: lease (7200000 ms) must be shorter than retention (3600000 ms)"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "upstream a:1\n%s", bad[i][0]);
        cr_assert_eq(run_argv(&c, &cli, ARGV(write_tmp(text))), -1, "accepted: %s", bad[i][0]);
        cr_assert(strstr(err, bad[i][1]), "want '%s' in: %s", bad[i][1], err);
        config_free(&c);
        remove_tmps();
    }
}

/* redis as a URL, as managed services hand it out: user and password (percent-escapes
 * decoded), TLS for rediss, Redis's port when none is given; only database 0. */
Test(config, redis_url)
{
    struct config c;
    char a[CONF_HOST_MAX + 16];

    cr_assert_eq(load(&c, "redis rediss://default:p%40ss%3Aw@cache.example:6380/0\n"), 0, "%s",
                 err);
    cr_assert_str_eq(conf_addr_str(&c.redis.addr, a, sizeof(a)), "cache.example:6380");
    cr_assert_str_eq(c.redis.user, "default");
    cr_assert_str_eq(c.redis.password, "p@ss:w");
    cr_assert_eq(c.redis.tls, 1);
    config_free(&c);
    cr_assert_eq(load(&c, "redis redis://:only-a-password@[::1]\n"), 0, "%s", err);
    cr_assert_str_eq(conf_addr_str(&c.redis.addr, a, sizeof(a)), "[::1]:6379");
    cr_assert_null(c.redis.user, "an empty user is none");
    cr_assert_str_eq(c.redis.password, "only-a-password");
    cr_assert_eq(c.redis.tls, 0);
    config_free(&c);
    cr_assert_eq(load(&c, "redis redis://10.0.0.5\n"), 0, "%s", err);
    cr_assert_str_eq(conf_addr_str(&c.redis.addr, a, sizeof(a)), "10.0.0.5:6379");
    cr_assert_null(c.redis.password);
    config_free(&c);
    cr_assert(strstr(load_err("redis redis://user@h:1"), "t.conf:1: redis: the URL's user part "
                                                         "must be USER:PASSWORD@"),
              "%s", err);
    cr_assert(strstr(load_err("redis redis://:pw@h/3"), "database '3' in the URL: only 0"), "%s",
              err);
    cr_assert(strstr(load_err("redis redis://:p%zz@h"), "a bad %-escape"), "%s", err);
    cr_assert(strstr(load_err("redis rediss://h:0"), "invalid address in the URL"), "%s", err);
    cr_assert(strstr(load_err("redis rediss://"), "invalid address in the URL"), "%s", err);
}
