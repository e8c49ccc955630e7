/*
 * report — text, JSON and HTML renderings of a verdict (contract in report.h).
 *
 * The HTML page is built for a person: the verdict in large coloured letters with the
 * reasons beside it, the key checks as cards, then two pictures (answers over time as
 * stacked bars, latency as a log-scale histogram), then the full tables. All styling is
 * inline CSS, all pictures inline SVG; there is nothing to fetch and nothing to run.
 */
#include "report.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "hist.h"

/* ---- timeline ---- */

void report_timeline_init(struct report_timeline *tl)
{
    memset(tl, 0, sizeof(*tl));
    tl->slice_us = 1000;
}

void report_timeline_add(struct report_timeline *tl, uint64_t t_us, enum report_cat cat)
{
    uint64_t slice;

    if ((unsigned)cat >= REPORT_NCATS)
        cat = REPORT_CAT_OTHER;
    /* widen until t fits: fold pairs of slices into one, double the width */
    while (t_us / tl->slice_us >= REPORT_SLICES) {
        for (size_t i = 0; i < REPORT_SLICES / 2; i++)
            for (int c = 0; c < REPORT_NCATS; c++)
                tl->counts[i][c] = tl->counts[2 * i][c] + tl->counts[2 * i + 1][c];
        memset(tl->counts[REPORT_SLICES / 2], 0, sizeof(tl->counts) / 2);
        tl->used = (tl->used + 1) / 2;
        tl->slice_us *= 2;
    }
    slice = t_us / tl->slice_us;
    tl->counts[slice][cat]++;
    if (slice + 1 > tl->used)
        tl->used = (size_t)slice + 1;
}

static const char *const report_cat_names[REPORT_NCATS] = {
    "2xx executed", "replayed", "409 in flight",   "other 4xx",
    "5xx",          "other",    "errors/timeouts", "aborted",
};

static const char *const report_cat_colors[REPORT_NCATS] = {
    "#2da44e", "#0969da", "#d4a72c", "#8250df", "#cf222e", "#1b7c83", "#24292f", "#afb8c1",
};

const char *report_cat_name(enum report_cat cat)
{
    return (unsigned)cat < REPORT_NCATS ? report_cat_names[cat] : "?";
}

/* ---- verdict ---- */

int report_pass(const struct report_verdict *v)
{
    if (!v->key_checks)
        return 1;
    return v->keys_duplicated <= 0 && v->keys_mismatched == 0 && v->keys_unanswered == 0 &&
           (!v->reexec_declared || v->reexec_missing == 0);
}

/* Does outcome kind name match an effect of a fault ("504 outcome-unknown", "error*")? */
static int report_effect_matches(const char *pattern, const char *name)
{
    size_t n = strlen(pattern);

    if (n > 0 && pattern[n - 1] == '*')
        return strncmp(pattern, name, n - 1) == 0;
    return strcmp(pattern, name) == 0;
}

/* "120 answers (80 replayed), the final answer of 40 keys" for kind c. */
static void report_class_summary(const struct report_class *c, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%llu %s", (unsigned long long)c->answers,
                     c->status ? (c->answers == 1 ? "answer" : "answers")
                               : (c->answers == 1 ? "attempt" : "attempts"));

    if (c->replayed && n > 0 && (size_t)n < len)
        n +=
            snprintf(buf + n, len - (size_t)n, " (%llu replayed)", (unsigned long long)c->replayed);
    if (c->keys_final && n > 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, ", the final answer of %llu key%s",
                 (unsigned long long)c->keys_final, c->keys_final == 1 ? "" : "s");
}

static double report_ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static uint64_t report_pct(const struct report_verdict *v, double q)
{
    return v->latency ? hist_percentile(v->latency, q) : 0;
}

static uint64_t report_lat_max(const struct report_verdict *v)
{
    return v->latency ? hist_max(v->latency) : 0;
}

static uint64_t report_answered(const struct report_verdict *v)
{
    uint64_t n = 0;

    for (size_t i = 0; i < v->nstatus; i++)
        n += v->status[i].count;
    return n;
}

static double report_finite(double x)
{
    return isfinite(x) ? x : 0.0;
}

/* ---- text ---- */

static void report_row(FILE *out, const char *label, const char *value, const char *note)
{
    fprintf(out, "  %-28s %14s%s%s\n", label, value, note && *note ? "  " : "", note ? note : "");
}

static void report_row_u(FILE *out, const char *label, uint64_t n, const char *note)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)n);
    report_row(out, label, buf, note);
}

static void report_row_ms(FILE *out, const char *label, uint64_t us)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%.3f ms", report_ms(us));
    report_row(out, label, buf, NULL);
}

static void report_text_classes(FILE *out, const struct report_verdict *v)
{
    if (v->nclasses == 0)
        return;
    fprintf(out, "\n  %-38s %10s %10s %10s\n", "outcomes by kind", "attempts", "replayed",
            "final for");
    for (size_t i = 0; i < v->nclasses; i++) {
        const struct report_class *c = &v->classes[i];

        fprintf(out, "    %-36.36s %10llu %10llu %10llu\n", c->name, (unsigned long long)c->answers,
                (unsigned long long)c->replayed, (unsigned long long)c->keys_final);
    }
}

static void report_text_faults(FILE *out, const struct report_verdict *v)
{
    char buf[160];

    if (v->nfaults == 0 && !v->faults_note)
        return;
    fputs("\n  faults injected, and what they led to\n", out);
    if (v->faults_note)
        fprintf(out, "    (%s)\n", v->faults_note);
    for (size_t i = 0; i < v->nfaults; i++) {
        const struct report_fault *f = &v->faults[i];

        fprintf(out, "    %s: %s\n", f->label, f->injected);
        for (size_t e = 0; e < f->neffects; e++) {
            int seen = 0;

            for (size_t c = 0; c < v->nclasses; c++) {
                if (!report_effect_matches(f->effects[e], v->classes[c].name))
                    continue;
                report_class_summary(&v->classes[c], buf, sizeof(buf));
                fprintf(out, "        -> %-32s %s\n", v->classes[c].name, buf);
                seen = 1;
            }
            if (!seen)
                fprintf(out, "        -> %-32s none seen\n", f->effects[e]);
        }
        if (f->note)
            fprintf(out, "        %s\n", f->note);
    }
}

