/*
 * admin — the operator's endpoint, on its own listener (admin-listen) and its own thread,
 * never reachable through the proxy port:
 *
 *   GET /healthz   200 {"status":"ok"} while the process runs
 *   GET /readyz    200 {"status":"ready"}, or 503 {"status":"not ready","reasons":[...]}:
 *                  draining, a worker without Redis (connected, scripts loaded), or no
 *                  upstream out of back-off
 *   GET /metrics   Prometheus text exposition (version 0.0.4): requests by outcome,
 *                  durations, Redis and upstream counters, gauges, build info
 *   POST /keys/inspect  {"key": K, "scope": {"Authorization": "Bearer ..."}[, "body": true]}
 *                  → {"state": "done"|"pending"|"absent", "status", "age_ms", "size",
 *                  "ttl_ms", "record"[, "body_base64"]}: the body only when asked for
 *   POST /keys/purge    {"key": K, "scope": {...}[, "force": true]}: removes a recorded
 *                  key, or a pending one only with force; every purge is logged
 *   The /keys routes need admin-token (Authorization: Bearer TOKEN, compared in constant
 *   time) and are refused (403) when no token is configured. The key and the scope travel
 *   in the body, never in a URL that ends up in logs.
 *
 * It is a frontend handler on a frontend of its own (http/frontend.h): it takes every
 * request there. It reads the workers' counters while they run, without locks: each has
 * one writer and is read relaxed (core/metrics.h).
 *
 * Ownership: the sources (the workers' objects) are borrowed and must outlive the admin:
 * stop it (admin_stop) before the workers free their objects.
 */
#ifndef IDEMPROXY_ADMIN_ADMIN_H
#define IDEMPROXY_ADMIN_ADMIN_H

#include <stddef.h>

#include "core/conf.h"
#include "http/frontend.h"
#include "http/upstream.h"
#include "idem/idem.h"
#include "redis/redis.h"

/* The admin listener's settings (directive admin-listen). */
struct admin_conf {
    struct conf_addr listen; /* admin-listen [none]: HOST:PORT (port 0: any free port); no
                                admin endpoint while listen.host is empty */
    char *token;             /* admin-token [none] (or $IDEMPROXY_ADMIN_TOKEN); owned */
};
extern const struct conf_directive admin_conf_rows[]; /* ended by CONF_END */

/* One worker, as the admin endpoint reads it. */
struct admin_source {
    const struct frontend *fe;
    struct upstream_pool *const *pool; /* the worker's current pool (a reload swaps it) */
    const struct redis_client *redis;
    const struct frontend_handler *idem;
};

struct admin;
struct seal_keyring;

/*
 * Bind the admin listener and start its thread. fconf: the client-side limits (the access
 * log is not used here). pol and seal: what /keys computes a record's Redis key with
 * (key-max-length, key-prefix, scope-headers) and opens sealed records with (the
 * record-keys); both copied, admin_reload replaces them. src: n workers (copied; what
 * they point to is borrowed). *port (may be NULL) gets the bound port. NULL on failure,
 * logged.
 */
struct admin *admin_start(const struct admin_conf *conf, const struct frontend_conf *fconf,
                          const struct idem_policy *pol, const struct seal_conf *seal,
                          const struct redis_conf *redis, const struct admin_source *src, size_t n,
                          unsigned short *port);

/* From now on /readyz answers 503 draining (thread-safe). */
void admin_set_draining(struct admin *a);

/* From now on /keys computes record keys with pol's key-max-length, key-prefix and
 * scope-headers and opens sealed records with kr's keys (NULL: none) — a reload's; both
 * copied, thread-safe. -1 when out of memory: what is in use stays. */
int admin_reload(struct admin *a, const struct idem_policy *pol, const struct seal_keyring *kr);

/* Stop the thread and free everything (not from the admin thread). NULL is a no-op. */
void admin_stop(struct admin *a);

#endif
