/*
 * conf — the configuration engine: directive rows, a redis.conf-style tokenizer, generic
 * setters per type, file and command-line loading. It knows no directive itself: every
 * module owns its rows (an array of struct conf_directive over its own settings struct,
 * like nginx's per-module ngx_command_t), and the top level (config.h) lists the modules'
 * rows as sections of one schema, each at the offset of its struct in the whole.
 *
 * Syntax: one directive per line, "name arg [arg...]", '#' starts a comment outside
 * quotes, arguments may be "double quoted" (escapes \" \\ \n \r \t \xHH) or 'single
 * quoted' (only \' is special). Every directive can also be given on the command line as
 * "--name value" or "--name=value"; flags are applied after the file, so they override it.
 * Repeatable directives accumulate across the file and the flags. Units:
 *   durations: integer with suffix ms|s|m|h|d (a bare number means seconds), stored in ms;
 *   sizes:     integer with optional suffix k|m|g (powers of 1024, case-insensitive), bytes.
 *
 * Errors: every function that can fail writes one human-readable line into err (always
 * NUL-terminated, never longer than errlen) and returns -1. The line names where:
 *   "conf/idemproxy.conf:12: max-body: invalid size 'abc' (use a number with k, m or g)"
 *   "--max-body: invalid size 'abc' (...)"
 *   "conf/idemproxy.conf:3: unknown directive 'lisen' (did you mean 'listen'?)"
 */
#ifndef IDEMPROXY_CORE_CONF_H
#define IDEMPROXY_CORE_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONF_HOST_MAX 256

struct conf_addr {
    char host[CONF_HOST_MAX]; /* IPv4/IPv6 literal or name; IPv6 given as [::1]:80 */
    uint16_t port;
    char unix_path[108]; /* non-empty for "unix:/path" */
};

enum conf_type {
    CONF_T_INT,         /* int, bounded by min..max */
    CONF_T_SIZE,        /* size_t bytes; suffix k|m|g; bounded */
    CONF_T_DURATION,    /* uint64_t ms; suffix ms|s|m|h|d, bare = s; bounded (in ms) */
    CONF_T_BOOL,        /* int 0/1: yes|no|on|off|true|false|1|0 */
    CONF_T_ENUM,        /* int (or an int-sized enum), one of choices[] */
    CONF_T_STRING,      /* char *, owned */
    CONF_T_STRING_LIST, /* char ** + size_t count at count_off, owned */
    CONF_T_ADDR,        /* struct conf_addr */
    CONF_T_ADDR_LIST,   /* struct conf_addr * + size_t count at count_off, owned */
    CONF_T_INT_LIST,    /* int * + size_t count at count_off, owned; each min..max;
                           "none" is the empty list */
    CONF_T_OBSOLETE,    /* a removed directive: setting it fails, help says what replaced
                           it; not listed by conf_count/conf_at or --help */
    CONF_T_CUSTOM,      /* the row's own set (every occurrence) and free functions */
};

#define CONF_F_REPEATABLE 0x1 /* lists: each occurrence appends; otherwise later wins */
#define CONF_F_PORT_ZERO  0x2 /* addresses: port 0 allowed (bind to any free port) */
#define CONF_F_UNIX       0x4 /* addresses: unix:/path allowed */

struct conf_choice {
    const char *name;
    int value; /* several names may share a value: the later ones are aliases */
};

/* One directive: a row of its module's table. off/count_off are offsets in the module's
 * own struct; the schema adds where that struct sits. */
struct conf_directive {
    const char *name;
    enum conf_type type;
    int flags;
    long long min, max; /* INT: value; SIZE: bytes; DURATION: ms */
    const char *def;    /* default, tokenized and set like a config line; NULL = none */
    /* Default computed at startup (e.g. from the CPU count); takes precedence over def. */
    const char *(*def_fn)(const struct conf_directive *d, char *buf, size_t len);
    size_t off;                        /* offsetof the field */
    size_t count_off;                  /* lists: offsetof the size_t element count */
    const struct conf_choice *choices; /* ENUM: terminated by a NULL name */
    const char *arg;                   /* argument hint for --help */
    const char *help;                  /* one line for --help */
    /* CUSTOM: base is the section's struct; where is "file:line" or "--name" */
    int (*custom_set)(const struct conf_directive *d, void *base, const char *where, int argc,
                      const char **argv, char *err, size_t errlen);
    void (*custom_free)(const struct conf_directive *d, void *base);
};

