/*
 * problem_style — error templates (core/problem.h): loading, compiling per kind, and
 * problem_render(), the one renderer of the proxy's own answers.
 *
 * A template is compiled per kind at load: the layers that apply to a kind (the top
 * level, then its "Nxx" class, its "NNN" status, its slug) are merged, and variables and
 * the placeholders whose value the kind fixes (status, slug, type, title) are written
 * into the text, escaped, so what is left to fill in per answer is detail, instance and
 * request_id.
 */
#include "core/problem.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "core/conf.h"
#include "core/json.h"

enum ps_var { PS_DETAIL, PS_INSTANCE, PS_REQUEST_ID, PS_STATUS, PS_SLUG, PS_TYPE, PS_TITLE };
static const char *const ps_builtins[] = {
    [PS_DETAIL] = "detail", [PS_INSTANCE] = "instance", [PS_REQUEST_ID] = "request_id",
    [PS_STATUS] = "status", [PS_SLUG] = "slug",         [PS_TYPE] = "type",
    [PS_TITLE] = "title",
};
#define PS_NBUILTINS ((int)(sizeof(ps_builtins) / sizeof(ps_builtins[0])))
#define PS_RAW       (-1) /* a part that is text, already escaped */

/* How a value is written into the text around it. */
enum ps_esc {
    PS_ESC_NONE,   /* as it is (a body of another type; the template's own text) */
    PS_ESC_JSON,   /* JSON string escapes, without quotes */
    PS_ESC_MARKUP, /* & < > " ' as entities (XML, HTML) */
    PS_ESC_HEADER, /* control characters become spaces */
};

struct ps_part {
    int what; /* PS_RAW, or PS_DETAIL / PS_INSTANCE / PS_REQUEST_ID */
    char *raw;
    size_t len;
};

struct ps_text {
    struct ps_part *parts;
    size_t n;
};

struct ps_header {
    char *name;
    struct ps_text value;
};

struct ps_kind {
    int status;
    char *content_type;
    enum ps_esc esc; /* of the body */
    struct ps_text body;
    struct ps_header *headers;
    size_t nheaders;
};

struct problem_style {
    struct ps_kind kinds[PROBLEM_KIND_COUNT];
};

#define PS_MAX_NAMED 64 /* headers or variables in one layer; headers of one kind */
#define PS_MAX_DEPTH 32 /* nesting of the template file */

static void ps_emit(struct evbuffer *out, enum ps_esc esc, const char *s, size_t len)
{
    size_t run = 0;

    switch (esc) {
    case PS_ESC_NONE:
        evbuffer_add(out, s, len);
        return;
    case PS_ESC_JSON:
        problem_json_escape(out, s, len);
        return;
    case PS_ESC_MARKUP:
    case PS_ESC_HEADER:
        break;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        if (esc == PS_ESC_HEADER && (c < 0x20 || c == 0x7f))
            rep = " ";
        else if (esc == PS_ESC_MARKUP)
            rep = c == '&'    ? "&amp;"
                  : c == '<'  ? "&lt;"
                  : c == '>'  ? "&gt;"
                  : c == '"'  ? "&quot;"
                  : c == '\'' ? "&#39;"
                              : NULL;
        if (!rep)
            continue;
        evbuffer_add(out, s + run, i - run);
        evbuffer_add(out, rep, strlen(rep));
        run = i + 1;
    }
    evbuffer_add(out, s + run, len - run);
}

/* The escaping a content type asks for: JSON for application/json and any +json type,
 * markup for XML and HTML types, none otherwise. */
static enum ps_esc ps_esc_for(const char *content_type)
{
    size_t n = strcspn(content_type, ";");

    while (n && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
        n--;
    if ((n == 16 && strncasecmp(content_type, "application/json", 16) == 0) ||
        (n > 5 && strncasecmp(content_type + n - 5, "+json", 5) == 0))
        return PS_ESC_JSON;
    if (strcasestr(content_type, "xml") || strcasestr(content_type, "html"))
        return PS_ESC_MARKUP;
    return PS_ESC_NONE;
}

static void ps_text_free(struct ps_text *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->parts[i].raw);
    free(t->parts);
    t->parts = NULL;
    t->n = 0;
}

