/*
 * Cluster mode (issue 16, part 4) against a real Redis Cluster started by
 * scripts/redis-topology.sh (3 primaries + 3 replicas, node timeout 1 s): keys go to the
 * primary of their slot, a live slot migration (MOVED and ASK) fails no request, and a
 * primary killed under redis-wait 1 fails over without a key executing twice.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "redis/cluster.h"
#include "stack_fixture.h"

static char topo_dir[512];

static void teardown(void)
{
    char *out = NULL;

    if (topo_dir[0])
        harness_topology("cluster", "down", topo_dir, NULL, &out);
    free(out);
    stack_teardown();
}

TestSuite(cluster, .fini = teardown, .timeout = 150);

#define NSEEDS 6
static char seeds[NSEEDS][32];

static char topo_conf[2048];

/* Start the cluster (kind: "cluster", or "tls-cluster"); its nodes into seeds[], the
 * directives that reach it into topo_conf. */
static void cluster_up_as(const char *kind)
{
    char *log, *conf = topo_conf, *p, path[600];
    FILE *f;
    size_t n;
    int k = 0;

    snprintf(topo_dir, sizeof(topo_dir), "%s/topo", harness_tmpdir());
    cr_assert_eq(harness_topology(kind, "up", topo_dir, NULL, &log), 0, "%s", log);
    free(log);
    snprintf(path, sizeof(path), "%s/idemproxy.conf", topo_dir);
    cr_assert_not_null(f = fopen(path, "r"));
    n = fread(conf, 1, sizeof(topo_conf) - 1, f);
    fclose(f);
    conf[n] = '\0';
    cr_assert_not_null(p = strstr(conf, "redis-cluster "), "%s", conf);
    p += strlen("redis-cluster ");
    while (k < NSEEDS && sscanf(p, "%31s", seeds[k]) == 1) {
        p = strstr(p, seeds[k]) + strlen(seeds[k]);
        k++;
    }
    cr_assert_eq(k, NSEEDS, "%s", conf);
}

static void cluster_up(void)
{
    cluster_up_as("cluster");
}

static uint16_t port_of(const char *hostport)
{
    return (uint16_t)atoi(strrchr(hostport, ':') + 1);
}

/* The proxy on the cluster, its admin port into *admin; more args in extra. */
static pid_t cluster_proxy(uint16_t *port, uint16_t *admin, const char *const more[])
{
    const char *extra[40];
    static char admin_arg[32];
    int n = 0;

    for (int i = 0; i < NSEEDS; i++) {
        extra[n++] = "--redis-cluster";
        extra[n++] = seeds[i];
    }
    *admin = harness_free_port();
    snprintf(admin_arg, sizeof(admin_arg), "127.0.0.1:%u", *admin);
    extra[n++] = "--admin-listen";
    extra[n++] = admin_arg;
    for (int i = 0; more && more[i] && n < 38; i++)
        extra[n++] = more[i];
    extra[n] = NULL;
    return harness_stack_proxy(&stack, port, "proxyC", extra);
}

/* One primary of the cluster: its port, node id and pid. */
struct primary {
    uint16_t port;
    char id[48];
    long pid;
    unsigned from, to; /* its (first) range of slots */
};

/* The primaries (as CLUSTER NODES on any node says), at most 3. */
static int primaries(struct primary *out)
{
    static char nodes[8192];
    int n = 0;

    cr_assert_gt(harness_redis(port_of(seeds[0]), nodes, sizeof(nodes), "CLUSTER NODES"), 0);
    for (char *line = strtok(nodes, "\n"); line && n < 3; line = strtok(NULL, "\n")) {
        char id[48], addr[64], flags[64], info[4096];
        unsigned from = 0, to = 0;
        int got;
        /* id addr flags primary ping pong epoch link-state slot-range... */
        got = sscanf(line, "%47s %63s %63s %*s %*s %*s %*s %*s %u-%u", id, addr, flags, &from, &to);
        if (got < 3 || !strstr(flags, "master") || strstr(flags, "fail"))
            continue;
        out[n].from = from;
        out[n].to = got == 5 ? to : from;
        *strchr(addr, '@') = '\0';
        out[n].port = port_of(addr);
        snprintf(out[n].id, sizeof(out[n].id), "%s", id);
        cr_assert_gt(harness_redis(out[n].port, info, sizeof(info), "INFO server"), 0);
        out[n].pid = atol(strstr(info, "process_id:") + 11);
        n++;
    }
    return n;
}

