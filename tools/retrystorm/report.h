/*
 * report — the verdict of a storm as a text table, JSON and a self-contained HTML page.
 *
 * The engine fills a struct report_verdict; this module only formats it (and decides
 * PASS/FAIL, report_pass()). The writers take a FILE * so tests can use open_memstream()
 * or tmpfile(); they return 0, or -1 when a write failed (ferror). They never close the
 * stream and keep no pointer to the verdict.
 *
 * The HTML page has no scripts and no external assets (inline CSS, inline SVG without an
 * xmlns URL); every text that came from the user or the network is escaped.
 *
 * A timeline (answers by category per time slice) is kept in a bounded struct: it starts
 * with 1 ms slices and, whenever an event falls past the last of REPORT_SLICES slices,
 * merges neighbours and doubles the slice width, so any run length fits in 64..128 bars.
 */
#ifndef RETRYSTORM_REPORT_H
#define RETRYSTORM_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct hist;

#define REPORT_SLICES 128

/* What happened to one attempt, for the timeline (in stacking order, bottom first). */
enum report_cat {
    REPORT_CAT_2XX = 0, /* first execution's 2xx */
    REPORT_CAT_REPLAY,  /* any answer with Idempotent-Replayed: true */
    REPORT_CAT_409,     /* same key still in flight */
    REPORT_CAT_4XX,     /* other 4xx (422 mismatch, 400, ...) */
    REPORT_CAT_5XX,     /* 5xx: final or not, per the retry statuses */
    REPORT_CAT_OTHER,   /* 1xx/3xx and anything else */
    REPORT_CAT_ERROR,   /* connection error, garbage, timeout */
    REPORT_CAT_ABORTED, /* abandoned by the client right after sending */
    REPORT_NCATS
};

struct report_timeline {
    uint64_t slice_us; /* width of one slice (starts at 1000) */
    size_t used;       /* slices that have seen time pass (last event's slice + 1) */
    uint64_t counts[REPORT_SLICES][REPORT_NCATS];
};

/* Zero tl (1 ms slices). */
void report_timeline_init(struct report_timeline *tl);
/* Count one event of category cat at t_us after the start of the run. */
void report_timeline_add(struct report_timeline *tl, uint64_t t_us, enum report_cat cat);
/* Human name of a category ("2xx", "replayed", ...). */
const char *report_cat_name(enum report_cat cat);

/* One run parameter, shown in every format. */
enum report_ptype {
    REPORT_P_STR,  /* value is text */
    REPORT_P_NUM,  /* value is a JSON number as text ("500", "0.2") */
    REPORT_P_BOOL, /* value is "true" or "false" */
    REPORT_P_LIST  /* list[0..nlist) are texts */
};

struct report_param {
    const char *name; /* JSON key and label, e.g. "concurrency" */
    enum report_ptype type;
    const char *value;
    const char *const *list;
    size_t nlist;
};

struct report_status {
    int code;
    uint64_t count;
};

/*
 * One kind of outcome of an attempt: an answer's status with the slug of its problem
 * type (the part of an application/problem+json "type" after the last ':' or '/'), e.g.
 * "201", "503 store-unavailable", "504 outcome-unknown"; or "error: <why>" for an attempt
 * that got no answer, or "aborted".
 */
struct report_class {
    const char *name;
    int status;          /* 0: not an answer (error, aborted) */
    uint64_t answers;    /* attempts that ended this way */
    uint64_t replayed;   /* of which Idempotent-Replayed: true */
    uint64_t keys_final; /* keys whose final answer is of this kind */
};

/*
 * One kind of injected fault, as the injector reported it (see faults.h): a label, what
 * was injected (free text, e.g. "4, 3.1 s in total"), the outcome kinds it is expected
 * to lead to (names of report_class entries; "error*" matches every "error: ..." kind),
 * and a note (free text; may be NULL).
 */
struct report_fault {
    const char *label, *injected, *note;
    const char *const *effects;
    size_t neffects;
};

/* A key that failed a check, for the examples printed under the verdict. */
struct report_example {
    const char *key;
    uint64_t executions, allowed; /* executions seen in the ledgers / allowed (1, or 2 for
                                     an expected re-execution) */
    const char *what;             /* "executed 2 times", "answered 201 then 500", ... */
};

struct report_verdict {
    /* attempts */
    uint64_t requests;                  /* attempts sent (phase 1 + phase 2) */
    uint64_t retries;                   /* of which phase 2 */
    const struct report_status *status; /* answers per status code, ascending */
    size_t nstatus;
    uint64_t aborted, errors, replays, conflicts;
    const struct hist *latency; /* answered attempts, µs; may be NULL (treated as empty) */
    int corrected;              /* latency measured from the intended send time (--rate) */
    double throughput_rps;      /* answers/s over phase 1 */
    double phase1_s, duration_s;
    /* keys */
    int key_checks; /* 0 with --no-key: the key lines say "skipped" */
    uint64_t keys, keys_ok, keys_mismatched, keys_unanswered;
    int64_t keys_duplicated; /* -1: not checked (no --ledger, or it failed) */
    uint64_t max_executions; /* most executions of one key (with keys_duplicated >= 0) */
    const char *ledger_note; /* why not checked, or which ledgers; may be NULL */
    int interrupted;         /* stopped by a signal */
    /* expected re-executions (--expect-reexec): keys that were at an upstream when the
     * replica handling them was killed (a documented limit) may execute exactly once
     * more; keys_duplicated does not count them. */
    int reexec_declared;      /* 0: no --expect-reexec, the fields below are unused */
    uint64_t reexec_expected; /* keys of this run in the snapshots */
    uint64_t reexec_observed; /* of those, executed exactly once more */
    uint64_t reexec_missing;  /* of those, not executed again: the prediction failed */
    /* outcome kinds, faults, examples; all may be empty */
    const struct report_class *classes;
    size_t nclasses;
    const struct report_fault *faults;
    size_t nfaults;
    const char *faults_note; /* e.g. why the fault table is missing; may be NULL */
    const struct report_example *examples;
    size_t nexamples;
    const char *label; /* what this run is ("chaos storm"); may be NULL */
    /* for the HTML page */
    const struct report_timeline *timeline; /* may be NULL */
    double phase2_start_s;                  /* < 0: there was no phase 2 */
    const struct report_param *params;
    size_t nparams;
    const char *run_id;
};

/* PASS: no key executed more than once (beyond an expected re-execution), none answered
 * differently, none unanswered, and every expected re-execution happened. */
int report_pass(const struct report_verdict *v);

int report_text(FILE *out, const struct report_verdict *v);
int report_json(FILE *out, const struct report_verdict *v);
int report_html(FILE *out, const struct report_verdict *v);

#endif
