/*
 * storm — the retry-storm client engine.
 *
 * Phase 1 (the storm): keys × dupes copies of keyed POSTs, shuffled so the copies of a key
 * interleave, each sent to a random target over at most `concurrency` keep-alive
 * connections (libevent bufferevents, wire.h's parser). A fraction abort_rate of copies is
 * abandoned as soon as the request has left the output buffer. Closed loop by default;
 * with rate > 0 open loop: request i is due at start + i/rate and its latency runs from
 * that intended time, even while it waits for a free connection.
 *
 * Phase 2 (patient retries, keyed runs only): every key without a FINAL answer (a status
 * not in retry_status: by default any but 409, 429 and 5xx) is retried, one attempt per
 * key at a time, backing off per Retry-After on 409/429/503 (100 ms when absent, at most
 * 2 s, jittered) and 100 ms doubling to 2 s after errors and other statuses, until every
 * key has a final answer or give_up_ms passed.
 *
 * Checks: every final answer of a key must carry the same status and body (FNV-1a 64 of
 * the decoded body) — a replay is byte-identical to the answer it replays, whatever its
 * status; the ledgers (storm_check_ledgers) say how often each key executed, summed over
 * all of them. Keys declared by storm_expect_reexec may execute exactly once more.
 *
 * Every attempt is also classified (report_class): its status and the slug of its
 * problem type, or the error that ended it; the verdict counts each kind, and the final
 * answers of the keys per kind.
 *
 * Ownership: storm_new() copies what it needs from the options (the caller may free them
 * after the call); everything else belongs to the storm and is released by storm_free().
 * Pointers that storm_verdict() puts into the verdict stay valid until storm_free().
 */
#ifndef RETRYSTORM_STORM_H
#define RETRYSTORM_STORM_H

#include <stddef.h>
#include <stdint.h>

#include "report.h"
#include "wire.h"

#define STORM_MAX_CONCURRENCY 10000
#define STORM_MAX_REQUESTS    50000000ULL
#define STORM_STATUS_MAX      1000

struct storm_opts {
    const struct wire_url *targets; /* at least one */
    size_t ntargets;
    uint64_t keys, dupes;       /* keys >= 1, dupes >= 1 */
    int concurrency;            /* 1..STORM_MAX_CONCURRENCY */
    double abort_rate;          /* 0..1 */
    uint64_t client_timeout_ms; /* one attempt, connect included */
    double rate;                /* requests/s; 0 = closed loop */
    uint64_t duration_ms;       /* informational: keys × dupes already reflect it */
    const struct wire_url *ledgers;
    size_t nledgers;
    uint64_t give_up_ms;
    uint64_t seed;
    int no_key; /* no Idempotency-Key, no phase 2, no key checks */
    const char *method;
    int quiet; /* no progress lines on stderr */
    /* [STORM_STATUS_MAX]: 1 for the statuses that are not final answers (retried in phase
     * 2, never compared); NULL: 409, 429 and 500-599 */
    const uint8_t *retry_status;
    const char *const *headers; /* extra request header lines "Name: value" (checked) */
    size_t nheaders;
};

struct storm;

/*
 * Resolve the targets, pick a run id, plan and shuffle the copies. Returns NULL with err
 * set ("resolve nosuchhost: Name or service not known") on failure.
 */
struct storm *storm_new(const struct storm_opts *o, char *err, size_t errlen);

/* The run id: random hex, the prefix of every key ("<run-id>-<i>"). */
const char *storm_run_id(const struct storm *s);

/*
 * Fetch and parse every ledger once, before the storm, so a wrong URL fails in a second
 * rather than after the run. Returns 0, or -1 with err naming the ledger and the cause.
 */
int storm_probe_ledgers(struct storm *s, char *err, size_t errlen);

/* Run both phases to the end (or SIGINT/SIGTERM). Returns 0, or -1 with err set when the
 * event machinery could not be set up. */
int storm_run(struct storm *s, char *err, size_t errlen);

/*
 * Fetch every ledger and sum the executions of this run's keys. Returns 0, or -1 with
 * err set when one is unreachable or unreadable (the verdict then says "not checked").
 * Without ledgers (or with no_key) returns 0 and checks nothing.
 */
int storm_check_ledgers(struct storm *s, char *err, size_t errlen);

/*
 * Declare the keys that were at an upstream when the replica handling them was killed
 * (the documented limit: each may execute exactly once more): json is a ledger document
 * (ledger.h) taken right after the kill; this run's keys in it, with their counts then,
 * are expected to show count + 1 executions at the end. name is for messages. May be
 * called for several documents (counts add up), before storm_check_ledgers. Returns 0,
 * or -1 with err set when json is not a ledger document.
 */
int storm_expect_reexec(struct storm *s, const char *json, size_t len, const char *name, char *err,
                        size_t errlen);

/* Fill v from the finished run. */
void storm_verdict(struct storm *s, struct report_verdict *v);

void storm_free(struct storm *s);

#endif
