#include "http/http1.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "core/bytes.h"

/* chunked decoder states */
enum { CH_SIZE = 0, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_DONE };

static int http1_fail(struct http1_error *err, enum problem_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The one place an http1_error is filled: status and slug come from the problem table. */
static void http1_set_kind(struct http1_error *err, enum problem_kind kind)
{
    const struct problem_type *t = problem_type(kind);

    err->kind = kind;
    err->status = t->status;
    err->slug = t->slug;
}

static int http1_fail(struct http1_error *err, enum problem_kind kind, const char *fmt, ...)
{
    va_list ap;

    if (err) {
        http1_set_kind(err, kind);
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* tchar (RFC 9110 §5.6.2): ALPHA / DIGIT / "!#$%&'*+-.^_`|~", as a table (the parser
 * asks once per byte of every field name) */
static const unsigned char http1_tchars[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

int http1_is_tchar(unsigned char c)
{
    return http1_tchars[c];
}

/* field-content: VCHAR / obs-text / SP / HTAB */
static int http1_is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Past the first CRLFCRLF in p[0..len), or NULL: memchr for each LF (vectorised in libc),
 * then a look at the three bytes before it. */
static const char *http1_find_end(const char *p, size_t len)
{
    const char *end = p + len, *q = p;

    while (q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        if (q - p >= 3 && q[-1] == '\r' && q[-2] == '\n' && q[-3] == '\r')
            return q + 1;
        q++;
    }
    return NULL;
}

long http1_head_end(struct evbuffer *buf, size_t *scan, size_t max, int is_request)
{
    struct evbuffer_ptr p;
    size_t len;

    if (is_request && *scan == 0) {
        /* Tolerate (and drop) empty lines before the request line. */
        unsigned char two[2];
        while (evbuffer_copyout(buf, two, 2) == 2 && two[0] == '\r' && two[1] == '\n')
            evbuffer_drain(buf, 2);
    }
    len = evbuffer_get_length(buf);
    if (len < 4)
        return 0;
    if (*scan == 0) {
        /* the common case: a head that arrived whole, in the buffer's first chain */
        struct evbuffer_iovec v;
        const char *end;

        if (evbuffer_peek(buf, -1, NULL, &v, 1) == 1 && v.iov_len == len &&
            (end = http1_find_end(v.iov_base, len)) != NULL) {
            size_t n = (size_t)(end - (const char *)v.iov_base);
            return n > max ? -1 : (long)n;
        }
    }
    if (*scan > 3 && *scan <= len) {
        if (evbuffer_ptr_set(buf, &p, *scan - 3, EVBUFFER_PTR_SET) < 0)
            return -1;
        p = evbuffer_search(buf, "\r\n\r\n", 4, &p);
    } else {
        p = evbuffer_search(buf, "\r\n\r\n", 4, NULL);
    }
    if (p.pos >= 0) {
        if ((size_t)p.pos + 4 > max)
            return -1;
        return (long)p.pos + 4;
    }
    /* No end yet. A line ended by a bare LF would never be followed by CRLFCRLF: say so
     * now instead of waiting for a timeout. Only the bytes new since the last call are
     * looked at (from *scan - 1, so an LF right after an old CR is seen with it). */
    {
        size_t from = *scan > 0 ? *scan - 1 : 0;
        struct evbuffer_ptr lf;

        if (evbuffer_ptr_set(buf, &lf, from, EVBUFFER_PTR_SET) == 0) {
            for (lf = evbuffer_search(buf, "\n", 1, &lf); lf.pos >= 0;
                 lf = evbuffer_search(buf, "\n", 1, &lf)) {
                struct evbuffer_ptr prev;
                char c = 0;

                if (lf.pos == 0 ||
                    evbuffer_ptr_set(buf, &prev, (size_t)lf.pos - 1, EVBUFFER_PTR_SET) < 0 ||
                    evbuffer_copyout_from(buf, &prev, &c, 1) != 1 || c != '\r')
                    return -2;
                if (evbuffer_ptr_set(buf, &lf, 1, EVBUFFER_PTR_ADD) < 0)
                    break;
            }
        }
    }
    *scan = len;
    return len >= max ? -1 : 0;
}

int http1_header_id(const char *name, size_t len)
{
    static const struct {
        const char *name;
        size_t len;
        int id;
    } known[] = {
        {"Host", 4, HTTP1_H_HOST},
        {"Content-Length", 14, HTTP1_H_CONTENT_LENGTH},
        {"Transfer-Encoding", 17, HTTP1_H_TRANSFER_ENCODING},
        {"Connection", 10, HTTP1_H_CONNECTION},
        {"Keep-Alive", 10, HTTP1_H_KEEP_ALIVE},
        {"Proxy-Connection", 16, HTTP1_H_PROXY_CONNECTION},
        {"TE", 2, HTTP1_H_TE},
        {"Trailer", 7, HTTP1_H_TRAILER},
        {"Upgrade", 7, HTTP1_H_UPGRADE},
        {"Expect", 6, HTTP1_H_EXPECT},
        {"X-Forwarded-For", 15, HTTP1_H_X_FORWARDED_FOR},
        {"X-Forwarded-Proto", 17, HTTP1_H_X_FORWARDED_PROTO},
        {"X-Forwarded-Host", 16, HTTP1_H_X_FORWARDED_HOST},
        {"Via", 3, HTTP1_H_VIA},
        {"X-Request-Id", 12, HTTP1_H_X_REQUEST_ID},
    };
    /* cheap filter first: only these lengths can match */
    if (len < 2 || len > 17 ||
        !((1u << len) & ((1u << 2) | (1u << 3) | (1u << 4) | (1u << 6) | (1u << 7) | (1u << 10) |
                         (1u << 12) | (1u << 14) | (1u << 15) | (1u << 16) | (1u << 17))))
        return HTTP1_H_OTHER;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (known[i].len == len && (known[i].name[0] | 0x20) == (name[0] | 0x20) &&
            strncasecmp(known[i].name, name, len) == 0)
            return known[i].id;
    return HTTP1_H_OTHER;
}

static int http1_list_each(const struct http1_head *h, int id, const char *name,
                           int (*fn)(const char *tok, size_t len, void *arg), void *arg);

static int http1_conn_other(const char *tok, size_t len, void *arg)
{
    return !((len == 5 && strncasecmp(tok, "close", 5) == 0) ||
             (len == 10 && strncasecmp(tok, "keep-alive", 10) == 0));
}

/* Does a Connection field name anything but close and keep-alive? Only such a name can
 * make another field hop-by-hop, so headers.c looks per field only then. */
static void http1_note_connection(struct http1_head *h)
{
    h->connection_names = h->count[HTTP1_H_CONNECTION] > 0 &&
                          http1_list_each(h, HTTP1_H_CONNECTION, NULL, http1_conn_other, NULL);
}

void http1_head_index(struct http1_head *h)
{
    memset(h->count, 0, sizeof(h->count));
    for (size_t i = 0; i < h->nheaders; i++) {
        struct http1_header *f = &h->headers[i];
        f->id = http1_header_id(f->name, f->name_len);
        if (h->count[f->id] < 255)
            h->count[f->id]++;
    }
    http1_note_connection(h);
}

void http1_head_clear(struct http1_head *h)
{
    free(h->buf);
    memset(h, 0, sizeof(*h));
}

/*
 * Split the lines after the start line into headers, in place. line points at the first
 * header line; end is one past the final CRLFCRLF's first CRLF region.
 */
static int http1_parse_fields(struct http1_head *h, char *line, char *end, struct http1_error *err)
{
    while (line < end) {
        char *eol = memchr(line, '\r', (size_t)(end - line));
        char *colon, *v, *ve;

        if (!eol || eol + 1 >= end || eol[1] != '\n')
            return http1_fail(err, PROBLEM_INVALID_HEADER, "header line not terminated by CRLF");
        if (eol == line) { /* the empty line */
            http1_note_connection(h);
            return 0;
        }
        if (line[0] == ' ' || line[0] == '\t')
            return http1_fail(err, PROBLEM_INVALID_HEADER,
                              "obsolete line folding in header section");
        for (colon = line; colon < eol && http1_tchars[(unsigned char)*colon]; colon++)
            ;
        if (colon == line || colon == eol || *colon != ':') {
            if (colon < eol && (*colon == ' ' || *colon == '\t'))
                return http1_fail(err, PROBLEM_INVALID_HEADER,
                                  "whitespace between header name and colon");
            return http1_fail(err, PROBLEM_INVALID_HEADER, "invalid header name");
        }
        v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (char *c = v; h->has_ctl && c < ve; c++) {
            if (!http1_is_value_char((unsigned char)*c)) {
                *colon = '\0';
                return http1_fail(err, PROBLEM_INVALID_HEADER,
                                  "control character (0x%02x) in value of header '%.60s'",
                                  (unsigned char)*c, line);
            }
        }
        if (h->nheaders == HTTP1_MAX_HEADERS)
            return http1_fail(err, PROBLEM_HEADERS_TOO_LARGE, "more than %d header fields",
                              HTTP1_MAX_HEADERS);
        if (h->nheaders == h->cap) /* cannot happen: one field per CRLF, counted */
            return http1_fail(err, PROBLEM_INTERNAL_ERROR, "header fields miscounted");
        *colon = '\0';
        *ve = '\0';
        h->headers[h->nheaders].name = line;
        h->headers[h->nheaders].name_len = (size_t)(colon - line);
        h->headers[h->nheaders].value = v;
        h->headers[h->nheaders].value_len = (size_t)(ve - v);
        h->headers[h->nheaders].id = http1_header_id(line, (size_t)(colon - line));
        if (h->count[h->headers[h->nheaders].id] < 255)
            h->count[h->headers[h->nheaders].id]++;
        h->nheaders++;
        line = eol + 2;
    }
    return http1_fail(err, PROBLEM_BAD_REQUEST, "header section not terminated");
}

/* Might the 8 bytes at p hold a byte below 0x20 or 0x7f? (No false negatives; a false
 * positive only sends the caller to its byte-by-byte check.) */
static int http1_word_has_ctl(const char *p)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t x, d;

    memcpy(&x, p, 8);
    d = x ^ (0x7f * ones);
    return (((x - 0x20 * ones) & ~x) | ((d - ones) & ~d)) & high ? 1 : 0;
}

/* Copy data, check that no bare CR/LF or NUL hides in it, and locate the first line. */
static char *http1_copy_head(struct http1_head *h, const char *data, size_t len,
                             struct http1_error *err)
{
    size_t lines = 0, nfields;

    memset(h, 0, sizeof(*h));
    if (len < 4 || memcmp(data + len - 4, "\r\n\r\n", 4) != 0) {
        http1_fail(err, PROBLEM_BAD_REQUEST, "incomplete message head");
        return NULL;
    }
    for (size_t i = 0; i < len;) {
        size_t stop;

        if (i + 8 <= len && !http1_word_has_ctl(data + i)) {
            i += 8; /* eight bytes at once, none of them a control byte */
            continue;
        }
        for (stop = i + 8 < len ? i + 8 : len; i < stop; i++) {
            unsigned char c = (unsigned char)data[i];

            if (c >= 0x20 && c != 0x7f)
                continue;
            if (c != '\r' && c != '\n' && c != '\t' && c != '\0') {
                h->has_ctl = 1; /* the field parser says where, and which */
                continue;
            }
            if (c == '\n') {
                if (i == 0 || data[i - 1] != '\r') {
                    http1_fail(err, PROBLEM_BAD_REQUEST, "bare LF in message head");
                    return NULL;
                }
                lines++;
            } else if (c == '\r' && (i + 1 == len || data[i + 1] != '\n')) {
                http1_fail(err, PROBLEM_INVALID_HEADER, "bare CR in message head");
                return NULL;
            } else if (c == '\0') {
                http1_fail(err, PROBLEM_INVALID_HEADER, "NUL byte in message head");
                return NULL;
            }
        }
    }
    /* a field per line between the start line and the empty one, at most (the parser
     * stops at HTTP1_MAX_HEADERS with a 431 before it would need more) */
    nfields = lines - 2 > HTTP1_MAX_HEADERS ? HTTP1_MAX_HEADERS : lines - 2;
    h->cap = nfields;
    h->buf = malloc(HTTP1_FIELDS_AT(len + 1) + nfields * sizeof(struct http1_header));
    if (!h->buf) {
        http1_fail(err, PROBLEM_INTERNAL_ERROR, "out of memory");
        return NULL;
    }
    h->headers = (struct http1_header *)(void *)(h->buf + HTTP1_FIELDS_AT(len + 1));
    memcpy(h->buf, data, len);
    h->buf[len] = '\0';
    h->len = len;
    return h->buf;
}

static int http1_parse_version(const char *v, size_t n, int *minor, struct http1_error *err)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
        v[7] < '0' || v[7] > '9')
        return http1_fail(err, PROBLEM_BAD_REQUEST, "malformed HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return http1_fail(err, PROBLEM_VERSION_NOT_SUPPORTED, "HTTP/%c.%c is not supported", v[5],
                          v[7]);
    *minor = v[7] - '0';
    return 0;
}

int http1_parse_request(struct http1_head *h, const char *data, size_t len, struct http1_error *err)
{
    char *b, *eol, *sp1, *sp2;
    size_t n;

    if (!(b = http1_copy_head(h, data, len, err)))
        return -1;
    eol = strstr(b, "\r\n");
    sp1 = memchr(b, ' ', (size_t)(eol - b));
    if (!sp1 || sp1 == b) {
        http1_fail(err, PROBLEM_BAD_REQUEST, "malformed request line");
        goto fail;
    }
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1 || memchr(sp2 + 1, ' ', (size_t)(eol - sp2 - 1))) {
        http1_fail(err, PROBLEM_BAD_REQUEST, "malformed request line");
        goto fail;
    }
    for (char *c = b; c < sp1; c++) {
        if (!http1_is_tchar((unsigned char)*c)) {
            http1_fail(err, PROBLEM_BAD_REQUEST, "invalid method");
            goto fail;
        }
    }
    for (char *c = sp1 + 1; c < sp2; c++) {
        unsigned char u = (unsigned char)*c;
        if (u <= 0x20 || u == 0x7f) {
            http1_fail(err, PROBLEM_BAD_REQUEST, "invalid character in request target");
            goto fail;
        }
    }
    n = (size_t)(eol - sp2 - 1);
    if (http1_parse_version(sp2 + 1, n, &h->minor, err) < 0)
        goto fail;
    *sp1 = '\0';
    *sp2 = '\0';
    *eol = '\0';
    h->method = b;
    h->target = sp1 + 1;
    if (strncasecmp(h->target, "http://", 7) == 0 || strncasecmp(h->target, "https://", 8) == 0) {
        /* absolute-form (RFC 9112 §3.2.2): keep the authority to check it against Host,
         * forward the origin-form. The authority moves over the scheme, in place. */
        char *auth = strchr(h->target, ':') + 3;
        size_t alen = strcspn(auth, "/?#");
        char *path = auth + alen;
        memmove(h->target, auth, alen);
        h->authority = h->target;
        h->authority[alen] = '\0';
        h->target = *path == '/' ? path : (*path == '?' ? path : (char *)"/");
        if (*path == '?') { /* "http://a?q": origin-form needs the slash */
            http1_fail(err, PROBLEM_BAD_REQUEST, "absolute-form target without a path");
            goto fail;
        }
    } else if (h->target[0] != '/' && strcmp(h->target, "*") != 0 &&
               strcmp(h->method, "CONNECT") != 0) {
        http1_fail(err, PROBLEM_BAD_REQUEST, "request target must be an absolute path");
        goto fail;
    }
    if (http1_parse_fields(h, eol + 2, b + len, err) < 0)
        goto fail;
    return 0;
fail:
    http1_head_clear(h);
    return -1;
}