int report_text(FILE *out, const struct report_verdict *v)
{
    int pass = report_pass(v);
    char buf[64], note[96];

    fprintf(out, "\nretrystorm verdict: %s%s   (%s%srun %s, %.2f s)\n\n", pass ? "PASS" : "FAIL",
            v->interrupted ? " (interrupted)" : "", v->label ? v->label : "", v->label ? ", " : "",
            v->run_id ? v->run_id : "-", report_finite(v->duration_s));
    snprintf(note, sizeof(note), "(%llu retries in phase 2)", (unsigned long long)v->retries);
    report_row_u(out, "requests sent", v->requests, v->retries ? note : NULL);
    for (size_t i = 0; i < v->nstatus; i++) {
        char label[32];

        snprintf(label, sizeof(label), "  answered %d", v->status[i].code);
        report_row_u(out, label, v->status[i].count, NULL);
    }
    report_row_u(out, "  aborted by the client", v->aborted, NULL);
    report_row_u(out, "  errors/timeouts", v->errors, NULL);
    report_row_u(out, "replays", v->replays, "(Idempotent-Replayed: true)");
    report_row_u(out, "conflicts (409)", v->conflicts, "(same key still in flight)");
    report_row_ms(out, v->corrected ? "latency p50 (corrected)" : "latency p50", report_pct(v, 50));
    report_row_ms(out, "        p90", report_pct(v, 90));
    report_row_ms(out, "        p99", report_pct(v, 99));
    report_row_ms(out, "        p99.9", report_pct(v, 99.9));
    report_row_ms(out, "        max", report_lat_max(v));
    snprintf(buf, sizeof(buf), "%.1f /s", report_finite(v->throughput_rps));
    report_row(out, "throughput (phase 1)", buf, "answers per second");
    if (!v->key_checks) {
        report_row(out, "key checks", "skipped", "(--no-key)");
    } else {
        report_row_u(out, "keys", v->keys, NULL);
        report_row_u(out, "keys with a final 2xx", v->keys_ok, NULL);
        if (v->reexec_declared) {
            snprintf(note, sizeof(note), "(documented limit; %llu expected)%s",
                     (unsigned long long)v->reexec_expected,
                     v->reexec_missing ? " <- FAIL: missing" : "");
            report_row_u(out, "expected re-executions", v->reexec_observed, note);
        }
        if (v->keys_duplicated < 0) {
            report_row(out, "keys executed more than once", "not checked",
                       v->ledger_note ? v->ledger_note : "(no --ledger)");
        } else {
            snprintf(note, sizeof(note), "<- FAIL (up to %llu executions of one key)",
                     (unsigned long long)v->max_executions);
            report_row_u(out, "keys executed more than once", (uint64_t)v->keys_duplicated,
                         v->keys_duplicated > 0 ? note : v->ledger_note);
        }
        report_row_u(out, "keys answered differently", v->keys_mismatched,
                     v->keys_mismatched ? "<- FAIL" : NULL);
        report_row_u(out, "keys with no final answer", v->keys_unanswered,
                     v->keys_unanswered ? "<- FAIL" : NULL);
        for (size_t i = 0; i < v->nexamples; i++)
            fprintf(out, "    e.g. key %s: %s\n", v->examples[i].key, v->examples[i].what);
    }
    report_text_classes(out, v);
    report_text_faults(out, v);
    fprintf(out, "\n  verdict: %s\n\n", pass ? "PASS" : "FAIL");
    return ferror(out) ? -1 : 0;
}

/* ---- JSON ---- */

static void report_json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void report_json_param(FILE *out, const struct report_param *p)
{
    switch (p->type) {
    case REPORT_P_NUM:
    case REPORT_P_BOOL:
        fputs(p->value && *p->value ? p->value : "null", out);
        break;
    case REPORT_P_LIST:
        fputc('[', out);
        for (size_t i = 0; i < p->nlist; i++) {
            if (i)
                fputs(", ", out);
            report_json_str(out, p->list[i]);
        }
        fputc(']', out);
        break;
    default:
        report_json_str(out, p->value);
        break;
    }
}

