/*
 * config — one table of directives, a redis.conf-style tokenizer, generic setters per type.
 *
 * Adding a directive = adding a row to config_table (and a field to struct config). Adding
 * a type = a case in directive_set() (and directive_free() if it owns memory). Defaults are
 * strings run through the same tokenizer and setter as user input, so a default can never
 * be something the user could not have written.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum config_type {
    CONFIG_T_INT,         /* int, bounded by min..max */
    CONFIG_T_SIZE,        /* size_t bytes; suffix k|m|g; bounded */
    CONFIG_T_DURATION,    /* uint64_t ms; suffix ms|s|m|h|d, bare = s; bounded (in ms) */
    CONFIG_T_BOOL,        /* int 0/1: yes|no|on|off|true|false|1|0 */
    CONFIG_T_ENUM,        /* int (or an enum), one of choices[] */
    CONFIG_T_STRING,      /* char *, owned */
    CONFIG_T_STRING_LIST, /* char ** + size_t count at count_off, owned */
    CONFIG_T_ADDR,        /* struct config_addr */
    CONFIG_T_ADDR_LIST,   /* struct config_addr * + size_t count at count_off, owned */
};

#define CONFIG_F_REPEATABLE 0x1 /* lists: each occurrence appends; otherwise later wins */
#define CONFIG_F_PORT_ZERO  0x2 /* addresses: port 0 allowed (bind to any free port) */
#define CONFIG_F_UNIX       0x4 /* addresses: unix:/path allowed */

struct config_choice {
    const char *name;
    int value; /* several names may share a value: the later ones are aliases */
};

struct config_directive {
    const char *name;
    enum config_type type;
    int flags;
    long long min, max; /* INT: value; SIZE: bytes; DURATION: ms */
    const char *def;    /* default, tokenized and set like a config line; NULL = none */
    /* Default computed at startup (e.g. from the CPU count); takes precedence over def. */
    const char *(*def_fn)(const struct config_directive *d, char *buf, size_t len);
    size_t off;                          /* offsetof the field */
    size_t count_off;                    /* lists: offsetof the size_t element count */
    const struct config_choice *choices; /* ENUM: terminated by a NULL name */
    const char *arg;                     /* argument hint for --help */
    const char *help;                    /* one line for --help */
};

struct config_unit {
    const char *suffix;
    uint64_t mult;
};

#define KIB    1024LL
#define MIB    (1024LL * KIB)
#define GIB    (1024LL * MIB)
#define MS_DAY (86400LL * 1000)

/* Suffix "" is what a bare number means. Suffixes match case-insensitively. */
static const struct config_unit size_units[] = {
    {"", 1}, {"k", KIB}, {"m", MIB}, {"g", GIB}, {NULL, 0}};
