#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "report.h"

#define TARGET_A "http://127.0.0.1:8081/payments"
#define TARGET_B "http://127.0.0.1:8082/payments"

static const char *const targets[] = {TARGET_A, TARGET_B};
static const char *const ledgers[] = {"http://127.0.0.1:9000/ledger"};
static const struct report_status statuses[] = {{201, 2000}, {409, 400}, {503, 7}};

static struct report_param params[] = {
    {"targets", REPORT_P_LIST, NULL, targets, 2}, {"keys", REPORT_P_NUM, "500", NULL, 0},
    {"dupes", REPORT_P_NUM, "6", NULL, 0},        {"concurrency", REPORT_P_NUM, "32", NULL, 0},
    {"abort_rate", REPORT_P_NUM, "0.2", NULL, 0}, {"rate", REPORT_P_NUM, "null", NULL, 0},
    {"ledgers", REPORT_P_LIST, NULL, ledgers, 1}, {"no_key", REPORT_P_BOOL, "false", NULL, 0},
    {"method", REPORT_P_STR, "POST", NULL, 0},
};

static struct hist *lat;
static struct report_timeline tl;
static struct report_verdict v;

/* A clean run: 500 keys, all answered once, ledger checked. */
static void setup(void)
{
    lat = hist_new();
    cr_assert_not_null(lat);
    for (uint64_t i = 1; i <= 2407; i++)
        hist_record(lat, 500 + i * 7);
    report_timeline_init(&tl);
    for (uint64_t t = 0; t < 2000000; t += 997)
        report_timeline_add(&tl, t, (enum report_cat)(t % REPORT_NCATS));
    memset(&v, 0, sizeof(v));
    v.requests = 3007;
    v.retries = 7;
    v.status = statuses;
    v.nstatus = 3;
    v.aborted = 600;
    v.errors = 0;
    v.replays = 1500;
    v.conflicts = 400;
    v.latency = lat;
    v.throughput_rps = 1234.5;
    v.phase1_s = 1.9;
    v.duration_s = 2.5;
    v.key_checks = 1;
    v.keys = 500;
    v.keys_ok = 500;
    v.keys_duplicated = 0;
    v.max_executions = 1;
    v.ledger_note = "summed over 1 ledger";
    v.timeline = &tl;
    v.phase2_start_s = 1.9;
    v.params = params;
    v.nparams = sizeof(params) / sizeof(params[0]);
    v.run_id = "0123456789abcdef";
}

static void teardown(void)
{
    hist_free(lat);
    lat = NULL;
}

TestSuite(report, .init = setup, .fini = teardown);

typedef int (*writer_fn)(FILE *, const struct report_verdict *);

/* Run a writer into memory; the caller frees the text. */
static char *render(writer_fn fn)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    cr_assert_not_null(f);
    cr_assert_eq(fn(f, &v), 0);
    cr_assert_eq(fclose(f), 0);
    cr_assert_not_null(buf);
    return buf;
}

static void assert_has(const char *text, const char *want)
{
    cr_assert_not_null(strstr(text, want), "missing [%s] in:\n%s", want, text);
}

static void assert_lacks(const char *text, const char *unwanted)
{
    cr_assert_null(strstr(text, unwanted), "unexpected [%s]", unwanted);
}

/* Braces and brackets outside strings balance and the document is one object. */
static void assert_json_shape(const char *j)
{
    int depth = 0, in_str = 0;

    cr_assert_eq(j[0], '{');
    for (const char *p = j; *p; p++) {
        if (in_str) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_str = 0;
            else
                cr_assert_geq((unsigned char)*p, 0x20, "raw control byte in a JSON string");
            continue;
        }
        if (*p == '"')
            in_str = 1;
        else if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        cr_assert_geq(depth, 0);
        if (depth == 0)
            cr_assert(p[1] == '\0' || strcmp(p + 1, "\n") == 0, "bytes after the object");
    }
    cr_assert_eq(depth, 0);
    cr_assert_eq(in_str, 0);
}

/* ---- pass / fail ---- */

Test(report, clean_run_passes)
{
    char *t = render(report_text);

    cr_assert_eq(report_pass(&v), 1);
    assert_has(t, "retrystorm verdict: PASS");
    assert_has(t, "keys executed more than once");
    assert_lacks(t, "FAIL");
    free(t);
}

Test(report, duplicates_fail)
{
    char *t;

    v.keys_duplicated = 3;
    v.max_executions = 2;
    cr_assert_eq(report_pass(&v), 0);
    t = render(report_text);
    assert_has(t, "verdict: FAIL");
    assert_has(t, "up to 2 executions");
    free(t);
}

Test(report, mismatches_fail)
{
    v.keys_mismatched = 1;
    cr_assert_eq(report_pass(&v), 0);
}

