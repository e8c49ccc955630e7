/*
 * retrystorm — proves that under a storm of duplicated, abandoned and retried requests
 * every Idempotency-Key executes at most once.
 *
 * main: the command line (one table of flags), the files read after the run (--faults,
 * --expect-reexec: waited for, an injector writes them), the output files, the exit
 * status: 0 PASS, 1 FAIL (a key executed more than once, answered differently, or
 * unanswered; an expected re-execution missing), 2 usage error (the message names the
 * flag), 3 a --ledger could not be read.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/conf.h"
#include "faults.h"
#include "report.h"
#include "storm.h"
#include "wire.h"

#ifndef IDEMPROXY_VERSION
#define IDEMPROXY_VERSION "dev"
#endif

#define MAIN_MAX_URLS    64
#define MAIN_MAX_HEADERS 16
#define MAIN_MAX_EXPECT  16

enum {
    OPT_TARGET = 256,
    OPT_KEYS,
    OPT_DUPES,
    OPT_CONCURRENCY,
    OPT_ABORT_RATE,
    OPT_CLIENT_TIMEOUT,
    OPT_RATE,
    OPT_DURATION,
    OPT_LEDGER,
    OPT_REPORT,
    OPT_JSON,
    OPT_GIVE_UP,
    OPT_SEED,
    OPT_NO_KEY,
    OPT_METHOD,
    OPT_QUIET,
    OPT_VERSION,
    OPT_CHECK,
    OPT_RETRY_STATUSES,
    OPT_HEADER,
    OPT_FAULTS,
    OPT_EXPECT_REEXEC,
    OPT_LABEL,
};

static const struct option main_options[] = {
    {"target", required_argument, NULL, OPT_TARGET},
    {"keys", required_argument, NULL, OPT_KEYS},
    {"dupes", required_argument, NULL, OPT_DUPES},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"abort-rate", required_argument, NULL, OPT_ABORT_RATE},
    {"client-timeout", required_argument, NULL, OPT_CLIENT_TIMEOUT},
    {"rate", required_argument, NULL, OPT_RATE},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"ledger", required_argument, NULL, OPT_LEDGER},
    {"report", required_argument, NULL, OPT_REPORT},
    {"json", required_argument, NULL, OPT_JSON},
    {"give-up", required_argument, NULL, OPT_GIVE_UP},
    {"seed", required_argument, NULL, OPT_SEED},
    {"no-key", no_argument, NULL, OPT_NO_KEY},
    {"method", required_argument, NULL, OPT_METHOD},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"version", no_argument, NULL, OPT_VERSION},
    {"check", no_argument, NULL, OPT_CHECK},
    {"retry-statuses", required_argument, NULL, OPT_RETRY_STATUSES},
    {"header", required_argument, NULL, OPT_HEADER},
    {"faults", required_argument, NULL, OPT_FAULTS},
    {"expect-reexec", required_argument, NULL, OPT_EXPECT_REEXEC},
    {"label", required_argument, NULL, OPT_LABEL},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void main_help(FILE *out)
{
    fputs("usage: retrystorm --target URL [--target URL ...] --keys N --dupes D --concurrency C\n"
          "                  [--abort-rate R] [--client-timeout DURATION] [--rate RPS]\n"
          "                  [--duration DURATION] [--ledger URL ...] [--report FILE.html]\n"
          "                  [--json FILE.json] [--give-up DURATION] [--seed S] [--no-key]\n"
          "                  [--method M] [--retry-statuses LIST] [--header 'NAME: VALUE' ...]\n"
          "                  [--faults FILE] [--expect-reexec FILE ...] [--label TEXT]\n"
          "                  [--quiet] [--check]\n"
          "\n"
          "Sends a storm of duplicated, abandoned and retried keyed requests through an\n"
          "idempotency proxy and proves that every Idempotency-Key executed at most once.\n"
          "\n"
          "Phase 1, the storm: N keys x D copies, shuffled so copies of a key interleave, each\n"
          "to a random --target over C keep-alive connections; a fraction R is abandoned as\n"
          "soon as the request is written. Phase 2, patient retries: every key without a final\n"
          "answer (by default any status but 409, 429 and 5xx) is retried, honouring\n"
          "Retry-After (100 ms when absent, at most 2 s, jittered), until it has one or\n"
          "--give-up expires.\n"
          "\n"
          "Key i is \"<run-id>-<i>\" (run-id: random hex, fresh for every run); the body is\n"
          "{\"amount\": <1 + i % 1000>, \"ref\": \"<key>\"}, the same for every copy.\n"
          "\n"
          "  --target URL          http://HOST:PORT[/path] (default path /payments); repeatable\n"
          "  --keys N              distinct Idempotency-Keys\n"
          "  --dupes D             copies of every key sent in phase 1 [1]\n"
          "  --concurrency C       connections (and requests in flight) at most\n"
          "  --abort-rate R        fraction 0..1 of copies abandoned after sending [0]\n"
          "  --client-timeout DUR  bound on one attempt, connect included [30s]\n"
          "  --rate RPS            open loop: request i is sent at i/RPS after the start and its\n"
          "                        latency counts from then (coordinated omission corrected)\n"
          "  --duration DUR        with --rate: send RPS x DUR requests (keys = requests / D)\n"
          "  --ledger URL          the upstream's execution ledger, GET {\"total\": T, \"keys\":\n"
          "                        {key: count}}; repeatable, counts are summed over replicas\n"
          "  --report FILE.html    write a self-contained HTML report\n"
          "  --json FILE.json      write the verdict as JSON\n"
          "  --give-up DUR         stop phase 2 after this long [60s]\n"
          "  --seed S              seed for the order, the aborts, targets and jitter [random]\n"
          "  --no-key              keyless baseline: no Idempotency-Key, no phase 2, no checks\n"
          "  --method M            request method [POST]; GET and HEAD send no body\n"
          "  --retry-statuses LIST statuses that are not final answers: retried in phase 2 and\n"
          "                        never compared, e.g. 409,429,502,503 (Nxx and N-M ranges\n"
          "                        too) [409,429,5xx]; every other answer is final\n"
          "  --header 'N: V'       one more request header on every attempt; repeatable\n"
          "  --faults FILE         the injected faults, from the injector (one kind per line:\n"
          "                        LABEL<TAB>INJECTED<TAB>EFFECTS[<TAB>NOTE], EFFECTS outcome\n"
          "                        kinds such as '503 store-unavailable' or 'error*'); read\n"
          "                        when the run is over (stderr says \"run over\"), waiting\n"
          "                        for it at most --give-up; shown per fault in the verdict\n"
          "  --expect-reexec FILE  a ledger document taken right after a replica was killed\n"
          "                        with requests at the upstream (a documented limit): each\n"
          "                        of this run's keys in it must execute exactly once more,\n"
          "                        reported apart, not as a duplicate; repeatable, waited for\n"
          "  --label TEXT          what this run is, for the verdict and the report\n"
          "  --quiet               no verdict table on stdout, no progress on stderr\n"
          "  --check               only check the arguments (exit 0 if they are valid)\n"
          "  --help, --version\n"
          "\n"
          "Durations: a number with ms, s, m, h or d (a bare number means seconds).\n"
          "\n"
          "Verdict: FAIL when a key executed more than once (summed over the --ledger URLs;\n"
          "\"not checked\" without one; an expected re-execution is allowed, and required),\n"
          "when two final answers of a key differ (status or body), or when a key got no\n"
          "final answer.\n"
          "Exit status: 0 PASS, 1 FAIL, 2 usage error, 3 a --ledger (or an --expect-reexec\n"
          "file) could not be read.\n",
          out);
}

static int main_usage(const char *flag, const char *fmt, const char *arg)
{
    fprintf(stderr, "retrystorm: %s: ", flag);
    fprintf(stderr, fmt, arg);
    fputs(" (see --help)\n", stderr);
    return 2;
}

static int main_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s == '\0' || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int main_parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (*s == '\0' || errno != 0 || *end != '\0' || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int main_is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s) != NULL))
            return 0;
    return 1;
}

struct main_args {
    struct storm_opts o;
    struct wire_url targets[MAIN_MAX_URLS], ledgers[MAIN_MAX_URLS];
    uint8_t retry_status[STORM_STATUS_MAX];
    const char *headers[MAIN_MAX_HEADERS];
    const char *expect[MAIN_MAX_EXPECT];
    size_t nexpect;
    int have_keys, have_conc;
    int check_only; /* --check: validate the arguments, run nothing */
    const char *report_path, *json_path, *faults_path, *label;
};