static const struct config_unit duration_units[] = {
    {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", MS_DAY}, {NULL, 0}};

static const struct config_choice log_level_choices[] = {
    {"debug", LOG_LEVEL_DEBUG}, {"info", LOG_LEVEL_INFO},    {"warn", LOG_LEVEL_WARN},
    {"error", LOG_LEVEL_ERROR}, {"warning", LOG_LEVEL_WARN}, {NULL, 0}};

/* ENUM fields are written through an int lvalue. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level must be int-sized");

static const struct config_choice on_redis_error_choices[] = {
    {"reject", IDEM_REDIS_REJECT}, {"pass", IDEM_REDIS_PASS}, {NULL, 0}};
static const struct config_choice in_flight_choices[] = {
    {"reject", IDEM_IN_FLIGHT_REJECT}, {"wait", IDEM_IN_FLIGHT_WAIT}, {NULL, 0}};
static const struct config_choice ambiguous_choices[] = {
    {"record", IDEM_AMBIGUOUS_RECORD}, {"release", IDEM_AMBIGUOUS_RELEASE}, {NULL, 0}};

static const char *default_workers(const struct config_directive *d, char *buf, size_t len)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < d->min)
        n = d->min;
    if (n > d->max)
        n = d->max;
    snprintf(buf, len, "%ld", n);
    return buf;
}

#define FIELD(f) offsetof(struct config, f)

static const struct config_directive config_table[] = {
    {.name = "listen",
     .type = CONFIG_T_ADDR,
     .flags = CONFIG_F_PORT_ZERO,
     .def = "127.0.0.1:8080",
     .off = FIELD(listen),
     .arg = "HOST:PORT",
     .help = "clients connect here (port 0: any free port)"},
    {.name = "workers",
     .type = CONFIG_T_INT,
     .min = 1,
     .max = 256,
     .def_fn = default_workers,
     .off = FIELD(workers),
     .arg = "N",
     .help = "worker threads (default: online CPUs)"},
    {.name = "upstream",
     .type = CONFIG_T_ADDR_LIST,
     .flags = CONFIG_F_REPEATABLE,
     .off = FIELD(upstreams),
     .count_off = FIELD(nupstreams),
     .arg = "HOST:PORT",
     .help = "backend to forward to; repeat for more (required)"},
    {.name = "redis",
     .type = CONFIG_T_ADDR,
     .flags = CONFIG_F_UNIX,
     .def = "127.0.0.1:6379",
     .off = FIELD(redis),
     .arg = "HOST:PORT|unix:PATH",
     .help = "Redis server for the idempotency records"},
    {.name = "redis-password",
     .type = CONFIG_T_STRING,
     .off = FIELD(redis_password),
     .arg = "PASSWORD",
     .help = "Redis AUTH password (or $IDEMPROXY_REDIS_PASSWORD)"},
    {.name = "max-body",
     .type = CONFIG_T_SIZE,
     .min = 0,
     .max = GIB,
     .def = "1m",
     .off = FIELD(max_body),
     .arg = "SIZE",
     .help = "largest request body"},
    {.name = "max-headers",
     .type = CONFIG_T_SIZE,
     .min = KIB,
     .max = MIB,
     .def = "16k",
     .off = FIELD(max_headers),
     .arg = "SIZE",
     .help = "largest header block"},
    {.name = "response-buffer",
     .type = CONFIG_T_SIZE,
     .min = 4 * KIB,
     .max = GIB,
     .def = "1m",
     .off = FIELD(response_buffer),
     .arg = "SIZE",
     .help = "answers larger than this stream through"},
    {.name = "client-timeout",
     .type = CONFIG_T_DURATION,
     .min = 1,
     .max = 7 * MS_DAY,
     .def = "60s",
     .off = FIELD(client_timeout_ms),
     .arg = "DURATION",
     .help = "idle time allowed on a client connection"},
    {.name = "upstream-timeout",
     .type = CONFIG_T_DURATION,
     .min = 1,
     .max = 7 * MS_DAY,
     .def = "30s",
     .off = FIELD(upstream_timeout_ms),
     .arg = "DURATION",
     .help = "time allowed for an upstream to answer"},
    {.name = "upstream-connect-timeout",
     .type = CONFIG_T_DURATION,
     .min = 1,
     .max = 7 * MS_DAY,
     .def = "2s",
     .off = FIELD(upstream_connect_timeout_ms),
     .arg = "DURATION",
     .help = "time allowed to connect to an upstream"},
    {.name = "upstream-pool",
     .type = CONFIG_T_INT,
     .min = 1,
     .max = 100000,
     .def = "64",
     .off = FIELD(upstream_pool),
     .arg = "N",
     .help = "idle upstream connections kept per worker"},
    {.name = "drain-timeout",
     .type = CONFIG_T_DURATION,
     .min = 0,
     .max = 7 * MS_DAY,
     .def = "30s",
     .off = FIELD(drain_timeout_ms),
     .arg = "DURATION",
     .help = "on shutdown, time for in-flight requests (0: none)"},
    {.name = "log-level",
     .type = CONFIG_T_ENUM,
     .def = "info",
     .off = FIELD(log_level),
     .choices = log_level_choices,
     .arg = "debug|info|warn|error",
     .help = "least severe message logged"},
    {.name = "methods",
     .type = CONFIG_T_STRING_LIST,
     .def = "POST PATCH",
     .off = FIELD(idem.methods),
     .count_off = FIELD(idem.nmethods),
     .arg = "METHOD...",
     .help = "methods made idempotent when keyed"},
    {.name = "require-key",
     .type = CONFIG_T_BOOL,
     .def = "no",
     .off = FIELD(idem.require_key),
     .arg = "yes|no",
     .help = "400 for a keyed method without a key"},
    {.name = "key-header",
     .type = CONFIG_T_STRING,
     .def = "Idempotency-Key",
     .off = FIELD(idem.key_header),
     .arg = "NAME",
     .help = "request header that carries the key"},
    {.name = "key-max-length",
     .type = CONFIG_T_INT,
     .min = 1,
     .max = 4096,
     .def = "255",
     .off = FIELD(idem.key_max_length),
     .arg = "N",
     .help = "longest accepted key (after unquoting)"},
    {.name = "scope-headers",
     .type = CONFIG_T_STRING_LIST,
     .def = "Authorization",
     .off = FIELD(idem.scope_headers),
     .count_off = FIELD(idem.nscope_headers),
     .arg = "NAME...",
     .help = "headers that scope a key to its caller"},
    {.name = "fingerprint-headers",
     .type = CONFIG_T_STRING_LIST,
     .off = FIELD(idem.fingerprint_headers),
     .count_off = FIELD(idem.nfingerprint_headers),
     .arg = "NAME...",
     .help = "headers a retry must repeat (besides body)"},
    {.name = "key-prefix",
     .type = CONFIG_T_STRING,
     .def = "idem:",
     .off = FIELD(idem.key_prefix),
     .arg = "STRING",
     .help = "prefix of the Redis keys holding records"},
    {.name = "lease",
     .type = CONFIG_T_DURATION,
     .min = 100,
     .max = 7 * MS_DAY,
     .def = "10s",
     .off = FIELD(idem.lease_ms),
     .arg = "DURATION",
     .help = "life of a claim unless renewed"},
    {.name = "retention",
     .type = CONFIG_T_DURATION,
     .min = 1000,
     .max = 365 * MS_DAY,
     .def = "24h",
     .off = FIELD(idem.retention_ms),
     .arg = "DURATION",
     .help = "how long a recorded answer is replayed"},
    {.name = "max-record",
     .type = CONFIG_T_SIZE,
     .min = 1 * KIB,
     .max = 512 * MIB,
     .def = "8m",
     .off = FIELD(idem.max_record),
     .arg = "SIZE",
     .help = "largest answer kept for replay"},
    {.name = "redis-timeout",
     .type = CONFIG_T_DURATION,
     .min = 1,
     .max = 60000,
     .def = "500ms",
     .off = FIELD(idem.redis_timeout_ms),
     .arg = "DURATION",
     .help = "deadline of every Redis command"},
    {.name = "on-redis-error",
     .type = CONFIG_T_ENUM,
     .def = "reject",
     .off = FIELD(idem.on_redis_error),
     .choices = on_redis_error_choices,
     .arg = "reject|pass",
     .help = "Redis down: 503, or forward unprotected"},
    {.name = "in-flight",
     .type = CONFIG_T_ENUM,
     .def = "reject",
     .off = FIELD(idem.in_flight),
     .choices = in_flight_choices,
     .arg = "reject|wait",
     .help = "retry during the first: 409, or wait"},
    {.name = "wait-timeout",
     .type = CONFIG_T_DURATION,
     .min = 1,
     .max = 7 * MS_DAY,
     .def = "10s",
     .off = FIELD(idem.wait_timeout_ms),
     .arg = "DURATION",
     .help = "longest in-flight wait before 409"},
    {.name = "record-5xx",
     .type = CONFIG_T_BOOL,
     .def = "no",
     .off = FIELD(idem.record_5xx),
     .arg = "yes|no",
     .help = "record upstream 5xx answers too"},
    {.name = "ambiguous",
     .type = CONFIG_T_ENUM,
     .def = "record",
     .off = FIELD(idem.ambiguous),
     .choices = ambiguous_choices,
     .arg = "record|release",
     .help = "outcome unknown: record a 504, or release"},
};

#define CONFIG_NDIRECTIVES (sizeof(config_table) / sizeof(config_table[0]))

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Write one line into err (control characters become '?', so it stays one line). */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *p = err; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
    return -1;
}

/* ---- tokenizer ---- */

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Split one line into words, in place (unescaping only ever shrinks a word). *words is
 * grown as needed (realloc'd; the caller frees it, even on error). A '#' at the start of a
 * word begins a comment. Inside "double quotes": \" \\ \n \r \t \xHH; any other \c is c.
 * Inside 'single quotes' only \' is special. Returns the word count, -1 on unbalanced
 * quotes (or a closing quote followed by something other than a blank), -2 out of memory.
 */
static int split_words(char *line, char ***words, size_t *cap)
{
    char *r = line, *w;
    size_t n = 0;

    for (;;) {
        while (is_blank(*r))
            r++;
        if (*r == '\0' || *r == '#')
            break;
        if (n + 1 >= *cap) {
            size_t ncap = *cap ? *cap * 2 : 8;
            char **nw = realloc(*words, ncap * sizeof(*nw));
            if (nw == NULL)
                return -2;
            *words = nw;
            *cap = ncap;
        }
        w = r;
        (*words)[n++] = w;
        if (*r == '"' || *r == '\'') {
            char q = *r++;
            for (;;) {
                if (*r == '\0')
                    return -1;
                if (*r == q) {
                    r++;
                    break;
                }
                if (*r == '\\' && q == '\'' && r[1] == '\'') {
                    *w++ = '\'';
                    r += 2;
                } else if (*r == '\\' && q == '"' && r[1] != '\0') {
                    r++;
                    switch (*r) {
                    case 'n':
                        *w++ = '\n';
                        break;
                    case 'r':
                        *w++ = '\r';
                        break;
                    case 't':
                        *w++ = '\t';
                        break;
                    case 'x':
                        if (hex_value(r[1]) >= 0 && hex_value(r[2]) >= 0) {
                            *w++ = (char)(hex_value(r[1]) * 16 + hex_value(r[2]));
                            r += 2;
                        } else {
                            *w++ = 'x';
                        }
                        break;
                    default:
                        *w++ = *r;
                        break;
                    }
                    r++;
                } else {
                    *w++ = *r++;
                }
            }
            if (*r != '\0' && !is_blank(*r))
                return -1;
        } else {
            while (*r != '\0' && !is_blank(*r))
                *w++ = *r++;
        }
        /* w == r only for an unquoted word, where *r is the separator we overwrite. */
        int end = *r == '\0';
        *w = '\0';
        if (!end)
            r++;
    }
    return (int)n;
}

/* ---- unit parsers ---- */

/* Decimal digits only. 0, -1 if not a number, -2 on overflow. */
static int parse_u64(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    *end = p;
    *out = v;
    return 0;
}

/* [-]digits. 0, -1 if not an integer, -2 if it does not fit in long long. */
static int parse_int(const char *s, long long *out)
{
    int neg = *s == '-';
    const char *end;
    uint64_t v;
    int rc = parse_u64(s + neg, &end, &v);

    if (rc < 0)
        return rc;
    if (*end != '\0')
        return -1;
    if (v > (uint64_t)LLONG_MAX)
        return -2;
    *out = neg ? -(long long)v : (long long)v;
    return 0;
}

/* Number with an optional suffix from units. 0, -1 if malformed, -2 on overflow. */
static int parse_units(const char *s, const struct config_unit *units, uint64_t *out)
{
    const char *end;
    uint64_t v;
    int rc = parse_u64(s, &end, &v);

    if (rc < 0)
        return rc;
    for (const struct config_unit *u = units; u->suffix; u++) {
        if (strcasecmp(end, u->suffix) == 0) {
            if (v > UINT64_MAX / u->mult)
                return -2;
            *out = v * u->mult;
            return 0;
        }
    }
    return -1;
}

/* "0", or v in the largest unit that divides it exactly: 1048576 -> "1m", 1500 -> "1500ms". */
static const char *format_units(uint64_t v, const struct config_unit *units, char *buf, size_t len)
{
    const struct config_unit *best = NULL;

    for (const struct config_unit *u = units; u->suffix; u++) {
        if (u->suffix[0] != '\0' && v % u->mult == 0 && (best == NULL || u->mult > best->mult))
            best = u;
    }
    if (v == 0 || best == NULL)
        snprintf(buf, len, "%llu", (unsigned long long)v);
    else
        snprintf(buf, len, "%llu%s", (unsigned long long)(v / best->mult), best->suffix);
    return buf;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t v;

    if (parse_units(s, duration_units, &v) < 0)
        return -1;
    *ms = v;
    return 0;
}

int config_parse_size(const char *s, size_t *bytes)
{
    uint64_t v;

    if (parse_units(s, size_units, &v) < 0 || v > SIZE_MAX)
        return -1;
    *bytes = (size_t)v;
    return 0;
}

/* Parse s into *out; NULL on success, else why it is not an address. */
static const char *addr_parse(const char *s, struct config_addr *out, int allow_unix,
                              int allow_zero)
{
    struct config_addr a;
    const char *host, *colon, *port;
    size_t hostlen;
    uint64_t v;
    const char *end;

    memset(&a, 0, sizeof(a));
    if (strncmp(s, "unix:", 5) == 0) {
        if (!allow_unix)
            return "unix sockets are not supported here";
        if (s[5] == '\0')
            return "empty unix socket path";
        if (strlen(s + 5) >= sizeof(a.unix_path))
            return "unix socket path too long";
        strcpy(a.unix_path, s + 5);
        *out = a;
        return NULL;
    }
    if (strstr(s, "://"))
        return "expected HOST:PORT without a scheme";
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        char v6[sizeof(a.host)];
        struct in6_addr in6;
        if (close == NULL)
            return "missing ']' after the IPv6 address";
        if (close[1] != ':')
            return "expected ':' and a port after ']'";
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
        if (hostlen == 0 || hostlen >= sizeof(v6))
            return "invalid IPv6 address";
        memcpy(v6, host, hostlen);
        v6[hostlen] = '\0';
        if (inet_pton(AF_INET6, v6, &in6) != 1)
            return "invalid IPv6 address";
    } else {
        host = s;
        colon = strchr(s, ':');
        if (colon == NULL)
            return "missing port (expected HOST:PORT)";
        if (strchr(colon + 1, ':'))
            return "IPv6 addresses need brackets, e.g. [::1]:80";
        hostlen = (size_t)(colon - host);
        if (hostlen == 0)
            return "empty host";
        for (size_t i = 0; i < hostlen; i++) {
            char c = host[i];
            if (!isalnum((unsigned char)c) && c != '-' && c != '.' && c != '_')
                return "invalid character in host";
        }
    }
    if (hostlen >= sizeof(a.host))
        return "host name too long";
    port = colon + 1;
    if (parse_u64(port, &end, &v) < 0 || *end != '\0' || v > 65535 || (v == 0 && !allow_zero))
        return allow_zero ? "port must be a number from 0 to 65535"
                          : "port must be a number from 1 to 65535";
    memcpy(a.host, host, hostlen);
    a.host[hostlen] = '\0';
    a.port = (uint16_t)v;
    *out = a;
    return NULL;
}

int config_parse_addr(const char *s, struct config_addr *out, int allow_unix, int allow_zero)
{
    return addr_parse(s, out, allow_unix, allow_zero) ? -1 : 0;
}

const char *config_addr_str(const struct config_addr *a, char *buf, size_t len)
{
    if (a->unix_path[0])
        snprintf(buf, len, "unix:%s", a->unix_path);
    else if (strchr(a->host, ':'))
        snprintf(buf, len, "[%s]:%u", a->host, (unsigned)a->port);
    else
        snprintf(buf, len, "%s:%u", a->host, (unsigned)a->port);
    return buf;
}

/* ---- generic setters ---- */

static int is_list(const struct config_directive *d)
{
    return d->type == CONFIG_T_STRING_LIST || d->type == CONFIG_T_ADDR_LIST;
}

/* Release what the field of d owns in base (a struct config or any struct d describes). */
static void directive_free(const struct config_directive *d, void *base)
{
    char *field = (char *)base + d->off;
    size_t *count = (size_t *)((char *)base + d->count_off);

    switch (d->type) {
    case CONFIG_T_STRING:
        free(*(char **)field);
        *(char **)field = NULL;
        break;
    case CONFIG_T_STRING_LIST: {
        char ***list = (char ***)field;
        for (size_t i = 0; i < *count; i++)
            free((*list)[i]);
        free(*list);
        *list = NULL;
        *count = 0;
        break;
    }
    case CONFIG_T_ADDR_LIST:
        free(*(struct config_addr **)field);
        *(struct config_addr **)field = NULL;
        *count = 0;
        break;
    default:
        break;
    }
}

static int set_string_list(const struct config_directive *d, void *base, const char *pfx, int argc,
                           const char **argv, char *err, size_t errlen)
{
    char ***list = (char ***)((char *)base + d->off);
    size_t *count = (size_t *)((char *)base + d->count_off);
    size_t keep = (d->flags & CONFIG_F_REPEATABLE) ? *count : 0;
    char **nl;
    int i;

    nl = calloc(keep + (size_t)argc, sizeof(*nl));
    if (nl == NULL)
        goto oom;
    for (i = 0; i < argc; i++) {
        nl[keep + (size_t)i] = strdup(argv[i]);
        if (nl[keep + (size_t)i] == NULL)
            goto oom;
    }
    if (keep)
        memcpy(nl, *list, keep * sizeof(*nl));
    else
        directive_free(d, base);
    free(*list);
    *list = nl;
    *count = keep + (size_t)argc;
    return 0;

oom:
    if (nl) {
        for (i = 0; i < argc; i++)
            free(nl[keep + (size_t)i]);
    }
    free(nl);
    return fail(err, errlen, "%s: out of memory", pfx);
}

static int set_addr_list(const struct config_directive *d, void *base, const char *pfx, int argc,
                         const char **argv, char *err, size_t errlen)
{
    struct config_addr **list = (struct config_addr **)((char *)base + d->off);
    size_t *count = (size_t *)((char *)base + d->count_off);
    size_t keep = (d->flags & CONFIG_F_REPEATABLE) ? *count : 0;
    struct config_addr *nl;

    nl = malloc((keep + (size_t)argc) * sizeof(*nl));
    if (nl == NULL)
        return fail(err, errlen, "%s: out of memory", pfx);
    for (int i = 0; i < argc; i++) {
        const char *why = addr_parse(argv[i], &nl[keep + (size_t)i], d->flags & CONFIG_F_UNIX,
                                     d->flags & CONFIG_F_PORT_ZERO);
        if (why) {
            free(nl);
            return fail(err, errlen, "%s: invalid address '%s': %s", pfx, argv[i], why);
        }
    }
    if (keep)
        memcpy(nl, *list, keep * sizeof(*nl));
    free(*list);
    *list = nl;
    *count = keep + (size_t)argc;
    return 0;
}

/* "debug, info, warn or error" (aliases, i.e. repeated values, left out). */
static const char *choice_names(const struct config_choice *c, char *buf, size_t len)
{
    size_t n = 0, used = 0;

    for (size_t i = 0; c[i].name; i++) {
        int alias = 0;
        for (size_t j = 0; j < i; j++)
            alias |= c[j].value == c[i].value;
        if (!alias)
            n++;
    }
    buf[0] = '\0';
    for (size_t i = 0, k = 0; c[i].name && used < len; i++) {
        int alias = 0;
        for (size_t j = 0; j < i; j++)
            alias |= c[j].value == c[i].value;
        if (alias)
            continue;
        k++;
        used += (size_t)snprintf(buf + used, len - used, "%s%s",
                                 k == 1 ? "" : (k == n ? " or " : ", "), c[i].name);
    }
    return buf;
}

/*
 * Set the field d describes in base from argc words. pfx names the place for errors
 * ("file:3: workers" or "--workers"). All or nothing: on error the field is unchanged.
 */
static int directive_set(const struct config_directive *d, void *base, const char *pfx, int argc,
                         const char **argv, char *err, size_t errlen)
{
    char *field = (char *)base + d->off;
    const char *s;
    char lo[32], hi[32];
    const struct config_unit *units;
    long long iv = 0;
    uint64_t uv = 0;
    int rc;

    if (is_list(d) ? argc < 1 : argc != 1)
        return fail(err, errlen, "%s: expected %s1 argument, got %d", pfx,
                    is_list(d) ? "at least " : "", argc);
    s = argv[0];

    switch (d->type) {
    case CONFIG_T_INT:
        rc = parse_int(s, &iv);
        if (rc == -1)
            return fail(err, errlen, "%s: invalid integer '%s'", pfx, s);
        if (rc == -2 || iv < d->min || iv > d->max)
            return fail(err, errlen, "%s: %s is out of range (%lld..%lld)", pfx, s, d->min, d->max);
        *(int *)field = (int)iv;
        return 0;

    case CONFIG_T_SIZE:
    case CONFIG_T_DURATION:
        units = d->type == CONFIG_T_SIZE ? size_units : duration_units;
        rc = parse_units(s, units, &uv);
        if (rc == -1 && d->type == CONFIG_T_SIZE)
            return fail(err, errlen, "%s: invalid size '%s' (use a number with k, m or g)", pfx, s);
        if (rc == -1)
            return fail(err, errlen,
                        "%s: invalid duration '%s' (use a number with ms, s, m, h or d; "
                        "a bare number is seconds)",
                        pfx, s);
        if (rc == -2 || uv < (uint64_t)d->min || uv > (uint64_t)d->max)
            return fail(err, errlen, "%s: %s is out of range (%s..%s)", pfx, s,
                        format_units((uint64_t)d->min, units, lo, sizeof(lo)),
                        format_units((uint64_t)d->max, units, hi, sizeof(hi)));
        if (d->type == CONFIG_T_SIZE)
            *(size_t *)field = (size_t)uv;
        else
            *(uint64_t *)field = uv;
        return 0;

    case CONFIG_T_BOOL: {
        static const char *const yes[] = {"yes", "on", "true", "1"};
        static const char *const no[] = {"no", "off", "false", "0"};
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
            if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
                *(int *)field = strcasecmp(s, yes[i]) == 0;
                return 0;
            }
        }
        return fail(err, errlen, "%s: invalid boolean '%s' (use yes or no)", pfx, s);
    }

    case CONFIG_T_ENUM: {
        char names[256];
        for (const struct config_choice *c = d->choices; c->name; c++) {
            if (strcasecmp(s, c->name) == 0) {
                *(int *)field = c->value;
                return 0;
            }
        }
        return fail(err, errlen, "%s: invalid value '%s' (use %s)", pfx, s,
                    choice_names(d->choices, names, sizeof(names)));
    }

    case CONFIG_T_STRING: {
        char *copy = strdup(s);
        if (copy == NULL)
            return fail(err, errlen, "%s: out of memory", pfx);
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }

    case CONFIG_T_ADDR: {
        struct config_addr a;
        const char *why =
            addr_parse(s, &a, d->flags & CONFIG_F_UNIX, d->flags & CONFIG_F_PORT_ZERO);
        if (why)
            return fail(err, errlen, "%s: invalid address '%s': %s", pfx, s, why);
        *(struct config_addr *)field = a;
        return 0;
    }

    case CONFIG_T_STRING_LIST:
        return set_string_list(d, base, pfx, argc, argv, err, errlen);
    case CONFIG_T_ADDR_LIST:
        return set_addr_list(d, base, pfx, argc, argv, err, errlen);
    }
    return fail(err, errlen, "%s: unsupported directive type", pfx);
}

