/*
 * config — the directive table, file + command-line parsing, validation.
 *
 * Syntax (redis.conf style): one directive per line, "name arg [arg...]", '#' starts a
 * comment outside quotes, arguments may be "double quoted" (escapes \" \\ \n \r \t \xHH)
 * or 'single quoted' (only \' is special). Every directive can also be given on the
 * command line as "--name value"; flags are applied after the file, so they override it.
 * Repeatable directives (upstream) accumulate across the file and the flags.
 *
 * Every directive is one row of a table in config.c (name, type, bounds, default, field
 * offset, help); parsing is generic per type. Units:
 *   durations: integer with suffix ms|s|m|h|d (a bare number means seconds), stored in ms;
 *   sizes:     integer with optional suffix k|m|g (powers of 1024, case-insensitive), bytes.
 *
 * Errors: every function that can fail writes one human-readable line into err (always
 * NUL-terminated, never longer than errlen) and returns -1. The line names where:
 *   "conf/idemproxy.conf:12: max-body: invalid size 'abc' (use a number with k, m or g)"
 *   "--max-body: invalid size 'abc' (...)"
 *   "conf/idemproxy.conf:3: unknown directive 'lisen' (did you mean 'listen'?)"
 */
#ifndef IDEMPROXY_CONFIG_H
#define IDEMPROXY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#define CONFIG_HOST_MAX 256

struct config_addr {
    char host[CONFIG_HOST_MAX]; /* IPv4/IPv6 literal or name; IPv6 given as [::1]:80 */
    uint16_t port;
    char unix_path[108]; /* non-empty for "unix:/path" (redis only) */
};

enum idem_in_flight { IDEM_IN_FLIGHT_REJECT = 0, IDEM_IN_FLIGHT_WAIT };
enum idem_ambiguous { IDEM_AMBIGUOUS_RECORD = 0, IDEM_AMBIGUOUS_RELEASE };
enum idem_on_redis_error { IDEM_REDIS_REJECT = 0, IDEM_REDIS_PASS };

/*
 * The idempotency policy: a value on its own, so that a route can later own one.
 * Lists are owned arrays of owned strings.
 */
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
    char *key_prefix;          /* key-prefix [idem:] */
    uint64_t lease_ms;         /* lease [10s] */
    uint64_t retention_ms;     /* retention [24h] */
    size_t max_record;         /* max-record [8m] */
    uint64_t redis_timeout_ms; /* redis-timeout [500ms] */
    int on_redis_error;        /* on-redis-error [reject] (enum idem_on_redis_error) */
    int in_flight;             /* in-flight [reject] (enum idem_in_flight) */
    uint64_t wait_timeout_ms;  /* wait-timeout [10s] */
    int record_5xx;            /* record-5xx [no] */
    int ambiguous;             /* ambiguous [record] (enum idem_ambiguous) */
};

struct config {
    char *file;                    /* path of the config file, or NULL; owned */
    struct config_addr listen;     /* listen [127.0.0.1:8080] */
    int workers;                   /* workers [CPUs], 1..256 */
    struct config_addr *upstreams; /* upstream HOST:PORT, repeatable, required; owned */
    size_t nupstreams;
    struct config_addr redis;             /* redis [127.0.0.1:6379] or unix:/path */
    char *redis_password;                 /* redis-password [none]; owned */
    size_t max_body;                      /* max-body [1m] */
    size_t max_headers;                   /* max-headers [16k] */
    size_t response_buffer;               /* response-buffer [1m]: larger answers stream */
    uint64_t client_timeout_ms;           /* client-timeout [60s] */
    uint64_t upstream_timeout_ms;         /* upstream-timeout [30s] */
    uint64_t upstream_connect_timeout_ms; /* upstream-connect-timeout [2s] */
    int upstream_pool;                    /* upstream-pool [64], 1..100000 */
    uint64_t drain_timeout_ms;            /* drain-timeout [30s] */
    enum log_level log_level;             /* log-level [info] */
    struct idem_policy idem;              /* the keyed-request policy */
};

/* What the command line asked for besides directives. */
struct config_cli {
    int test_only;    /* -t */
    int show_help;    /* -h / --help */
    int show_version; /* -v / --version */
};

/* Fill cfg with every default (cfg is overwritten, not freed). Never fails. */
void config_defaults(struct config *cfg);

/*
 * Start from the defaults (cfg need not be initialised; do not pass one that owns memory),
 * then parse argv (argv[0] is the program name): "[-t] [CONFIG_FILE] [--directive value ...]"
 * plus --help/--version. Loads the file first, then applies the flags, then validates
 * (config_validate). On success returns 0 and cfg owns its allocations (config_free).
 * On failure returns -1 with err set; cfg is still safe to pass to config_free.
 */
int config_from_argv(struct config *cfg, struct config_cli *cli, int argc, char **argv, char *err,
                     size_t errlen);

/* Parse a whole file / a string buffer (origin names it in errors) into cfg. */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen);
int config_load_string(struct config *cfg, const char *origin, const char *text, char *err,
                       size_t errlen);

/* Apply one directive with its arguments; where is "file:line" or "--name". */
int config_set(struct config *cfg, const char *where, const char *name, int argc, const char **argv,
               char *err, size_t errlen);

/* Cross-field checks after everything is loaded (e.g. at least one upstream). */
int config_validate(const struct config *cfg, char *err, size_t errlen);

/* Release everything cfg owns; cfg may then be reused after config_defaults. */
void config_free(struct config *cfg);

/* Print the directive table (name, argument, default, help) for --help. */
void config_print_help(FILE *out);

/* Unit parsers, exposed for reuse and tests. Return 0 or -1 (no partial results). */
int config_parse_duration(const char *s, uint64_t *ms);
int config_parse_size(const char *s, size_t *bytes);
/* "host:port", "[v6]:port"; unix:/path only when allow_unix. Port 0 allowed only if allow_zero. */
int config_parse_addr(const char *s, struct config_addr *out, int allow_unix, int allow_zero);

/* Format an address for logs: "127.0.0.1:8080", "[::1]:80", "unix:/tmp/r.sock". */
const char *config_addr_str(const struct config_addr *a, char *buf, size_t len);

#endif
