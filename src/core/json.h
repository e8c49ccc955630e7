/*
 * json — strict RFC 8259 reading, for the few places that read JSON: the lexical pieces
 * (whitespace, literals, strings, numbers), which idem/jsoncanon builds its canonical
 * form on, and a small tree with line:column positions for files read once at startup
 * (the error templates of core/problem.h), whose errors must say where.
 *
 * Strict: one value, no comments, no trailing commas, no leading zeros, escapes as RFC
 * 8259 lists them (a \u surrogate must be a valid pair); UTF-8 is not validated beyond
 * escapes. The tree refuses duplicate member names.
 */
#ifndef IDEMPROXY_CORE_JSON_H
#define IDEMPROXY_CORE_JSON_H

#include <stddef.h>

struct evbuffer;

/* ---- lexical pieces: each reads at *p (never past end) and moves *p past what it
 * read; on failure (-1) *p is where reading stopped ---- */

/* Skip JSON whitespace (space, tab, CR, LF). */
void json_skip_ws(const char **p, const char *end);

/* The literal word ("true", "false", "null"). 0 or -1. */
int json_read_literal(const char **p, const char *end, const char *word);

/* A string at *p (its opening quote), unescaped (\uXXXX as UTF-8) and appended to raw.
 * 0, or -1: unterminated, a raw control character, or a bad escape (raw may then hold
 * part of it). */
int json_read_string(const char **p, const char *end, struct evbuffer *raw);

/* A number by the RFC 8259 grammar; its text is what *p moved over. 0 or -1. */
int json_read_number(const char **p, const char *end);

/* ---- a tree ---- */

enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
};

struct json_member;

struct json_value {
    enum json_type type;
    unsigned line, col; /* where the value starts: 1-based line, byte column */
    char *str;          /* STRING: unescaped, NUL-terminated (may hold NULs: see len);
                           NUMBER: the text as written; NULL otherwise */
    size_t len;
    struct json_value *items;    /* ARRAY: n items */
    struct json_member *members; /* OBJECT: n members in document order, names unique */
    size_t n;
};

struct json_member {
    char *name; /* unescaped, NUL-terminated */
    size_t name_len;
    unsigned line, col; /* where the name starts */
    struct json_value value;
};

/*
 * Parse the whole of text (len bytes): one value, nesting at most max_depth arrays and
 * objects. Returns the tree (free with json_free), or NULL with err set to
 * "LINE:COL: reason" — the position of the byte where reading stopped.
 */
struct json_value *json_parse(const char *text, size_t len, int max_depth, char *err,
                              size_t errlen);

/* Free a tree from json_parse (NULL: nothing). */
void json_free(struct json_value *v);

/* Member name of object obj, or NULL (also when obj is not an object). */
const struct json_value *json_get(const struct json_value *obj, const char *name);

/* "string", "object", ... for messages. */
const char *json_type_str(enum json_type t);

#endif
