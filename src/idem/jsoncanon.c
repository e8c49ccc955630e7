#include "idem/jsoncanon.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/json.h"

struct jc {
    const char *p, *end;
    int depth;
};

struct jc_member {
    char *name; /* unescaped, malloc'd */
    size_t nlen;
    struct evbuffer *value; /* canonical */
};

static int jc_value(struct jc *j, struct evbuffer *out);

static void jc_ws(struct jc *j)
{
    json_skip_ws(&j->p, j->end);
}

static int jc_string(struct jc *j, struct evbuffer *raw)
{
    return json_read_string(&j->p, j->end, raw);
}

static int jc_lit(struct jc *j, const char *word, struct evbuffer *out)
{
    const char *start = j->p;

    if (json_read_literal(&j->p, j->end, word) < 0)
        return -1;
    return evbuffer_add(out, start, (size_t)(j->p - start));
}

/* Write raw bytes as a JSON string with the fewest escapes. */
static int jc_emit_string(struct evbuffer *out, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    evbuffer_add(out, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        char e[6];
        size_t elen = 2;

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        evbuffer_add(out, s + run, i - run);
        run = i + 1;
        e[0] = '\\';
        switch (c) {
        case '"':
        case '\\':
            e[1] = (char)c;
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            elen = 6;
        }
        evbuffer_add(out, e, elen);
    }
    evbuffer_add(out, s + run, n - run);
    return evbuffer_add(out, "\"", 1);
}

/* RFC 8259 number grammar; the text is kept as written. */
static int jc_number(struct jc *j, struct evbuffer *out)
{
    const char *start = j->p;

    if (json_read_number(&j->p, j->end) < 0)
        return -1;
    return evbuffer_add(out, start, (size_t)(j->p - start));
}

static int jc_member_cmp(const void *a, const void *b)
{
    const struct jc_member *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);

    return c ? c : (x->nlen > y->nlen) - (x->nlen < y->nlen);
}

static int jc_object(struct jc *j, struct evbuffer *out)
{
    struct jc_member *m = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;

    j->p++; /* '{' */
    jc_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return evbuffer_add(out, "{}", 2);
    }
    for (;;) {
        struct evbuffer *name = evbuffer_new();
        size_t nlen;

        if (n == cap) {
            struct jc_member *nm = realloc(m, (cap = cap ? cap * 2 : 8) * sizeof(*m));
            if (!nm) {
                evbuffer_free(name);
                goto out;
            }
            m = nm;
        }
        if (!name || jc_string(j, name) != 0) {
            if (name)
                evbuffer_free(name);
            goto out;
        }
        nlen = evbuffer_get_length(name);
        m[n].name = malloc(nlen ? nlen : 1);
        m[n].nlen = nlen;
        m[n].value = evbuffer_new();
        if (m[n].name)
            evbuffer_remove(name, m[n].name, nlen);
        evbuffer_free(name);
        n++;
        if (!m[n - 1].name || !m[n - 1].value)
            goto out;
        jc_ws(j);
        if (j->p >= j->end || *j->p != ':')
            goto out;
        j->p++;
        jc_ws(j);
        if (jc_value(j, m[n - 1].value) != 0)
            goto out;
        jc_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            jc_ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            break;
        }
        goto out;
    }
    qsort(m, n, sizeof(*m), jc_member_cmp);
    for (size_t i = 1; i < n; i++)
        if (jc_member_cmp(&m[i - 1], &m[i]) == 0)
            goto out; /* a duplicate name: which one counts is up to each parser */
    evbuffer_add(out, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            evbuffer_add(out, ",", 1);
        jc_emit_string(out, (const unsigned char *)m[i].name, m[i].nlen);
        evbuffer_add(out, ":", 1);
        evbuffer_add_buffer(out, m[i].value);
    }
    rc = evbuffer_add(out, "}", 1);
out:
    for (size_t i = 0; i < n; i++) {
        free(m[i].name);
        if (m[i].value)
            evbuffer_free(m[i].value);
    }
    free(m);
    return rc;
}