int http1_parse_response(struct http1_head *h, const char *data, size_t len,
                         struct http1_error *err)
{
    char *b, *eol;

    if (!(b = http1_copy_head(h, data, len, err)))
        return -1;
    eol = strstr(b, "\r\n");
    if (eol - b < 12 || b[8] != ' ' || http1_parse_version(b, 8, &h->minor, err) < 0 ||
        b[9] < '1' || b[9] > '9' || b[10] < '0' || b[10] > '9' || b[11] < '0' || b[11] > '9' ||
        (eol - b > 12 && b[12] != ' ')) {
        http1_fail(err, PROBLEM_UPSTREAM_FAILED, "malformed status line from upstream");
        goto fail;
    }
    h->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    *eol = '\0';
    h->reason = eol - b > 12 ? b + 13 : eol;
    if (http1_parse_fields(h, eol + 2, b + len, err) < 0) {
        http1_set_kind(err, PROBLEM_UPSTREAM_FAILED); /* the detail says what was wrong */
        goto fail;
    }
    return 0;
fail:
    http1_head_clear(h);
    return -1;
}

/* Does field i carry the name whose id is id (or, for unknown names, this name)? */
static int http1_is(const struct http1_head *h, size_t i, int id, const char *name)
{
    return id != HTTP1_H_OTHER ? h->headers[i].id == id
                               : name && strcasecmp(h->headers[i].name, name) == 0;
}