int report_json(FILE *out, const struct report_verdict *v)
{
    fprintf(out, "{\"pass\": %s, \"requests\": %llu, \"retries\": %llu, \"status\": {",
            report_pass(v) ? "true" : "false", (unsigned long long)v->requests,
            (unsigned long long)v->retries);
    for (size_t i = 0; i < v->nstatus; i++)
        fprintf(out, "%s\"%d\": %llu", i ? ", " : "", v->status[i].code,
                (unsigned long long)v->status[i].count);
    fprintf(out, "}, \"aborted\": %llu, \"errors\": %llu, \"replays\": %llu, \"conflicts\": %llu, ",
            (unsigned long long)v->aborted, (unsigned long long)v->errors,
            (unsigned long long)v->replays, (unsigned long long)v->conflicts);
    fprintf(out,
            "\"latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
            "\"max\": %.3f}, \"latency_corrected\": %s, ",
            report_ms(report_pct(v, 50)), report_ms(report_pct(v, 90)),
            report_ms(report_pct(v, 99)), report_ms(report_pct(v, 99.9)),
            report_ms(report_lat_max(v)), v->corrected ? "true" : "false");
    fprintf(out,
            "\"throughput_rps\": %.3f, \"key_checks\": %s, \"keys\": %llu, \"keys_ok\": %llu, ",
            report_finite(v->throughput_rps), v->key_checks ? "true" : "false",
            (unsigned long long)v->keys, (unsigned long long)v->keys_ok);
    if (v->key_checks && v->keys_duplicated >= 0)
        fprintf(out, "\"keys_duplicated\": %lld, \"max_executions\": %llu, ",
                (long long)v->keys_duplicated, (unsigned long long)v->max_executions);
    else
        fputs("\"keys_duplicated\": null, \"max_executions\": null, ", out);
    fprintf(out, "\"keys_mismatched\": %llu, \"keys_unanswered\": %llu, \"ledger\": ",
            (unsigned long long)(v->key_checks ? v->keys_mismatched : 0),
            (unsigned long long)(v->key_checks ? v->keys_unanswered : 0));
    if (v->ledger_note)
        report_json_str(out, v->ledger_note);
    else
        fputs("null", out);
    fprintf(out, ", \"duration_s\": %.3f, \"phase1_s\": %.3f, \"interrupted\": %s, \"run_id\": ",
            report_finite(v->duration_s), report_finite(v->phase1_s),
            v->interrupted ? "true" : "false");
    report_json_str(out, v->run_id ? v->run_id : "");
    fputs(", \"label\": ", out);
    if (v->label)
        report_json_str(out, v->label);
    else
        fputs("null", out);
    if (v->reexec_declared)
        fprintf(out,
                ", \"reexec_expected\": %llu, \"reexec_observed\": %llu, \"reexec_missing\": "
                "%llu",
                (unsigned long long)v->reexec_expected, (unsigned long long)v->reexec_observed,
                (unsigned long long)v->reexec_missing);
    else
        fputs(", \"reexec_expected\": null, \"reexec_observed\": null, \"reexec_missing\": null",
              out);
    fputs(", \"outcomes\": [", out);
    for (size_t i = 0; i < v->nclasses; i++) {
        const struct report_class *c = &v->classes[i];

        fputs(i ? ", {\"kind\": " : "{\"kind\": ", out);
        report_json_str(out, c->name);
        fprintf(out,
                ", \"status\": %d, \"attempts\": %llu, \"replayed\": %llu, \"keys_final\": %llu}",
                c->status, (unsigned long long)c->answers, (unsigned long long)c->replayed,
                (unsigned long long)c->keys_final);
    }
    fputs("], \"faults\": [", out);
    for (size_t i = 0; i < v->nfaults; i++) {
        const struct report_fault *f = &v->faults[i];

        fputs(i ? ", {\"label\": " : "{\"label\": ", out);
        report_json_str(out, f->label);
        fputs(", \"injected\": ", out);
        report_json_str(out, f->injected);
        fputs(", \"effects\": [", out);
        for (size_t e = 0; e < f->neffects; e++) {
            if (e)
                fputs(", ", out);
            report_json_str(out, f->effects[e]);
        }
        fputs("], \"note\": ", out);
        if (f->note)
            report_json_str(out, f->note);
        else
            fputs("null", out);
        fputc('}', out);
    }
    fputs("], \"faults_note\": ", out);
    if (v->faults_note)
        report_json_str(out, v->faults_note);
    else
        fputs("null", out);
    fputs(", \"examples\": [", out);
    for (size_t i = 0; i < v->nexamples; i++) {
        fputs(i ? ", {\"key\": " : "{\"key\": ", out);
        report_json_str(out, v->examples[i].key);
        fprintf(out, ", \"executions\": %llu, \"allowed\": %llu, \"what\": ",
                (unsigned long long)v->examples[i].executions,
                (unsigned long long)v->examples[i].allowed);
        report_json_str(out, v->examples[i].what);
        fputc('}', out);
    }
    fputs("], \"params\": {", out);
    for (size_t i = 0; i < v->nparams; i++) {
        if (i)
            fputs(", ", out);
        report_json_str(out, v->params[i].name);
        fputs(": ", out);
        report_json_param(out, &v->params[i]);
    }
    fputs("}}\n", out);
    return ferror(out) ? -1 : 0;
}

/* ---- HTML ---- */

static void report_esc(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", out);
            break;
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        case '\'':
            fputs("&#39;", out);
            break;
        default:
            fputc(*s, out);
        }
    }
}

/* A short human duration: "412 µs", "3.21 ms", "48.2 ms", "1.25 s". */
static void report_fmt_us(char *buf, size_t len, uint64_t us)
{
    if (us < 1000)
        snprintf(buf, len, "%llu µs", (unsigned long long)us);
    else if (us < 10000)
        snprintf(buf, len, "%.2f ms", (double)us / 1000.0);
    else if (us < 1000000)
        snprintf(buf, len, "%.1f ms", (double)us / 1000.0);
    else
        snprintf(buf, len, "%.2f s", (double)us / 1e6);
}

