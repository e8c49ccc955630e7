#include "idem/policy.h"

#include "idem/idkey.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KIB      CONF_KIB
#define MIB      CONF_MIB
#define MS_DAY   CONF_MS_DAY
#define FIELD(f) offsetof(struct idem_policy, f)

static int policy_route_set(const struct conf_directive *d, void *base, const char *where, int argc,
                            const char **argv, char *err, size_t errlen);
static void policy_route_free(const struct conf_directive *d, void *base);

static const struct conf_choice on_redis_error_choices[] = {
    {"reject", IDEM_REDIS_REJECT}, {"pass", IDEM_REDIS_PASS}, {NULL, 0}};
static const struct conf_choice in_flight_choices[] = {
    {"reject", IDEM_IN_FLIGHT_REJECT}, {"wait", IDEM_IN_FLIGHT_WAIT}, {NULL, 0}};
static const struct conf_choice fingerprint_body_choices[] = {
    {"raw", IDEM_FP_BODY_RAW}, {"json", IDEM_FP_BODY_JSON}, {NULL, 0}};
static const struct conf_choice ambiguous_choices[] = {
    {"record", IDEM_AMBIGUOUS_RECORD}, {"release", IDEM_AMBIGUOUS_RELEASE}, {NULL, 0}};

const struct conf_directive policy_conf_rows[] = {
    {.name = "methods",
     .type = CONF_T_STRING_LIST,
     .def = "POST PATCH",
     .off = FIELD(methods),
     .count_off = FIELD(nmethods),
     .arg = "METHOD...",
     .help = "methods made idempotent when keyed"},
    {.name = "require-key",
     .type = CONF_T_BOOL,
     .def = "no",
     .off = FIELD(require_key),
     .arg = "yes|no",
     .help = "400 for a keyed method without a key"},
    {.name = "key-header",
     .type = CONF_T_STRING,
     .def = "Idempotency-Key",
     .off = FIELD(key_header),
     .arg = "NAME",
     .help = "request header that carries the key"},
    {.name = "key-max-length",
     .type = CONF_T_INT,
     .min = 1,
     .max = 4096,
     .def = "255",
     .off = FIELD(key_max_length),
     .arg = "N",
     .help = "longest accepted key (after unquoting)"},
    {.name = "scope-headers",
     .type = CONF_T_STRING_LIST,
     .def = "Authorization",
     .off = FIELD(scope_headers),
     .count_off = FIELD(nscope_headers),
     .arg = "NAME...",
     .help = "headers that scope a key to its caller"},
    {.name = "fingerprint-headers",
     .type = CONF_T_STRING_LIST,
     .off = FIELD(fingerprint_headers),
     .count_off = FIELD(nfingerprint_headers),
     .arg = "NAME...",
     .help = "headers a retry must repeat (besides body)"},
    {.name = "fingerprint-body",
     .type = CONF_T_ENUM,
     .def = "raw",
     .off = FIELD(fingerprint_body),
     .choices = fingerprint_body_choices,
     .arg = "raw|json",
     .help = "json: member order and whitespace do not count"},
    {.name = "key-prefix",
     .type = CONF_T_STRING,
     .def = "idem:",
     .off = FIELD(key_prefix),
     .arg = "STRING",
     .help = "prefix of the Redis keys holding records"},
    {.name = "lease",
     .type = CONF_T_DURATION,
     .min = 100,
     .max = 7 * MS_DAY,
     .def = "10s",
     .off = FIELD(lease_ms),
     .arg = "DURATION",
     .help = "life of a claim unless renewed"},
    {.name = "retention",
     .type = CONF_T_DURATION,
     .min = 1000,
     .max = 365 * MS_DAY,
     .def = "24h",
     .off = FIELD(retention_ms),
     .arg = "DURATION",
     .help = "how long a recorded answer is replayed"},
    {.name = "max-record",
     .type = CONF_T_SIZE,
     .min = 1 * KIB,
     .max = 512 * MIB,
     .def = "8m",
     .off = FIELD(max_record),
     .arg = "SIZE",
     .help = "largest answer kept for replay"},
    {.name = "on-redis-error",
     .type = CONF_T_ENUM,
     .def = "reject",
     .off = FIELD(on_redis_error),
     .choices = on_redis_error_choices,
     .arg = "reject|pass",
     .help = "Redis down: 503, or forward unprotected"},
    {.name = "in-flight",
     .type = CONF_T_ENUM,
     .def = "reject",
     .off = FIELD(in_flight),
     .choices = in_flight_choices,
     .arg = "reject|wait",
     .help = "retry during the first: 409, or wait"},
    {.name = "wait-timeout",
     .type = CONF_T_DURATION,
     .min = 1,
     .max = 7 * MS_DAY,
     .def = "10s",
     .off = FIELD(wait_timeout_ms),
     .arg = "DURATION",
     .help = "longest in-flight wait before 409"},
    {.name = "release-statuses",
     .type = CONF_T_INT_LIST,
     .min = 400,
     .max = 599,
     .def = "429 503",
     .off = FIELD(release_statuses),
     .count_off = FIELD(nrelease_statuses),
     .arg = "STATUS...|none",
     .help = "answers that say 'not executed': release the key"},
    {.name = "record-5xx",
     .type = CONF_T_OBSOLETE,
     .help = "every answer is now recorded except the statuses in release-statuses (default "
             "429 503); list the 5xx statuses there that your upstream answers without "
             "executing"},
    {.name = "ambiguous",
     .type = CONF_T_ENUM,
     .def = "record",
     .off = FIELD(ambiguous),
     .choices = ambiguous_choices,
     .arg = "record|release",
     .help = "outcome unknown: record a 504, or release"},
    {.name = "route",
     .type = CONF_T_CUSTOM,
     .arg = "PREFIX DIRECTIVE ARGS|off",
     .help = "policy for a path prefix (repeatable; longest wins)",
     .custom_set = policy_route_set,
     .custom_free = policy_route_free},
    CONF_END,
};

