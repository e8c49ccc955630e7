#include "core/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/bytes.h"

/* ---- lexical pieces ---- */

void json_skip_ws(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
        (*p)++;
}

int json_read_literal(const char **p, const char *end, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(end - *p) < n || memcmp(*p, word, n) != 0)
        return -1;
    *p += n;
    return 0;
}

static int json_hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int d = bytes_hexval((unsigned char)p[i]);
        if (d < 0)
            return -1;
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

static int json_utf8(struct evbuffer *out, unsigned cp)
{
    unsigned char b[4];
    size_t n;

    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | cp >> 6);
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | cp >> 12);
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | cp >> 18);
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return evbuffer_add(out, b, n);
}

int json_read_string(const char **pp, const char *end, struct evbuffer *raw)
{
    const char *p = *pp, *esc = NULL;
    int rc = -1;

    if (p >= end || *p != '"')
        goto out;
    p++;
    while (p < end) {
        const char *run = p;
        while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            p++;
        if (p > run && evbuffer_add(raw, run, (size_t)(p - run)) != 0)
            goto out;
        if (p >= end || (unsigned char)*p < 0x20)
            goto out; /* unterminated, or a raw control character */
        if (*p == '"') {
            p++;
            rc = 0;
            goto out;
        }
        /* an escape: on failure, *pp is left at its backslash */
        esc = p;
        if (end - p < 2)
            goto bad;
        p++;
        if (*p != 'u') { /* the one-character escapes */
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *e = memchr(from, *p++, sizeof(from) - 1);
            if (!e)
                goto bad;
            if (evbuffer_add(raw, to + (e - from), 1) != 0)
                goto out;
            continue;
        }
        p++; /* a u escape: four hex digits, or a surrogate pair of them */
        {
            unsigned cp, lo;
            if (end - p < 4 || json_hex4(p, &cp) < 0)
                goto bad;
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00) { /* a surrogate pair */
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || json_hex4(p + 2, &lo) < 0 ||
                    lo < 0xdc00 || lo >= 0xe000)
                    goto bad;
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                goto bad; /* a lone low surrogate */
            }
            if (json_utf8(raw, cp) != 0)
                goto out;
        }
    }
    goto out;
bad:
    p = esc;
out:
    *pp = p;
    return rc;
}

int json_read_number(const char **pp, const char *end)
{
    const char *p = *pp;
    int rc = -1;

    if (p < end && *p == '-')
        p++;
    if (p >= end)
        goto out;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        goto out;
    }
    if (p < end && *p == '.') {
        const char *d = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            goto out;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        const char *d;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        d = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            goto out;
    }
    rc = 0;
out:
    *pp = p;
    return rc;
}

/* ---- the tree ---- */

struct json_parser {
    const char *p, *end;
    int depth, max_depth;
    /* positions: p only moves forward, so lines are counted once */
    const char *counted, *line_start;
    unsigned line;
    char *err;
    size_t errlen;
};

static void json_pos(struct json_parser *j, const char *at, unsigned *line, unsigned *col)
{
    for (; j->counted < at; j->counted++) {
        if (*j->counted == '\n') {
            j->line++;
            j->line_start = j->counted + 1;
        }
    }
    *line = j->line;
    *col = (unsigned)(at - j->line_start) + 1;
}

