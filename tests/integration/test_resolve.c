/*
 * Upstream names resolved again (issue 10, part): a name whose address changes while the
 * proxy runs is followed, and a name with several addresses is several replicas.
 *
 * The name lives in a hosts file of the test's own: the proxy runs in a mount namespace
 * of its own (unshare -m, root) where that file is bind-mounted over /etc/hosts, so
 * nothing outside the test sees it. The file is rewritten in place (same inode).
 * Where a lookup must fail fast, a resolv.conf of the test's own is mounted too, naming a
 * local port where no DNS server listens.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(resolve, .fini = stack_teardown, .timeout = 60);

#define NAME    "upstream.idemproxy.test"
#define RNAME   "redis.idemproxy.test"
#define UNSHARE "/usr/bin/unshare" /* util-linux (essential on Debian) */

static char hosts[512];
static uint16_t up_port, proxy_port;
static pid_t proxy_pid, up2_pid, redis2_pid;

static void write_hosts(const char *lines)
{
    FILE *f = fopen(hosts, "w"); /* truncates: the same inode, which the mount shows */

    cr_assert_not_null(f);
    fputs(lines, f);
    fclose(f);
}

static int can_unshare(void)
{
    return geteuid() == 0 && system(UNSHARE " -m true 2>/dev/null") == 0;
}

/* Until 127.0.0.2:port accepts connections (bounded: 5 s). */
static int wait_second_address(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};

    inet_pton(AF_INET, "127.0.0.2", &sa.sin_addr);
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
        ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        usleep(10 * 1000);
    }
    return -1;
}

/* A second test upstream on 127.0.0.2, the same port as the stack's on 127.0.0.1. */
static void start_second_upstream(void)
{
    char listen[32];
    char *argv[] = {TEST_UPSTREAM_BIN, "--listen", listen, "--id", "up2", NULL};

    snprintf(listen, sizeof(listen), "127.0.0.2:%u", up_port);
    up2_pid = harness_spawn("up2", argv);
    cr_assert_gt(up2_pid, 0);
    cr_assert_eq(wait_second_address(up_port), 0, "the second upstream did not listen");
}

/* A second, empty redis-server on 127.0.0.2, the same port as the stack's. */
static void start_second_redis(void)
{
    char port[8], dir[600];
    char *argv[] = {"/usr/bin/redis-server",
                    SOURCE_DIR "/conf/redis.conf",
                    "--port",
                    port,
                    "--bind",
                    "127.0.0.2",
                    "--dir",
                    dir,
                    NULL};

    snprintf(port, sizeof(port), "%u", stack.redis_port);
    snprintf(dir, sizeof(dir), "%s/redis2.data", harness_tmpdir());
    cr_assert_eq(mkdir(dir, 0700), 0);
    redis2_pid = harness_spawn("redis2", argv);
    cr_assert_gt(redis2_pid, 0);
    cr_assert_eq(wait_second_address(stack.redis_port), 0, "the second redis did not listen");
}

/* The stack's Redis and upstream; a proxy that reaches the upstream (or Redis) by name
 * only, the name resolving as the hosts file says. */
static void start(const char *hosts_lines, int redis_by_name)
{
    char listen[32], upstream[64], redis[64];
    const char *script = "mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"";

    if (!can_unshare())
        cr_skip_test("needs root and unshare -m (a mount namespace for the hosts file)");
    stack_start(NULL, NULL);
    up_port = stack.up_port;
    snprintf(hosts, sizeof(hosts), "%s/hosts", harness_tmpdir());
    write_hosts(hosts_lines);
    proxy_port = harness_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", proxy_port);
    if (redis_by_name) {
        snprintf(upstream, sizeof(upstream), "%s", stack.up_arg);
        snprintf(redis, sizeof(redis), RNAME ":%u", stack.redis_port);
    } else {
        start_second_upstream();
        snprintf(upstream, sizeof(upstream), NAME ":%u", up_port);
        snprintf(redis, sizeof(redis), "%s", stack.redis_arg);
    }
    {
        char *argv[] = {UNSHARE,
                        "-m",
                        "sh",
                        "-c",
                        (char *)script,
                        "sh",
                        hosts,
                        IDEMPROXY_BIN,
                        "--listen",
                        listen,
                        "--workers",
                        "2",
                        "--upstream",
                        upstream,
                        "--redis",
                        redis,
                        "--upstream-resolve-interval",
                        "100ms",
                        NULL};
        proxy_pid = harness_spawn("proxyN", argv);
    }
    cr_assert_gt(proxy_pid, 0);
    if (harness_wait_port(proxy_port, 5000) != 0) {
        char *log = harness_read_log("proxyN");
        cr_assert_fail("the proxy did not listen:\n%s", log ? log : "(no log)");
    }
}