/* "409,429,5xx,500-504" into bits (cleared first). 0, or -1 on a bad item. */
static int main_parse_statuses(const char *arg, uint8_t *bits)
{
    char buf[256], *save = NULL, *tok;

    if (strlen(arg) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", arg);
    memset(bits, 0, STORM_STATUS_MAX);
    if (strcmp(buf, "none") == 0)
        return 0;
    for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        unsigned lo, hi;
        char c1, tail;

        if (strlen(tok) == 3 && tok[0] >= '1' && tok[0] <= '9' && tok[1] == 'x' && tok[2] == 'x') {
            lo = (unsigned)(tok[0] - '0') * 100;
            hi = lo + 99;
        } else if (sscanf(tok, "%3u%c%3u%c", &lo, &c1, &hi, &tail) == 3 && c1 == '-') {
            /* a range */
        } else if (sscanf(tok, "%3u%c", &lo, &tail) == 1) {
            hi = lo;
        } else {
            return -1;
        }
        if (lo < 100 || hi > 999 || lo > hi)
            return -1;
        memset(bits + lo, 1, hi - lo + 1);
    }
    return 0;
}

/* "Name: value": a token, a colon, a value without control bytes. */
static int main_is_header(const char *h)
{
    const char *colon = strchr(h, ':');
    char name[128];

    if (!colon || colon == h || (size_t)(colon - h) >= sizeof(name))
        return 0;
    snprintf(name, sizeof(name), "%.*s", (int)(colon - h), h);
    if (!main_is_token(name))
        return 0;
    for (const char *p = colon + 1; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            return 0;
    return 1;
}

/* Returns 0 to run, 2 on a usage error, -1 when --help/--version was answered. */
static int main_parse(int argc, char **argv, struct main_args *a)
{
    struct storm_opts *o = &a->o;
    int opt, seed_set = 0;
    char err[256];

    o->dupes = 1;
    o->client_timeout_ms = 30000;
    o->give_up_ms = 60000;
    o->method = "POST";
    o->targets = a->targets;
    o->ledgers = a->ledgers;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":h", main_options, NULL)) != -1) {
        const char *arg = optarg;
        uint64_t u;

        switch (opt) {
        case OPT_TARGET:
        case OPT_LEDGER: {
            int t = opt == OPT_TARGET;
            size_t *n = t ? &o->ntargets : &o->nledgers;
            struct wire_url *u8 = t ? a->targets : a->ledgers;

            if (*n >= MAIN_MAX_URLS)
                return main_usage(t ? "--target" : "--ledger", "more than %s URLs", "64");
            if (wire_url_parse(arg, t ? "/payments" : "/ledger", &u8[*n], err, sizeof(err)) < 0)
                return main_usage(t ? "--target" : "--ledger", "%s", err);
            (*n)++;
            break;
        }
        case OPT_KEYS:
            if (main_parse_u64(arg, 1, UINT32_MAX, &o->keys) < 0)
                return main_usage("--keys", "'%s' is not a whole number from 1 to 4294967295", arg);
            a->have_keys = 1;
            break;
        case OPT_DUPES:
            if (main_parse_u64(arg, 1, 1000000, &o->dupes) < 0)
                return main_usage("--dupes", "'%s' is not a whole number from 1 to 1000000", arg);
            break;
        case OPT_CONCURRENCY:
            if (main_parse_u64(arg, 1, STORM_MAX_CONCURRENCY, &u) < 0)
                return main_usage("--concurrency", "'%s' is not a whole number from 1 to 10000",
                                  arg);
            o->concurrency = (int)u;
            a->have_conc = 1;
            break;
        case OPT_ABORT_RATE:
            if (main_parse_double(arg, 0, 1, &o->abort_rate) < 0)
                return main_usage("--abort-rate", "'%s' is not a fraction from 0 to 1", arg);
            break;
        case OPT_CLIENT_TIMEOUT:
            if (conf_parse_duration(arg, &o->client_timeout_ms) < 0 || o->client_timeout_ms == 0)
                return main_usage("--client-timeout",
                                  "'%s' is not a positive duration (e.g. 500ms, 30s, 2m)", arg);
            break;
        case OPT_RATE:
            if (main_parse_double(arg, 0.001, 10000000, &o->rate) < 0)
                return main_usage("--rate", "'%s' is not a rate in requests/s (> 0)", arg);
            break;
        case OPT_DURATION:
            if (conf_parse_duration(arg, &o->duration_ms) < 0 || o->duration_ms == 0)
                return main_usage("--duration",
                                  "'%s' is not a positive duration (e.g. 500ms, 30s, 2m)", arg);
            break;
        case OPT_REPORT:
            a->report_path = arg;
            break;
        case OPT_JSON:
            a->json_path = arg;
            break;
        case OPT_GIVE_UP:
            if (conf_parse_duration(arg, &o->give_up_ms) < 0)
                return main_usage("--give-up", "'%s' is not a duration (e.g. 500ms, 30s, 2m)", arg);
            break;
        case OPT_SEED:
            if (main_parse_u64(arg, 0, UINT64_MAX, &o->seed) < 0)
                return main_usage("--seed", "'%s' is not a whole number", arg);
            seed_set = 1;
            break;
        case OPT_NO_KEY:
            o->no_key = 1;
            break;
        case OPT_METHOD:
            if (!main_is_token(arg) || strlen(arg) > 31)
                return main_usage("--method", "'%s' is not an HTTP method token", arg);
            o->method = arg;
            break;
        case OPT_QUIET:
            o->quiet = 1;
            break;
        case OPT_CHECK:
            a->check_only = 1;
            break;
        case OPT_RETRY_STATUSES:
            if (main_parse_statuses(arg, a->retry_status) < 0)
                return main_usage("--retry-statuses",
                                  "'%s' is not a list of statuses (e.g. "
                                  "409,429,502,503 or 409,5xx or none)",
                                  arg);
            o->retry_status = a->retry_status;
            break;
        case OPT_HEADER:
            if (o->nheaders >= MAIN_MAX_HEADERS)
                return main_usage("--header", "more than %s headers", "16");
            if (!main_is_header(arg))
                return main_usage("--header", "'%s' is not 'Name: value'", arg);
            a->headers[o->nheaders++] = arg;
            o->headers = a->headers;
            break;
        case OPT_FAULTS:
            a->faults_path = arg;
            break;
        case OPT_EXPECT_REEXEC:
            if (a->nexpect >= MAIN_MAX_EXPECT)
                return main_usage("--expect-reexec", "more than %s files", "16");
            a->expect[a->nexpect++] = arg;
            break;
        case OPT_LABEL:
            a->label = arg;
            break;
        case OPT_VERSION:
            printf("retrystorm %s\n", IDEMPROXY_VERSION);
            return -1;
        case 'h':
            main_help(stdout);
            return -1;
        case ':':
            return main_usage(argv[optind - 1], "%s", "needs a value");
        default:
            return main_usage(argv[optind - 1], "%s", "unknown option");
        }
    }
    if (optind < argc)
        return main_usage(argv[optind], "%s", "unexpected argument");

    if (o->ntargets == 0)
        return main_usage("--target", "%s", "required (e.g. --target http://127.0.0.1:8080)");
    if (!a->have_conc)
        return main_usage("--concurrency", "%s", "required (connections, e.g. --concurrency 32)");
    if (o->duration_ms > 0 && o->rate <= 0)
        return main_usage("--duration", "%s",
                          "only with --rate (a closed loop sends --keys x --dupes requests)");
    if (o->duration_ms > 0) {
        double requests = floor(o->rate * (double)o->duration_ms / 1000.0);

        if (a->have_keys)
            return main_usage("--keys", "%s",
                              "not with --rate and --duration (keys = rate x duration / dupes)");
        if (requests / (double)o->dupes < 1)
            return main_usage("--duration", "%s",
                              "too short: --rate x --duration is less than --dupes requests");
        if (requests > (double)STORM_MAX_REQUESTS)
            return main_usage("--duration", "%s", "too long: more than 50000000 requests");
        o->keys = (uint64_t)(requests / (double)o->dupes);
    } else if (!a->have_keys) {
        return main_usage("--keys", "%s", "required (distinct Idempotency-Keys, e.g. --keys 500)");
    }
    if ((double)o->keys * (double)o->dupes > (double)STORM_MAX_REQUESTS)
        return main_usage("--keys", "%s", "--keys x --dupes is more than 50000000 requests");
    if (!seed_set) {
        uint64_t seed = 0;
        FILE *f = fopen("/dev/urandom", "rb");

        if (f == NULL || fread(&seed, sizeof(seed), 1, f) != 1)
            seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        if (f)
            fclose(f);
        o->seed = seed;
    }
    return 0;
}