/* name is only compared when id is HTTP1_H_OTHER */
static const char *http1_header_get_named(const struct http1_head *h, int id, const char *name,
                                          size_t *n)
{
    const char *first = NULL;
    size_t count = 0;

    if (id != HTTP1_H_OTHER && h->count[id] == 0) {
        if (n)
            *n = 0;
        return NULL;
    }
    for (size_t i = 0; i < h->nheaders; i++) {
        if (http1_is(h, i, id, name)) {
            if (!first)
                first = h->headers[i].value;
            count++;
        }
    }
    if (n)
        *n = count;
    return first;
}

const char *http1_header_get(const struct http1_head *h, const char *name, size_t *n)
{
    return http1_header_get_named(h, http1_header_id(name, strlen(name)), name, n);
}

const char *http1_header_get_id(const struct http1_head *h, int id, size_t *n)
{
    if (id <= HTTP1_H_OTHER || id >= HTTP1_H_COUNT) { /* no name to compare then */
        if (n)
            *n = 0;
        return NULL;
    }
    return http1_header_get_named(h, id, NULL, n);
}

/* Call fn for each element of a comma-separated list across all `name` headers. */
static int http1_list_each(const struct http1_head *h, int id, const char *name,
                           int (*fn)(const char *tok, size_t len, void *arg), void *arg)
{
    if (id != HTTP1_H_OTHER && h->count[id] == 0)
        return 0;
    for (size_t i = 0; i < h->nheaders; i++) {
        const char *p;

        if (!http1_is(h, i, id, name))
            continue;
        p = h->headers[i].value;
        while (*p) {
            const char *s, *e;
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            s = p;
            while (*p && *p != ',')
                p++;
            e = p;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e > s) {
                int r = fn(s, (size_t)(e - s), arg);
                if (r)
                    return r;
            }
        }
    }
    return 0;
}