/* Which upstream answered a fresh GET ("" on failure). */
static void answered_by(char *buf, size_t len)
{
    static const char get[] = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    struct harness_resp r;

    buf[0] = '\0';
    if (harness_request(proxy_port, get, strlen(get), &r, 5000) != 0)
        return;
    if (r.status == 200)
        harness_header(&r, "X-Upstream-Id", 0, buf, len);
    harness_resp_free(&r);
}

static void stop(void)
{
    cr_assert(harness_stop_clean(proxy_pid, "proxyN", 10000), "the proxy did not exit cleanly");
}

Test(resolve, a_name_whose_address_changes_is_followed)
{
    char who[64], *log;
    int moved = 0;

    start("127.0.0.1 " NAME "\n", 0);
    answered_by(who, sizeof(who));
    cr_assert_str_eq(who, "upstream");
    write_hosts("127.0.0.2 " NAME "\n");
    for (int i = 0; i < 100 && !moved; i++) { /* 100 ms interval: bounded at ~5 s */
        usleep(50 * 1000);
        answered_by(who, sizeof(who));
        moved = strcmp(who, "up2") == 0;
    }
    cr_assert(moved, "still answered by '%s' after the address changed", who);
    /* a name that stops resolving keeps the addresses in use */
    write_hosts("# nothing\n");
    usleep(300 * 1000);
    answered_by(who, sizeof(who));
    cr_assert_str_eq(who, "up2");
    stop();
    log = harness_read_log("proxyN");
    cr_assert(log && strstr(log, "upstream addresses changed") &&
                  strstr(log, "keeping the addresses in use"),
              "%s", log);
    free(log);
}

Test(resolve, a_name_with_two_addresses_is_two_replicas)
{
    char who[64];
    int one = 0, two = 0;

    start("127.0.0.1 " NAME "\n127.0.0.2 " NAME "\n", 0);
    for (int i = 0; i < 20; i++) {
        answered_by(who, sizeof(who));
        one += strcmp(who, "upstream") == 0;
        two += strcmp(who, "up2") == 0;
    }
    cr_assert_eq(one + two, 20);
    cr_assert(one > 0 && two > 0, "round robin over both addresses: %d and %d", one, two);
    stop();
}

/* The Redis name is resolved on every reconnect: a Redis that moves to another address
 * (a managed failover by DNS) is found again without restarting the proxy. */
Test(resolve, a_redis_name_is_resolved_again_on_reconnect)
{
    struct harness_keyed k1 = {.method = "POST", .path = "/status/201", .key = "k1", .body = "{}"};
    struct harness_keyed k2 = {.method = "POST", .path = "/status/201", .key = "k2", .body = "{}"};
    struct harness_resp r;
    double t0;

    start("127.0.0.1 " RNAME "\n", 1);
    stack_post(proxy_port, &k1, &r);
    cr_assert_eq(r.status, 201);
    harness_resp_free(&r);
    /* Redis "fails over": the name now points at another, empty server */
    start_second_redis();
    write_hosts("127.0.0.2 " RNAME "\n");
    cr_assert_geq(harness_stop(stack.redis_pid, SIGKILL, 5000), 0);
    stack.redis_pid = 0;
    t0 = harness_now_s();
    for (;;) {
        stack_post(proxy_port, &k2, &r);
        if (r.status == 201)
            break;
        cr_assert_eq(r.status, 503, "only 'store unavailable' while Redis is away");
        harness_resp_free(&r);
        cr_assert_lt(harness_now_s() - t0, 5.0, "the proxy never reached the new address");
        usleep(100 * 1000);
    }
    harness_resp_free(&r);
    /* the records are the new server's: k2 replays from it, k1 (recorded in the old
     * one, which is gone) is new to it */
    stack_post(proxy_port, &k2, &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    stack_post(proxy_port, &k1, &r);
    cr_assert_not(harness_replayed(&r), "k1 replayed: still the old Redis?");
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "k2"), 1);
    stop();
}