/* Open an output file before the run, so a bad path fails in a second, not after it. */
static FILE *main_open(const char *flag, const char *path)
{
    FILE *f = fopen(path, "w");

    if (f == NULL)
        fprintf(stderr, "retrystorm: %s: cannot write '%s': %s\n", flag, path, strerror(errno));
    return f;
}

static int main_close(const char *flag, const char *path, FILE *f, int rc)
{
    if (fclose(f) != 0 || rc < 0) {
        fprintf(stderr, "retrystorm: %s: writing '%s' failed: %s\n", flag, path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Declare the --expect-reexec snapshots (waiting for each). 0, or -1 with a message. */
static int main_expect(struct main_args *a, struct storm *s)
{
    char err[512];

    for (size_t i = 0; i < a->nexpect; i++) {
        char *text;
        size_t len;
        int rc;

        if (faults_read_file(a->expect[i], a->o.give_up_ms, &text, &len, err, sizeof(err)) < 0) {
            fprintf(stderr, "retrystorm: --expect-reexec: %s\n", err);
            return -1;
        }
        rc = storm_expect_reexec(s, text, len, a->expect[i], err, sizeof(err));
        free(text);
        if (rc < 0) {
            fprintf(stderr, "retrystorm: --expect-reexec: %s\n", err);
            return -1;
        }
    }
    return 0;
}

/* The --faults table (waiting for it), or NULL with *note saying why there is none. */
static struct faults *main_faults(const struct main_args *a, char *note, size_t notelen)
{
    struct faults *f = NULL;
    char err[400];
    char *text;
    size_t len;

    if (!a->faults_path)
        return NULL;
    if (faults_read_file(a->faults_path, a->o.give_up_ms, &text, &len, err, sizeof(err)) == 0) {
        f = faults_parse(text, len, err, sizeof(err));
        free(text);
    }
    if (!f) {
        fprintf(stderr, "retrystorm: --faults: %s\n", err);
        snprintf(note, notelen, "no fault table: %s", err);
    }
    return f;
}

int main(int argc, char **argv)
{
    static struct main_args a;
    struct storm *s = NULL;
    struct faults *faults = NULL;
    struct report_verdict v;
    FILE *report = NULL, *json = NULL;
    char err[512], faults_note[512] = "";
    int rc, ledger_failed = 0, status = 2;

    rc = main_parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (a.check_only) {
        printf("retrystorm: arguments ok\n");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);

    if (a.report_path && (report = main_open("--report", a.report_path)) == NULL)
        goto out;
    if (a.json_path && (json = main_open("--json", a.json_path)) == NULL)
        goto out;
    s = storm_new(&a.o, err, sizeof(err));
    if (s == NULL) {
        fprintf(stderr, "retrystorm: --target: %s\n", err);
        goto out;
    }
    if (!a.o.no_key && storm_probe_ledgers(s, err, sizeof(err)) < 0) {
        fprintf(stderr, "retrystorm: --ledger: %s\n", err);
        status = 3;
        goto out;
    }
    if (storm_run(s, err, sizeof(err)) < 0) {
        fprintf(stderr, "retrystorm: %s\n", err);
        status = 1;
        goto out;
    }
    /* the handshake with an injector: it writes --faults (and the snapshots) once it
     * knows the run is over, so that its counts are complete */
    if ((a.faults_path || a.nexpect) && !a.o.quiet)
        fprintf(stderr, "retrystorm: run over; reading%s%s%s (waiting up to %.0f s)\n",
                a.nexpect ? " --expect-reexec" : "", a.faults_path ? " --faults " : "",
                a.faults_path ? a.faults_path : "", (double)a.o.give_up_ms / 1000.0);
    if (main_expect(&a, s) < 0) {
        status = 3;
        goto out;
    }
    faults = main_faults(&a, faults_note, sizeof(faults_note));
    if (storm_check_ledgers(s, err, sizeof(err)) < 0) {
        fprintf(stderr, "retrystorm: --ledger: %s; executions not checked\n", err);
        ledger_failed = 1;
    }
    storm_verdict(s, &v);
    v.faults = faults_table(faults, &v.nfaults);
    v.faults_note = faults_note[0] ? faults_note : NULL;
    v.label = a.label;
    if (!a.o.quiet)
        report_text(stdout, &v);
    fflush(stdout);
    status = ledger_failed ? 3 : report_pass(&v) ? 0 : 1;
    if (json) {
        rc = report_json(json, &v);
        if (main_close("--json", a.json_path, json, rc) < 0 && status == 0)
            status = 1;
        json = NULL;
    }
    if (report) {
        rc = report_html(report, &v);
        if (main_close("--report", a.report_path, report, rc) < 0 && status == 0)
            status = 1;
        report = NULL;
    }
out:
    if (report)
        fclose(report);
    if (json)
        fclose(json);
    storm_free(s);
    faults_free(faults);
    return status;
}
