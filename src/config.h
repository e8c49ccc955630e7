/*
 * config — idemproxy's whole configuration: one struct made of the modules' own settings
 * structs, and the schema that lists each module's directive rows (core/conf.h) at the
 * offset of its struct. The engine parses; the modules own their rows and checks; this
 * file puts them together and owns the process-wide rows (listen, workers, drain-timeout,
 * log-level), which nothing below main and worker reads.
 *
 * See core/conf.h for the syntax, the units and the error format.
 */
#ifndef IDEMPROXY_CONFIG_H
#define IDEMPROXY_CONFIG_H

#include <stdio.h>

#include "admin/admin.h"
#include "core/conf.h"
#include "core/log.h"
#include "http/frontend.h"
#include "http/upstream.h"
#include "idem/policy.h"
#include "idem/seal.h"
#include "redis/redis.h"

/* The process's shape (directives listen, tls-listen, workers, drain-timeout): read by main and the
 * workers, so they belong to the top level. */
struct worker_conf {
    struct conf_addr listen;     /* listen [127.0.0.1:8080] */
    struct conf_addr tls_listen; /* tls-listen [none]: clients connect here over TLS */
    int workers;                 /* workers [CPUs], 1..256 */
    uint64_t drain_timeout_ms;   /* drain-timeout [30s] */
};

struct config {
    char *file;                    /* path of the config file, or NULL; owned */
    enum log_level log_level;      /* log-level [info] */
    struct worker_conf worker;     /* listen, workers, drain-timeout */
    struct upstream_conf upstream; /* upstream (repeatable, required), its timeouts, pool */
    struct redis_conf redis;       /* redis, redis-user/-password/-timeout/-wait */
    struct frontend_conf frontend; /* client-side limits and timeouts */
    struct idem_policy idem;       /* the keyed-request policy */
    struct seal_conf seal;         /* record-encryption, record-keys */
    struct admin_conf admin;       /* admin-listen */
};

/* The schema of struct config (for tools that list or look up directives). */
extern const struct conf_schema config_schema;

/* Fill cfg with every default (cfg is overwritten, not freed). Never fails. */
void config_defaults(struct config *cfg);

/*
 * Start from the defaults (cfg need not be initialised; do not pass one that owns memory),
 * then parse argv (argv[0] is the program name): "[-t] [CONFIG_FILE] [--directive value ...]"
 * plus --help/--version. Loads the file first, then applies the flags, then takes
 * redis-password from $IDEMPROXY_REDIS_PASSWORD when unset, then validates and loads the
 * files directives name (error-template). On success
 * returns 0 and cfg owns its allocations (config_free). On failure returns -1 with err
 * set; cfg is still safe to pass to config_free.
 */
int config_from_argv(struct config *cfg, struct conf_cli *cli, int argc, char **argv, char *err,
                     size_t errlen);

/* Parse a whole file (recorded in cfg->file) / a string buffer (origin names it in errors). */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen);
int config_load_string(struct config *cfg, const char *origin, const char *text, char *err,
                       size_t errlen);

/* Apply one directive with its arguments; where is "file:line" or "--name". */
int config_set(struct config *cfg, const char *where, const char *name, int argc, const char **argv,
               char *err, size_t errlen);

/* Cross-field checks after everything is loaded (each module's, e.g. at least one upstream). */
int config_validate(const struct config *cfg, char *err, size_t errlen);

/* Release everything cfg owns; cfg may then be reused after config_defaults. */
void config_free(struct config *cfg);

/* Usage and the directive table (name, argument, default, help) for --help. */
void config_print_help(FILE *out);

/* Settings that load but are likely wrong, one line each to out ("warning: ..."): a lease
 * (the base one or a route's) shorter than 3 x redis-failover-time, when that is set — a
 * claim renewed every lease/3 can run out while Redis fails over, and its key execute
 * again; a record-keys file others can read. Returns how many. */
int config_warnings(const struct config *cfg, FILE *out);

#endif