/* What a route may change (the rest is the one policy of the process). */
static const char *const policy_route_directives[] = {
    "methods",          "require-key",         "lease",
    "retention",        "in-flight",           "wait-timeout",
    "release-statuses", "fingerprint-headers", "fingerprint-body",
    "ambiguous",        "max-record",          NULL};

/* The policy rows alone, as a schema over one struct idem_policy. */
static const struct conf_section policy_sections[] = {{policy_conf_rows, 0}};
static const struct conf_schema policy_schema = {policy_sections, 1};

static size_t policy_row_index(const struct conf_directive *d)
{
    return (size_t)(d - policy_conf_rows);
}

static int policy_route_set(const struct conf_directive *d, void *base, const char *where, int argc,
                            const char **argv, char *err, size_t errlen)
{
    struct idem_policy *p = base;
    struct idem_route *r = NULL;
    const struct conf_directive *row;
    int routable = 0;

    if (argc < 2)
        return conf_fail(err, errlen, "%s: expected PREFIX and a directive (or off)", where);
    if (argv[0][0] != '/')
        return conf_fail(err, errlen, "%s: the prefix '%s' must start with '/'", where, argv[0]);
    for (size_t i = 0; i < p->nroutes; i++)
        if (strcmp(p->routes[i].prefix, argv[0]) == 0)
            r = &p->routes[i];
    if (!r) {
        struct idem_route *nr = realloc(p->routes, (p->nroutes + 1) * sizeof(*nr));
        if (!nr)
            return conf_fail(err, errlen, "%s: out of memory", where);
        p->routes = nr;
        r = &p->routes[p->nroutes];
        memset(r, 0, sizeof(*r));
        if (!(r->prefix = strdup(argv[0])))
            return conf_fail(err, errlen, "%s: out of memory", where);
        r->plen = strlen(r->prefix);
        p->nroutes++;
    }
    if (argc == 2 && strcmp(argv[1], "off") == 0) {
        r->off = 1;
        return 0;
    }
    row = conf_find(&policy_schema, argv[1], strlen(argv[1]), NULL);
    for (size_t i = 0; row && policy_route_directives[i]; i++)
        routable |= strcmp(row->name, policy_route_directives[i]) == 0;
    if (!routable)
        return conf_fail(err, errlen,
                         "%s: '%s' cannot be set per route (a route sets methods, require-key, "
                         "lease, retention, in-flight, wait-timeout, release-statuses, "
                         "fingerprint-headers, fingerprint-body, ambiguous, max-record, or off)",
                         where, argv[1]);
    if (conf_set(&policy_schema, &r->pol, where, argv[1], argc - 2, argv + 2, err, errlen) < 0)
        return -1;
    r->set |= 1u << policy_row_index(row);
    return 0;
}

static void policy_route_free(const struct conf_directive *d, void *base)
{
    struct idem_policy *p = base;

    for (size_t i = 0; i < p->nroutes; i++) {
        struct idem_route *r = &p->routes[i];
        for (const struct conf_directive *row = policy_conf_rows; row->name; row++)
            if (r->set & (1u << policy_row_index(row)))
                conf_free_row(row, &r->pol);
        free(r->prefix);
    }
    free(p->routes);
    p->routes = NULL;
    p->nroutes = 0;
}