static long long metric(uint16_t admin, const char *series)
{
    const char raw[] = "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    struct harness_resp r;
    double v;

    cr_assert_eq(harness_request(admin, raw, strlen(raw), &r, 5000), 0);
    v = harness_metric(r.body, series);
    harness_resp_free(&r);
    return (long long)v;
}

/* POST /pay with key: the status; *replayed set. */
static int pay(uint16_t port, const char *key, int *replayed)
{
    struct harness_keyed q = {.path = "/pay", .key = key, .body = "{\"amount\":7}"};
    struct harness_resp r;
    char buf[32];
    int st;

    cr_assert_eq(harness_keyed_post(port, &q, &r), 0, "no answer for %s", key);
    st = r.status;
    if (replayed)
        *replayed = harness_replayed(&r);
    if (st == 503)
        cr_assert_not_null(harness_header(&r, "Retry-After", 0, buf, sizeof(buf)),
                           "503 without Retry-After");
    harness_resp_free(&r);
    return st;
}

Test(cluster, routes_every_key_to_the_primary_of_its_slot)
{
    struct primary p[3];
    uint16_t port, admin;
    char key[32], raw[128], slot[32];
    struct harness_resp r;
    int replayed;
    pid_t pid;

    cluster_up();
    stack_start(NULL, NULL);
    cr_assert_gt(pid = cluster_proxy(&port, &admin, NULL), 0);
    cr_assert_eq(primaries(p), 3);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "cl-%d", i);
        cr_assert_eq(pay(port, key, &replayed), 200);
        cr_assert(!replayed);
    }
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "cl-%d", i);
        cr_assert_eq(pay(port, key, &replayed), 200);
        cr_assert(replayed, "%s was not replayed", key);
        cr_assert_eq(harness_executions(stack.up_port, key), 1);
    }
    /* every primary holds records: the keys were spread by slot, not sent to one node */
    for (int i = 0; i < 3; i++)
        cr_assert_gt(harness_redis(p[i].port, NULL, 0, "DBSIZE"), 0, "primary %u holds none",
                     p[i].port);
    /* our slot of a key is Redis's own (CRC16, hash tags) */
    for (int i = 0; i < 200; i++) {
        const char *shapes[] = {"idem:%d:x", "{user%d}.following", "a{%d}", "x{}{%d}", "%d{"};
        snprintf(key, sizeof(key), shapes[i % 5], i);
        snprintf(slot, sizeof(slot), "%u", cluster_key_slot(key, strlen(key)));
        cr_assert_eq(harness_redis(port_of(seeds[0]), NULL, 0, "CLUSTER KEYSLOT %s", key),
                     atoll(slot), "slot of %s", key);
    }
    /* /readyz names the three primaries; the map's age is exported */
    snprintf(raw, sizeof(raw), "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    cr_assert_eq(harness_request(admin, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "\"127.0.0.1:%u\"", p[i].port);
        cr_assert(strstr(r.body, key), "%s not in %s", key, r.body);
    }
    harness_resp_free(&r);
    cr_assert_geq(metric(admin, "idemproxy_redis_slot_map_age_seconds"), 0);
    cr_assert_gt(metric(admin, "idemproxy_redis_topology_refreshes_total"), 0);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* A live resharding (redis-cli --cluster reshard moves every slot of one primary to
 * another, keys and all): requests for old and new keys go on meanwhile, and none fails. */