static int http1_token_eq(const char *tok, size_t len, void *arg)
{
    const char *want = arg;
    return strlen(want) == len && strncasecmp(tok, want, len) == 0;
}

int http1_header_has_token(const struct http1_head *h, const char *name, const char *token)
{
    return http1_list_each(h, http1_header_id(name, strlen(name)), name, http1_token_eq,
                           (void *)token);
}

int http1_header_has_token_id(const struct http1_head *h, int id, const char *token)
{
    if (id <= HTTP1_H_OTHER || id >= HTTP1_H_COUNT)
        return 0;
    return http1_list_each(h, id, NULL, http1_token_eq, (void *)token);
}

struct http1_te_scan {
    int count, chunked_last, other;
};

static int http1_te_each(const char *tok, size_t len, void *arg)
{
    struct http1_te_scan *s = arg;
    /* a coding may carry parameters: "gzip;q=1" — compare the name only */
    size_t n = 0;
    while (n < len && tok[n] != ';' && tok[n] != ' ' && tok[n] != '\t')
        n++;
    s->count++;
    s->chunked_last = (n == 7 && strncasecmp(tok, "chunked", 7) == 0);
    if (!s->chunked_last)
        s->other = 1;
    return 0;
}

/* Parse one Content-Length value: digits only, no overflow. */
static int http1_parse_length(const char *v, uint64_t *out)
{
    uint64_t n = 0;

    if (!*v)
        return -1;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -1;
        if (n > (UINT64_MAX / 2 - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*v - '0');
    }
    *out = n;
    return 0;
}