/* A round step near range/target: 1, 2 or 5 times a power of ten. */
static double report_nice_step(double range, int target)
{
    double raw = range / (target > 0 ? target : 1), mag, f;

    if (!(raw > 0))
        return 1;
    mag = pow(10, floor(log10(raw)));
    f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static void report_fmt_count(char *buf, size_t len, double n)
{
    if (n >= 1e6)
        snprintf(buf, len, "%gM", n / 1e6);
    else if (n >= 1e4)
        snprintf(buf, len, "%gk", n / 1e3);
    else
        snprintf(buf, len, "%g", n);
}

/* Horizontal grid lines with count labels, for both charts. */
static void report_y_grid(FILE *out, double L, double T, double pw, double ph, double ymax,
                          double step)
{
    for (double y = 0; y <= ymax + step / 2; y += step) {
        double py = T + ph - y / ymax * ph;
        char lbl[32];

        report_fmt_count(lbl, sizeof(lbl), y);
        fprintf(out,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eef0f3\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                L, L + pw, py, py, L - 8, py + 4, lbl);
    }
}

static const char report_css[] =
    "*{box-sizing:border-box}"
    "body{margin:0;background:#f3f4f7;color:#1f2328;"
    "font:14px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}"
    ".wrap{max-width:1120px;margin:0 auto;padding:0 28px 40px}"
    "header{background:#fff;border-bottom:1px solid #dfe3e8;margin-bottom:24px}"
    "header .wrap{display:flex;align-items:center;gap:36px;padding-top:26px;padding-bottom:26px}"
    ".verdict{font-size:84px;font-weight:800;letter-spacing:.04em;line-height:1;"
    "padding:14px 30px;border-radius:16px}"
    ".verdict.pass{color:#1a7f37;background:#dafbe1;border:3px solid #4ac26b}"
    ".verdict.fail{color:#cf222e;background:#ffebe9;border:3px solid #ff8182}"
    ".headline{font-size:22px;font-weight:600;margin:0 0 6px}"
    ".reasons{margin:4px 0 8px;padding:0;list-style:none}"
    ".reasons li{color:#cf222e;font-weight:600;font-size:16px}"
    ".reasons li:before{content:'\\2716  '}"
    ".sub{color:#57606a;font-size:14px}"
    ".kicker{text-transform:uppercase;letter-spacing:.12em;color:#57606a;font-size:12px;"
    "font-weight:600}"
    ".cards{display:grid;grid-template-columns:repeat(4,1fr);gap:14px;margin-bottom:14px}"
    ".card{background:#fff;border:1px solid #dfe3e8;border-radius:12px;padding:14px 18px}"
    ".card .k{color:#57606a;font-size:13px}"
    ".card .v{font-size:30px;font-weight:700;font-variant-numeric:tabular-nums;line-height:1.2}"
    ".card .n{color:#57606a;font-size:12px}"
    ".card.ok{border-left:6px solid #2da44e}.card.ok .v{color:#1a7f37}"
    ".card.bad{border-left:6px solid #cf222e;background:#fff8f7}.card.bad .v{color:#cf222e}"
    ".card.na{border-left:6px solid #afb8c1}.card.na .v{color:#6e7781}"
    ".card.info{border-left:6px solid #0969da}"
    "section{background:#fff;border:1px solid #dfe3e8;border-radius:12px;padding:18px 22px;"
    "margin-top:18px}"
    "h2{font-size:17px;margin:0 0 2px}"
    ".what{color:#57606a;margin:0 0 10px;font-size:13px}"
    "svg{display:block;width:100%;height:auto}"
    "svg text{font:12px system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;fill:#57606a}"
    "svg text.halo{paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}"
    ".legend{display:flex;flex-wrap:wrap;gap:8px 20px;margin-top:8px;font-size:13px}"
    ".legend span.sw{display:inline-block;width:12px;height:12px;border-radius:3px;"
    "margin-right:6px;vertical-align:-1px}"
    ".legend b{font-variant-numeric:tabular-nums}"
    ".cols{display:grid;grid-template-columns:1fr 1fr;gap:18px}"
    ".cols section{margin-top:18px}"
    "table{border-collapse:collapse;width:100%}"
    "td,th{padding:5px 8px;border-bottom:1px solid #eef0f3;text-align:left;vertical-align:top}"
    "th{color:#57606a;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.06em}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "td.ind{padding-left:26px;color:#57606a}"
    "tr.bad td{color:#cf222e;font-weight:600}"
    "code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;"
    "overflow-wrap:anywhere}"
    "footer{color:#8c959f;font-size:12px;margin-top:20px;text-align:center}";

static void report_card(FILE *out, const char *cls, const char *label, const char *value,
                        const char *note)
{
    fprintf(out, "<div class=\"card %s\"><div class=\"k\">", cls);
    report_esc(out, label);
    fputs("</div><div class=\"v\">", out);
    report_esc(out, value);
    fputs("</div><div class=\"n\">", out);
    report_esc(out, note ? note : "");
    fputs("</div></div>\n", out);
}

static void report_card_key(FILE *out, const char *label, int64_t n, const char *na_note,
                            const char *note)
{
    char buf[32];

    if (n < 0) {
        report_card(out, "na", label, "not checked", na_note);
        return;
    }
    snprintf(buf, sizeof(buf), "%lld", (long long)n);
    report_card(out, n > 0 ? "bad" : "ok", label, buf, note);
}

/* log10 of the 1-2-5 value at or below (up = 0) / at or above (up = 1) x > 0. */
static double report_log_125(double x, int up)
{
    static const double steps[] = {1, 2, 5, 10};
    double dec = floor(log10(x)), m = x / pow(10, dec);

    if (up) {
        for (int i = 0; i < 4; i++)
            if (m <= steps[i] * (1 + 1e-9))
                return dec + log10(steps[i]);
    }
    for (int i = 3; i >= 0; i--)
        if (m >= steps[i] * (1 - 1e-9))
            return dec + log10(steps[i]);
    return dec;
}

/* Latency histogram: log-scale x (ms), 20 bins per decade, linear y, percentile lines. */
static void report_svg_latency(FILE *out, const struct report_verdict *v)
{
    const double W = 1040, H = 330, L = 64, R = 20, T = 76, B = 42;
    const double pw = W - L - R, ph = H - T - B;
    const int per_decade = 20;
    double lo_dec, hi_dec, ymax = 0, step;
    uint64_t bins[20 * 13] = {0};
    int nbins;
    size_t cur = 0;
    struct hist_bucket b;
    static const struct {
        double q;
        const char *name, *color;
    } marks[] = {{50, "p50", "#1a7f37"},
                 {90, "p90", "#0969da"},
                 {99, "p99", "#bf8700"},
                 {99.9, "p99.9", "#cf222e"},
                 {100, "max", "#57606a"}};

    if (v->latency == NULL || hist_count(v->latency) == 0) {
        fputs("<p class=\"what\">No answered attempts: nothing to plot.</p>\n", out);
        return;
    }
    /* the axis spans the data, from a 1-2-5 step below the minimum to one above the max */
    lo_dec = report_log_125(fmax((double)hist_min(v->latency), 1.0) / 1000.0, 0);
    hi_dec = report_log_125(fmax((double)hist_max(v->latency), 1.0) / 1000.0, 1);
    if (hi_dec - lo_dec > 12)
        lo_dec = hi_dec - 12;
    if (hi_dec - lo_dec < 1) /* at least one decade, so a narrow run is not one fat bar */
        lo_dec = hi_dec - 1;
    nbins = (int)ceil((hi_dec - lo_dec) * per_decade - 1e-9);
    while (hist_next(v->latency, &cur, &b)) {
        double mid_ms = ((double)b.lo + (double)b.hi) / 2.0 / 1000.0;
        int k = (int)floor((log10(fmax(mid_ms, 1e-3)) - lo_dec) * per_decade);

        if (k < 0)
            k = 0;
        if (k >= nbins)
            k = nbins - 1;
        bins[k] += b.count;
    }
    for (int k = 0; k < nbins; k++)
        if ((double)bins[k] > ymax)
            ymax = (double)bins[k];
    step = report_nice_step(ymax, 4);
    ymax = ceil(ymax / step) * step;

    fprintf(out, "<svg viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"latency histogram\">\n",
            W, H);
    /* y grid */
    report_y_grid(out, L, T, pw, ph, ymax, step);
    /* x grid: decades solid with labels, 2x and 5x dotted with small labels */
    for (double d = floor(lo_dec); d <= hi_dec + 1e-9; d += 1) {
        static const double subs[] = {1, 2, 5};

        for (int s = 0; s < 3; s++) {
            double ms = subs[s] * pow(10, d), x = L + (log10(ms) - lo_dec) / (hi_dec - lo_dec) * pw;
            char lbl[32];

            if (x < L - 0.5)
                continue;
            if (x > L + pw + 0.5)
                break;
            if (ms >= 1000)
                snprintf(lbl, sizeof(lbl), "%g s", ms / 1000);
            else
                snprintf(lbl, sizeof(lbl), "%g", ms);
            fprintf(out,
                    "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"%s/>"
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\"%s>%s</text>\n",
                    x, x, T, T + ph, s == 0 ? "#d0d7de" : "#eef0f3",
                    s == 0 ? "" : " stroke-dasharray=\"2 3\"", x, T + ph + 17,
                    s == 0 ? " style=\"font-weight:600;fill:#1f2328\"" : "", lbl);
        }
    }
    /* bars */
    for (int k = 0; k < nbins; k++) {
        double x0, x1, h;

        if (bins[k] == 0)
            continue;
        x0 = L + (double)k / per_decade / (hi_dec - lo_dec) * pw;
        x1 = fmin(L + (double)(k + 1) / per_decade / (hi_dec - lo_dec) * pw, L + pw);
        h = (double)bins[k] / ymax * ph;
        if (h < 1.5)
            h = 1.5;
        fprintf(out,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" rx=\"1.5\" "
                "fill=\"#6366f1\"><title>%llu answers around %.3g ms</title></rect>\n",
                x0 + 0.75, T + ph - h, fmax(x1 - x0 - 1.5, 1), h, (unsigned long long)bins[k],
                pow(10, lo_dec + (k + 0.5) / per_decade));
    }
    /* percentile markers, each label on its own row so close ones stay readable; all
     * lines first, then the labels (with a white halo) on top of them */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
            uint64_t us =
                marks[i].q >= 100 ? hist_max(v->latency) : hist_percentile(v->latency, marks[i].q);
            double ms = fmax((double)us / 1000.0, 1e-3);
            double x = L + (log10(ms) - lo_dec) / (hi_dec - lo_dec) * pw;
            double ty = 14 + (double)i * 13;
            char lbl[32];
            int right = x > L + pw * 0.8;

            if (x < L)
                x = L;
            if (x > L + pw)
                x = L + pw;
            if (pass == 0) {
                fprintf(out,
                        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                        "stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>\n",
                        x, x, ty + 2, T + ph, marks[i].color);
                continue;
            }
            report_fmt_us(lbl, sizeof(lbl), us);
            fprintf(out,
                    "<text class=\"halo\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" "
                    "style=\"fill:%s;font-size:11px;font-weight:600\">%s %s</text>\n",
                    right ? x - 4 : x + 4, ty, right ? "end" : "start", marks[i].color,
                    marks[i].name, lbl);
        }
    }
    fprintf(out,
            "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#8c959f\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">latency (ms, log scale)</text>"
            "<text x=\"14\" y=\"%.1f\" transform=\"rotate(-90 14 %.1f)\" "
            "text-anchor=\"middle\">answers</text>\n</svg>\n",
            L, L + pw, T + ph, T + ph, L + pw / 2, H - 4, T + ph / 2, T + ph / 2);
}

