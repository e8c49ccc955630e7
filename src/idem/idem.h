/*
 * idem — the keyed-request handler: claim → forward → record → answer.
 *
 *   claim (one EVALSHA) ─┬─ claimed  → forward (lease renewed every lease/3)
 *                        │              ├─ an answer → record → answer
 *                        │              ├─ a release-statuses answer (429 503) → release → answer
 *                        │              ├─ nothing sent → release → 502
 *                        │              └─ sent, then failed (or drain-timeout) → record 504
 *                        │                   outcome-unknown (ambiguous record), or release
 *                        ├─ done     → replay (Idempotent-Replayed: true)
 *                        ├─ pending  → 409 + Retry-After, or (in-flight wait) park until
 *                        │             the record completes (pub/sub, lease timer) → claim again
 *                        └─ mismatch → 422
 *   store unavailable → 503 + Retry-After (on-redis-error reject) or forward unprotected.
 *
 * It is a frontend handler (http/frontend.h): it takes the requests whose method the
 * policy names and declines the rest. Keyless requests it takes (key not required) are
 * forwarded as they are and never touch Redis.
 *
 * Recording: a record that fails (timeout, lost connection, error) is sent again with
 * back-off (50 ms doubling to 200 ms) while the claim surely lasts — lease from the claim or
 * the last renewal Redis confirmed; renewals go on meanwhile. The client's answer waits
 * for the record. Past the lease the record is given up: logged and counted.
 *
 * Ownership: the keyed state of a request lives in an idem_ctx attached to the request
 * with a cleanup hook, so it is freed in the request's one free point; pending Redis
 * commands and watches are cancelled then — except a record still being retried, which
 * only a streamed answer can leave behind: that state lives on, owned by the handler,
 * until the record resolves. A client that goes away does not stop the machine: the
 * answer is still recorded for the retry.
 */
#ifndef IDEMPROXY_IDEM_IDEM_H
#define IDEMPROXY_IDEM_IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "idem/policy.h"
#include "idem/seal.h"
#include "idem/store.h"

struct event_base;
struct frontend_handler;

/* The handler for one worker: timers on base, records in store, rules from pol, records
 * sealed and opened as seal says (all borrowed). Register it with frontend_add_handler.
 * NULL on allocation failure. */
struct frontend_handler *idem_handler_new(struct event_base *base, const struct idem_policy *pol,
                                          const struct seal_conf *seal, struct store *store);

/* Free the handler (after the frontend and its requests are gone); records still being
 * retried are given up (logged and counted). NULL is a no-op. */
void idem_handler_free(struct frontend_handler *h);

/* A reload: new requests follow pol and seal (borrowed; the old ones must outlive the
 * requests that started under them). */
void idem_handler_set_policy(struct frontend_handler *h, const struct idem_policy *pol,
                             const struct seal_conf *seal);

/* The lowest frontend_req.seq among the records still being retried after their request
 * ended (they keep using the policy they started under), UINT64_MAX when there are none. */
uint64_t idem_handler_oldest_seq(const struct frontend_handler *h);

/* Records still being retried after their request ended (streamed answers). on_idle
 * (when not NULL) is remembered and called each time the last of them resolves. */
size_t idem_handler_pending(const struct frontend_handler *h, void (*on_idle)(void *arg),
                            void *arg);

/* Counters for logs (and metrics later). */
struct idem_stats {
    uint64_t record_retries; /* record attempts sent again after a failure */
    uint64_t records_lost;   /* answers never recorded: Redis away for the whole lease */
    uint64_t in_flight;      /* keyed requests being handled now (a gauge) */
    /* claims answered 503 rather than forwarded unprotected: Redis failed (on-redis-error
     * reject), or WAIT did not confirm the claim (redis-wait-policy fail) */
    uint64_t claims_failed_redis;
    uint64_t claims_failed_wait;
    uint64_t claims_unconfirmed;  /* forwarded though WAIT did not confirm (degrade) */
    uint64_t records_unconfirmed; /* recorded on the primary, never confirmed in the lease */
    uint64_t records_unreadable;  /* replays refused: a record that does not open (502) */
};
/* Any thread (the admin thread reads it). */
void idem_handler_stats(const struct frontend_handler *h, struct idem_stats *out);

#endif