int http1_host_valid(const char *v)
{
    const char *p = v, *port;

    if (*p == '\0')
        return 1;    /* an empty Host: the target had no authority (RFC 9112 §3.2) */
    if (*p == '[') { /* IP-literal */
        for (p++; *p && *p != ']'; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return 0;
        if (*p != ']' || p == v + 1)
            return 0;
        p++;
    } else { /* reg-name or IPv4: no userinfo, path, list, space or other delimiter */
        const char *start = p;
        for (; *p && *p != ':'; p++) {
            if (*p == '%') {
                if (bytes_hexval((unsigned char)p[1]) < 0 || bytes_hexval((unsigned char)p[2]) < 0)
                    return 0;
                p += 2;
            } else if (!isalnum((unsigned char)*p) && !strchr("-._~", *p)) {
                return 0;
            }
        }
        if (p == start)
            return 0;
    }
    if (*p == '\0')
        return 1;
    if (*p != ':')
        return 0;
    port = ++p;
    for (; *p; p++)
        if (!isdigit((unsigned char)*p))
            return 0;
    return p > port && p - port <= 5 && atol(port) <= 65535;
}

int http1_request_framing(const struct http1_head *h, enum http1_body *kind, uint64_t *length,
                          struct http1_error *err)
{
    size_t ncl, nte, nhost;
    const char *cl = http1_header_get_id(h, HTTP1_H_CONTENT_LENGTH, &ncl);
    struct http1_te_scan te = {0, 0, 0};

    http1_header_get_id(h, HTTP1_H_TRANSFER_ENCODING, &nte);
    http1_header_get_id(h, HTTP1_H_HOST, &nhost);
    *length = 0;
    *kind = HTTP1_BODY_NONE;
    if (h->minor == 1 && nhost != 1)
        return http1_fail(err, PROBLEM_MISSING_HOST,
                          nhost ? "more than one Host header" : "HTTP/1.1 request without Host");
    if (nhost > 1)
        return http1_fail(err, PROBLEM_MISSING_HOST, "more than one Host header");
    if (nhost) {
        const char *host = http1_header_get_id(h, HTTP1_H_HOST, NULL);
        if (!http1_host_valid(host))
            return http1_fail(err, PROBLEM_INVALID_HEADER,
                              "invalid Host '%.60s' (expected host[:port], RFC 9112 §3.2)", host);
        if (h->authority && strcasecmp(host, h->authority) != 0)
            return http1_fail(err, PROBLEM_BAD_REQUEST,
                              "the target's authority '%.60s' and Host '%.60s' differ",
                              h->authority, host);
    } else if (h->authority) {
        return http1_fail(err, PROBLEM_MISSING_HOST, "absolute-form target without a Host header");
    }
    if (nte && ncl)
        return http1_fail(err, PROBLEM_CONFLICTING_FRAMING,
                          "both Content-Length and Transfer-Encoding are present");
    if (nte) {
        http1_list_each(h, HTTP1_H_TRANSFER_ENCODING, NULL, http1_te_each, &te);
        if (h->minor == 0)
            return http1_fail(err, PROBLEM_CONFLICTING_FRAMING,
                              "Transfer-Encoding in an HTTP/1.0 request");
        if (te.count == 1 && te.chunked_last) {
            *kind = HTTP1_BODY_CHUNKED;
            return 0;
        }
        if (te.count == 0)
            return http1_fail(err, PROBLEM_INVALID_HEADER, "empty Transfer-Encoding");
        return http1_fail(err, PROBLEM_UNSUPPORTED_TRANSFER_ENCODING,
                          "only \"Transfer-Encoding: chunked\" is supported");
    }
    if (ncl > 1)
        return http1_fail(err, PROBLEM_INVALID_CONTENT_LENGTH, "more than one Content-Length");
    if (ncl == 1) {
        if (http1_parse_length(cl, length) < 0)
            return http1_fail(err, PROBLEM_INVALID_CONTENT_LENGTH, "invalid Content-Length '%.40s'",
                              cl);
        *kind = *length ? HTTP1_BODY_LENGTH : HTTP1_BODY_NONE;
    }
    return 0;
}

int http1_response_framing(const struct http1_head *h, int request_was_head, enum http1_body *kind,
                           uint64_t *length, struct http1_error *err)
{
    size_t ncl, nte;
    const char *cl = http1_header_get_id(h, HTTP1_H_CONTENT_LENGTH, &ncl);

    http1_header_get_id(h, HTTP1_H_TRANSFER_ENCODING, &nte);
    *length = 0;
    if (request_was_head || h->status < 200 || h->status == 204 || h->status == 304) {
        *kind = HTTP1_BODY_NONE;
        return 0;
    }
    if (nte) {
        struct http1_te_scan te = {0, 0, 0};
        if (ncl)
            return http1_fail(err, PROBLEM_UPSTREAM_FAILED,
                              "upstream sent both Content-Length and Transfer-Encoding");
        http1_list_each(h, HTTP1_H_TRANSFER_ENCODING, NULL, http1_te_each, &te);
        /* A final coding other than chunked means "read until close" (RFC 9112 §6.3),
         * but we would then forward encoded bytes we cannot re-frame: refuse. */
        if (te.count != 1 || !te.chunked_last)
            return http1_fail(err, PROBLEM_UPSTREAM_FAILED,
                              "upstream used an unsupported transfer coding");
        *kind = HTTP1_BODY_CHUNKED;
        return 0;
    }
    if (ncl > 1) {
        /* identical duplicates are tolerated from upstreams (RFC 9110 §8.6) */
        for (size_t i = 0; i < h->nheaders; i++)
            if (h->headers[i].id == HTTP1_H_CONTENT_LENGTH && strcmp(h->headers[i].value, cl) != 0)
                return http1_fail(err, PROBLEM_UPSTREAM_FAILED,
                                  "upstream sent conflicting Content-Length headers");
    }
    if (ncl) {
        if (http1_parse_length(cl, length) < 0)
            return http1_fail(err, PROBLEM_UPSTREAM_FAILED,
                              "upstream sent an invalid Content-Length");
        *kind = HTTP1_BODY_LENGTH;
        return 0;
    }
    *kind = HTTP1_BODY_CLOSE;
    return 0;
}

int http1_keepalive(const struct http1_head *h)
{
    if (http1_header_has_token_id(h, HTTP1_H_CONNECTION, "close"))
        return 0;
    if (h->minor == 0)
        return http1_header_has_token_id(h, HTTP1_H_CONNECTION, "keep-alive");
    return 1;
}

/* Parse "HEX[;ext]" (no CRLF). */
static int http1_chunk_size(const char *line, size_t len, uint64_t *out)
{
    uint64_t n = 0;
    size_t i = 0;
    int v;

    for (; i < len && (v = bytes_hexval((unsigned char)line[i])) >= 0; i++) {
        if (i >= 15)
            return -1;
        n = n * 16 + (uint64_t)v;
    }
    if (i == 0)
        return -1;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i < len && line[i] != ';')
        return -1;
    for (; i < len; i++)
        if (!http1_is_value_char((unsigned char)line[i]))
            return -1;
    *out = n;
    return 0;
}

