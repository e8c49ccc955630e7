/*
 * idem — the keyed-request state machine: claim → forward → record → answer.
 *
 *   claim (one EVALSHA) ─┬─ claimed  → forward (lease renewed every lease/3)
 *                        │              ├─ 2xx-4xx (5xx with record-5xx) → record → answer
 *                        │              ├─ 5xx → release → answer
 *                        │              ├─ nothing sent → release → 502
 *                        │              └─ sent, then failed → record 504 (ambiguous record)
 *                        │                                  or release → 502/504
 *                        ├─ done     → replay (Idempotent-Replayed: true)
 *                        ├─ pending  → 409 + Retry-After, or (in-flight wait) park until
 *                        │             the record completes (pub/sub, lease timer) → claim again
 *                        └─ mismatch → 422
 *   store unavailable → 503 + Retry-After (on-redis-error reject) or forward unprotected.
 *
 * Ownership: the keyed state lives in an idem_ctx owned by the frontend_req (r->idem)
 * and is freed with it, in frontend's one place (idem_ctx_free); pending store commands
 * and watches are cancelled then. A client that goes away does not stop the machine:
 * the answer is still recorded for the retry.
 */
#ifndef IDEMPROXY_IDEM_H
#define IDEMPROXY_IDEM_H

struct frontend_req;
struct idem_ctx;

/* Is r's method one the policy makes idempotent? (Only then may Redis be touched.) */
int idem_method_applies(const struct frontend_req *r);

/* Take over r: answer it, keyed or (no key, not required) as a plain forward. */
void idem_handle(struct frontend_req *r);

/* Release everything ctx holds. Called only by frontend when r is freed. */
void idem_ctx_free(struct idem_ctx *ctx);

#endif
