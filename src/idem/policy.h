/*
 * policy — the keyed-request policy: which requests the idempotency layer takes, how keys
 * are read and scoped, how long claims and records live, and what each failure does.
 *
 * A value on its own (lists are owned arrays of owned strings), so that a route can own
 * one later. Its directives are rows of this module (policy_conf_rows), placed in the
 * whole configuration by config.c.
 */
#ifndef IDEMPROXY_IDEM_POLICY_H
#define IDEMPROXY_IDEM_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"

enum idem_in_flight { IDEM_IN_FLIGHT_REJECT = 0, IDEM_IN_FLIGHT_WAIT };
enum idem_ambiguous { IDEM_AMBIGUOUS_RECORD = 0, IDEM_AMBIGUOUS_RELEASE };
enum idem_on_redis_error { IDEM_REDIS_REJECT = 0, IDEM_REDIS_PASS };
enum idem_fingerprint_body { IDEM_FP_BODY_RAW = 0, IDEM_FP_BODY_JSON };

struct idem_route;

struct idem_policy {
    char **methods; /* methods [POST PATCH] */
    size_t nmethods;
    int require_key;      /* require-key [no] */
    char *key_header;     /* key-header [Idempotency-Key] */
    int key_max_length;   /* key-max-length [255] */
    char **scope_headers; /* scope-headers [Authorization] */
    size_t nscope_headers;
    char **fingerprint_headers; /* fingerprint-headers [none] */
    size_t nfingerprint_headers;
    int fingerprint_body;     /* fingerprint-body [raw] (enum idem_fingerprint_body) */
    char *key_prefix;         /* key-prefix [idem:] */
    uint64_t lease_ms;        /* lease [10s] */
    uint64_t retention_ms;    /* retention [24h] */
    size_t max_record;        /* max-record [8m] */
    int on_redis_error;       /* on-redis-error [reject] (enum idem_on_redis_error) */
    int in_flight;            /* in-flight [reject] (enum idem_in_flight) */
    uint64_t wait_timeout_ms; /* wait-timeout [10s] */
    int *release_statuses;    /* release-statuses [429 503]: "not executed, try again" */
    size_t nrelease_statuses;
    int ambiguous; /* ambiguous [record] (enum idem_ambiguous) */
    /* route PREFIX DIRECTIVE ARGS... | route PREFIX off: per path prefix, longest wins */
    struct idem_route *routes;
    size_t nroutes;
};

/*
 * One route: the policy for targets under prefix. pol is the base policy with the
 * route's own directives over it (policy_finalize makes it so, once the whole file is
 * read: a route line may come before the base directive it overrides).
 */
struct idem_route {
    char *prefix; /* owned; starts with '/' */
    size_t plen;
    int off;                /* "route PREFIX off": requests here are not keyed */
    uint32_t set;           /* bit i: policy_conf_rows[i] is the route's own (owned) */
    struct idem_policy pol; /* fields not in set are borrowed from the base */
};

/* The directives of struct idem_policy (ended by CONF_END). */
extern const struct conf_directive policy_conf_rows[];

/* Cross-field checks (names are tokens, lease < retention), of the base and of every
 * route. 0 or -1 with err set. */
int policy_validate(const struct idem_policy *p, char *err, size_t errlen);

/* After everything is loaded: give every route the base's values for what it does not
 * set itself. Call once, before validating. */
void policy_finalize(struct idem_policy *p);

/* The policy for a request target (its path, longest route prefix first; the base when
 * no route matches), or NULL when a route says requests there are not keyed. */
const struct idem_policy *policy_for(const struct idem_policy *p, const char *target);

/* Does the policy make method idempotent? Compared without regard to case: "post" is
 * protected like POST. */
int policy_method_applies(const struct idem_policy *p, const char *method);

/* Does an upstream answer with this status release the claim (the retry may execute),
 * rather than being recorded and replayed? */
int policy_releases(const struct idem_policy *p, int status);

#endif