static int jc_array(struct jc *j, struct evbuffer *out)
{
    j->p++; /* '[' */
    jc_ws(j);
    evbuffer_add(out, "[", 1);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return evbuffer_add(out, "]", 1);
    }
    for (;;) {
        if (jc_value(j, out) != 0)
            return -1;
        jc_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            jc_ws(j);
            evbuffer_add(out, ",", 1);
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return evbuffer_add(out, "]", 1);
        }
        return -1;
    }
}

static int jc_value(struct jc *j, struct evbuffer *out)
{
    int rc;

    if (j->p >= j->end)
        return -1;
    switch (*j->p) {
    case '{':
    case '[':
        if (++j->depth > JSONCANON_MAX_DEPTH)
            return -1;
        rc = *j->p == '{' ? jc_object(j, out) : jc_array(j, out);
        j->depth--;
        return rc;
    case '"': {
        struct evbuffer *raw = evbuffer_new();
        if (!raw)
            return -1;
        rc = jc_string(j, raw);
        if (rc == 0)
            rc = jc_emit_string(out,
                                evbuffer_get_length(raw) ? evbuffer_pullup(raw, -1)
                                                         : (const unsigned char *)"",
                                evbuffer_get_length(raw));
        evbuffer_free(raw);
        return rc;
    }
    case 't':
        return jc_lit(j, "true", out);
    case 'f':
        return jc_lit(j, "false", out);
    case 'n':
        return jc_lit(j, "null", out);
    default:
        return jc_number(j, out);
    }
}

int jsoncanon(struct evbuffer *out, const char *in, size_t len)
{
    struct jc j = {in, in + len, 0};
    struct evbuffer *tmp = evbuffer_new();
    int rc = -1;

    if (!tmp)
        return -1;
    jc_ws(&j);
    if (jc_value(&j, tmp) == 0) {
        jc_ws(&j);
        if (j.p == j.end)
            rc = evbuffer_add_buffer(out, tmp);
    }
    evbuffer_free(tmp);
    return rc;
}

int jsoncanon_members(const char *in, size_t len,
                      int (*cb)(const char *name, size_t nlen, const char *value, size_t vlen,
                                void *arg),
                      void *arg)
{
    struct jc j = {in, in + len, 1};
    struct evbuffer *name = evbuffer_new(), *value = evbuffer_new();
    int rc = -1;

    if (!name || !value)
        goto out;
    jc_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        goto out;
    j.p++;
    jc_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        rc = 0;
    }
    while (rc != 0) {
        evbuffer_drain(name, evbuffer_get_length(name));
        evbuffer_drain(value, evbuffer_get_length(value));
        if (jc_string(&j, name) != 0 || evbuffer_add(name, "", 1) != 0)
            goto out;
        jc_ws(&j);
        if (j.p >= j.end || *j.p != ':')
            goto out;
        j.p++;
        jc_ws(&j);
        if (jc_value(&j, value) != 0 || evbuffer_add(value, "", 1) != 0)
            goto out;
        if (cb((const char *)evbuffer_pullup(name, -1), evbuffer_get_length(name) - 1,
               (const char *)evbuffer_pullup(value, -1), evbuffer_get_length(value) - 1, arg))
            goto out;
        jc_ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            jc_ws(&j);
            continue;
        }
        if (j.p >= j.end || *j.p != '}')
            goto out;
        j.p++;
        rc = 0;
    }
    jc_ws(&j);
    if (j.p != j.end)
        rc = -1;
out:
    if (name)
        evbuffer_free(name);
    if (value)
        evbuffer_free(value);
    return rc;
}

int jsoncanon_string(const char *in, size_t len, struct evbuffer *out)
{
    struct jc j = {in, in + len, 0};

    jc_ws(&j);
    if (jc_string(&j, out) != 0)
        return -1;
    jc_ws(&j);
    return j.p == j.end ? 0 : -1;
}