void problem_style_free(struct problem_style *style)
{
    if (!style)
        return;
    for (int k = 0; k < PROBLEM_KIND_COUNT; k++) {
        struct ps_kind *pk = &style->kinds[k];
        free(pk->content_type);
        ps_text_free(&pk->body);
        for (size_t i = 0; i < pk->nheaders; i++) {
            free(pk->headers[i].name);
            ps_text_free(&pk->headers[i].value);
        }
        free(pk->headers);
    }
    free(style);
}

/* ---- loading ---- */

struct ps_ctx {
    const char *origin;
    char *err;
    size_t errlen;
};

static int ps_fail_at(struct ps_ctx *c, unsigned line, unsigned col, const char *fmt, va_list ap)
{
    char msg[400];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    return conf_fail(c->err, c->errlen, "%s:%u:%u: %s", c->origin, line, col, msg);
}

static int ps_fail(struct ps_ctx *c, const struct json_value *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ps_fail_member(struct ps_ctx *c, const struct json_member *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "ORIGIN:LINE:COL: reason" (the position of at) into c->err. Returns -1. */
static int ps_fail(struct ps_ctx *c, const struct json_value *at, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ps_fail_at(c, at->line, at->col, fmt, ap);
    va_end(ap);
    return -1;
}

/* The same at the name of member m. */
static int ps_fail_member(struct ps_ctx *c, const struct json_member *m, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ps_fail_at(c, m->line, m->col, fmt, ap);
    va_end(ap);
    return -1;
}

/* What a compiled text is being built from: escaped text waiting to become a part. */
struct ps_build {
    struct evbuffer *raw;
    struct ps_part *parts;
    size_t n, cap;
};

static int ps_push(struct ps_build *b, int what)
{
    size_t len = evbuffer_get_length(b->raw);

    if (what == PS_RAW && len == 0)
        return 0;
    if (b->n == b->cap) {
        struct ps_part *np = realloc(b->parts, (b->cap = b->cap ? b->cap * 2 : 8) * sizeof(*np));
        if (!np)
            return -1;
        b->parts = np;
    }
    b->parts[b->n].what = what;
    b->parts[b->n].raw = NULL;
    b->parts[b->n].len = 0;
    if (what == PS_RAW) {
        if (!(b->parts[b->n].raw = malloc(len)))
            return -1;
        evbuffer_remove(b->raw, b->parts[b->n].raw, len);
        b->parts[b->n].len = len;
    }
    b->n++;
    return 0;
}

/* Flush what is pending into a part and hand the parts to out (b is emptied). */
static int ps_finish(struct ps_build *b, struct ps_text *out)
{
    if (ps_push(b, PS_RAW) < 0)
        return -1;
    out->parts = b->parts;
    out->n = b->n;
    b->parts = NULL;
    b->n = b->cap = 0;
    return 0;
}

/* A member of a layer's "headers" or "vars", as the layers of one kind merge them. */
struct ps_named {
    const char *name;
    const struct json_value *value;
};

/* What applies to one kind once its layers are merged. */
struct ps_resolved {
    const struct json_value *content_type, *status, *body;
    struct ps_named headers[4 * PS_MAX_NAMED], vars[4 * PS_MAX_NAMED];
    size_t nheaders, nvars;
};

/* A variable name: letters, digits and '_'. */
static int ps_is_name(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

static int ps_builtin(const char *s, size_t len)
{
    for (int i = 0; i < PS_NBUILTINS; i++)
        if (strlen(ps_builtins[i]) == len && memcmp(ps_builtins[i], s, len) == 0)
            return i;
    return -1;
}

/*
 * Compile the string s (len bytes, from the template value at) into b: the template's
 * own text escaped by lit_esc, each placeholder's value by val_esc. kind fixes status,
 * slug, type and title; vars (NULL inside a variable's value: variables may use only
 * the built-in placeholders) holds the kind's variables.
 */
static int ps_compile_string(struct ps_ctx *c, struct ps_build *b, const struct json_value *at,
                             const char *s, size_t len, enum ps_esc lit_esc, enum ps_esc val_esc,
                             const struct problem_type *kind, int status,
                             const struct ps_resolved *vars)
{
    size_t i = 0;

    while (i < len) {
        const char *open = memmem(s + i, len - i, "{{", 2);
        const char *name, *close;
        size_t nlen;
        int bi;

        if (!open) {
            ps_emit(b->raw, lit_esc, s + i, len - i);
            break;
        }
        ps_emit(b->raw, lit_esc, s + i, (size_t)(open - (s + i)));
        name = open + 2;
        close = memmem(name, len - (size_t)(name - s), "}}", 2);
        nlen = close ? (size_t)(close - name) : 0;
        if (!close || !ps_is_name(name, nlen))
            return ps_fail(c, at,
                           "malformed placeholder near \"%.24s\" (write {{name}}: letters, "
                           "digits and _)",
                           open);
        i = (size_t)(close + 2 - s);
        bi = ps_builtin(name, nlen);
        if (bi == PS_DETAIL || bi == PS_INSTANCE || bi == PS_REQUEST_ID) {
            if (ps_push(b, PS_RAW) < 0 || ps_push(b, bi) < 0)
                return ps_fail(c, at, "out of memory");
            continue;
        }
        if (bi == PS_STATUS) {
            char num[16];
            snprintf(num, sizeof(num), "%d", status);
            ps_emit(b->raw, val_esc, num, strlen(num));
            continue;
        }
        if (bi == PS_TYPE) {
            ps_emit(b->raw, val_esc, PROBLEM_TYPE_BASE, strlen(PROBLEM_TYPE_BASE));
            ps_emit(b->raw, val_esc, kind->slug, strlen(kind->slug));
            continue;
        }
        if (bi == PS_SLUG || bi == PS_TITLE) {
            const char *v = bi == PS_SLUG ? kind->slug : kind->title;
            ps_emit(b->raw, val_esc, v, strlen(v));
            continue;
        }
        if (!vars)
            return ps_fail(c, at,
                           "{{%.*s}}: a variable's value may use only the built-in "
                           "placeholders, not another variable",
                           (int)nlen, name);
        {
            const struct ps_named *v = NULL;
            for (size_t j = vars->nvars; j-- > 0;) {
                if (strlen(vars->vars[j].name) == nlen &&
                    memcmp(vars->vars[j].name, name, nlen) == 0) {
                    v = &vars->vars[j];
                    break;
                }
            }
            if (!v)
                return ps_fail(c, at,
                               "unknown placeholder {{%.*s}} for kind %s (built-in: status, "
                               "slug, type, title, detail, instance, request_id; or define it "
                               "in \"vars\")",
                               (int)nlen, name, kind->slug);
            if (ps_compile_string(c, b, v->value, v->value->str, v->value->len, val_esc, val_esc,
                                  kind, status, NULL) < 0)
                return -1;
        }
    }
    return 0;
}

/* A body given as a JSON value: written compactly, placeholders inside its strings. */
static int ps_compile_json(struct ps_ctx *c, struct ps_build *b, const struct json_value *v,
                           const struct problem_type *kind, int status,
                           const struct ps_resolved *vars)
{
    switch (v->type) {
    case JSON_NULL:
        evbuffer_add(b->raw, "null", 4);
        return 0;
    case JSON_TRUE:
        evbuffer_add(b->raw, "true", 4);
        return 0;
    case JSON_FALSE:
        evbuffer_add(b->raw, "false", 5);
        return 0;
    case JSON_NUMBER:
        evbuffer_add(b->raw, v->str, v->len);
        return 0;
    case JSON_STRING:
        evbuffer_add(b->raw, "\"", 1);
        if (ps_compile_string(c, b, v, v->str, v->len, PS_ESC_JSON, PS_ESC_JSON, kind, status,
                              vars) < 0)
            return -1;
        evbuffer_add(b->raw, "\"", 1);
        return 0;
    case JSON_ARRAY:
        evbuffer_add(b->raw, "[", 1);
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                evbuffer_add(b->raw, ",", 1);
            if (ps_compile_json(c, b, &v->items[i], kind, status, vars) < 0)
                return -1;
        }
        evbuffer_add(b->raw, "]", 1);
        return 0;
    case JSON_OBJECT:
        evbuffer_add(b->raw, "{", 1);
        for (size_t i = 0; i < v->n; i++) {
            const struct json_member *m = &v->members[i];
            evbuffer_add(b->raw, i ? ",\"" : "\"", i ? 2 : 1);
            problem_json_escape(b->raw, m->name, m->name_len);
            evbuffer_add(b->raw, "\":", 2);
            if (ps_compile_json(c, b, &m->value, kind, status, vars) < 0)
                return -1;
        }
        evbuffer_add(b->raw, "}", 1);
        return 0;
    }
    return -1;
}

/* Header names the proxy writes itself, or that a record drops (hop-by-hop). */
static const char *const ps_reserved_headers[] = {"Content-Length",
                                                  "Transfer-Encoding",
                                                  "Connection",
                                                  "Keep-Alive",
                                                  "Proxy-Connection",
                                                  "TE",
                                                  "Trailer",
                                                  "Upgrade",
                                                  "Idempotent-Replayed",
                                                  NULL};

/* Does a string hold a byte no header value may (a control character but HTAB)? */
static int ps_has_ctl(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            return 1;
    return 0;
}

/* Check one "headers" or "vars" object of a layer. */
static int ps_check_named(struct ps_ctx *c, const struct json_value *obj, int headers)
{
    const char *what = headers ? "headers" : "vars";

    if (obj->type != JSON_OBJECT)
        return ps_fail(c, obj, "\"%s\" must be an object of strings", what);
    if (obj->n > PS_MAX_NAMED)
        return ps_fail(c, obj, "more than %d %s", PS_MAX_NAMED, what);
    for (size_t i = 0; i < obj->n; i++) {
        const struct json_member *m = &obj->members[i];
        const struct json_value *at = &m->value;
        if (m->value.type != JSON_STRING)
            return ps_fail(c, at, "%s \"%s\": the value must be a string, not %s", what, m->name,
                           json_type_str(m->value.type));
        if (strlen(m->value.str) != m->value.len)
            return ps_fail(c, at, "%s \"%s\": NUL in the value", what, m->name);
        if (!headers) {
            if (!ps_is_name(m->name, m->name_len))
                return ps_fail_member(c, m, "variable name \"%s\": use letters, digits and _",
                                      m->name);
            if (ps_builtin(m->name, m->name_len) >= 0)
                return ps_fail_member(c, m, "variable name \"%s\" is a built-in placeholder",
                                      m->name);
            continue;
        }
        if (strlen(m->name) != m->name_len || !conf_is_token(m->name))
            return ps_fail_member(c, m, "header name \"%s\" is not a valid field name", m->name);
        if (strcasecmp(m->name, "Content-Type") == 0)
            return ps_fail_member(c, m, "header %s: give it as \"content_type\"", m->name);
        for (const char *const *r = ps_reserved_headers; *r; r++)
            if (strcasecmp(*r, m->name) == 0)
                return ps_fail_member(c, m, "header %s is the proxy's own", m->name);
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(obj->members[j].name, m->name) == 0)
                return ps_fail_member(c, m, "header %s given twice", m->name);
        if (ps_has_ctl(m->value.str, m->value.len))
            return ps_fail(c, at, "header %s: control character in the value", m->name);
    }
    return 0;
}

/* Check a layer: the top level (top) or an entry of "kinds". */
static int ps_check_layer(struct ps_ctx *c, const struct json_value *layer, int top)
{
    if (layer->type != JSON_OBJECT)
        return ps_fail(c, layer, "%s must be an object", top ? "the template" : "a kind's entry");
    for (size_t i = 0; i < layer->n; i++) {
        const struct json_member *m = &layer->members[i];
        const struct json_value *v = &m->value;
        if (strcmp(m->name, "comment") == 0 || strcmp(m->name, "body") == 0) {
            continue;
        } else if (strcmp(m->name, "content_type") == 0) {
            if (v->type != JSON_STRING || v->len == 0 || v->len > 200 || !strchr(v->str, '/') ||
                strlen(v->str) != v->len || ps_has_ctl(v->str, v->len))
                return ps_fail(c, v,
                               "\"content_type\" must be a media type such as "
                               "\"application/json\"");
        } else if (strcmp(m->name, "headers") == 0 || strcmp(m->name, "vars") == 0) {
            if (ps_check_named(c, v, m->name[0] == 'h') < 0)
                return -1;
        } else if (!top && strcmp(m->name, "status") == 0) {
            if (v->type != JSON_NUMBER || v->len != 3 || !isdigit((unsigned char)v->str[0]) ||
                !isdigit((unsigned char)v->str[1]) || !isdigit((unsigned char)v->str[2]) ||
                atoi(v->str) < 400 || atoi(v->str) > 599)
                return ps_fail(c, v, "\"status\" must be a number from 400 to 599");
        } else if (top && strcmp(m->name, "kinds") == 0) {
            continue; /* checked by ps_check_kinds */
        } else {
            return ps_fail(c, v, "unknown member \"%s\" (%s)", m->name,
                           top ? "content_type, body, headers, vars, kinds or comment"
                               : "status, content_type, body, headers, vars or comment");
        }
    }
    return 0;
}

/* Which kinds a key of "kinds" selects: a slug, a status "NNN" or a class "Nxx". */
static int ps_selects(const char *key, int k)
{
    const struct problem_type *t = problem_type(k);
    char num[8];

    if (strcmp(key, t->slug) == 0)
        return 1;
    snprintf(num, sizeof(num), "%d", t->status);
    if (strcmp(key, num) == 0)
        return 1;
    return strlen(key) == 3 && key[0] == num[0] && strcmp(key + 1, "xx") == 0;
}

static int ps_check_kinds(struct ps_ctx *c, const struct json_value *kinds)
{
    if (kinds->type != JSON_OBJECT)
        return ps_fail(c, kinds, "\"kinds\" must be an object");
    for (size_t i = 0; i < kinds->n; i++) {
        const struct json_member *m = &kinds->members[i];
        int k, any = 0;
        for (k = 0; k < PROBLEM_KIND_COUNT; k++)
            any |= ps_selects(m->name, k);
        if (!any)
            return ps_fail(c, &m->value,
                           "\"%s\" is no kind of error: use a slug (README \"Errors the proxy "
                           "produces\"), a status such as \"503\" or a class such as \"4xx\"",
                           m->name);
        if (ps_check_layer(c, &m->value, 0) < 0)
            return -1;
    }
    return 0;
}

/* Merge one layer (NULL: none) into r: later layers win, headers and vars by name. */
static void ps_merge(struct ps_resolved *r, const struct json_value *layer)
{
    const struct json_value *v;

    if (!layer)
        return;
    if ((v = json_get(layer, "content_type")))
        r->content_type = v;
    if ((v = json_get(layer, "status")))
        r->status = v;
    if ((v = json_get(layer, "body")))
        r->body = v;
    for (int h = 0; h < 2; h++) {
        const struct json_value *obj = json_get(layer, h ? "headers" : "vars");
        struct ps_named *list = h ? r->headers : r->vars;
        size_t *n = h ? &r->nheaders : &r->nvars;
        for (size_t i = 0; obj && i < obj->n; i++) {
            const struct json_member *m = &obj->members[i];
            size_t j;
            for (j = 0; j < *n; j++)
                if (h ? strcasecmp(list[j].name, m->name) == 0 : strcmp(list[j].name, m->name) == 0)
                    break;
            if (j == *n) {
                (*n)++;                 /* bounded: 4 layers of at most PS_MAX_NAMED each */
                list[j].name = m->name; /* a header keeps its first spelling and place */
            }
            list[j].value = &m->value;
        }
    }
}

/* The layers of kind k, in order: the top level, its class, its status, its slug. */
static int ps_compile_kind(struct ps_ctx *c, const struct json_value *root, int k,
                           struct ps_kind *out)
{
    const struct problem_type *t = problem_type(k);
    const struct json_value *kinds = json_get(root, "kinds");
    struct ps_resolved *r = calloc(1, sizeof(*r));
    struct ps_build b = {.raw = evbuffer_new()};
    char cls[4], num[4];
    int rc = -1;

    if (!r || !b.raw) {
        conf_fail(c->err, c->errlen, "%s: out of memory", c->origin);
        goto out;
    }
    snprintf(num, sizeof(num), "%d", t->status);
    snprintf(cls, sizeof(cls), "%cxx", num[0]);
    ps_merge(r, root);
    ps_merge(r, json_get(kinds, cls));
    ps_merge(r, json_get(kinds, num));
    ps_merge(r, json_get(kinds, t->slug));

    out->status = r->status ? atoi(r->status->str) : t->status;
    out->content_type = strdup(r->content_type ? r->content_type->str : "application/json");
    if (!out->content_type) {
        conf_fail(c->err, c->errlen, "%s: out of memory", c->origin);
        goto out;
    }
    out->esc = ps_esc_for(out->content_type);
    if (!r->body) {
        ps_fail(c, root, "no \"body\" for kind %s (give one at the top level)", t->slug);
        goto out;
    }
    if (r->body->type == JSON_STRING) {
        if (ps_compile_string(c, &b, r->body, r->body->str, r->body->len, PS_ESC_NONE, out->esc, t,
                              out->status, r) < 0)
            goto out;
    } else if (out->esc != PS_ESC_JSON) {
        ps_fail(c, r->body,
                "a body written as JSON needs a JSON content type, not %s (for kind %s); "
                "write another type's body as a string",
                out->content_type, t->slug);
        goto out;
    } else if (ps_compile_json(c, &b, r->body, t, out->status, r) < 0) {
        goto out;
    }
    if (ps_finish(&b, &out->body) < 0)
        goto oom;
    if (r->nheaders > PS_MAX_NAMED) { /* a record keeps at most 128 header fields */
        ps_fail(c, root, "more than %d headers for kind %s", PS_MAX_NAMED, t->slug);
        goto out;
    }
    if (r->nheaders && !(out->headers = calloc(r->nheaders, sizeof(*out->headers))))
        goto oom;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct json_value *v = r->headers[i].value;
        if (!(out->headers[i].name = strdup(r->headers[i].name)))
            goto oom;
        out->nheaders++;
        if (ps_compile_string(c, &b, v, v->str, v->len, PS_ESC_NONE, PS_ESC_HEADER, t, out->status,
                              r) < 0)
            goto out;
        if (ps_finish(&b, &out->headers[i].value) < 0)
            goto oom;
    }
    rc = 0;
    goto out;
oom:
    conf_fail(c->err, c->errlen, "%s: out of memory", c->origin);
out:
    for (size_t i = 0; i < b.n; i++)
        free(b.parts[i].raw);
    free(b.parts);
    if (b.raw)
        evbuffer_free(b.raw);
    free(r);
    return rc;
}