/*
 * Set d from a string tokenized like a config line (used for defaults). 0 or -1; the
 * words slice lives in a private copy.
 */
static int directive_set_line(const struct config_directive *d, void *base, const char *pfx,
                              const char *line, char *err, size_t errlen)
{
    char *copy = strdup(line), **words = NULL;
    size_t cap = 0;
    int n, rc = -1;

    if (copy == NULL) {
        fail(err, errlen, "%s: out of memory", pfx);
        goto out;
    }
    n = split_words(copy, &words, &cap);
    if (n < 0) {
        fail(err, errlen, "%s: %s", pfx, n == -1 ? "unbalanced quotes" : "out of memory");
        goto out;
    }
    rc = directive_set(d, base, pfx, n, (const char **)words, err, errlen);
out:
    free(words);
    free(copy);
    return rc;
}

/* ---- lookup ---- */

static const struct config_directive *directive_find(const char *name, size_t len)
{
    for (size_t i = 0; i < CONFIG_NDIRECTIVES; i++) {
        const struct config_directive *d = &config_table[i];
        if (strncasecmp(name, d->name, len) == 0 && d->name[len] == '\0')
            return d;
    }
    return NULL;
}

/* Levenshtein distance, case-insensitive; large for names longer than 63 bytes. */
static size_t edit_distance(const char *a, size_t la, const char *b)
{
    size_t lb = strlen(b), prev[64], cur[64];

    if (la >= 64 || lb >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] +
                         (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(prev[0]));
    }
    return prev[lb];
}