int http1_chunked_decode(struct http1_chunked *c, struct evbuffer *in, struct evbuffer *out,
                         uint64_t max_body, uint64_t *total, size_t max_trailer,
                         struct http1_error *err)
{
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        struct evbuffer_ptr eol;
        size_t eol_len;
        char *line;

        switch (c->state) {
        case CH_SIZE:
        case CH_TRAILER: {
            size_t n;
            if (avail == 0)
                return 0;
            eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
            if (eol.pos < 0) {
                if (c->trailer_bytes + avail > max_trailer)
                    return http1_fail(err, PROBLEM_BAD_REQUEST, "chunk line too long");
                return 0;
            }
            n = (size_t)eol.pos;
            c->trailer_bytes += n + 2;
            if (c->trailer_bytes > max_trailer)
                return http1_fail(err, PROBLEM_BAD_REQUEST, "chunk line or trailers too long");
            line = (char *)evbuffer_pullup(in, (ev_ssize_t)n + 2);
            if (memchr(line, '\n', n) || memchr(line, '\r', n))
                return http1_fail(err, PROBLEM_BAD_REQUEST, "bare CR or LF in chunked framing");
            if (c->state == CH_TRAILER) {
                /* trailer fields are not forwarded; their syntax is still checked */
                if (n && !memchr(line, ':', n))
                    return http1_fail(err, PROBLEM_BAD_REQUEST, "malformed trailer field");
                evbuffer_drain(in, n + 2);
                if (n == 0) {
                    c->state = CH_DONE;
                    return 1;
                }
                continue;
            }
            if (http1_chunk_size(line, n, &c->remaining) < 0)
                return http1_fail(err, PROBLEM_BAD_REQUEST, "invalid chunk size");
            evbuffer_drain(in, n + 2);
            c->trailer_bytes = 0;
            if (c->remaining == 0) {
                c->state = CH_TRAILER;
                continue;
            }
            if (*total + c->remaining > max_body)
                return http1_fail(err, PROBLEM_BODY_TOO_LARGE,
                                  "body exceeds the limit of %llu bytes",
                                  (unsigned long long)max_body);
            c->state = CH_DATA;
            continue;
        }
        case CH_DATA: {
            size_t take;
            if (avail == 0)
                return 0;
            take = avail < c->remaining ? avail : (size_t)c->remaining;
            evbuffer_remove_buffer(in, out, take);
            c->remaining -= take;
            *total += take;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            continue;
        }
        case CH_DATA_CR:
        case CH_DATA_LF: {
            unsigned char ch;
            if (avail == 0)
                return 0;
            evbuffer_remove(in, &ch, 1);
            if (ch != (c->state == CH_DATA_CR ? '\r' : '\n'))
                return http1_fail(err, PROBLEM_BAD_REQUEST, "chunk data not followed by CRLF");
            c->state = c->state == CH_DATA_CR ? CH_DATA_LF : CH_SIZE;
            continue;
        }
        default:
            return 1;
        }
    }
}

const char *http1_reason(int status)
{
    /* RFC 9110 §15 (and 6585's 428/429/431, 8470's 425); sorted by status */
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {305, "Use Proxy"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {451, "Unavailable For Legal Reasons"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    size_t lo = 0, hi = sizeof(reasons) / sizeof(reasons[0]);

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (reasons[mid].status == status)
            return reasons[mid].reason;
        if (reasons[mid].status < status)
            lo = mid + 1;
        else
            hi = mid;
    }
    return "Unknown";
}
