/*
 * ledger — a small JSON reader, just enough for the ledger document (see ledger.h).
 *
 * Recursive descent over a bounded buffer; skipping a value recurses at most
 * LEDGER_MAX_DEPTH deep, so hostile input cannot exhaust the stack.
 */
#include "ledger.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct ledger_rd {
    const char *p, *start, *end;
    char *err;
    size_t errlen;
    int failed;
};

static int ledger_fail(struct ledger_rd *rd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int ledger_fail(struct ledger_rd *rd, const char *fmt, ...)
{
    char msg[160];
    va_list ap;

    if (rd->failed)
        return -1;
    rd->failed = 1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (rd->errlen > 0)
        snprintf(rd->err, rd->errlen, "offset %zu: %s", (size_t)(rd->p - rd->start), msg);
    return -1;
}

static void ledger_ws(struct ledger_rd *rd)
{
    while (rd->p < rd->end && (*rd->p == ' ' || *rd->p == '\t' || *rd->p == '\n' || *rd->p == '\r'))
        rd->p++;
}

static int ledger_expect(struct ledger_rd *rd, char c)
{
    ledger_ws(rd);
    if (rd->p >= rd->end || *rd->p != c)
        return ledger_fail(rd, "expected '%c'", c);
    rd->p++;
    return 0;
}

static int ledger_peek(struct ledger_rd *rd)
{
    ledger_ws(rd);
    return rd->p < rd->end ? (unsigned char)*rd->p : -1;
}

static int ledger_hex4(struct ledger_rd *rd, unsigned *out)
{
    unsigned v = 0;

    if (rd->end - rd->p < 4)
        return ledger_fail(rd, "short \\u escape");
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)rd->p[i];

        if (!isxdigit(c))
            return ledger_fail(rd, "bad \\u escape");
        v = v * 16 + (unsigned)(isdigit(c) ? c - '0' : tolower(c) - 'a' + 10);
    }
    rd->p += 4;
    *out = v;
    return 0;
}

static void ledger_put(char *out, size_t cap, size_t *n, unsigned char c)
{
    if (out != NULL && *n < cap)
        out[*n] = (char)c;
    (*n)++;
}