static int json_fail_at(struct json_parser *j, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int json_fail(struct json_parser *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int json_failv(struct json_parser *j, unsigned line, unsigned col, const char *fmt,
                      va_list ap)
{
    int n;

    if (!j->err || !j->errlen || j->err[0])
        return -1; /* the first failure wins */
    n = snprintf(j->err, j->errlen, "%u:%u: ", line, col);
    if (n >= 0 && (size_t)n < j->errlen)
        vsnprintf(j->err + n, j->errlen - (size_t)n, fmt, ap);
    return -1;
}

/* Write "LINE:COL: reason" for line:col. Returns -1. */
static int json_fail_at(struct json_parser *j, unsigned line, unsigned col, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    json_failv(j, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

/* Write "LINE:COL: reason" for where j->p is. Returns -1. */
static int json_fail(struct json_parser *j, const char *fmt, ...)
{
    unsigned line, col;
    va_list ap;

    json_pos(j, j->p, &line, &col);
    va_start(ap, fmt);
    json_failv(j, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

static void json_value_clear(struct json_value *v);

static int json_parse_value(struct json_parser *j, struct json_value *v);

/* The string at j->p into a malloc'd, NUL-terminated copy. */
static int json_parse_string(struct json_parser *j, char **s, size_t *len)
{
    struct evbuffer *raw = evbuffer_new();
    int rc = -1;

    if (!raw)
        return json_fail(j, "out of memory");
    if (json_read_string(&j->p, j->end, raw) < 0) {
        if (j->p >= j->end)
            json_fail(j, "unterminated string");
        else if ((unsigned char)*j->p < 0x20)
            json_fail(j, "control character in a string (write it as an escape)");
        else
            json_fail(j, "invalid escape in a string");
        goto out;
    }
    *len = evbuffer_get_length(raw);
    if (!(*s = malloc(*len + 1))) {
        json_fail(j, "out of memory");
        goto out;
    }
    evbuffer_remove(raw, *s, *len);
    (*s)[*len] = '\0';
    rc = 0;
out:
    evbuffer_free(raw);
    return rc;
}

/* After an object member or an array item: 1 at ',' (another one follows), 0 at close
 * (consumed), -1 otherwise. */
static int json_after_element(struct json_parser *j, char close, const char *in)
{
    json_skip_ws(&j->p, j->end);
    if (j->p < j->end && *j->p == ',') {
        j->p++;
        json_skip_ws(&j->p, j->end);
        return 1;
    }
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    return json_fail(j, "expected ',' or '%c' in %s", close, in);
}

static int json_parse_object(struct json_parser *j, struct json_value *v)
{
    size_t cap = 0;
    int rc;

    j->p++; /* '{' */
    json_skip_ws(&j->p, j->end);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        struct json_member *m;

        if (v->n == cap) {
            struct json_member *nm = realloc(v->members, (cap = cap ? cap * 2 : 8) * sizeof(*nm));
            if (!nm)
                return json_fail(j, "out of memory");
            v->members = nm;
        }
        if (j->p >= j->end || *j->p != '"')
            return json_fail(j, "expected a member name (a string)");
        m = &v->members[v->n];
        memset(m, 0, sizeof(*m));
        json_pos(j, j->p, &m->line, &m->col);
        if (json_parse_string(j, &m->name, &m->name_len) < 0)
            return -1;
        v->n++;
        for (size_t i = 0; i + 1 < v->n; i++) {
            if (v->members[i].name_len == m->name_len &&
                memcmp(v->members[i].name, m->name, m->name_len) == 0) {
                return json_fail_at(j, m->line, m->col, "duplicate member \"%s\" (first at %u:%u)",
                                    m->name, v->members[i].line, v->members[i].col);
            }
        }
        json_skip_ws(&j->p, j->end);
        if (j->p >= j->end || *j->p != ':')
            return json_fail(j, "expected ':' after the member name");
        j->p++;
        json_skip_ws(&j->p, j->end);
        if (json_parse_value(j, &m->value) < 0)
            return -1;
        if ((rc = json_after_element(j, '}', "an object")) <= 0)
            return rc;
    }
}

static int json_parse_array(struct json_parser *j, struct json_value *v)
{
    size_t cap = 0;
    int rc;

    j->p++; /* '[' */
    json_skip_ws(&j->p, j->end);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        if (v->n == cap) {
            struct json_value *ni = realloc(v->items, (cap = cap ? cap * 2 : 8) * sizeof(*ni));
            if (!ni)
                return json_fail(j, "out of memory");
            v->items = ni;
        }
        memset(&v->items[v->n], 0, sizeof(v->items[v->n]));
        v->n++;
        if (json_parse_value(j, &v->items[v->n - 1]) < 0)
            return -1;
        if ((rc = json_after_element(j, ']', "an array")) <= 0)
            return rc;
    }
}

static int json_parse_value(struct json_parser *j, struct json_value *v)
{
    const char *start = j->p;
    int rc;

    json_pos(j, j->p, &v->line, &v->col);
    if (j->p >= j->end)
        return json_fail(j, "expected a value, found the end");
    switch (*j->p) {
    case '{':
    case '[':
        if (++j->depth > j->max_depth)
            return json_fail(j, "nested deeper than %d", j->max_depth);
        if (*j->p == '{') {
            v->type = JSON_OBJECT;
            rc = json_parse_object(j, v);
        } else {
            v->type = JSON_ARRAY;
            rc = json_parse_array(j, v);
        }
        j->depth--;
        return rc;
    case '"':
        v->type = JSON_STRING;
        return json_parse_string(j, &v->str, &v->len);
    case 't':
    case 'f':
    case 'n': {
        static const char *const words[] = {"true", "false", "null"};
        static const enum json_type types[] = {JSON_TRUE, JSON_FALSE, JSON_NULL};
        int w = *j->p == 't' ? 0 : *j->p == 'f' ? 1 : 2;
        if (json_read_literal(&j->p, j->end, words[w]) < 0)
            return json_fail(j, "unexpected word (true, false or null?)");
        v->type = types[w];
        return 0;
    }
    default:
        if (*j->p != '-' && (*j->p < '0' || *j->p > '9'))
            return json_fail(j, "unexpected character '%c'",
                             *j->p >= 0x20 && *j->p < 0x7f ? *j->p : '?');
        if (json_read_number(&j->p, j->end) < 0)
            return json_fail(j, "invalid number");
        v->type = JSON_NUMBER;
        v->len = (size_t)(j->p - start);
        if (!(v->str = malloc(v->len + 1)))
            return json_fail(j, "out of memory");
        memcpy(v->str, start, v->len);
        v->str[v->len] = '\0';
        return 0;
    }
}

struct json_value *json_parse(const char *text, size_t len, int max_depth, char *err, size_t errlen)
{
    struct json_parser j = {.p = text,
                            .end = text + len,
                            .max_depth = max_depth,
                            .counted = text,
                            .line_start = text,
                            .line = 1,
                            .err = err,
                            .errlen = errlen};
    struct json_value *v = calloc(1, sizeof(*v));

    if (err && errlen)
        err[0] = '\0';
    if (!v) {
        json_fail(&j, "out of memory");
        return NULL;
    }
    json_skip_ws(&j.p, j.end);
    if (json_parse_value(&j, v) < 0)
        goto fail;
    json_skip_ws(&j.p, j.end);
    if (j.p != j.end) {
        json_fail(&j, "unexpected text after the end of the document");
        goto fail;
    }
    return v;
fail:
    json_free(v);
    return NULL;
}

static void json_value_clear(struct json_value *v)
{
    free(v->str);
    for (size_t i = 0; v->items && i < v->n; i++)
        json_value_clear(&v->items[i]);
    for (size_t i = 0; v->members && i < v->n; i++) {
        free(v->members[i].name);
        json_value_clear(&v->members[i].value);
    }
    free(v->items);
    free(v->members);
    memset(v, 0, sizeof(*v));
}

void json_free(struct json_value *v)
{
    if (!v)
        return;
    json_value_clear(v);
    free(v);
}

const struct json_value *json_get(const struct json_value *obj, const char *name)
{
    size_t len = strlen(name);

    if (!obj || obj->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (obj->members[i].name_len == len && memcmp(obj->members[i].name, name, len) == 0)
            return &obj->members[i].value;
    return NULL;
}

const char *json_type_str(enum json_type t)
{
    switch (t) {
    case JSON_NULL:
        return "null";
    case JSON_FALSE:
    case JSON_TRUE:
        return "a boolean";
    case JSON_NUMBER:
        return "a number";
    case JSON_STRING:
        return "a string";
    case JSON_ARRAY:
        return "an array";
    case JSON_OBJECT:
        return "an object";
    }
    return "?";
}