/* The closest directive name within edit distance 2, or NULL. */
static const char *directive_suggest(const char *name, size_t len)
{
    const char *best = NULL;
    size_t bestd = 3;

    for (size_t i = 0; i < CONFIG_NDIRECTIVES; i++) {
        size_t dist = edit_distance(name, len, config_table[i].name);
        if (dist < bestd) {
            bestd = dist;
            best = config_table[i].name;
        }
    }
    return best;
}

/* ---- public API ---- */

void config_defaults(struct config *cfg)
{
    char buf[64], err[256];

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CONFIG_NDIRECTIVES; i++) {
        const struct config_directive *d = &config_table[i];
        const char *v = d->def_fn ? d->def_fn(d, buf, sizeof(buf)) : d->def;
        if (v == NULL)
            continue;
        /* A default that does not parse is a bug in the table, caught by the first run. */
        if (directive_set_line(d, cfg, d->name, v, err, sizeof(err)) < 0) {
            fprintf(stderr, "config: bad built-in default: %s\n", err);
            abort();
        }
    }
}

int config_set(struct config *cfg, const char *where, const char *name, int argc, const char **argv,
               char *err, size_t errlen)
{
    const struct config_directive *d = directive_find(name, strlen(name));
    int flag = strncmp(where, "--", 2) == 0;
    const char *hint;
    char pfx[1024];

    if (d == NULL) {
        hint = directive_suggest(name, strlen(name));
        if (flag && hint)
            return fail(err, errlen, "unknown option '%s' (did you mean '--%s'?)", where, hint);
        if (flag)
            return fail(err, errlen, "unknown option '%s'", where);
        if (hint)
            return fail(err, errlen, "%s: unknown directive '%s' (did you mean '%s'?)", where, name,
                        hint);
        return fail(err, errlen, "%s: unknown directive '%s'", where, name);
    }
    if (flag)
        snprintf(pfx, sizeof(pfx), "%s", where);
    else
        snprintf(pfx, sizeof(pfx), "%s: %s", where, d->name);
    return directive_set(d, cfg, pfx, argc, argv, err, errlen);
}