/* Answers over time: one stacked bar per slice, categories in enum order. */
static void report_svg_timeline(FILE *out, const struct report_verdict *v, uint64_t *totals)
{
    const struct report_timeline *tl = v->timeline;
    const double W = 1040, H = 300, L = 64, R = 20, T = 30, B = 42;
    const double pw = W - L - R, ph = H - T - B;
    double ymax = 0, step, span_s, xstep, bw;
    size_t n;

    if (tl == NULL || tl->used == 0) {
        fputs("<p class=\"what\">No attempts: nothing to plot.</p>\n", out);
        return;
    }
    n = tl->used;
    for (size_t i = 0; i < n; i++) {
        double sum = 0;

        for (int c = 0; c < REPORT_NCATS; c++) {
            sum += (double)tl->counts[i][c];
            totals[c] += tl->counts[i][c];
        }
        if (sum > ymax)
            ymax = sum;
    }
    step = report_nice_step(ymax, 4);
    ymax = ceil(ymax / step) * step;
    if (ymax <= 0)
        ymax = 1;
    span_s = (double)n * (double)tl->slice_us / 1e6;
    bw = pw / (double)n;

    fprintf(out, "<svg viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"answers over time\">\n",
            W, H);
    report_y_grid(out, L, T, pw, ph, ymax, step);
    xstep = report_nice_step(span_s, 8);
    for (double t = 0; t <= span_s + 1e-9; t += xstep) {
        double x = L + t / span_s * pw;

        fprintf(out,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#8c959f\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g s</text>\n",
                x, x, T + ph, T + ph + 5, x, T + ph + 18, round(t * 1000) / 1000);
    }
    for (size_t i = 0; i < n; i++) {
        double y = T + ph;

        for (int c = 0; c < REPORT_NCATS; c++) {
            double h;

            if (tl->counts[i][c] == 0)
                continue;
            h = (double)tl->counts[i][c] / ymax * ph;
            if (h < 2)
                h = 2; /* a single late retry must still be visible next to the storm */
            y -= h;
            fprintf(out,
                    "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\">"
                    "<title>%.3f s: %llu %s</title></rect>\n",
                    L + (double)i * bw + (bw > 4 ? 0.5 : 0), y, bw > 4 ? bw - 1 : bw, h,
                    report_cat_colors[c], (double)i * (double)tl->slice_us / 1e6,
                    (unsigned long long)tl->counts[i][c], report_cat_names[c]);
        }
    }
    if (v->phase2_start_s >= 0 && v->phase2_start_s <= span_s) {
        double x = L + v->phase2_start_s / span_s * pw;
        int right = x > L + pw * 0.75;

        fprintf(
            out,
            "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#1f2328\" "
            "stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>"
            "<text class=\"halo\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" style=\"fill:#1f2328;"
            "font-weight:600\">phase 2: patient retries %s</text>\n",
            x, x, T - 8, T + ph, right ? x - 6 : x + 6, T - 12, right ? "end" : "start",
            right ? "\xe2\x86\x90" : "\xe2\x86\x92");
    }
    fprintf(out,
            "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#8c959f\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">time since start</text>"
            "<text x=\"14\" y=\"%.1f\" transform=\"rotate(-90 14 %.1f)\" "
            "text-anchor=\"middle\">attempts per %g ms</text>\n</svg>\n",
            L, L + pw, T + ph, T + ph, L + pw / 2, H - 4, T + ph / 2, T + ph / 2,
            (double)tl->slice_us / 1000.0);
}