/*
 * A reload whose upstream name does not resolve changes nothing: it is refused with the
 * name and the reason, at once (the failed lookup is not waited out), and requests keep
 * going to the upstream in use.
 */
Test(resolve, a_reload_with_a_name_that_does_not_resolve_keeps_the_running_configuration)
{
    char conf[512], resolv[512], listen[32], who[64], *log = NULL;
    const char *script = "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf "
                         "&& shift 2 && exec \"$@\"";
    FILE *f;
    double t0;

    if (!can_unshare())
        cr_skip_test("needs root and unshare -m (a mount namespace for the hosts file)");
    stack_start(NULL, NULL);
    up_port = stack.up_port;
    snprintf(hosts, sizeof(hosts), "%s/hosts", harness_tmpdir());
    write_hosts("127.0.0.1 " NAME "\n");
    snprintf(resolv, sizeof(resolv), "%s/resolv.conf", harness_tmpdir());
    f = fopen(resolv, "w");
    cr_assert_not_null(f);
    fputs("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n", f);
    fclose(f);
    snprintf(conf, sizeof(conf), "%s/resolve.conf", harness_tmpdir());
    f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "upstream " NAME ":%u\nredis %s\n", up_port, stack.redis_arg);
    fclose(f);
    proxy_port = harness_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", proxy_port);
    {
        char *argv[] = {UNSHARE, "-m",          "sh", "-c",       (char *)script, "sh", hosts,
                        resolv,  IDEMPROXY_BIN, conf, "--listen", listen,         NULL};
        proxy_pid = harness_spawn("proxyN", argv);
    }
    cr_assert_gt(proxy_pid, 0);
    cr_assert_eq(harness_wait_port(proxy_port, 5000), 0, "the proxy did not listen");
    answered_by(who, sizeof(who));
    cr_assert_str_eq(who, "upstream");

    f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "upstream nowhere.idemproxy.test:%u\nredis %s\n", up_port, stack.redis_arg);
    fclose(f);
    t0 = harness_now_s();
    cr_assert_eq(kill(proxy_pid, SIGHUP), 0);
    while (!(log = harness_read_log("proxyN")) || !strstr(log, "reload failed")) {
        free(log);
        log = NULL;
        cr_assert_lt(harness_now_s() - t0, 5.0, "no verdict on the reload");
        usleep(20 * 1000);
    }
    cr_assert(strstr(log, "upstream nowhere.idemproxy.test:") && strstr(log, "cannot resolve") &&
                  strstr(log, "keeping the running configuration"),
              "%s", log);
    free(log);
    answered_by(who, sizeof(who));
    cr_assert_str_eq(who, "upstream", "the running upstream was dropped");
    stop();
}

/*
 * Issue 18, part 3: a Redis name is looked up without blocking the worker. The proxy's
 * resolv.conf names a DNS server of the test's own that holds every question: while the
 * lookup of Redis's name waits, the one worker still answers a keyless request at once
 * (nothing to look up), and keyed requests get 503; once the server answers, keyed
 * requests are served. A name the server says does not exist is a clear log line.
 */
static pid_t start_with_dns(struct harness_dns *dns, const char *redis_name)
{
    char resolv[512], listen[32], redis[96];
    const char *script = "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf "
                         "&& shift 2 && exec \"$@\"";
    FILE *f;
    pid_t pid;

    if (!can_unshare())
        cr_skip_test("needs root and unshare -m (a mount namespace for resolv.conf)");
    stack_start(NULL, NULL);
    snprintf(hosts, sizeof(hosts), "%s/hosts", harness_tmpdir());
    write_hosts("127.0.0.1 localhost\n");
    snprintf(resolv, sizeof(resolv), "%s/resolv.conf", harness_tmpdir());
    cr_assert_not_null(f = fopen(resolv, "w"));
    fprintf(f, "nameserver 127.0.0.1:%u\noptions timeout:30 attempts:1\n", harness_dns_port(dns));
    fclose(f);
    proxy_port = harness_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", proxy_port);
    snprintf(redis, sizeof(redis), "%s:%u", redis_name, stack.redis_port);
    {
        char *argv[] = {UNSHARE,   "-m",        "sh",   "-c",          (char *)script,
                        "sh",      hosts,       resolv, IDEMPROXY_BIN, "--listen",
                        listen,    "--workers", "1",    "--upstream",  stack.up_arg,
                        "--redis", redis,       NULL};
        pid = harness_spawn("proxyN", argv);
    }
    cr_assert_gt(pid, 0);
    cr_assert_eq(harness_wait_port(proxy_port, 5000), 0, "the proxy did not listen");
    return pid;
}