#define CONF_KIB    1024LL
#define CONF_MIB    (1024LL * CONF_KIB)
#define CONF_GIB    (1024LL * CONF_MIB)
#define CONF_MS_DAY (86400LL * 1000)

/* A module's rows (ended by a row with a NULL name, CONF_END), placed at off within the
 * whole configuration struct. */
struct conf_section {
    const struct conf_directive *rows;
    size_t off;
};
#define CONF_END                                                                                   \
    {                                                                                              \
        .name = NULL                                                                               \
    }

struct conf_schema {
    const struct conf_section *sections;
    size_t nsections;
};

/* What the command line asked for besides directives. */
struct conf_cli {
    int test_only;    /* -t */
    int show_help;    /* -h / --help */
    int show_version; /* -v / --version */
};

/* Fill base (a struct the schema describes; overwritten, not freed) with every default.
 * A default that does not parse is a bug in a table: reported on stderr, then abort(). */
void conf_defaults(const struct conf_schema *sch, void *base);

/* Apply one directive with its arguments; where is "file:line" or "--name". */
int conf_set(const struct conf_schema *sch, void *base, const char *where, const char *name,
             int argc, const char **argv, char *err, size_t errlen);

/* Parse a string buffer (origin names it in errors) / a whole file into base. */
int conf_load_string(const struct conf_schema *sch, void *base, const char *origin,
                     const char *text, char *err, size_t errlen);
int conf_load_file(const struct conf_schema *sch, void *base, const char *path, char *err,
                   size_t errlen);

/*
 * argv (argv[0] is the program name): "[-t] [CONFIG_FILE] [--directive value ...]" plus
 * -h/--help and -v/--version. Loads the file first (*file gets a malloc'd copy of its
 * path, or stays NULL), then applies the flags. Stops early, returning 0, on help or
 * version. Does not apply defaults and does not validate. 0 or -1 with err set.
 */
int conf_parse_argv(const struct conf_schema *sch, void *base, struct conf_cli *cli, char **file,
                    int argc, char **argv, char *err, size_t errlen);

/* Release what one row's field owns in base (its section's struct). */
void conf_free_row(const struct conf_directive *d, void *base);

/* Release everything base owns; base may then be reused after conf_defaults. */
void conf_free(const struct conf_schema *sch, void *base);

/* Print one line per directive (name, argument, help, [default]) for --help. */
void conf_print_directives(const struct conf_schema *sch, FILE *out);

/* The directive named name (len bytes, case-insensitive) or NULL; *off gets its
 * section's offset when off is not NULL. */
const struct conf_directive *conf_find(const struct conf_schema *sch, const char *name, size_t len,
                                       size_t *off);
/* Every directive in order: index 0 .. conf_count(sch) - 1. */
size_t conf_count(const struct conf_schema *sch);
const struct conf_directive *conf_at(const struct conf_schema *sch, size_t i);

/* Unit parsers, exposed for reuse and tests. Return 0 or -1 (no partial results). */
int conf_parse_duration(const char *s, uint64_t *ms);
int conf_parse_size(const char *s, size_t *bytes);
/* "host:port", "[v6]:port"; unix:/path only when allow_unix. Port 0 allowed only if allow_zero. */
int conf_parse_addr(const char *s, struct conf_addr *out, int allow_unix, int allow_zero);
/* The same, saying why not: NULL when parsed, else the reason (a static string). */
const char *conf_addr_parse(const char *s, struct conf_addr *out, int allow_unix, int allow_zero);

/* Format an address for logs: "127.0.0.1:8080", "[::1]:80", "unix:/tmp/r.sock". */
const char *conf_addr_str(const struct conf_addr *a, char *buf, size_t len);

/* Helpers for the modules' cross-field checks: an RFC 9110 token (method and header
 * names)? Write one line into err and return -1. */
int conf_is_token(const char *s);
int conf_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