static void report_tr_u(FILE *out, const char *cls, const char *label, uint64_t n)
{
    fprintf(out, "<tr%s><td%s>", cls && strcmp(cls, "bad") == 0 ? " class=\"bad\"" : "",
            cls && strcmp(cls, "ind") == 0 ? " class=\"ind\"" : "");
    report_esc(out, label);
    fprintf(out, "</td><td class=\"num\">%llu</td></tr>\n", (unsigned long long)n);
}

static void report_tr_s(FILE *out, int bad, const char *label, const char *value)
{
    fprintf(out, "<tr%s><td>", bad ? " class=\"bad\"" : "");
    report_esc(out, label);
    fputs("</td><td class=\"num\">", out);
    report_esc(out, value);
    fputs("</td></tr>\n", out);
}

static void report_html_tables(FILE *out, const struct report_verdict *v)
{
    char buf[64];

    fputs("<div class=\"cols\"><section><h2>Verdict</h2><table>\n", out);
    report_tr_u(out, NULL, "requests sent", v->requests);
    report_tr_u(out, "ind", "of which phase-2 retries", v->retries);
    for (size_t i = 0; i < v->nstatus; i++) {
        snprintf(buf, sizeof(buf), "answered %d", v->status[i].code);
        report_tr_u(out, "ind", buf, v->status[i].count);
    }
    report_tr_u(out, "ind", "aborted by the client", v->aborted);
    report_tr_u(out, v->errors ? NULL : "ind", "errors/timeouts", v->errors);
    report_tr_u(out, NULL, "replays (Idempotent-Replayed)", v->replays);
    report_tr_u(out, NULL, "conflicts (409)", v->conflicts);
    {
        static const struct {
            const char *label;
            double q;
        } rows[] = {
            {"latency p50", 50}, {"latency p90", 90}, {"latency p99", 99}, {"latency p99.9", 99.9}};

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            snprintf(buf, sizeof(buf), "%.3f ms", report_ms(report_pct(v, rows[i].q)));
            report_tr_s(out, 0, rows[i].label, buf);
        }
        snprintf(buf, sizeof(buf), "%.3f ms", report_ms(report_lat_max(v)));
        report_tr_s(out, 0, "latency max", buf);
    }
    snprintf(buf, sizeof(buf), "%.1f answers/s", report_finite(v->throughput_rps));
    report_tr_s(out, 0, "throughput (phase 1)", buf);
    if (v->key_checks) {
        report_tr_u(out, NULL, "keys", v->keys);
        report_tr_u(out, NULL, "keys with a final 2xx", v->keys_ok);
        if (v->keys_duplicated < 0)
            report_tr_s(out, 0, "keys executed more than once", "not checked");
        else
            report_tr_u(out, v->keys_duplicated > 0 ? "bad" : NULL, "keys executed more than once",
                        (uint64_t)v->keys_duplicated);
        report_tr_u(out, v->keys_mismatched ? "bad" : NULL, "keys answered differently",
                    v->keys_mismatched);
        report_tr_u(out, v->keys_unanswered ? "bad" : NULL, "keys with no final answer",
                    v->keys_unanswered);
    } else {
        report_tr_s(out, 0, "key checks", "skipped (--no-key)");
    }
    snprintf(buf, sizeof(buf), "%.2f s (phase 1: %.2f s)", report_finite(v->duration_s),
             report_finite(v->phase1_s));
    report_tr_s(out, 0, "duration", buf);
    fputs("</table></section>\n<section><h2>Run parameters</h2><table>\n", out);
    if (v->run_id)
        report_tr_s(out, 0, "run id", v->run_id);
    for (size_t i = 0; i < v->nparams; i++) {
        const struct report_param *p = &v->params[i];

        fputs("<tr><td>", out);
        report_esc(out, p->name);
        fputs("</td><td><code>", out);
        if (p->type == REPORT_P_LIST) {
            if (p->nlist == 0)
                fputs("-", out);
            for (size_t j = 0; j < p->nlist; j++) {
                if (j)
                    fputs("<br>", out);
                report_esc(out, p->list[j]);
            }
        } else {
            int none = p->value == NULL || *p->value == '\0' || strcmp(p->value, "null") == 0;

            report_esc(out, none ? "-" : p->value);
        }
        fputs("</code></td></tr>\n", out);
    }
    fputs("</table></section></div>\n", out);
}

