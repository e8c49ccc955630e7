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
