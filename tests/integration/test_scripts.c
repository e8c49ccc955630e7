/*
 * The shipped scripts, end to end: the retry storm and the chaos run hold (and can fail),
 * the compose file is valid and only uses flags the binaries accept, the benchmark runs;
 * and demo-bank's injected faults do what they say.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* A topology a test started ("kind", dir): its nodes daemonize, so harness_cleanup's
 * process groups do not cover them; the suite's .fini stops it even after a failed
 * assertion. */
static const char *topo_kind;
static char topo_dir[512];

static void scripts_fini(void)
{
    if (topo_kind) {
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "bash %s/scripts/redis-topology.sh %s down %s >/dev/null 2>&1",
                 SOURCE_DIR, topo_kind, topo_dir);
        (void)!system(cmd);
    }
    harness_cleanup();
}

TestSuite(scripts, .fini = scripts_fini, .timeout = 600);

/* Run "bash SCRIPT args..." with output in <tmpdir>/<logname>.log; returns the exit code. */
static int run_script(const char *logname, char **out, int timeout_ms, const char *const args[])
{
    char *argv[48];
    int n = 0, st;
    pid_t pid;

    argv[n++] = "/bin/bash";
    for (int i = 0; args[i] && n < 46; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    pid = harness_spawn(logname, argv);
    cr_assert_gt(pid, 0);
    st = harness_stop(pid, 0, timeout_ms);
    *out = harness_read_log(logname);
    cr_assert_not_null(*out);
    cr_assert(st >= 0 && WIFEXITED(st), "%s did not finish:\n%s", args[0], *out);
    return WEXITSTATUS(st);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *s;
    long n;

    cr_assert_not_null(f, "%s missing", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    s = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

Test(scripts, storm_holds_with_zero_duplicates)
{
    char report[512], json[512], *out, *j, *html;
    const char *args[] = {SOURCE_DIR "/scripts/storm.sh",
                          "--bin",
                          BUILD_DIR,
                          "--keys",
                          "150",
                          "--dupes",
                          "6",
                          "--concurrency",
                          "24",
                          "--abort-rate",
                          "0.2",
                          "--report",
                          report,
                          NULL};

    snprintf(report, sizeof(report), "%s/storm.html", harness_tmpdir());
    snprintf(json, sizeof(json), "%s/storm.json", harness_tmpdir());
    cr_assert_eq(run_script("storm", &out, 300000, args), 0, "storm failed:\n%s", out);
    j = slurp(json);
    cr_assert(strstr(j, "\"pass\": true"), "%s", j);
    cr_assert(strstr(j, "\"keys_duplicated\": 0"), "%s", j);
    cr_assert(strstr(j, "\"keys_mismatched\": 0"), "%s", j);
    cr_assert(strstr(j, "\"keys_unanswered\": 0"), "%s", j);
    html = slurp(report);
    cr_assert(strstr(html, "<svg"), "no chart in the report");
    cr_assert(strstr(html, "PASS"));
    free(html);
    free(j);
    free(out);
}

/* With on-redis-error pass and Redis frozen, the proxies forward unprotected: the
 * harness must notice the double executions — proof that it can fail. */
Test(scripts, storm_detects_duplicates_when_protection_is_off)
{
    char report[512], json[512], *out, *j;
    const char *args[] = {SOURCE_DIR "/scripts/storm.sh",
                          "--bin",
                          BUILD_DIR,
                          "--keys",
                          "40",
                          "--dupes",
                          "6",
                          "--concurrency",
                          "24",
                          "--abort-rate",
                          "0",
                          "--proxy-args",
                          "--on-redis-error pass --redis-timeout 50ms",
                          "--pause-redis",
                          "--report",
                          report,
                          NULL};

    snprintf(report, sizeof(report), "%s/bad.html", harness_tmpdir());
    snprintf(json, sizeof(json), "%s/bad.json", harness_tmpdir());
    cr_assert_eq(run_script("storm-bad", &out, 300000, args), 1, "retrystorm did not fail:\n%s",
                 out);
    j = slurp(json);
    cr_assert(strstr(j, "\"pass\": false"), "%s", j);
    cr_assert_null(strstr(j, "\"keys_duplicated\": 0"), "no duplicate detected: %s", j);
    free(j);
    free(out);
}

/* The storm across a failover: a manual CLUSTER FAILOVER of one primary 2 s into an
 * open-loop storm on a real 3 + 3 cluster, redis-wait 1: every key executed once, and the
 * probe's verdict is printed. */
Test(scripts, storm_across_a_cluster_failover_holds)
{
    char report[512], json[512], *out, *j;
    const char *args[] = {SOURCE_DIR "/scripts/storm.sh",
                          "--bin",
                          BUILD_DIR,
                          "--topology",
                          "cluster",
                          "--failover",
                          "manual",
                          "--rate",
                          "150",
                          "--duration",
                          "6s",
                          "--concurrency",
                          "24",
                          "--report",
                          report,
                          NULL};

    snprintf(report, sizeof(report), "%s/failover.html", harness_tmpdir());
    snprintf(json, sizeof(json), "%s/failover.json", harness_tmpdir());
    cr_assert_eq(run_script("storm-failover", &out, 300000, args), 0, "storm failed:\n%s", out);
    cr_assert(strstr(out, "failover: manual") && strstr(out, "failover probes:"), "%s", out);
    j = slurp(json);
    cr_assert(strstr(j, "\"pass\": true"), "%s", j);
    cr_assert(strstr(j, "\"keys_duplicated\": 0"), "%s", j);
    cr_assert(strstr(j, "\"keys_unanswered\": 0"), "%s", j);
    free(j);
    free(out);
}

/* The chaos run, small: faults on a seeded schedule, the SIGKILL phase accounted exactly,
 * every check green. The seed is random (more schedules over time) and printed. */
Test(scripts, chaos_quick_holds)
{
    char report[512], json[512], kill[512], *out, *j, *k, *html;
    const char *args[] = {
        SOURCE_DIR "/scripts/chaos.sh", "--quick", "--bin", BUILD_DIR, "--report", report, NULL};

    snprintf(report, sizeof(report), "%s/chaos.html", harness_tmpdir());
    snprintf(json, sizeof(json), "%s/chaos.json", harness_tmpdir());
    snprintf(kill, sizeof(kill), "%s/chaos-kill.html", harness_tmpdir());
    cr_assert_eq(run_script("chaos", &out, 300000, args), 0, "chaos failed:\n%s", out);
    cr_assert(strstr(out, "chaos verdict: PASS"), "%s", out);
    /* the schedule is printed before it runs, with one of each kind at least */
    cr_assert(strstr(out, "fault schedule (seed "), "%s", out);
    cr_assert(strstr(out, "freeze Redis (SIGSTOP) for "), "%s", out);
    cr_assert(strstr(out, "restart Redis (SIGTERM"), "%s", out);
    cr_assert(strstr(out, "rolling restart of the replicas"), "%s", out);
    j = slurp(json);
    cr_assert(strstr(j, "\"pass\": true"), "%s", j);
    cr_assert(strstr(j, "\"keys_duplicated\": 0"), "%s", j);
    cr_assert(strstr(j, "\"keys_mismatched\": 0"), "%s", j);
    cr_assert(strstr(j, "\"keys_unanswered\": 0"), "%s", j);
    cr_assert(strstr(j, "{\"label\": \"redis frozen (SIGSTOP, then SIGCONT)\""), "%s", j);
    cr_assert(strstr(j, "{\"label\": \"demo-bank: 500 after executing\""), "%s", j);
    /* the SIGKILL phase: every key at the killed replica's upstream executed once more,
     * as predicted, and nothing else */
    cr_assert(strstr(out, "SIGKILL phase: 12 of 12 expected re-executions, 0 other duplicates"),
              "%s", out);
    html = slurp(report);
    cr_assert(strstr(html, "<div class=\"verdict pass\">PASS</div>"));
    cr_assert(strstr(html, "<h2>Faults injected, and what they led to</h2>"));
    cr_assert(strstr(html, "replica SIGKILLed with its requests at the upstream"));
    k = slurp(kill);
    cr_assert(strstr(k, "expected re-executions</div><div class=\"v\">12 / 12</div>"), "%s", k);
    free(k);
    free(html);
    free(j);
    free(out);
}

/* With on-redis-error pass the same chaos must be caught: while Redis is frozen or
 * restarting, claims fail (at once with a 50 ms redis-timeout, shorter than any freeze)
 * and the replicas forward unprotected, so copies of a key execute again. */
Test(scripts, chaos_detects_duplicates_when_protection_is_off)
{
    char report[512], json[512], *out, *j;
    const char *args[] = {SOURCE_DIR "/scripts/chaos.sh",
                          "--quick",
                          "--bin",
                          BUILD_DIR,
                          "--proxy-arg",
                          "--on-redis-error pass",
                          "--proxy-arg",
                          "--redis-timeout 50ms",
                          "--report",
                          report,
                          NULL};

    snprintf(report, sizeof(report), "%s/chaos-bad.html", harness_tmpdir());
    snprintf(json, sizeof(json), "%s/chaos-bad.json", harness_tmpdir());
    cr_assert_eq(run_script("chaos-bad", &out, 300000, args), 1, "chaos did not fail:\n%s", out);
    cr_assert(strstr(out, "chaos verdict: FAIL"), "%s", out);
    cr_assert(strstr(out, "keys executed more than once"), "%s", out);
    cr_assert(strstr(out, "<- FAIL (up to "), "%s", out);
    cr_assert(strstr(out, "    e.g. key ") && strstr(out, ": executed "), "no duplicate named:\n%s",
              out);
    cr_assert(strstr(out, "forwarded UNPROTECTED"), "%s", out);
    j = slurp(json);
    cr_assert(strstr(j, "\"pass\": false"), "%s", j);
    cr_assert_null(strstr(j, "\"keys_duplicated\": 0"), "no duplicate detected: %s", j);
    free(j);
    free(out);
}

Test(scripts, compose_file_is_valid_and_its_commands_are_accepted)
{
    char *out;
    const char *args[] = {SOURCE_DIR "/tests/integration/compose_check.sh", BUILD_DIR, NULL};

    cr_assert_eq(run_script("compose", &out, 120000, args), 0, "%s", out);
    cr_assert(strstr(out, "checked idemproxy"), "%s", out);
    cr_assert(strstr(out, "checked demo-bank"), "%s", out);
    cr_assert(strstr(out, "checked retrystorm"), "%s", out);
    free(out);
}

Test(scripts, bench_runs_end_to_end)
{
    char md[512], *out, *doc;
    const char *args[] = {
        SOURCE_DIR "/scripts/bench.sh", "--quick", "--bin", BUILD_DIR, "--out", md, NULL};

    snprintf(md, sizeof(md), "%s/BENCH.md", harness_tmpdir());
    cr_assert_eq(run_script("bench", &out, 400000, args), 0, "bench failed:\n%s", out);
    doc = slurp(md);
    cr_assert(strstr(doc, "## Throughput"), "%s", doc);
    cr_assert(strstr(doc, "nginx proxy_pass, keyless GET"), "%s", doc);
    /* HAProxy ran and answered: its row has a rate, not the 0 of an empty median */
    cr_assert(strstr(doc, "| HAProxy, keyless GET | "), "%s", doc);
    cr_assert_null(strstr(doc, "| HAProxy, keyless GET | 0 |"), "%s", doc);
    /* the sealed-record and Redis-over-TLS idemproxys answered too */
    cr_assert(strstr(doc, "| idemproxy, keyed POST, replay of sealed records"), "%s", doc);
    cr_assert_null(strstr(doc, "replay of sealed records (× the same unsealed) | 0 |"), "%s", doc);
    cr_assert(strstr(doc, "| idemproxy, keyed POST, fresh key, Redis over TLS"), "%s", doc);
    cr_assert_null(strstr(doc, "× the same over TCP) | 0 |"), "%s", doc);
    /* the three proxies answered over TLS, keep-alive and a handshake per request */
    cr_assert(strstr(doc, "| idemproxy `tls-listen`, keyless GET over TLS 1.3"), "%s", doc);
    cr_assert_null(strstr(doc, "keep-alive (× nginx TLS) | 0 |"), "%s", doc);
    cr_assert(strstr(doc, "| idemproxy, TLS, a new connection per request (× nginx) | "), "%s",
              doc);
    cr_assert_null(strstr(doc, "a new connection per request (× nginx) | 0 |"), "%s", doc);
    /* and with tickets off on all three: full handshakes */
    cr_assert(strstr(doc, "| idemproxy, TLS, a full handshake per request"), "%s", doc);
    cr_assert_null(strstr(doc, "`tls-session-tickets off`; × nginx) | 0 |"), "%s", doc);
    cr_assert_null(strstr(doc, "`tune.ssl.cachesize 0`; × nginx) | 0 |"), "%s", doc);
    cr_assert(strstr(doc, "| HAProxy `bind ssl`, keyless GET over TLS 1.3"), "%s", doc);
    /* Redis's own account of a fresh key: the record script and the claim's SET ran */
    {
        const char *row = strstr(doc, "| idemproxy, keyed POST, fresh key | ");
        double cpu = 0, evalsha = 0, set = 0;

        cr_assert(strstr(doc, "## Redis per request"), "%s", doc);
        cr_assert(row, "%s", doc);
        cr_assert_eq(sscanf(row, "| idemproxy, keyed POST, fresh key | %lf | %lf | %lf |", &cpu,
                            &evalsha, &set),
                     3, "%s", row);
        cr_assert(cpu > 0 && evalsha > 0 && set > 0, "%s", row);
        /* about one record script and two SETs (claim, and the script's) per key: a few
         * renewals more (EVALSHA) on a loaded machine, where requests outlast lease/3 */
        {
            const char *e = strstr(row, "evalsha "), *t = strstr(row, "set ");
            double ne = 0, nt = 0;

            cr_assert(e && t && sscanf(e, "evalsha %lf", &ne) == 1 &&
                          sscanf(t, "set %lf", &nt) == 1,
                      "%s", row);
            cr_assert(ne >= 0.99 && ne < 1.2 && nt >= 1.99 && nt < 2.2, "%s", row);
        }
    }
    cr_assert(strstr(doc, "## Latency at a constant rate"), "%s", doc);
    cr_assert(strstr(doc, "## Memory with idle connections"), "%s", doc);
    cr_assert(strstr(doc, "Idle TLS 1.3 connections"), "%s", doc);
    free(doc);
    free(out);
}

/* demo-bank executes every payment it gets — twice if asked twice — and --ledger FILE
 * keeps one JSON line per execution. */
Test(scripts, demo_bank_double_charges_and_keeps_a_ledger_file)
{
    uint16_t port = harness_free_port();
    char listen[32], path[512], *argv[8];
    const char *raw = "POST /payments HTTP/1.1\r\nHost: b\r\nIdempotency-Key: twice\r\n"
                      "Content-Length: 14\r\nConnection: close\r\n\r\n{\"amount\": 10}";
    struct harness_resp r;
    pid_t pid;
    char *file;
    int lines = 0;

    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    snprintf(path, sizeof(path), "%s/ledger.jsonl", harness_tmpdir());
    argv[0] = BUILD_DIR "/tools/demo-bank/demo-bank";
    argv[1] = "--listen";
    argv[2] = listen;
    argv[3] = "--ledger";
    argv[4] = path;
    argv[5] = NULL;
    pid = harness_spawn("bank", argv);
    cr_assert_gt(pid, 0);
    cr_assert_eq(harness_wait_port(port, 10000), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(harness_request(port, raw, strlen(raw), &r, 5000), 0);
        cr_assert_eq(r.status, 201);
        harness_resp_free(&r);
    }
    cr_assert_eq(harness_request(port,
                                 "GET /ledger HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n", 52,
                                 &r, 5000),
                 0);
    cr_assert(strstr(r.body, "\"twice\": 2"), "%s", r.body);
    harness_resp_free(&r);
    file = slurp(path);
    for (char *p = file; (p = strchr(p, '\n')); p++)
        lines++;
    cr_assert_eq(lines, 2, "%s", file);
    cr_assert(strstr(file, "\"key\":\"twice\""), "%s", file);
    free(file);
    cr_assert(harness_stop_clean(pid, "bank", 5000));
}

/* POST /payments {"amount": 10} with this key and extra header lines (each ending in CRLF;
 * "" for none) to a demo-bank; harness_request's result, r filled. */
static int bank_pay(uint16_t port, const char *key, const char *extra, struct harness_resp *r)
{
    char raw[512];
    int n = snprintf(raw, sizeof(raw),
                     "POST /payments HTTP/1.1\r\nHost: b\r\nIdempotency-Key: %s\r\n%s"
                     "Content-Length: 14\r\nConnection: close\r\n\r\n{\"amount\": 10}",
                     key, extra);

    cr_assert_lt(n, (int)sizeof(raw));
    return harness_request(port, raw, (size_t)n, r, 5000);
}

static char *bank_get(uint16_t port, const char *path)
{
    char raw[128];
    struct harness_resp r;
    char *body;
    int n =
        snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n", path);

    cr_assert_eq(harness_request(port, raw, (size_t)n, &r, 5000), 0);
    cr_assert_eq(r.status, 200, "%s: %d", path, r.status);
    body = strdup(r.body);
    harness_resp_free(&r);
    return body;
}

static pid_t start_bank(const char *logname, uint16_t *port, const char *seed)
{
    char listen[32], *argv[16];
    int n = 0;
    pid_t pid;

    *port = harness_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", *port);
    argv[n++] = BUILD_DIR "/tools/demo-bank/demo-bank";
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--fail-rate";
    argv[n++] = "0.25";
    argv[n++] = "--fail-after-rate";
    argv[n++] = "0.25";
    argv[n++] = "--reset-after-rate";
    argv[n++] = "0.25";
    argv[n++] = "--seed";
    argv[n++] = (char *)seed;
    argv[n] = NULL;
    pid = harness_spawn(logname, argv);
    cr_assert_gt(pid, 0);
    cr_assert_eq(harness_wait_port(*port, 10000), 0);
    return pid;
}

/* The three injected faults do what --help says — 503 executes nothing, 500 and reset
 * execute — the ledger counts executions only, GET /faults counts the faults, and the
 * draws are the same for the same seed. */
Test(scripts, demo_bank_faults_execute_as_documented)
{
    enum { N = 40 };
    char seq[2][N + 1], key[16], want[32], *ledger, *faults;
    int seen[2][4] = {{0}}; /* per run: 201, 503, 500, reset */
    uint16_t port;

    for (int run = 0; run < 2; run++) {
        pid_t pid = start_bank(run ? "bank-faults2" : "bank-faults1", &port, "99");
        int executed = 0;

        for (int i = 0; i < N; i++) {
            struct harness_resp r;
            int rc;

            snprintf(key, sizeof(key), "f%d", i);
            rc = bank_pay(port, key, "", &r);
            if (rc < 0 || r.status == 0) {
                seq[run][i] = 'R';
                seen[run][3]++;
            } else if (r.status == 503) {
                seq[run][i] = '3';
                seen[run][1]++;
                cr_assert(strstr(r.body, "nothing executed"), "%s", r.body);
            } else if (r.status == 500) {
                seq[run][i] = '5';
                seen[run][2]++;
                cr_assert(strstr(r.body, "demo-bank:failed-after-executing"), "%s", r.body);
                cr_assert(strstr(r.body, "after executing payment pay_"), "%s", r.body);
            } else {
                cr_assert_eq(r.status, 201, "%d %s", r.status, r.body);
                seq[run][i] = '2';
                seen[run][0]++;
            }
            executed += seq[run][i] != '3';
            harness_resp_free(&r);
        }
        seq[run][N] = '\0';
        ledger = bank_get(port, "/ledger");
        snprintf(want, sizeof(want), "{\"total\": %d,", executed);
        cr_assert(strstr(ledger, want), "%s (outcomes %s)", ledger, seq[run]);
        for (int i = 0; i < N; i++) {
            snprintf(want, sizeof(want), "\"f%d\": 1", i);
            if (seq[run][i] == '3')
                cr_assert_null(strstr(ledger, want), "f%d answered 503 but executed", i);
            else
                cr_assert(strstr(ledger, want), "f%d (%c) not executed: %s", i, seq[run][i],
                          ledger);
        }
        faults = bank_get(port, "/faults");
        snprintf(want, sizeof(want), "\"fail_before\": %d,", seen[run][1]);
        cr_assert(strstr(faults, want), "%s vs %s", faults, seq[run]);
        snprintf(want, sizeof(want), "\"fail_after\": %d,", seen[run][2]);
        cr_assert(strstr(faults, want), "%s vs %s", faults, seq[run]);
        snprintf(want, sizeof(want), "\"reset_after\": %d,", seen[run][3]);
        cr_assert(strstr(faults, want), "%s vs %s", faults, seq[run]);
        cr_assert(strstr(faults, "\"seed\": 99}"), "%s", faults);
        free(ledger);
        free(faults);
        cr_assert(harness_stop_clean(pid, run ? "bank-faults2" : "bank-faults1", 5000));
    }
    for (int k = 0; k < 4; k++)
        cr_assert_gt(seen[0][k], 0, "an outcome never happened in %s", seq[0]);
    cr_assert_str_eq(seq[0], seq[1], "the same seed drew differently");
}

/* Demo-Fault chooses the fault (no draw), Demo-Delay the answer's delay. */
Test(scripts, demo_bank_fault_and_delay_headers)
{
    struct harness_resp r;
    struct timespec t0, t1;
    uint16_t port;
    pid_t pid = start_bank("bank-headers", &port, "1");
    char *ledger;
    long ms;

    cr_assert_eq(bank_pay(port, "h-none", "Demo-Fault: none\r\n", &r), 0);
    cr_assert_eq(r.status, 201);
    harness_resp_free(&r);
    cr_assert_eq(bank_pay(port, "h-503", "Demo-Fault: 503\r\n", &r), 0);
    cr_assert_eq(r.status, 503);
    harness_resp_free(&r);
    cr_assert_eq(bank_pay(port, "h-500", "Demo-Fault: 500\r\n", &r), 0);
    cr_assert_eq(r.status, 500);
    harness_resp_free(&r);
    cr_assert(bank_pay(port, "h-reset", "Demo-Fault: reset\r\n", &r) < 0 || r.status == 0);
    harness_resp_free(&r);
    cr_assert_eq(bank_pay(port, "h-bad", "Demo-Fault: sometimes\r\n", &r), 0);
    cr_assert_eq(r.status, 400);
    harness_resp_free(&r);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(bank_pay(port, "h-slow", "Demo-Fault: none\r\nDemo-Delay: 300ms\r\n", &r), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_eq(r.status, 201);
    harness_resp_free(&r);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    cr_assert_geq(ms, 300, "answered after %ld ms", ms);
    cr_assert_eq(bank_pay(port, "h-baddelay", "Demo-Delay: soon\r\n", &r), 0);
    cr_assert_eq(r.status, 400);
    harness_resp_free(&r);
    ledger = bank_get(port, "/ledger");
    cr_assert(strstr(ledger, "{\"total\": 4,"), "%s", ledger);
    cr_assert_null(strstr(ledger, "\"h-503\""), "%s", ledger);
    cr_assert_null(strstr(ledger, "\"h-bad"), "%s", ledger);
    cr_assert(strstr(ledger, "\"h-reset\": 1"), "%s", ledger);
    free(ledger);
    cr_assert(harness_stop_clean(pid, "bank-headers", 5000));
}

/* The topology's directives file, and the PIDs "up" recorded, from dir. */
static void topology_read(const char *dir, char **conf, char **pids)
{
    char path[600];

    snprintf(path, sizeof(path), "%s/idemproxy.conf", dir);
    *conf = slurp(path);
    snprintf(path, sizeof(path), "%s/pids", dir);
    *pids = slurp(path);
}

/* Every PID in the list has exited (the nodes daemonize: not our children). */
static int all_gone(const char *pids)
{
    const char *p = pids;
    char *end;

    while (*p) {
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 0 && kill((pid_t)pid, 0) == 0)
            return 0;
        p = end;
        while (*p == '\n')
            p++;
    }
    return 1;
}

static void topology_down(const char *kind, const char *dir)
{
    const char *args[] = {SOURCE_DIR "/scripts/redis-topology.sh", kind, "down", dir, NULL};
    char *out;

    cr_assert_eq(run_script("topology-down", &out, 30000, args), 0, "%s", out);
    free(out);
}

/* "127.0.0.1:PORT" of the master a Sentinel monitors (INFO sentinel); full: it must see
 * 2 replicas and 3 Sentinels. */
static void sentinel_master(uint16_t port, char *out, size_t len, int full)
{
    char info[4096], *p;

    cr_assert_gt(harness_redis(port, info, sizeof(info), "INFO sentinel"), 0);
    p = strstr(info, "address=");
    cr_assert_not_null(p, "%s", info);
    cr_assert(!full || strstr(p, ",slaves=2,sentinels=3"), "%s", info);
    p += 8;
    snprintf(out, len, "%.*s", (int)strcspn(p, ",\r\n"), p);
}

/* scripts/redis-topology.sh sentinel: 1 + 2 + 3 Sentinels that agree on the primary, and a
 * real failover moves it; down stops every process. */
Test(scripts, redis_topology_sentinel_up_failover_down)
{
    char dir[512], *out, *conf, *pids, before[64] = "", after[64] = "";
    const char *args[] = {SOURCE_DIR "/scripts/redis-topology.sh", "sentinel", "up", dir, NULL};
    unsigned s1;

    snprintf(dir, sizeof(dir), "%s/topo-sentinel", harness_tmpdir());
    topo_kind = "sentinel";
    snprintf(topo_dir, sizeof(topo_dir), "%s", dir);
    cr_assert_eq(run_script("topology-up", &out, 60000, args), 0, "%s", out);
    free(out);
    topology_read(dir, &conf, &pids);
    cr_assert_eq(sscanf(strstr(conf, "redis-sentinel "), "redis-sentinel 127.0.0.1:%u", &s1), 1,
                 "%s", conf);
    cr_assert(strstr(conf, "redis-sentinel-master idemproxy"), "%s", conf);
    sentinel_master((uint16_t)s1, before, sizeof(before), 1);
    cr_assert(strstr(conf, before), "Sentinel names %s, not the primary 'up' started:\n%s", before,
              conf);
    cr_assert_geq(harness_redis((uint16_t)s1, NULL, 0, "SENTINEL failover idemproxy"), 0);
    for (int i = 0; i < 100; i++) {
        sentinel_master((uint16_t)s1, after, sizeof(after), 0);
        if (strcmp(after, before) != 0)
            break;
        usleep(100 * 1000);
    }
    topology_down("sentinel", dir);
    cr_assert_str_neq(after, before, "the failover did not move the primary");
    cr_assert(all_gone(pids), "nodes outlived 'down':\n%s", pids);
    free(conf);
    free(pids);
}

/* scripts/redis-topology.sh cluster: 6 nodes, every slot covered (a write through any
 * seed lands once redirected); down stops them all. */
Test(scripts, redis_topology_cluster_up_down)
{
    char dir[512], *out, *conf, *pids, info[4096];
    const char *args[] = {SOURCE_DIR "/scripts/redis-topology.sh", "cluster", "up", dir, NULL};
    unsigned seed;

    snprintf(dir, sizeof(dir), "%s/topo-cluster", harness_tmpdir());
    topo_kind = "cluster";
    snprintf(topo_dir, sizeof(topo_dir), "%s", dir);
    cr_assert_eq(run_script("topology-up", &out, 60000, args), 0, "%s", out);
    free(out);
    topology_read(dir, &conf, &pids);
    cr_assert_eq(sscanf(strstr(conf, "redis-cluster "), "redis-cluster 127.0.0.1:%u", &seed), 1,
                 "%s", conf);
    cr_assert_gt(harness_redis((uint16_t)seed, info, sizeof(info), "CLUSTER INFO"), 0);
    cr_assert(strstr(info, "cluster_state:ok"), "%s", info);
    cr_assert(strstr(info, "cluster_slots_assigned:16384"), "%s", info);
    cr_assert(strstr(info, "cluster_known_nodes:6"), "%s", info);
    topology_down("cluster", dir);
    cr_assert(all_gone(pids), "nodes outlived 'down':\n%s", pids);
    free(conf);
    free(pids);
}
