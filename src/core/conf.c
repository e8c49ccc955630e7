/*
 * conf — the configuration engine: a redis.conf-style tokenizer, generic setters per type,
 * lookup over the sections of a schema (see conf.h).
 *
 * Adding a directive = adding a row to its module's table (and a field to the module's
 * struct). Adding a type = a case in directive_set() (and directive_free() if it owns memory).
 * Defaults are strings run through the same tokenizer and setter as user input, so a default can
 * never be something the user could not have written.
 */
#include "core/conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/bytes.h"

struct conf_unit {
    const char *suffix;
    uint64_t mult;
};

#define KIB    CONF_KIB
#define MIB    CONF_MIB
#define GIB    CONF_GIB
#define MS_DAY CONF_MS_DAY

/* Suffix "" is what a bare number means. Suffixes match case-insensitively. */
static const struct conf_unit size_units[] = {
    {"", 1}, {"k", KIB}, {"m", MIB}, {"g", GIB}, {NULL, 0}};
static const struct conf_unit duration_units[] = {
    {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", MS_DAY}, {NULL, 0}};

#define fail conf_fail

/* Write one line into err (control characters become '?', so it stays one line). */
int conf_fail(char *err, size_t errlen, const char *fmt, ...)
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
                        if (bytes_hexval(r[1]) >= 0 && bytes_hexval(r[2]) >= 0) {
                            *w++ = (char)(bytes_hexval(r[1]) * 16 + bytes_hexval(r[2]));
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
static int parse_units(const char *s, const struct conf_unit *units, uint64_t *out)
{
    const char *end;
    uint64_t v;
    int rc = parse_u64(s, &end, &v);

    if (rc < 0)
        return rc;
    for (const struct conf_unit *u = units; u->suffix; u++) {
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
static const char *format_units(uint64_t v, const struct conf_unit *units, char *buf, size_t len)
{
    const struct conf_unit *best = NULL;

    for (const struct conf_unit *u = units; u->suffix; u++) {
        if (u->suffix[0] != '\0' && v % u->mult == 0 && (best == NULL || u->mult > best->mult))
            best = u;
    }
    if (v == 0 || best == NULL)
        snprintf(buf, len, "%llu", (unsigned long long)v);
    else
        snprintf(buf, len, "%llu%s", (unsigned long long)(v / best->mult), best->suffix);
    return buf;
}

int conf_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t v;

    if (parse_units(s, duration_units, &v) < 0)
        return -1;
    *ms = v;
    return 0;
}

int conf_parse_size(const char *s, size_t *bytes)
{
    uint64_t v;

    if (parse_units(s, size_units, &v) < 0 || v > SIZE_MAX)
        return -1;
    *bytes = (size_t)v;
    return 0;
}

/* Parse s into *out; NULL on success, else why it is not an address. */
static const char *addr_parse(const char *s, struct conf_addr *out, int allow_unix, int allow_zero)
{
    struct conf_addr a;
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

const char *conf_addr_parse(const char *s, struct conf_addr *out, int allow_unix, int allow_zero)
{
    return addr_parse(s, out, allow_unix, allow_zero);
}

int conf_parse_addr(const char *s, struct conf_addr *out, int allow_unix, int allow_zero)
{
    return addr_parse(s, out, allow_unix, allow_zero) ? -1 : 0;
}

const char *conf_addr_str(const struct conf_addr *a, char *buf, size_t len)
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

static int is_list(const struct conf_directive *d)
{
    return d->type == CONF_T_STRING_LIST || d->type == CONF_T_ADDR_LIST ||
           d->type == CONF_T_INT_LIST;
}

/* Release what the field of d owns in base (a struct config or any struct d describes). */
static void directive_free(const struct conf_directive *d, void *base)
{
    char *field = (char *)base + d->off;
    size_t *count = (size_t *)((char *)base + d->count_off);

    if (d->type == CONF_T_CUSTOM) {
        if (d->custom_free)
            d->custom_free(d, base);
        return;
    }

    switch (d->type) {
    case CONF_T_STRING:
        free(*(char **)field);
        *(char **)field = NULL;
        break;
    case CONF_T_STRING_LIST: {
        char ***list = (char ***)field;
        for (size_t i = 0; i < *count; i++)
            free((*list)[i]);
        free(*list);
        *list = NULL;
        *count = 0;
        break;
    }
    case CONF_T_ADDR_LIST:
        free(*(struct conf_addr **)field);
        *(struct conf_addr **)field = NULL;
        *count = 0;
        break;
    case CONF_T_INT_LIST:
        free(*(int **)field);
        *(int **)field = NULL;
        *count = 0;
        break;
    default:
        break;
    }
}

static int set_string_list(const struct conf_directive *d, void *base, const char *pfx, int argc,
                           const char **argv, char *err, size_t errlen)
{
    char ***list = (char ***)((char *)base + d->off);
    size_t *count = (size_t *)((char *)base + d->count_off);
    size_t keep = (d->flags & CONF_F_REPEATABLE) ? *count : 0;
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

static int set_addr_list(const struct conf_directive *d, void *base, const char *pfx, int argc,
                         const char **argv, char *err, size_t errlen)
{
    struct conf_addr **list = (struct conf_addr **)((char *)base + d->off);
    size_t *count = (size_t *)((char *)base + d->count_off);
    size_t keep = (d->flags & CONF_F_REPEATABLE) ? *count : 0;
    struct conf_addr *nl;

    nl = malloc((keep + (size_t)argc) * sizeof(*nl));
    if (nl == NULL)
        return fail(err, errlen, "%s: out of memory", pfx);
    for (int i = 0; i < argc; i++) {
        const char *why = addr_parse(argv[i], &nl[keep + (size_t)i], d->flags & CONF_F_UNIX,
                                     d->flags & CONF_F_PORT_ZERO);
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
static const char *choice_names(const struct conf_choice *c, char *buf, size_t len)
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
/* Integers bounded by min..max; the single word "none" is the empty list. */
static int set_int_list(const struct conf_directive *d, void *base, const char *pfx, int argc,
                        const char **argv, char *err, size_t errlen)
{
    int **list = (int **)((char *)base + d->off);
    size_t *count = (size_t *)((char *)base + d->count_off);
    int *nl = NULL;
    int n = argc == 1 && strcasecmp(argv[0], "none") == 0 ? 0 : argc;

    if (n && !(nl = malloc((size_t)n * sizeof(*nl))))
        return fail(err, errlen, "%s: out of memory", pfx);
    for (int i = 0; i < n; i++) {
        long long v;
        int rc = parse_int(argv[i], &v);
        if (rc == -1 || rc == -2 || v < d->min || v > d->max) {
            free(nl);
            if (rc == -1)
                return fail(err, errlen, "%s: invalid integer '%s' (or give 'none')", pfx, argv[i]);
            return fail(err, errlen, "%s: %s is out of range (%lld..%lld)", pfx, argv[i], d->min,
                        d->max);
        }
        nl[i] = (int)v;
    }
    free(*list);
    *list = nl;
    *count = (size_t)n;
    return 0;
}

static int directive_set(const struct conf_directive *d, void *base, const char *pfx, int argc,
                         const char **argv, char *err, size_t errlen)
{
    char *field = (char *)base + d->off;
    const char *s;
    char lo[32], hi[32];
    const struct conf_unit *units;
    long long iv = 0;
    uint64_t uv = 0;
    int rc;

    if (d->type == CONF_T_OBSOLETE)
        return fail(err, errlen, "%s: no longer supported: %s", pfx, d->help);
    if (d->type == CONF_T_CUSTOM)
        return d->custom_set(d, base, pfx, argc, argv, err, errlen);
    if (is_list(d) ? argc < 1 : argc != 1)
        return fail(err, errlen, "%s: expected %s1 argument, got %d", pfx,
                    is_list(d) ? "at least " : "", argc);
    s = argv[0];

    switch (d->type) {
    case CONF_T_INT:
        rc = parse_int(s, &iv);
        if (rc == -1)
            return fail(err, errlen, "%s: invalid integer '%s'", pfx, s);
        if (rc == -2 || iv < d->min || iv > d->max)
            return fail(err, errlen, "%s: %s is out of range (%lld..%lld)", pfx, s, d->min, d->max);
        *(int *)field = (int)iv;
        return 0;

    case CONF_T_SIZE:
    case CONF_T_DURATION:
        units = d->type == CONF_T_SIZE ? size_units : duration_units;
        rc = parse_units(s, units, &uv);
        if (rc == -1 && d->type == CONF_T_SIZE)
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
        if (d->type == CONF_T_SIZE)
            *(size_t *)field = (size_t)uv;
        else
            *(uint64_t *)field = uv;
        return 0;

    case CONF_T_BOOL: {
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

    case CONF_T_ENUM: {
        char names[256];
        for (const struct conf_choice *c = d->choices; c->name; c++) {
            if (strcasecmp(s, c->name) == 0) {
                *(int *)field = c->value;
                return 0;
            }
        }
        return fail(err, errlen, "%s: invalid value '%s' (use %s)", pfx, s,
                    choice_names(d->choices, names, sizeof(names)));
    }

    case CONF_T_STRING: {
        char *copy = strdup(s);
        if (copy == NULL)
            return fail(err, errlen, "%s: out of memory", pfx);
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }

    case CONF_T_ADDR: {
        struct conf_addr a;
        const char *why = addr_parse(s, &a, d->flags & CONF_F_UNIX, d->flags & CONF_F_PORT_ZERO);
        if (why)
            return fail(err, errlen, "%s: invalid address '%s': %s", pfx, s, why);
        *(struct conf_addr *)field = a;
        return 0;
    }

    case CONF_T_STRING_LIST:
        return set_string_list(d, base, pfx, argc, argv, err, errlen);
    case CONF_T_ADDR_LIST:
        return set_addr_list(d, base, pfx, argc, argv, err, errlen);
    case CONF_T_INT_LIST:
        return set_int_list(d, base, pfx, argc, argv, err, errlen);
    case CONF_T_OBSOLETE:
    case CONF_T_CUSTOM: /* handled above */
        break;
    }
    return fail(err, errlen, "%s: unsupported directive type", pfx);
}

/*
 * Set d from a string tokenized like a config line (used for defaults). 0 or -1; the
 * words slice lives in a private copy.
 */
static int directive_set_line(const struct conf_directive *d, void *base, const char *pfx,
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

const struct conf_directive *conf_find(const struct conf_schema *sch, const char *name, size_t len,
                                       size_t *off)
{
    for (size_t k = 0; k < sch->nsections; k++) {
        const struct conf_section *sec = &sch->sections[k];
        for (const struct conf_directive *d = sec->rows; d->name; d++) {
            if (strncasecmp(name, d->name, len) == 0 && d->name[len] == '\0') {
                if (off)
                    *off = sec->off;
                return d;
            }
        }
    }
    return NULL;
}

/* Obsolete rows only answer with their error: they are not directives any more. */
size_t conf_count(const struct conf_schema *sch)
{
    size_t n = 0;

    for (size_t k = 0; k < sch->nsections; k++)
        for (const struct conf_directive *d = sch->sections[k].rows; d->name; d++)
            n += d->type != CONF_T_OBSOLETE;
    return n;
}

const struct conf_directive *conf_at(const struct conf_schema *sch, size_t i)
{
    for (size_t k = 0; k < sch->nsections; k++)
        for (const struct conf_directive *d = sch->sections[k].rows; d->name; d++)
            if (d->type != CONF_T_OBSOLETE && i-- == 0)
                return d;
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
static const char *directive_suggest(const struct conf_schema *sch, const char *name, size_t len)
{
    const char *best = NULL;
    size_t bestd = 3, n = conf_count(sch);

    for (size_t i = 0; i < n; i++) {
        size_t dist = edit_distance(name, len, conf_at(sch, i)->name);
        if (dist < bestd) {
            bestd = dist;
            best = conf_at(sch, i)->name;
        }
    }
    return best;
}

/* ---- public API ---- */

void conf_defaults(const struct conf_schema *sch, void *base)
{
    char buf[64], err[256];

    for (size_t k = 0; k < sch->nsections; k++) {
        const struct conf_section *sec = &sch->sections[k];
        for (const struct conf_directive *d = sec->rows; d->name; d++) {
            const char *v = d->def_fn ? d->def_fn(d, buf, sizeof(buf)) : d->def;
            if (v == NULL || d->type == CONF_T_OBSOLETE)
                continue;
            /* A default that does not parse is a bug in a table, caught by the first run. */
            if (directive_set_line(d, (char *)base + sec->off, d->name, v, err, sizeof(err)) < 0) {
                fprintf(stderr, "config: bad built-in default: %s\n", err);
                abort();
            }
        }
    }
}

int conf_set(const struct conf_schema *sch, void *base, const char *where, const char *name,
             int argc, const char **argv, char *err, size_t errlen)
{
    size_t off = 0;
    const struct conf_directive *d = conf_find(sch, name, strlen(name), &off);
    int flag = strncmp(where, "--", 2) == 0;
    const char *hint;
    char pfx[1024];

    if (d == NULL) {
        hint = directive_suggest(sch, name, strlen(name));
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
    return directive_set(d, (char *)base + off, pfx, argc, argv, err, errlen);
}

int conf_load_string(const struct conf_schema *sch, void *base, const char *origin,
                     const char *text, char *err, size_t errlen)
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
        if (conf_set(sch, base, where, words[0], n - 1, (const char **)words + 1, err, errlen) < 0)
            goto out;
    }
    rc = 0;
out:
    free(words);
    free(buf);
    return rc;
}

#define CONF_FILE_MAX (1024 * 1024)

int conf_load_file(const struct conf_schema *sch, void *base, const char *path, char *err,
                   size_t errlen)
{
    FILE *f = NULL;
    char *text = NULL;
    size_t len = 0, n;
    int rc = -1;

    f = fopen(path, "r");
    if (f == NULL) {
        fail(err, errlen, "cannot open config file '%s': %s", path, strerror(errno));
        goto out;
    }
    /* One byte more than the limit tells "too large" from "exactly at the limit". */
    text = malloc(CONF_FILE_MAX + 2);
    if (text == NULL) {
        fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    while (len <= CONF_FILE_MAX && (n = fread(text + len, 1, CONF_FILE_MAX + 1 - len, f)) > 0)
        len += n;
    if (ferror(f)) {
        fail(err, errlen, "cannot read config file '%s': %s", path, strerror(errno));
        goto out;
    }
    if (len > CONF_FILE_MAX) {
        fail(err, errlen, "%s: config file larger than %d bytes", path, CONF_FILE_MAX);
        goto out;
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        fail(err, errlen, "%s: config file contains a NUL byte", path);
        goto out;
    }
    rc = conf_load_string(sch, base, path, text, err, errlen);
out:
    if (f)
        fclose(f);
    free(text);
    return rc;
}

int conf_is_token(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return 0;
    return 1;
}

void conf_free_row(const struct conf_directive *d, void *base)
{
    directive_free(d, base);
}

void conf_free(const struct conf_schema *sch, void *base)
{
    for (size_t k = 0; k < sch->nsections; k++)
        for (const struct conf_directive *d = sch->sections[k].rows; d->name; d++)
            directive_free(d, (char *)base + sch->sections[k].off);
}

/* The directive a "--name" or "--name=value" argument names (NULL if none); *val is the
 * inline value or NULL, *namelen the length of name. */
static const struct conf_directive *flag_parse(const struct conf_schema *sch, const char *arg,
                                               size_t *namelen, const char **val)
{
    const char *name = arg + 2, *eq = strchr(name, '=');

    *namelen = eq ? (size_t)(eq - name) : strlen(name);
    *val = eq ? eq + 1 : NULL;
    return conf_find(sch, name, *namelen, NULL);
}

/* A value that looks like the next flag means the value was left out. */
static int is_flag(const char *arg)
{
    return strncmp(arg, "--", 2) == 0;
}

int conf_parse_argv(const struct conf_schema *sch, void *base, struct conf_cli *cli, char **file,
                    int argc, char **argv, char *err, size_t errlen)
{
    const struct conf_directive *d;
    const char *path = NULL, *val, *hint;
    char where[128];
    size_t len;
    int bad = 0;

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
            if (path && !bad)
                bad =
                    fail(err, errlen, "only one config file may be given ('%s' and '%s')", path, a);
            path = path ? path : a;
        } else if (bad) {
            continue;
        } else if (!is_flag(a)) {
            bad = fail(err, errlen, "unknown option '%s'", a);
        } else if ((d = flag_parse(sch, a, &len, &val)) == NULL) {
            hint = directive_suggest(sch, a + 2, len);
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

    if (path) {
        free(*file);
        if (!(*file = strdup(path)))
            return fail(err, errlen, "%s: out of memory", path);
        if (conf_load_file(sch, base, path, err, errlen) < 0)
            return -1;
    }

    /* Pass 2: the flags, in order, over the file. Pass 1 vouched for their syntax (and
     * returned already on --help/--version, the only "--" words that are not directives). */
    for (int i = 1; i < argc; i++) {
        if (!is_flag(argv[i]))
            continue;
        d = flag_parse(sch, argv[i], &len, &val);
        if (val == NULL)
            val = argv[++i];
        snprintf(where, sizeof(where), "--%s", d->name);
        if (d->type == CONF_T_STRING_LIST || d->type == CONF_T_INT_LIST ||
            d->type == CONF_T_CUSTOM) {
            /* "--methods 'POST PUT'" or "--methods POST,PUT": one flag, several values */
            char *copy = strdup(val), *save = NULL, *tok;
            const char *words[64];
            int n = 0, rc;
            if (!copy)
                return fail(err, errlen, "%s: out of memory", where);
            for (tok = strtok_r(copy, " \t,", &save); tok && n < 64;
                 tok = strtok_r(NULL, " \t,", &save))
                words[n++] = tok;
            rc = conf_set(sch, base, where, d->name, n, words, err, errlen);
            free(copy);
            if (rc < 0)
                return -1;
            continue;
        }
        if (conf_set(sch, base, where, d->name, 1, &val, err, errlen) < 0)
            return -1;
    }
    return 0;
}

void conf_print_directives(const struct conf_schema *sch, FILE *out)
{
    char left[64], buf[64];
    size_t n = conf_count(sch);

    for (size_t i = 0; i < n; i++) {
        const struct conf_directive *d = conf_at(sch, i);
        const char *def = d->def_fn ? d->def_fn(d, buf, sizeof(buf)) : d->def;
        snprintf(left, sizeof(left), "--%s %s", d->name, d->arg);
        fprintf(out, "  %-36s %s", left, d->help);
        if (def)
            fprintf(out, " [%s]", def);
        fputc('\n', out);
    }
}