Test(report, unanswered_fail)
{
    v.keys_unanswered = 12;
    cr_assert_eq(report_pass(&v), 0);
}

Test(report, ledger_not_checked_passes_but_says_so)
{
    char *t, *j, *h;

    v.keys_duplicated = -1;
    v.ledger_note = NULL;
    cr_assert_eq(report_pass(&v), 1);
    t = render(report_text);
    j = render(report_json);
    h = render(report_html);
    assert_has(t, "not checked");
    assert_has(t, "verdict: PASS");
    assert_has(j, "\"pass\": true");
    assert_has(j, "\"keys_duplicated\": null");
    assert_has(h, "not checked");
    free(t);
    free(j);
    free(h);
}

Test(report, no_key_skips_the_checks)
{
    char *t, *j;

    v.key_checks = 0;
    v.keys_unanswered = 500; /* meaningless without keys: must not fail the run */
    v.keys_duplicated = -1;
    cr_assert_eq(report_pass(&v), 1);
    t = render(report_text);
    j = render(report_json);
    assert_has(t, "skipped");
    assert_has(j, "\"key_checks\": false");
    assert_has(j, "\"keys_duplicated\": null");
    assert_has(j, "\"keys_unanswered\": 0");
    free(t);
    free(j);
}

/* ---- JSON ---- */

Test(report, json_fields)
{
    char *j = render(report_json);

    assert_json_shape(j);
    assert_has(j, "{\"pass\": true, \"requests\": 3007, ");
    assert_has(j, "\"status\": {\"201\": 2000, \"409\": 400, \"503\": 7}");
    assert_has(j, "\"aborted\": 600, \"errors\": 0, \"replays\": 1500, \"conflicts\": 400");
    assert_has(j, "\"latency_ms\": {\"p50\": ");
    assert_has(j, "\"p90\": ");
    assert_has(j, "\"p99\": ");
    assert_has(j, "\"p999\": ");
    /* the max is exact: 500 + 2407 * 7 us */
    assert_has(j, "\"max\": 17.349}");
    assert_has(j, "\"throughput_rps\": 1234.500");
    assert_has(j, "\"keys\": 500, \"keys_ok\": 500, \"keys_duplicated\": 0");
    assert_has(j, "\"keys_mismatched\": 0, \"keys_unanswered\": 0");
    assert_has(j, "\"duration_s\": 2.500");
    assert_has(j, "\"params\": {\"targets\": [\"" TARGET_A "\", \"" TARGET_B "\"], \"keys\": 500");
    assert_has(j, "\"rate\": null");
    assert_has(j, "\"no_key\": false");
    assert_has(j, "\"method\": \"POST\"");
    assert_has(j, "\"run_id\": \"0123456789abcdef\"");
    free(j);
}

Test(report, json_failures)
{
    char *j;

    v.keys_duplicated = 4;
    v.keys_mismatched = 2;
    v.keys_unanswered = 1;
    j = render(report_json);
    assert_json_shape(j);
    assert_has(j, "\"pass\": false");
    assert_has(j, "\"keys_duplicated\": 4");
    assert_has(j, "\"keys_mismatched\": 2, \"keys_unanswered\": 1");
    free(j);
}

Test(report, json_escapes_strings)
{
    char *j;

    params[8].value = "PO\"ST\\\n\x01";
    j = render(report_json);
    params[8].value = "POST";
    assert_json_shape(j);
    assert_has(j, "\"method\": \"PO\\\"ST\\\\\\u000a\\u0001\"");
    free(j);
}

Test(report, json_empty_latency)
{
    char *j;

    v.latency = NULL;
    v.status = NULL;
    v.nstatus = 0;
    j = render(report_json);
    assert_json_shape(j);
    assert_has(j, "\"status\": {}");
    assert_has(j, "\"p50\": 0.000");
    free(j);
}

/* ---- HTML ---- */

Test(report, html_pass)
{
    char *h = render(report_html);

    assert_has(h, "<!DOCTYPE html>");
    assert_has(h, "<title>retrystorm: PASS</title>");
    assert_has(h, "<div class=\"verdict pass\">PASS</div>");
    assert_has(h, "<svg");
    assert_has(h, "latency (ms, log scale)");
    assert_has(h, "phase 2: patient retries");
    /* the legend names every category */
    for (int c = 0; c < REPORT_NCATS; c++)
        assert_has(h, report_cat_name((enum report_cat)c));
    assert_has(h, "</html>");
    free(h);
}