/* How many bytes a row's field takes in struct idem_policy. */
static size_t policy_field_size(const struct conf_directive *row)
{
    switch (row->type) {
    case CONF_T_STRING_LIST:
    case CONF_T_INT_LIST:
    case CONF_T_STRING:
        return sizeof(void *);
    case CONF_T_DURATION:
        return sizeof(uint64_t);
    case CONF_T_SIZE:
        return sizeof(size_t);
    default:
        return sizeof(int); /* INT, BOOL, ENUM */
    }
}

void policy_finalize(struct idem_policy *p)
{
    for (size_t i = 0; i < p->nroutes; i++) {
        struct idem_route *r = &p->routes[i];
        struct idem_policy own = r->pol;

        /* the base for every field, then the route's own fields back over it */
        r->pol = *p;
        r->pol.routes = NULL;
        r->pol.nroutes = 0;
        for (const struct conf_directive *row = policy_conf_rows; row->name; row++) {
            if (row->type == CONF_T_CUSTOM || !(r->set & (1u << policy_row_index(row))))
                continue;
            memcpy((char *)&r->pol + row->off, (char *)&own + row->off, policy_field_size(row));
            if (row->type == CONF_T_STRING_LIST || row->type == CONF_T_INT_LIST)
                memcpy((char *)&r->pol + row->count_off, (char *)&own + row->count_off,
                       sizeof(size_t));
        }
    }
}

const struct idem_policy *policy_for(const struct idem_policy *p, const char *target)
{
    const struct idem_route *best = NULL;
    size_t plen;

    if (p->nroutes == 0)
        return p; /* the common case: no target scan per request */
    plen = strcspn(target, "?");
    for (size_t i = 0; i < p->nroutes; i++) {
        const struct idem_route *r = &p->routes[i];
        if (r->plen <= plen && memcmp(target, r->prefix, r->plen) == 0 &&
            (!best || r->plen > best->plen))
            best = r;
    }
    if (!best)
        return p;
    return best->off ? NULL : &best->pol;
}

static int policy_validate_one(const struct idem_policy *p, char *err, size_t errlen);

int policy_validate(const struct idem_policy *p, char *err, size_t errlen)
{
    if (policy_validate_one(p, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < p->nroutes; i++) {
        char inner[400];
        if (!p->routes[i].off && policy_validate_one(&p->routes[i].pol, inner, sizeof(inner)) < 0)
            return conf_fail(err, errlen, "route %s: %s", p->routes[i].prefix, inner);
    }
    return 0;
}

static int policy_validate_one(const struct idem_policy *p, char *err, size_t errlen)
{
    for (size_t i = 0; i < p->nmethods; i++)
        if (!conf_is_token(p->methods[i]))
            return conf_fail(err, errlen, "methods: '%s' is not a method name", p->methods[i]);
    if (!conf_is_token(p->key_header))
        return conf_fail(err, errlen, "key-header: '%s' is not a header name", p->key_header);
    for (size_t i = 0; i < p->nscope_headers; i++)
        if (!conf_is_token(p->scope_headers[i]) &&
            strcmp(p->scope_headers[i], IDKEY_SCOPE_CLIENT_CERT) != 0)
            return conf_fail(
                err, errlen,
                "scope-headers: '%s' is not a header name (nor " IDKEY_SCOPE_CLIENT_CERT
                ", the client's TLS certificate)",
                p->scope_headers[i]);
    for (size_t i = 0; i < p->nfingerprint_headers; i++)
        if (!conf_is_token(p->fingerprint_headers[i]))
            return conf_fail(err, errlen, "fingerprint-headers: '%s' is not a header name",
                             p->fingerprint_headers[i]);
    if (p->lease_ms >= p->retention_ms)
        return conf_fail(err, errlen, "lease (%llu ms) must be shorter than retention (%llu ms)",
                         (unsigned long long)p->lease_ms, (unsigned long long)p->retention_ms);
    return 0;
}

int policy_method_applies(const struct idem_policy *p, const char *method)
{
    /* Methods are case-sensitive (RFC 9110 §9.1), but many servers take "post" for POST:
     * a keyed method in any case is protected, never forwarded unprotected. */
    for (size_t i = 0; i < p->nmethods; i++)
        if (strcasecmp(p->methods[i], method) == 0)
            return 1;
    return 0;
}

int policy_releases(const struct idem_policy *p, int status)
{
    for (size_t i = 0; i < p->nrelease_statuses; i++)
        if (p->release_statuses[i] == status)
            return 1;
    return 0;
}