struct problem_style *problem_style_parse(const char *text, size_t len, const char *origin,
                                          char *err, size_t errlen)
{
    struct ps_ctx c = {origin, err, errlen};
    struct problem_style *style = NULL;
    const struct json_value *kinds;
    struct json_value *root;
    char jerr[256];

    if (!(root = json_parse(text, len, PS_MAX_DEPTH, jerr, sizeof(jerr)))) {
        conf_fail(err, errlen, "%s:%s", origin, jerr);
        return NULL;
    }
    if (ps_check_layer(&c, root, 1) < 0)
        goto fail;
    if ((kinds = json_get(root, "kinds")) && ps_check_kinds(&c, kinds) < 0)
        goto fail;
    if (!(style = calloc(1, sizeof(*style)))) {
        conf_fail(err, errlen, "%s: out of memory", origin);
        goto fail;
    }
    for (int k = 0; k < PROBLEM_KIND_COUNT; k++)
        if (ps_compile_kind(&c, root, k, &style->kinds[k]) < 0)
            goto fail;
    json_free(root);
    return style;
fail:
    problem_style_free(style);
    json_free(root);
    return NULL;
}

struct problem_style *problem_style_load(const char *path, char *err, size_t errlen)
{
    struct problem_style *style = NULL;
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t n = 0;