Test(cluster, a_live_slot_migration_fails_no_request)
{
    struct primary p[3];
    uint16_t port, admin;
    char key[32], from[64], to[64], src[32];
    const char *argv[] = {"/usr/bin/redis-cli", "--cluster", "reshard",       src,
                          "--cluster-from",     from,        "--cluster-to",  to,
                          "--cluster-slots",    "5461",      "--cluster-yes", NULL};
    double t0;
    int replayed, st, done = 0, rounds = 0, fresh = 0;
    pid_t pid, mover;

    cluster_up();
    stack_start(NULL, NULL);
    cr_assert_gt(pid = cluster_proxy(&port, &admin, NULL), 0);
    cr_assert_eq(primaries(p), 3);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "mig-old-%d", i);
        cr_assert_eq(pay(port, key, NULL), 200);
    }
    snprintf(src, sizeof(src), "127.0.0.1:%u", p[0].port);
    snprintf(from, sizeof(from), "%s", p[0].id);
    snprintf(to, sizeof(to), "%s", p[1].id);
    cr_assert_gt(mover = harness_spawn("reshard", (char *const *)argv), 0);
    t0 = harness_now_s();
    while (!done && harness_now_s() - t0 < 60) {
        done = harness_exited(mover, &st) == 1;
        snprintf(key, sizeof(key), "mig-old-%d", rounds % 30);
        cr_assert_eq(pay(port, key, &replayed), 200, "%s during the migration", key);
        cr_assert(replayed, "%s was not replayed during the migration", key);
        snprintf(key, sizeof(key), "mig-new-%d", fresh++);
        cr_assert_eq(pay(port, key, &replayed), 200, "%s during the migration", key);
        cr_assert(!replayed);
        rounds++;
    }
    cr_assert(done && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the resharding did not finish");
    cr_assert_eq(harness_redis(p[0].port, NULL, 0, "DBSIZE"), 0, "keys left on the source");
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "mig-old-%d", i);
        cr_assert_eq(pay(port, key, &replayed), 200);
        cr_assert(replayed, "%s lost in the migration", key);
        cr_assert_eq(harness_executions(stack.up_port, key), 1);
    }
    for (int i = 0; i < fresh; i++) {
        snprintf(key, sizeof(key), "mig-new-%d", i);
        cr_assert_eq(harness_executions(stack.up_port, key), 1, "%s", key);
    }
    cr_log_info("%d rounds during the migration; %lld MOVED, %lld ASK followed", rounds,
                metric(admin, "idemproxy_redis_redirects_total{kind=\"moved\"}"),
                metric(admin, "idemproxy_redis_redirects_total{kind=\"ask\"}"));
    cr_assert_gt(metric(admin, "idemproxy_redis_redirects_total{kind=\"moved\"}"), 0);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* Every slot of one primary half-migrated (MIGRATING on it, IMPORTING on another): a new
 * key there is not on the source, so Redis answers ASK; it is claimed and recorded on the
 * target, and replayed from there. */
Test(cluster, a_new_key_in_a_migrating_slot_follows_ask)
{
    struct primary p[3];
    uint16_t port, admin;
    char key[32], a[64];
    long long before, asks;
    int replayed, mine = 0;

    cluster_up();
    stack_start(NULL, NULL);
    cr_assert_gt(cluster_proxy(&port, &admin, NULL), 0);
    cr_assert_eq(primaries(p), 3);
    before = harness_redis(p[1].port, NULL, 0, "DBSIZE");
    cr_assert_gt(p[0].to, p[0].from);
    for (unsigned s = p[0].from; s <= p[0].to; s++) {
        snprintf(a, sizeof(a), "%u", s);
        cr_assert_geq(
            harness_redis(p[1].port, NULL, 0, "CLUSTER SETSLOT %s IMPORTING %s", a, p[0].id), 0);
        cr_assert_geq(
            harness_redis(p[0].port, NULL, 0, "CLUSTER SETSLOT %s MIGRATING %s", a, p[1].id), 0);
    }
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "ask-%d", i);
        cr_assert_eq(pay(port, key, &replayed), 200);
    }
    asks = metric(admin, "idemproxy_redis_redirects_total{kind=\"ask\"}");
    cr_assert_gt(asks, 0, "no ASK was followed");
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "ask-%d", i);
        cr_assert_eq(pay(port, key, &replayed), 200);
        cr_assert(replayed, "%s", key);
        cr_assert_eq(harness_executions(stack.up_port, key), 1);
    }
    mine = (int)(harness_redis(p[1].port, NULL, 0, "DBSIZE") - before);
    cr_assert_gt(mine, 0, "nothing was recorded on the importing node");
    cr_assert_eq(harness_redis(p[0].port, NULL, 0, "DBSIZE"), 0, "recorded on the source");
}

/* redis-wait 1: a primary killed (SIGKILL) after keys were recorded on it. While its
 * replica takes over, and while that shard has no replica left to confirm a claim, only
 * 200 or 503 + Retry-After is answered; every recorded key is replayed (WAIT put it on
 * the replica), none executes twice; once the killed node is back (as a replica) the
 * shard takes new keys again. */