/* Keys that failed a check, a few of them, to start looking from. */
static void report_html_examples(FILE *out, const struct report_verdict *v)
{
    if (v->nexamples == 0)
        return;
    fputs("<section><h2>Keys that failed a check</h2><p class=\"what\">The first few; the "
          "ledgers and the proxies' logs say more.</p><table>\n<tr><th>key</th><th>what</th>"
          "<th>executions</th><th>allowed</th></tr>\n",
          out);
    for (size_t i = 0; i < v->nexamples; i++) {
        fputs("<tr class=\"bad\"><td><code>", out);
        report_esc(out, v->examples[i].key);
        fputs("</code></td><td>", out);
        report_esc(out, v->examples[i].what);
        fprintf(out, "</td><td class=\"num\">%llu</td><td class=\"num\">%llu</td></tr>\n",
                (unsigned long long)v->examples[i].executions,
                (unsigned long long)v->examples[i].allowed);
    }
    fputs("</table></section>\n", out);
}

/* The fault table: per kind, what was injected and what the clients saw. */
static void report_html_faults(FILE *out, const struct report_verdict *v)
{
    char buf[160];

    if (v->nfaults == 0 && !v->faults_note)
        return;
    fputs("<section><h2>Faults injected, and what they led to</h2><p class=\"what\">As the "
          "injector counted them; the outcomes are every attempt of this run of the kinds each "
          "fault is expected to cause (several faults may share one).</p>\n",
          out);
    if (v->faults_note) {
        fputs("<p class=\"what\">", out);
        report_esc(out, v->faults_note);
        fputs("</p>\n", out);
    }
    fputs("<table><tr><th>fault</th><th>injected</th><th>led to</th></tr>\n", out);
    for (size_t i = 0; i < v->nfaults; i++) {
        const struct report_fault *f = &v->faults[i];

        fputs("<tr><td>", out);
        report_esc(out, f->label);
        fputs("</td><td>", out);
        report_esc(out, f->injected);
        fputs("</td><td>", out);
        for (size_t e = 0; e < f->neffects; e++) {
            int seen = 0;

            for (size_t c = 0; c < v->nclasses; c++) {
                if (!report_effect_matches(f->effects[e], v->classes[c].name))
                    continue;
                report_class_summary(&v->classes[c], buf, sizeof(buf));
                fputs("<code>", out);
                report_esc(out, v->classes[c].name);
                fputs("</code>: ", out);
                report_esc(out, buf);
                fputs("<br>", out);
                seen = 1;
            }
            if (!seen) {
                fputs("<code>", out);
                report_esc(out, f->effects[e]);
                fputs("</code>: none seen<br>", out);
            }
        }
        if (f->note) {
            fputs("<span class=\"sub\">", out);
            report_esc(out, f->note);
            fputs("</span>", out);
        }
        fputs("</td></tr>\n", out);
    }
    fputs("</table></section>\n", out);
}

/* Every outcome kind: attempts, replays, keys whose final answer it is. */
static void report_html_classes(FILE *out, const struct report_verdict *v)
{
    if (v->nclasses == 0)
        return;
    fputs("<section><h2>Outcomes by kind</h2><p class=\"what\">Every attempt by its status and "
          "problem type (or the error that ended it), and the keys whose final answer it "
          "is.</p><table>\n<tr><th>kind</th><th>attempts</th><th>replayed</th>"
          "<th>final answer of keys</th></tr>\n",
          out);
    for (size_t i = 0; i < v->nclasses; i++) {
        const struct report_class *c = &v->classes[i];

        fputs("<tr><td><code>", out);
        report_esc(out, c->name);
        fprintf(out,
                "</code></td><td class=\"num\">%llu</td><td class=\"num\">%llu</td>"
                "<td class=\"num\">%llu</td></tr>\n",
                (unsigned long long)c->answers, (unsigned long long)c->replayed,
                (unsigned long long)c->keys_final);
    }
    fputs("</table></section>\n", out);
}

/* The sentence under the verdict: what the run was, in one line. */
static const struct report_param *report_param(const struct report_verdict *v, const char *name)
{
    for (size_t i = 0; i < v->nparams; i++)
        if (strcmp(v->params[i].name, name) == 0)
            return &v->params[i];
    return NULL;
}

static const char *report_pval(const struct report_verdict *v, const char *name)
{
    const struct report_param *p = report_param(v, name);

    return p && p->type != REPORT_P_LIST && p->value ? p->value : "?";
}