/* Keyed requests (503 while Redis is not reached) until one is answered 201. */
static void served_within(const struct harness_keyed *k, double secs)
{
    struct harness_resp r;
    double t0 = harness_now_s();

    for (;; usleep(100 * 1000)) {
        stack_post(proxy_port, k, &r);
        if (r.status == 201)
            break;
        cr_assert_eq(r.status, 503, "%d %s", r.status, r.body);
        harness_resp_free(&r);
        cr_assert_lt(harness_now_s() - t0, secs, "Redis not reached within %.0f s", secs);
    }
    harness_resp_free(&r);
}

Test(resolve, a_slow_dns_server_delays_no_request_that_needs_no_lookup)
{
    static const char get[] = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    struct harness_keyed k = {
        .method = "POST", .path = "/status/201", .key = "dns-1", .body = "{}"};
    struct harness_dns *dns = harness_dns_start(1);
    struct harness_resp r;
    unsigned held = 0;
    double t0;

    cr_assert_not_null(dns);
    proxy_pid = start_with_dns(dns, "redis.slow.idemproxy.test");
    /* the lookup of Redis's name is out, unanswered */
    for (t0 = harness_now_s(); harness_dns_queries(dns, &held), held == 0;) {
        cr_assert_lt(harness_now_s() - t0, 5.0, "Redis's name was never looked up");
        usleep(10 * 1000);
    }
    /* the only worker is not waiting for it: a keyless request is answered */
    cr_assert_eq(harness_request(proxy_port, get, strlen(get), &r, 2000), 0,
                 "a keyless request waited for the DNS server");
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    stack_post(proxy_port, &k, &r);
    cr_assert_eq(r.status, 503, "no Redis yet: %d", r.status);
    harness_resp_free(&r);
    harness_dns_queries(dns, &held);
    cr_assert_gt(held, 0, "the lookup was answered: the test proves nothing");
    /* the server answers: Redis is reached, keyed requests are served */
    harness_dns_hold(dns, 0);
    served_within(&k, 10.0);
    cr_assert_eq(harness_executions(stack.up_port, "dns-1"), 1);
    stop();
    harness_dns_stop(dns);
}

Test(resolve, a_redis_name_that_does_not_exist_is_logged)
{
    struct harness_keyed k = {
        .method = "POST", .path = "/status/201", .key = "dns-2", .body = "{}"};
    struct harness_dns *dns = harness_dns_start(0);
    struct harness_resp r;
    char *log = NULL;
    double t0;

    cr_assert_not_null(dns);
    proxy_pid = start_with_dns(dns, "nx.idemproxy.test");
    stack_post(proxy_port, &k, &r);
    cr_assert_eq(r.status, 503);
    harness_resp_free(&r);
    for (t0 = harness_now_s();
         !(log = harness_read_log("proxyN")) || !strstr(log, "cannot reach nx.idemproxy.test:");
         usleep(20 * 1000)) {
        free(log);
        log = NULL;
        cr_assert_lt(harness_now_s() - t0, 5.0, "no log line for the failed lookup");
    }
    cr_assert(strstr(log, "nodename nor servname") || strstr(log, "not known") ||
                  strstr(log, "does not exist") || strstr(log, "Name or service"),
              "%s", log);
    free(log);
    cr_assert_eq(harness_executions(stack.up_port, "dns-2"), 0);
    stop();
    harness_dns_stop(dns);
}

/* The hosts file answers before any DNS server (the server here holds every question). */
Test(resolve, the_hosts_file_needs_no_dns_server)
{
    struct harness_keyed k = {
        .method = "POST", .path = "/status/201", .key = "dns-3", .body = "{}"};
    struct harness_dns *dns = harness_dns_start(1);

    cr_assert_not_null(dns);
    proxy_pid = start_with_dns(dns, "localhost");
    served_within(&k, 5.0);
    cr_assert_eq(harness_dns_queries(dns, NULL), 0, "the DNS server was asked for localhost");
    stop();
    harness_dns_stop(dns);
}