Test(report, html_fail_lists_the_reasons)
{
    char *h;

    v.keys_duplicated = 7;
    v.max_executions = 3;
    v.keys_unanswered = 1;
    h = render(report_html);
    assert_has(h, "<div class=\"verdict fail\">FAIL</div>");
    assert_has(h, "7 keys executed more than once (up to 3 times)");
    assert_has(h, "1 key never got a final answer");
    assert_lacks(h, "class=\"verdict pass\"");
    free(h);
}

Test(report, html_escapes_run_parameters)
{
    char *h;

    params[8].value = "<script>alert('x')</script>";
    h = render(report_html);
    params[8].value = "POST";
    assert_has(h, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
    assert_lacks(h, "<script");
    free(h);
}

Test(report, html_is_self_contained)
{
    char *h = render(report_html), *p;

    /* blank out the URLs that are printed as text; nothing else may point outside */
    for (size_t i = 0; i < 2; i++)
        while ((p = strstr(h, targets[i])) != NULL)
            memset(p, '_', strlen(targets[i]));
    while ((p = strstr(h, ledgers[0])) != NULL)
        memset(p, '_', strlen(ledgers[0]));
    assert_lacks(h, "http://");
    assert_lacks(h, "https://");
    assert_lacks(h, "<script");
    assert_lacks(h, "<link");
    assert_lacks(h, "<img");
    assert_lacks(h, "url(");
    assert_lacks(h, "@import");
    free(h);
}

Test(report, html_without_answers)
{
    char *h;

    v.latency = NULL;
    v.timeline = NULL;
    h = render(report_html);
    assert_has(h, "nothing to plot");
    free(h);
}

/* ---- timeline ---- */

Test(report, timeline_widens_and_keeps_every_event)
{
    struct report_timeline t;
    uint64_t total = 0;

    report_timeline_init(&t);
    cr_assert_eq(t.slice_us, 1000);
    report_timeline_add(&t, 500, REPORT_CAT_2XX);
    report_timeline_add(&t, 127999, REPORT_CAT_409);
    cr_assert_eq(t.slice_us, 1000);
    cr_assert_eq(t.used, 128);
    report_timeline_add(&t, 128000, REPORT_CAT_ERROR); /* one past the end: doubles */
    cr_assert_eq(t.slice_us, 2000);
    cr_assert_eq(t.used, 65);
    report_timeline_add(&t, 3600000000ULL, REPORT_CAT_ABORTED); /* an hour later */
    cr_assert_leq(t.used, REPORT_SLICES);
    cr_assert_gt(t.used, REPORT_SLICES / 2);
    for (size_t i = 0; i < REPORT_SLICES; i++)
        for (int c = 0; c < REPORT_NCATS; c++)
            total += t.counts[i][c];
    cr_assert_eq(total, 4);
    cr_assert_eq(t.counts[0][REPORT_CAT_2XX], 1);
    cr_assert_eq(t.counts[t.used - 1][REPORT_CAT_ABORTED], 1);
}

/* ---- outcome kinds, faults, expected re-executions, examples ---- */

static const struct report_class chaos_classes[] = {
    {"201", 201, 2000, 1500, 480},
    {"500 failed-after-executing", 500, 30, 20, 10},
    {"504 outcome-unknown", 504, 25, 15, 10},
    {"503 store-unavailable", 503, 7, 0, 0},
    {"error: Connection refused", 0, 3, 0, 0},
    {"error: timeout", 0, 2, 0, 0},
    {"aborted", 0, 600, 0, 0},
};
static const char *const freeze_effects[] = {"503 store-unavailable", "409 idempotency-key-in-use"};
static const char *const restart_effects[] = {"error*", "504 outcome-unknown"};
static const struct report_fault chaos_faults[] = {
    {"redis frozen <SIGSTOP>", "4, 3.1 s", "12 records retried", freeze_effects, 2},
    {"proxy restarted", "2", NULL, restart_effects, 2},
    {"replica killed", "1 kill", "12 of 12 expected", NULL, 0},
};
static const struct report_example chaos_examples[] = {
    {"0123456789abcdef-17", 2, 1, "executed 2 times"},
};

static void chaos_setup(void)
{
    v.classes = chaos_classes;
    v.nclasses = sizeof(chaos_classes) / sizeof(chaos_classes[0]);
    v.faults = chaos_faults;
    v.nfaults = sizeof(chaos_faults) / sizeof(chaos_faults[0]);
    v.label = "chaos storm";
}

Test(report, outcome_kinds_and_faults_in_text)
{
    char *t;

    chaos_setup();
    t = render(report_text);
    assert_has(t, "(chaos storm, run 0123456789abcdef");
    assert_has(t, "outcomes by kind");
    assert_has(t, "    500 failed-after-executing");
    assert_has(t, "faults injected, and what they led to");
    assert_has(t, "redis frozen <SIGSTOP>: 4, 3.1 s");
    assert_has(t, "-> 503 store-unavailable            7 answers\n");
    /* an effect nothing matched says so */
    assert_has(t, "-> 409 idempotency-key-in-use       none seen");
    /* a prefix pattern lists every kind it matches */
    assert_has(t, "-> error: Connection refused        3 attempts");
    assert_has(t, "-> error: timeout                   2 attempts");
    assert_has(t, "-> 504 outcome-unknown              25 answers (15 replayed), the final answer "
                  "of 10 keys");
    assert_has(t, "        12 records retried\n");
    assert_has(t, "replica killed: 1 kill\n        12 of 12 expected");
    free(t);
}

Test(report, outcome_kinds_and_faults_in_json)
{
    char *j;

    chaos_setup();
    j = render(report_json);
    assert_json_shape(j);
    assert_has(j, "\"label\": \"chaos storm\"");
    assert_has(j, "{\"kind\": \"504 outcome-unknown\", \"status\": 504, \"attempts\": 25, "
                  "\"replayed\": 15, \"keys_final\": 10}");
    assert_has(j, "{\"label\": \"redis frozen <SIGSTOP>\", \"injected\": \"4, 3.1 s\", "
                  "\"effects\": [\"503 store-unavailable\", \"409 idempotency-key-in-use\"], "
                  "\"note\": \"12 records retried\"}");
    assert_has(j, "\"effects\": [], \"note\": \"12 of 12 expected\"}");
    assert_has(j, "\"reexec_expected\": null");
    assert_has(j, "\"examples\": []");
    free(j);
}

Test(report, outcome_kinds_and_faults_in_html)
{
    char *h;

    chaos_setup();
    h = render(report_html);
    assert_has(h, "retrystorm verdict &middot; chaos storm</div>");
    assert_has(h, "<h2>Faults injected, and what they led to</h2>");
    assert_has(h, "<td>redis frozen &lt;SIGSTOP&gt;</td><td>4, 3.1 s</td>");
    assert_has(h, "<code>503 store-unavailable</code>: 7 answers<br>");
    assert_has(h, "<code>409 idempotency-key-in-use</code>: none seen<br>");
    assert_has(h, "<h2>Outcomes by kind</h2>");
    assert_has(h, "<code>500 failed-after-executing</code></td><td class=\"num\">30</td>");
    assert_lacks(h, "<SIGSTOP>");
    free(h);
}

Test(report, a_missing_fault_table_is_said)
{
    char *t, *h;

    v.faults_note = "no fault table: 'f.tsv': not written within 60.0 s";
    t = render(report_text);
    h = render(report_html);
    assert_has(t, "(no fault table: 'f.tsv': not written within 60.0 s)");
    assert_has(h, "no fault table: &#39;f.tsv&#39;: not written");
    free(t);
    free(h);
}

Test(report, expected_reexecutions_pass_when_all_happened)
{
    char *t, *j, *h;

    v.reexec_declared = 1;
    v.reexec_expected = 12;
    v.reexec_observed = 12;
    cr_assert(report_pass(&v));
    t = render(report_text);
    j = render(report_json);
    h = render(report_html);
    assert_has(t, "expected re-executions                   12  (documented limit; 12 expected)");
    assert_has(j, "\"reexec_expected\": 12, \"reexec_observed\": 12, \"reexec_missing\": 0");
    assert_has(h, "expected re-executions</div><div class=\"v\">12 / 12</div>");
    free(t);
    free(j);
    free(h);
}

Test(report, a_missing_expected_reexecution_fails)
{
    char *t, *h;

    v.reexec_declared = 1;
    v.reexec_expected = 12;
    v.reexec_observed = 11;
    v.reexec_missing = 1;
    cr_assert_not(report_pass(&v));
    t = render(report_text);
    h = render(report_html);
    assert_has(t, "(documented limit; 12 expected) <- FAIL: missing");
    assert_has(t, "verdict: FAIL");
    assert_has(h, "1 expected re-execution did not happen");
    free(t);
    free(h);
}

Test(report, examples_name_the_failing_keys)
{
    char *t, *j, *h;

    v.keys_duplicated = 1;
    v.max_executions = 2;
    v.examples = chaos_examples;
    v.nexamples = 1;
    t = render(report_text);
    j = render(report_json);
    h = render(report_html);
    assert_has(t, "    e.g. key 0123456789abcdef-17: executed 2 times\n");
    assert_has(j, "\"examples\": [{\"key\": \"0123456789abcdef-17\", \"executions\": 2, "
                  "\"allowed\": 1, \"what\": \"executed 2 times\"}]");
    assert_has(h, "<h2>Keys that failed a check</h2>");
    assert_has(h, "<code>0123456789abcdef-17</code></td><td>executed 2 times</td>");
    free(t);
    free(j);
    free(h);
}
