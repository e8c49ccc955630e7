/*
 * The shipped scripts, end to end: the retry storm holds (and can fail), the compose file
 * is valid and only uses flags the binaries accept, and the benchmark runs.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"

TestSuite(scripts, .fini = harness_cleanup, .timeout = 600);

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
    cr_assert(strstr(doc, "## Latency at a constant rate"), "%s", doc);
    cr_assert(strstr(doc, "## Memory with idle connections"), "%s", doc);
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