int config_load_string(struct config *cfg, const char *origin, const char *text, char *err,
                       size_t errlen)
{
    char *buf = strdup(text), *line, *next, **words = NULL, where[1024];
    size_t cap = 0;
    unsigned lineno = 0;
    int n, rc = -1;

    if (buf == NULL) {
        fail(err, errlen, "%s: out of memory", origin);
        goto out;
    }
    for (line = buf; line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        snprintf(where, sizeof(where), "%s:%u", origin, lineno);
        n = split_words(line, &words, &cap);
        if (n < 0) {
            fail(err, errlen, "%s: %s", where, n == -1 ? "unbalanced quotes" : "out of memory");
            goto out;
        }
        if (n == 0)
            continue;
        if (config_set(cfg, where, words[0], n - 1, (const char **)words + 1, err, errlen) < 0)
            goto out;
    }
    rc = 0;
out:
    free(words);
    free(buf);
    return rc;
}

#define CONFIG_FILE_MAX (1024 * 1024)

int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *text = NULL, *copy = NULL;
    size_t len = 0, n;
    int rc = -1;

    f = fopen(path, "r");
    if (f == NULL) {
        fail(err, errlen, "cannot open config file '%s': %s", path, strerror(errno));
        goto out;
    }
    /* One byte more than the limit tells "too large" from "exactly at the limit". */
    text = malloc(CONFIG_FILE_MAX + 2);
    if (text == NULL) {
        fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    while (len <= CONFIG_FILE_MAX && (n = fread(text + len, 1, CONFIG_FILE_MAX + 1 - len, f)) > 0)
        len += n;
    if (ferror(f)) {
        fail(err, errlen, "cannot read config file '%s': %s", path, strerror(errno));
        goto out;
    }
    if (len > CONFIG_FILE_MAX) {
        fail(err, errlen, "%s: config file larger than %d bytes", path, CONFIG_FILE_MAX);
        goto out;
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        fail(err, errlen, "%s: config file contains a NUL byte", path);
        goto out;
    }
    copy = strdup(path);
    if (copy == NULL) {
        fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    free(cfg->file);
    cfg->file = copy;
    copy = NULL;
    rc = config_load_string(cfg, path, text, err, errlen);
out:
    if (f)
        fclose(f);
    free(text);
    free(copy);
    return rc;
}

/* RFC 9110 token: what method and header names are made of. */
static int is_token(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return 0;
    return 1;
}

int config_validate(const struct config *cfg, char *err, size_t errlen)
{
    const struct idem_policy *p = &cfg->idem;

    if (cfg->nupstreams == 0)
        return fail(err, errlen,
                    "no upstream configured: give --upstream HOST:PORT or an 'upstream' line "
                    "in the config file");
    for (size_t i = 0; i < p->nmethods; i++)
        if (!is_token(p->methods[i]))
            return fail(err, errlen, "methods: '%s' is not a method name", p->methods[i]);
    if (!is_token(p->key_header))
        return fail(err, errlen, "key-header: '%s' is not a header name", p->key_header);
    for (size_t i = 0; i < p->nscope_headers; i++)
        if (!is_token(p->scope_headers[i]))
            return fail(err, errlen, "scope-headers: '%s' is not a header name",
                        p->scope_headers[i]);
    for (size_t i = 0; i < p->nfingerprint_headers; i++)
        if (!is_token(p->fingerprint_headers[i]))
            return fail(err, errlen, "fingerprint-headers: '%s' is not a header name",
                        p->fingerprint_headers[i]);
    if (p->lease_ms >= p->retention_ms)
        return fail(err, errlen, "lease (%llu ms) must be shorter than retention (%llu ms)",
                    (unsigned long long)p->lease_ms, (unsigned long long)p->retention_ms);
    return 0;
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < CONFIG_NDIRECTIVES; i++)
        directive_free(&config_table[i], cfg);
    free(cfg->file);
    cfg->file = NULL;
}