Test(cluster, a_killed_primary_fails_over_without_a_second_execution)
{
    const char *wait[] = {"--redis-wait", "1,200ms", NULL};
    struct primary p[3];
    uint16_t port, admin;
    char key[32], portarg[8], *log;
    double t0, t1, served = -1;
    int replayed, st, n503 = 0, fresh = 0, run = 0;
    pid_t pid;

    cluster_up();
    stack_start(NULL, NULL);
    cr_assert_gt(pid = cluster_proxy(&port, &admin, wait), 0);
    cr_assert_eq(primaries(p), 3);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "kill-%d", i);
        cr_assert_eq(pay(port, key, NULL), 200);
    }
    cr_assert_eq(kill((pid_t)p[0].pid, SIGKILL), 0);
    t0 = harness_now_s();
    /* every recorded key is replayed again (from the promoted replica for the dead
     * shard's), with new keys between them: only 200 or 503 meanwhile */
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "kill-%d", i);
        while ((st = pay(port, key, &replayed)) == 503 && harness_now_s() - t0 < 20) {
            snprintf(key, sizeof(key), "kill-new-%d", fresh++);
            st = pay(port, key, NULL);
            cr_assert(st == 200 || st == 503, "answered %d during the failover", st);
            n503 += st == 503;
            snprintf(key, sizeof(key), "kill-%d", i);
            usleep(50 * 1000);
        }
        cr_assert_eq(st, 200, "%s not served 20 s after the kill", key);
        cr_assert(replayed, "%s executed again after the failover", key);
    }
    cr_log_info("every recorded key replayed %.2f s after the kill (%d new keys answered 503 "
                "meanwhile)",
                harness_now_s() - t0, n503);
    /* the killed node comes back as the promoted one's replica: WAIT is met again */
    snprintf(portarg, sizeof(portarg), "%u", p[0].port);
    cr_assert_eq(harness_topology("cluster", "restart", topo_dir, portarg, &log), 0, "%s", log);
    free(log);
    t1 = harness_now_s();
    for (; run < 20 && harness_now_s() - t1 < 20; fresh++) {
        snprintf(key, sizeof(key), "kill-new-%d", fresh);
        st = pay(port, key, NULL);
        cr_assert(st == 200 || st == 503, "answered %d after the restart", st);
        if (st != 200)
            run = 0;
        else if (run++ == 0)
            served = harness_now_s() - t1;
        usleep(20 * 1000);
    }
    cr_assert_eq(run, 20, "new keys not served 20 s after the node came back");
    cr_log_info("new keys on every shard served %.2f s after the node came back", served);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "kill-%d", i);
        cr_assert_eq(harness_executions(stack.up_port, key), 1, "%s", key);
    }
    for (int i = 0; i < fresh; i++) {
        snprintf(key, sizeof(key), "kill-new-%d", i);
        cr_assert_leq(harness_executions(stack.up_port, key), 1, "%s", key);
    }
    /* one replica per shard: redis-wait 1 is every replica, nothing to warn about */
    log = harness_read_log("proxyC");
    cr_assert_null(strstr(log, "but redis-wait asks"), "%s", log);
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* redis-pubsub sharded: a duplicate that waits for the first (in-flight wait) is woken by
 * the SPUBLISH of the record, delivered by SSUBSCRIBE at the node of the key's slot. The
 * waiter has no other way to learn it before its wait-timeout (the lease, 30 s, is
 * longer): without the wake-up it would end in 409. */