static void ledger_put_utf8(char *out, size_t cap, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        ledger_put(out, cap, n, (unsigned char)cp);
    } else if (cp < 0x800) {
        ledger_put(out, cap, n, (unsigned char)(0xc0 | (cp >> 6)));
        ledger_put(out, cap, n, (unsigned char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        ledger_put(out, cap, n, (unsigned char)(0xe0 | (cp >> 12)));
        ledger_put(out, cap, n, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        ledger_put(out, cap, n, (unsigned char)(0x80 | (cp & 0x3f)));
    } else {
        ledger_put(out, cap, n, (unsigned char)(0xf0 | (cp >> 18)));
        ledger_put(out, cap, n, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
        ledger_put(out, cap, n, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        ledger_put(out, cap, n, (unsigned char)(0x80 | (cp & 0x3f)));
    }
}

/* A string; decoded into out (up to cap bytes, may be NULL) with the full length in *n. */
static int ledger_string(struct ledger_rd *rd, char *out, size_t cap, size_t *n)
{
    *n = 0;
    if (ledger_expect(rd, '"') < 0)
        return -1;
    while (rd->p < rd->end) {
        unsigned char c = (unsigned char)*rd->p++;

        if (c == '"')
            return 0;
        if (c < 0x20)
            return ledger_fail(rd, "control byte in a string");
        if (c != '\\') {
            ledger_put(out, cap, n, c);
            continue;
        }
        if (rd->p >= rd->end)
            break;
        c = (unsigned char)*rd->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            ledger_put(out, cap, n, c);
            break;
        case 'b':
            ledger_put(out, cap, n, '\b');
            break;
        case 'f':
            ledger_put(out, cap, n, '\f');
            break;
        case 'n':
            ledger_put(out, cap, n, '\n');
            break;
        case 'r':
            ledger_put(out, cap, n, '\r');
            break;
        case 't':
            ledger_put(out, cap, n, '\t');
            break;
        case 'u': {
            unsigned cp, lo;

            if (ledger_hex4(rd, &cp) < 0)
                return -1;
            if (cp >= 0xd800 && cp < 0xdc00 && rd->end - rd->p >= 6 && rd->p[0] == '\\' &&
                rd->p[1] == 'u') {
                rd->p += 2;
                if (ledger_hex4(rd, &lo) < 0)
                    return -1;
                if (lo >= 0xdc00 && lo < 0xe000)
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                    cp = 0xfffd;
            } else if (cp >= 0xd800 && cp < 0xe000) {
                cp = 0xfffd;
            }
            ledger_put_utf8(out, cap, n, cp);
            break;
        }
        default:
            return ledger_fail(rd, "bad escape '\\%c'", c);
        }
    }
    return ledger_fail(rd, "unterminated string");
}

/* A JSON number; *u gets it when it is a non-negative integer (*is_uint = 1). */
static int ledger_number(struct ledger_rd *rd, uint64_t *u, int *is_uint)
{
    const char *s = rd->p;
    uint64_t v = 0;
    int overflow = 0;

    *is_uint = 0;
    if (rd->p < rd->end && *rd->p == '-')
        rd->p++;
    if (rd->p >= rd->end || !isdigit((unsigned char)*rd->p))
        return ledger_fail(rd, "bad number");
    while (rd->p < rd->end && isdigit((unsigned char)*rd->p)) {
        if (v > (UINT64_MAX - 9) / 10)
            overflow = 1;
        v = v * 10 + (uint64_t)(*rd->p - '0');
        rd->p++;
    }
    *is_uint = *s != '-' && !overflow;
    if (rd->p < rd->end && *rd->p == '.') {
        *is_uint = 0;
        rd->p++;
        if (rd->p >= rd->end || !isdigit((unsigned char)*rd->p))
            return ledger_fail(rd, "bad number");
        while (rd->p < rd->end && isdigit((unsigned char)*rd->p))
            rd->p++;
    }
    if (rd->p < rd->end && (*rd->p == 'e' || *rd->p == 'E')) {
        *is_uint = 0;
        rd->p++;
        if (rd->p < rd->end && (*rd->p == '+' || *rd->p == '-'))
            rd->p++;
        if (rd->p >= rd->end || !isdigit((unsigned char)*rd->p))
            return ledger_fail(rd, "bad number");
        while (rd->p < rd->end && isdigit((unsigned char)*rd->p))
            rd->p++;
    }
    *u = v;
    return 0;
}

static int ledger_literal(struct ledger_rd *rd, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(rd->end - rd->p) < n || memcmp(rd->p, lit, n) != 0)
        return ledger_fail(rd, "unexpected byte");
    rd->p += n;
    return 0;
}

static int ledger_skip(struct ledger_rd *rd, int depth)
{
    int c = ledger_peek(rd);
    size_t n;

    if (depth > LEDGER_MAX_DEPTH)
        return ledger_fail(rd, "nested deeper than %d", LEDGER_MAX_DEPTH);
    if (c == '"')
        return ledger_string(rd, NULL, 0, &n);
    if (c == '-' || (c >= '0' && c <= '9')) {
        uint64_t u;
        int is_uint;

        return ledger_number(rd, &u, &is_uint);
    }
    if (c == 't')
        return ledger_literal(rd, "true");
    if (c == 'f')
        return ledger_literal(rd, "false");
    if (c == 'n')
        return ledger_literal(rd, "null");
    if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';

        rd->p++;
        if (ledger_peek(rd) == close) {
            rd->p++;
            return 0;
        }
        for (;;) {
            if (close == '}' && (ledger_string(rd, NULL, 0, &n) < 0 || ledger_expect(rd, ':') < 0))
                return -1;
            if (ledger_skip(rd, depth + 1) < 0)
                return -1;
            c = ledger_peek(rd);
            if (c == ',') {
                rd->p++;
                continue;
            }
            return ledger_expect(rd, close);
        }
    }
    return ledger_fail(rd, c < 0 ? "unexpected end" : "unexpected byte");
}

static int ledger_keys(struct ledger_rd *rd, ledger_key_fn fn, void *arg)
{
    char key[LEDGER_KEY_MAX];

    if (ledger_expect(rd, '{') < 0)
        return -1;
    if (ledger_peek(rd) == '}') {
        rd->p++;
        return 0;
    }
    for (;;) {
        size_t n;
        uint64_t count;
        int is_uint;

        if (ledger_string(rd, key, sizeof(key), &n) < 0 || ledger_expect(rd, ':') < 0)
            return -1;
        ledger_ws(rd);
        if (ledger_number(rd, &count, &is_uint) < 0)
            return -1;
        if (!is_uint)
            return ledger_fail(rd, "a count must be a non-negative integer");
        fn(arg, key, n < sizeof(key) ? n : sizeof(key), count);
        if (ledger_peek(rd) == ',') {
            rd->p++;
            continue;
        }
        return ledger_expect(rd, '}');
    }
}

int ledger_parse(const char *json, size_t len, uint64_t *total, ledger_key_fn fn, void *arg,
                 char *err, size_t errlen)
{
    struct ledger_rd rd = {json, json, json + len, err, errlen, 0};
    int have_keys = 0;
    char name[16];

    *total = 0;
    if (ledger_expect(&rd, '{') < 0)
        return -1;
    if (ledger_peek(&rd) != '}') {
        for (;;) {
            size_t n;

            if (ledger_string(&rd, name, sizeof(name) - 1, &n) < 0 || ledger_expect(&rd, ':') < 0)
                return -1;
            name[n < sizeof(name) - 1 ? n : sizeof(name) - 1] = '\0';
            ledger_ws(&rd);
            if (n == 4 && strcmp(name, "keys") == 0) {
                if (ledger_keys(&rd, fn, arg) < 0)
                    return -1;
                have_keys = 1;
            } else if (n == 5 && strcmp(name, "total") == 0) {
                int is_uint;

                if (ledger_number(&rd, total, &is_uint) < 0)
                    return -1;
                if (!is_uint)
                    return ledger_fail(&rd, "\"total\" must be a non-negative integer");
            } else if (ledger_skip(&rd, 1) < 0) {
                return -1;
            }
            if (ledger_peek(&rd) == ',') {
                rd.p++;
                continue;
            }
            break;
        }
    }
    if (ledger_expect(&rd, '}') < 0)
        return -1;
    if (ledger_peek(&rd) != -1)
        return ledger_fail(&rd, "trailing bytes after the document");
    if (!have_keys)
        return ledger_fail(&rd, "no \"keys\" object");
    return 0;
}