/* The directive a "--name" or "--name=value" argument names (NULL if none); *val is the
 * inline value or NULL, *namelen the length of name. */
static const struct config_directive *flag_parse(const char *arg, size_t *namelen, const char **val)
{
    const char *name = arg + 2, *eq = strchr(name, '=');

    *namelen = eq ? (size_t)(eq - name) : strlen(name);
    *val = eq ? eq + 1 : NULL;
    return directive_find(name, *namelen);
}

/* A value that looks like the next flag means the value was left out. */
static int is_flag(const char *arg)
{
    return strncmp(arg, "--", 2) == 0;
}

int config_from_argv(struct config *cfg, struct config_cli *cli, int argc, char **argv, char *err,
                     size_t errlen)
{
    const struct config_directive *d;
    const char *file = NULL, *val, *hint;
    char where[128];
    size_t len;
    int bad = 0;

    config_defaults(cfg);
    memset(cli, 0, sizeof(*cli));
    if (err && errlen)
        err[0] = '\0';

    /* Pass 1: syntax, -t/-h/-v and the file. Keep the first mistake but look on, since
     * --help anywhere wins over mistakes. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli->show_help = 1;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            cli->show_version = 1;
        } else if (strcmp(a, "-t") == 0) {
            cli->test_only = 1;
        } else if (a[0] != '-') {
            if (file && !bad)
                bad =
                    fail(err, errlen, "only one config file may be given ('%s' and '%s')", file, a);
            file = file ? file : a;
        } else if (bad) {
            continue;
        } else if (!is_flag(a)) {
            bad = fail(err, errlen, "unknown option '%s'", a);
        } else if ((d = flag_parse(a, &len, &val)) == NULL) {
            hint = directive_suggest(a + 2, len);
            if (hint)
                bad = fail(err, errlen, "unknown option '%.*s' (did you mean '--%s'?)",
                           (int)len + 2, a, hint);
            else
                bad = fail(err, errlen, "unknown option '%.*s'", (int)len + 2, a);
        } else if (val == NULL) {
            if (i + 1 >= argc || is_flag(argv[i + 1]))
                bad = fail(err, errlen, "--%s: missing value", d->name);
            else
                i++;
        }
    }
    if (cli->show_help || cli->show_version) {
        if (err && errlen)
            err[0] = '\0';
        return 0;
    }
    if (bad)
        return -1;

    if (file && config_load_file(cfg, file, err, errlen) < 0)
        return -1;

    /* Pass 2: the flags, in order, over the file. Pass 1 vouched for their syntax (and
     * returned already on --help/--version, the only "--" words that are not directives). */
    for (int i = 1; i < argc; i++) {
        if (!is_flag(argv[i]))
            continue;
        d = flag_parse(argv[i], &len, &val);
        if (val == NULL)
            val = argv[++i];
        snprintf(where, sizeof(where), "--%s", d->name);
        if (d->type == CONFIG_T_STRING_LIST) {
            /* "--methods 'POST PUT'" or "--methods POST,PUT": one flag, several values */
            char *copy = strdup(val), *save = NULL, *tok;
            const char *words[64];
            int n = 0, rc;
            if (!copy)
                return fail(err, errlen, "%s: out of memory", where);
            for (tok = strtok_r(copy, " \t,", &save); tok && n < 64;
                 tok = strtok_r(NULL, " \t,", &save))
                words[n++] = tok;
            rc = config_set(cfg, where, d->name, n, words, err, errlen);
            free(copy);
            if (rc < 0)
                return -1;
            continue;
        }
        if (config_set(cfg, where, d->name, 1, &val, err, errlen) < 0)
            return -1;
    }
    /* a secret is better kept out of argv (ps shows it) and out of config files */
    if (!cfg->redis_password && getenv("IDEMPROXY_REDIS_PASSWORD") &&
        !(cfg->redis_password = strdup(getenv("IDEMPROXY_REDIS_PASSWORD"))))
        return fail(err, errlen, "out of memory");
    return config_validate(cfg, err, errlen);
}

void config_print_help(FILE *out)
{
    char left[64], buf[64];

    fputs("usage: idemproxy [-t] [CONFIG_FILE] [--directive VALUE ...]\n"
          "       idemproxy -h|--help\n"
          "       idemproxy -v|--version\n"
          "\n"
          "  -t             check the configuration and exit\n"
          "  -h, --help     show this help and exit\n"
          "  -v, --version  show the version and exit\n"
          "\n"
          "Every directive is a line \"name value\" in CONFIG_FILE or a flag --name VALUE\n"
          "(or --name=VALUE); flags override the file, upstream accumulates. Sizes take\n"
          "k, m or g (1024-based); durations take ms, s, m, h or d (bare number: seconds).\n"
          "\n",
          out);
    for (size_t i = 0; i < CONFIG_NDIRECTIVES; i++) {
        const struct config_directive *d = &config_table[i];
        const char *def = d->def_fn ? d->def_fn(d, buf, sizeof(buf)) : d->def;
        snprintf(left, sizeof(left), "--%s %s", d->name, d->arg);
        fprintf(out, "  %-36s %s", left, d->help);
        if (def)
            fprintf(out, " [%s]", def);
        fputc('\n', out);
    }
}