Test(cluster, a_waiting_duplicate_is_woken_by_a_sharded_message)
{
    const char *more[] = {
        "--redis-pubsub", "sharded", "--in-flight", "wait", "--wait-timeout", "5s",
        "--lease",        "30s",     NULL};
    struct harness_keyed q = {.path = "/slow/1000", .body = "{}"};
    struct harness_resp r1, r2;
    uint16_t port, admin;
    char key[32];
    int fd1, fd2;
    pid_t pid;

    cluster_up();
    stack_start(NULL, NULL);
    cr_assert_gt(pid = cluster_proxy(&port, &admin, more), 0);
    for (int i = 0; i < 3; i++) { /* keys on different shards, most likely */
        snprintf(key, sizeof(key), "shard-wake-%d", i);
        q.key = key;
        cr_assert_geq(fd1 = harness_keyed_send(port, &q), 0);
        /* the first is claimed and at the upstream before its duplicate is sent */
        for (double t0 = harness_now_s(); harness_executions(stack.up_port, key) < 1;
             usleep(10 * 1000))
            cr_assert_lt(harness_now_s() - t0, 5.0, "%s never reached the upstream", key);
        cr_assert_geq(fd2 = harness_keyed_send(port, &q), 0);
        cr_assert_eq(harness_read_response(fd1, &r1, 0, 10000), 0);
        cr_assert_eq(harness_read_response(fd2, &r2, 0, 10000), 0);
        cr_assert_eq(r1.status, 200, "%s: %d %s", key, r1.status, r1.body);
        cr_assert_eq(r2.status, 200, "the waiter was not woken: %d %s", r2.status, r2.body);
        cr_assert(harness_replayed(&r2));
        harness_resp_free(&r1);
        harness_resp_free(&r2);
        close(fd1);
        close(fd2);
        cr_assert_eq(harness_executions(stack.up_port, key), 1);
    }
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* Bad input: seeds nobody listens on. Keyed requests get 503 + Retry-After, nothing is
 * forwarded, /readyz says 503, and the log says why. */
Test(cluster, unreachable_seeds_refuse_keyed_requests)
{
    const char raw[] = "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    struct harness_resp r;
    uint16_t port, admin;
    char *log;
    pid_t pid;

    for (int i = 0; i < NSEEDS; i++)
        snprintf(seeds[i], sizeof(seeds[i]), "127.0.0.1:%u", harness_free_port());
    stack_start(NULL, NULL);
    cr_assert_gt(pid = cluster_proxy(&port, &admin, NULL), 0);
    cr_assert_eq(pay(port, "cl-dead", NULL), 503);
    cr_assert_eq(harness_executions(stack.up_port, "cl-dead"), 0);
    cr_assert_eq(harness_request(admin, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 503, "%s", r.body);
    harness_resp_free(&r);
    log = harness_read_log("proxyC");
    cr_assert(log && strstr(log, "cannot read the cluster slot map"), "%s", log ? log : "");
    free(log);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}

/* Redis Cluster over TLS (issue 17, part 4): every node with tls-auth-clients yes, the
 * bus and replication over TLS, CLUSTER SLOTS naming the TLS ports. The same connection
 * layer: keys spread over the primaries, each executed once, every retry a replay. */
Test(cluster, keyed_requests_across_a_tls_cluster)
{
    static char vals[4][600];
    const char *names[4] = {"redis-tls-ca-file", "redis-tls-cert-file", "redis-tls-key-file"};
    const char *more[12] = {"--redis-tls", "yes"};
    struct harness_keyed q = {.path = "/pay", .body = "{}"};
    struct harness_resp r;
    uint16_t port, admin;
    char key[32], raw[128], *log;
    int n = 2, nodes = 0;
    pid_t pid;

    stack_start(NULL, NULL);
    cluster_up_as("tls-cluster");
    for (int i = 0; i < 3; i++) {
        char *p = strstr(topo_conf, names[i]);
        cr_assert_not_null(p, "%s", topo_conf);
        cr_assert_eq(sscanf(p + strlen(names[i]), " %599s", vals[i]), 1);
        snprintf(key, sizeof(key), "--%s", names[i]);
        more[n++] = strdup(key);
        more[n++] = vals[i];
    }
    more[n] = NULL;
    cr_assert_gt(pid = cluster_proxy(&port, &admin, more), 0);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "tlsc-%d", i);
        q.key = key;
        stack_post(port, &q, &r);
        cr_assert_eq(r.status, 200, "%s: %d %s", key, r.status, r.body);
        harness_resp_free(&r);
        stack_post(port, &q, &r);
        cr_assert(harness_replayed(&r), "%s: %d %s", key, r.status, r.body);
        harness_resp_free(&r);
        cr_assert_eq(harness_executions(stack.up_port, key), 1);
    }
    /* /readyz: ready, on the three primaries (their TLS ports, from CLUSTER SLOTS) */
    snprintf(raw, sizeof(raw), "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    cr_assert_eq(harness_request(admin, raw, strlen(raw), &r, 5000), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    for (const char *p = r.body; (p = strstr(p, "\"127.0.0.1:")); p++)
        nodes++;
    cr_assert_eq(nodes, 3, "%s", r.body);
    harness_resp_free(&r);
    log = harness_read_log("proxyC");
    cr_assert_null(strstr(log, "TLS"), "%s", log);
    free(log);
    for (int i = 2; i < n; i += 2)
        free((char *)more[i]);
    cr_assert(harness_stop_clean(pid, "proxyC", 10000));
}