    if (!f) {
        conf_fail(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (!(text = malloc(PROBLEM_STYLE_MAX_FILE + 1))) {
        conf_fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    n = fread(text, 1, PROBLEM_STYLE_MAX_FILE + 1, f);
    if (ferror(f))
        conf_fail(err, errlen, "%s: %s", path, strerror(errno));
    else if (n > PROBLEM_STYLE_MAX_FILE)
        conf_fail(err, errlen, "%s: larger than %d bytes", path, PROBLEM_STYLE_MAX_FILE);
    else
        style = problem_style_parse(text, n, path, err, errlen);
out:
    free(text);
    fclose(f);
    return style;
}

/* ---- rendering ---- */

static void ps_render_text(struct evbuffer *out, const struct ps_text *t, enum ps_esc esc,
                           const char *const values[3])
{
    for (size_t i = 0; i < t->n; i++) {
        const struct ps_part *p = &t->parts[i];
        if (p->what == PS_RAW)
            evbuffer_add(out, p->raw, p->len);
        else if (values[p->what])
            ps_emit(out, esc, values[p->what], strlen(values[p->what]));
    }
}

/* Does extra (header lines) have a line for name? */
static int ps_extra_names(const char *extra, const char *name)
{
    size_t n = strlen(name);

    for (const char *l = extra; l && *l;) {
        const char *eol = strchr(l, '\n');
        if (strncasecmp(l, name, n) == 0 && l[n] == ':')
            return 1;
        l = eol ? eol + 1 : NULL;
    }
    return 0;
}

static int ps_render(const struct ps_kind *pk, struct evbuffer *body, struct evbuffer *hdrs,
                     const char *detail, const char *instance, const char *request_id,
                     const char *extra)
{
    const char *values[3] = {
        [PS_DETAIL] = detail, [PS_INSTANCE] = instance, [PS_REQUEST_ID] = request_id};

    ps_render_text(body, &pk->body, pk->esc, values);
    evbuffer_add_printf(hdrs, "Content-Type: %s\r\n", pk->content_type);
    if (extra)
        evbuffer_add(hdrs, extra, strlen(extra));
    for (size_t i = 0; i < pk->nheaders; i++) {
        if (ps_extra_names(extra, pk->headers[i].name))
            continue; /* the call site's own (Retry-After) is kept */
        evbuffer_add_printf(hdrs, "%s: ", pk->headers[i].name);
        ps_render_text(hdrs, &pk->headers[i].value, PS_ESC_HEADER, values);
        evbuffer_add(hdrs, "\r\n", 2);
    }
    evbuffer_add(hdrs, "", 1);
    return pk->status;
}

int problem_render(const struct problem_style *style, struct evbuffer *body, struct evbuffer *hdrs,
                   enum problem_kind kind, const char *detail, const char *instance,
                   const char *request_id, const char *extra)
{
    const struct problem_type *t = problem_type(kind);

    if ((unsigned)kind >= PROBLEM_KIND_COUNT)
        kind = PROBLEM_INTERNAL_ERROR; /* as problem_type() does */
    if (style)
        return ps_render(&style->kinds[kind], body, hdrs, detail, instance, request_id, extra);
    problem_body(body, kind, detail, instance, request_id);
    evbuffer_add(hdrs, "Content-Type: application/problem+json\r\n", 40);
    if (extra)
        evbuffer_add(hdrs, extra, strlen(extra));
    evbuffer_add(hdrs, "", 1);
    return t->status;
}