int report_html(FILE *out, const struct report_verdict *v)
{
    int pass = report_pass(v);
    uint64_t totals[REPORT_NCATS] = {0};
    uint64_t answered = report_answered(v);
    const struct report_param *targets = report_param(v, "targets");
    char buf[64], note[96], when[64];
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);

    fprintf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                 "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n");
    fprintf(out, "<title>retrystorm: %s</title>\n<style>%s</style></head>\n<body>\n",
            pass ? "PASS" : "FAIL", report_css);

    /* header: the verdict and why */
    fprintf(out,
            "<header><div class=\"wrap\"><div class=\"verdict %s\">%s</div><div>"
            "<div class=\"kicker\">retrystorm verdict%s",
            pass ? "pass" : "fail", pass ? "PASS" : "FAIL",
            v->interrupted ? " &middot; interrupted" : "");
    if (v->label) {
        fputs(" &middot; ", out);
        report_esc(out, v->label);
    }
    fputs("</div>\n", out);
    if (!v->key_checks) {
        fputs("<p class=\"headline\">Keyless baseline: no idempotency checks.</p>\n", out);
    } else if (pass) {
        fprintf(out, "<p class=\"headline\">%s</p>\n",
                v->keys_duplicated >= 0
                    ? "Every Idempotency-Key executed at most once, and every retry got the same "
                      "answer."
                    : "Every key got one consistent answer (executions not checked: no ledger).");
    } else {
        fputs("<p class=\"headline\">Idempotency was violated.</p><ul class=\"reasons\">\n", out);
        if (v->keys_duplicated > 0)
            fprintf(out, "<li>%lld key%s executed more than once (up to %llu times)</li>\n",
                    (long long)v->keys_duplicated, v->keys_duplicated == 1 ? "" : "s",
                    (unsigned long long)v->max_executions);
        if (v->keys_mismatched > 0)
            fprintf(out, "<li>%llu key%s answered differently on retry</li>\n",
                    (unsigned long long)v->keys_mismatched, v->keys_mismatched == 1 ? "" : "s");
        if (v->keys_unanswered > 0)
            fprintf(out, "<li>%llu key%s never got a final answer</li>\n",
                    (unsigned long long)v->keys_unanswered, v->keys_unanswered == 1 ? "" : "s");
        if (v->reexec_declared && v->reexec_missing > 0)
            fprintf(out,
                    "<li>%llu expected re-execution%s did not happen (the accounting does not "
                    "hold)</li>\n",
                    (unsigned long long)v->reexec_missing, v->reexec_missing == 1 ? "" : "s");
        fputs("</ul>\n", out);
    }
    fputs("<div class=\"sub\">", out);
    report_esc(out, report_pval(v, "keys"));
    fputs(" keys &times; ", out);
    report_esc(out, report_pval(v, "dupes"));
    fputs(" copies &middot; ", out);
    report_esc(out, report_pval(v, "concurrency"));
    fputs(" connections &middot; abort rate ", out);
    report_esc(out, report_pval(v, "abort_rate"));
    if (targets && targets->type == REPORT_P_LIST) {
        fputs(" &middot; ", out);
        for (size_t i = 0; i < targets->nlist; i++) {
            if (i)
                fputs(", ", out);
            report_esc(out, targets->list[i]);
        }
    }
    fprintf(out, " &middot; %.2f s</div></div></div></header>\n<div class=\"wrap\">\n",
            report_finite(v->duration_s));

    /* key checks */
    if (v->key_checks) {
        fputs("<div class=\"cards\">\n", out);
        report_card_key(out, "keys executed more than once", v->keys_duplicated,
                        v->ledger_note ? v->ledger_note : "no --ledger given",
                        v->ledger_note ? v->ledger_note : "summed over the ledgers");
        report_card_key(out, "keys answered differently", (int64_t)v->keys_mismatched, NULL,
                        "every final answer of a key compared (status, body)");
        report_card_key(out, "keys with no final answer", (int64_t)v->keys_unanswered, NULL,
                        "after patient retries");
        snprintf(buf, sizeof(buf), "%llu / %llu", (unsigned long long)v->keys_ok,
                 (unsigned long long)v->keys);
        report_card(out, "info", "keys with a final 2xx", buf,
                    "a final 4xx or recorded 5xx is not a failure");
        fputs("</div>\n", out);
        if (v->reexec_declared) {
            snprintf(buf, sizeof(buf), "%llu / %llu", (unsigned long long)v->reexec_observed,
                     (unsigned long long)v->reexec_expected);
            snprintf(note, sizeof(note), "%s",
                     v->reexec_missing ? "some did not happen: the prediction failed"
                                       : "replica killed at the upstream: a documented limit");
            fputs("<div class=\"cards\">\n", out);
            report_card(out, v->reexec_missing ? "bad" : "info", "expected re-executions", buf,
                        note);
            fputs("</div>\n", out);
        }
        report_html_examples(out, v);
    }
    report_html_faults(out, v);
    /* traffic */
    fputs("<div class=\"cards\">\n", out);
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v->requests);
    snprintf(note, sizeof(note), "%llu answered, %llu aborted, %llu errors",
             (unsigned long long)answered, (unsigned long long)v->aborted,
             (unsigned long long)v->errors);
    report_card(out, "info", "requests sent", buf, note);
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v->replays);
    snprintf(note, sizeof(note), "%llu conflicts (409)", (unsigned long long)v->conflicts);
    report_card(out, "info", "replays", buf, note);
    report_fmt_us(buf, sizeof(buf), report_pct(v, 99));
    snprintf(note, sizeof(note), "p50 %.2f ms%s", report_ms(report_pct(v, 50)),
             v->corrected ? ", from intended send times" : "");
    report_card(out, "info", "latency p99", buf, note);
    snprintf(buf, sizeof(buf), "%.0f /s", report_finite(v->throughput_rps));
    snprintf(note, sizeof(note), "answers per second in phase 1 (%.2f s)",
             report_finite(v->phase1_s));
    report_card(out, "info", "throughput", buf, note);
    fputs("</div>\n", out);

    /* pictures */
    fputs("<section><h2>Answers over time</h2><p class=\"what\">Every attempt by what it got, "
          "stacked per time slice. Phase 1 is the storm (duplicates interleaved, some abandoned); "
          "phase 2 retries every key that has no final answer yet.</p>\n",
          out);
    report_svg_timeline(out, v, totals);
    fputs("<div class=\"legend\">", out);
    for (int c = 0; c < REPORT_NCATS; c++)
        fprintf(out,
                "<span><span class=\"sw\" style=\"background:%s\"></span>%s <b>%llu</b></span>",
                report_cat_colors[c], report_cat_names[c], (unsigned long long)totals[c]);
    fputs("</div></section>\n", out);

    fprintf(out,
            "<section><h2>Latency</h2><p class=\"what\">Answered attempts of both phases%s; "
            "bars are answers per latency bin (20 per decade).</p>\n",
            v->corrected ? ", measured from each request's intended send time (coordinated "
                           "omission corrected)"
                         : "");
    report_svg_latency(out, v);
    fputs("</section>\n", out);

    report_html_classes(out, v);
    report_html_tables(out, v);
    fprintf(out, "<footer>retrystorm &middot; generated %s</footer>\n</div></body></html>\n", when);
    return ferror(out) ? -1 : 0;
}
