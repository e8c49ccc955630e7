/*
 * record — encoding and strict decoding of stored answers (layout in record.h).
 *
 * A record comes back from Redis, which anything with access to it can write, so the
 * decoder trusts nothing: every length is checked against the bytes left before use,
 * header names must be tokens and values field-content (no CR, LF, NUL or other control
 * byte but HTAB), so a corrupt record can never turn into a response-splitting head.
 * Decoding validates everything first and allocates once, after the input has passed.
 */
#include "idem/record.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "core/bytes.h"
#include "http/headers.h"
#include "http/http1.h"

#define RECORD_MAGIC     "IDRC"
#define RECORD_FIXED_LEN (4 + 1 + 1 + 2 + 8 + 4) /* magic .. nheaders */

static void record_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void record_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void record_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static int record_is_token(const uint8_t *p, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!http1_is_tchar(p[i]))
            return 0;
    return 1;
}

/* field-content as the HTTP parser accepts it: HTAB, SP, VCHAR, obs-text. */
static int record_is_value(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != '\t' && (p[i] < 0x20 || p[i] == 0x7f))
            return 0;
    return 1;
}

/* Should header i of head be stored? Only end-to-end fields; Content-Length is rebuilt. */
static int record_keeps(const struct http1_head *head, size_t i)
{
    return head->headers[i].id != HTTP1_H_CONTENT_LENGTH && !headers_is_hop_by_hop(head, i);
}

/* Where an encoding goes: counted only (flat == NULL), or written into flat[0..cap). */
struct record_out {
    uint8_t *flat;
    size_t len, cap;
};

static int record_put(struct record_out *o, const void *p, size_t n)
{
    if (o->flat) {
        if (n > o->cap - o->len)
            return -1;
        memcpy(o->flat + o->len, p, n);
    }
    o->len += n;
    return 0;
}

static int record_put_piece(const void *piece, size_t n, void *arg)
{
    return record_put(arg, piece, n);
}

static int record_put_string(struct record_out *o, const char *s, size_t len)
{
    uint8_t b[4];

    if (len > UINT32_MAX)
        return -1;
    record_put_u32(b, (uint32_t)len);
    return record_put(o, b, sizeof(b)) == 0 && (len == 0 || record_put(o, s, len) == 0) ? 0 : -1;
}

/*
 * The one encoder: the layout of record.h into o. *body_off (may be NULL) gets the
 * offset of the body bytes. Fails (-1) on what record_decode would refuse.
 */
static int record_write(struct record_out *o, int status, const struct http1_head *head,
                        struct evbuffer *body, uint64_t created_ms, size_t *body_off)
{
    const char *reason = head ? head->reason : NULL;
    size_t reason_len = reason ? strlen(reason) : 0;
    size_t body_len = body ? evbuffer_get_length(body) : 0;
    uint32_t kept = 0;
    uint8_t b[RECORD_FIXED_LEN];

    if (status < 100 || status > 599)
        return -1;
    /* the standard phrase is what a replay says anyway: keep only another one */
    if (reason && strcmp(reason, http1_reason(status)) == 0)
        reason = NULL;
    if (reason &&
        (reason_len > RECORD_REASON_MAX || !record_is_value((const uint8_t *)reason, reason_len)))
        return -1;
    for (size_t i = 0; head && i < head->nheaders; i++)
        kept += (uint32_t)record_keeps(head, i);
    memcpy(b, RECORD_MAGIC, 4);
    b[4] = reason ? RECORD_VERSION_REASON : RECORD_VERSION;
    b[5] = 0;
    record_put_u16(b + 6, (uint16_t)status);
    record_put_u64(b + 8, created_ms);
    record_put_u32(b + 16, kept);
    if (record_put(o, b, sizeof(b)) != 0)
        return -1;
    if (reason && record_put_string(o, reason, reason_len) != 0)
        return -1;
    for (size_t i = 0; head && i < head->nheaders; i++) {
        const struct http1_header *f = &head->headers[i];

        if (!record_keeps(head, i))
            continue;
        /* never write what record_decode would refuse */
        if (!record_is_token((const uint8_t *)f->name, f->name_len) ||
            !record_is_value((const uint8_t *)f->value, f->value_len))
            return -1;
        if (record_put_string(o, f->name, f->name_len) != 0 ||
            record_put_string(o, f->value, f->value_len) != 0)
            return -1;
    }
    record_put_u64(b, body_len);
    if (record_put(o, b, 8) != 0)
        return -1;
    if (body_off)
        *body_off = o->len;
    /* the body's chains are read in place: neither drained nor pulled up */
    if (!o->flat)
        o->len += body_len; /* counting only */
    else if (body_len && bytes_each(body, body_len, record_put_piece, o) != 0)
        return -1;
    return 0;
}

long long record_encoded_len(int status, const struct http1_head *head, struct evbuffer *body)
{
    struct record_out o = {NULL, 0, 0};

    return record_write(&o, status, head, body, 0, NULL) == 0 ? (long long)o.len : -1;
}

int record_encode_flat(uint8_t *dst, size_t len, int status, const struct http1_head *head,
                       struct evbuffer *body, uint64_t created_ms, size_t *body_off)
{
    struct record_out o = {dst, 0, len};

    return record_write(&o, status, head, body, created_ms, body_off) == 0 && o.len == len ? 0 : -1;
}

/* Written straight into space reserved in out, so on -1 out is left untouched. */
int record_encode(struct evbuffer *out, int status, const struct http1_head *head,
                  struct evbuffer *body, uint64_t created_ms)
{
    long long len = record_encoded_len(status, head, body);
    struct evbuffer_iovec v;

    if (!out || len < 0 || evbuffer_reserve_space(out, (ev_ssize_t)len, &v, 1) != 1 ||
        v.iov_len < (size_t)len)
        return -1;
    if (record_encode_flat(v.iov_base, (size_t)len, status, head, body, created_ms, NULL) != 0)
        return -1; /* nothing committed */
    v.iov_len = (size_t)len;
    return evbuffer_commit_space(out, &v, 1);
}

int record_encode_too_large(struct evbuffer *out, int status, uint64_t created_ms)
{
    uint8_t b[RECORD_FIXED_LEN + 8];

    if (!out || status < 100 || status > 599)
        return -1;
    memcpy(b, RECORD_MAGIC, 4);
    b[4] = RECORD_VERSION;
    b[5] = RECORD_F_TOO_LARGE;
    record_put_u16(b + 6, (uint16_t)status);
    record_put_u64(b + 8, created_ms);
    record_put_u32(b + 16, 0); /* no headers */
    record_put_u64(b + 20, 0); /* no body */
    return evbuffer_add(out, b, sizeof(b));
}

/* A bounds-checked cursor over the input. */
struct record_rd {
    const uint8_t *p;
    size_t left;
};

static int record_take(struct record_rd *r, uint64_t n, const uint8_t **p)
{
    if (n > r->left)
        return -1;
    *p = r->p;
    r->p += n;
    r->left -= (size_t)n;
    return 0;
}

static int record_get_uint(struct record_rd *r, size_t width, uint64_t *v)
{
    const uint8_t *p;

    if (record_take(r, width, &p) != 0)
        return -1;
    *v = 0;
    for (size_t i = 0; i < width; i++)
        *v = (*v << 8) | p[i];
    return 0;
}

static int record_bad(struct record *rec, const char **why, const char *reason)
{
    if (why)
        *why = reason;
    memset(rec, 0, sizeof(*rec));
    return -1;
}

int record_decode(struct record *rec, const void *data, size_t len, const char **why)
{
    struct {
        const uint8_t *name, *value;
        size_t name_len, value_len;
    } f[HTTP1_MAX_HEADERS];
    struct record_rd r = {data, len};
    const uint8_t *magic, *body, *reason = NULL;
    uint64_t version, flags, status, created, nheaders, body_len, reason_len = 0;
    size_t strings = 0;
    char *buf, *w;

    if (!rec)
        return -1;
    memset(rec, 0, sizeof(*rec));
    if (!data && len)
        return record_bad(rec, why, "no data");
    if (record_take(&r, 4, &magic) != 0 || memcmp(magic, RECORD_MAGIC, 4) != 0)
        return record_bad(rec, why, "bad magic");
    if (record_get_uint(&r, 1, &version) != 0)
        return record_bad(rec, why, "truncated record");
    if (version != RECORD_VERSION && version != RECORD_VERSION_REASON)
        return record_bad(rec, why, "unsupported record version");
    if (record_get_uint(&r, 1, &flags) != 0 || record_get_uint(&r, 2, &status) != 0 ||
        record_get_uint(&r, 8, &created) != 0 || record_get_uint(&r, 4, &nheaders) != 0)
        return record_bad(rec, why, "truncated record");
    if (flags & ~(uint64_t)RECORD_F_TOO_LARGE)
        return record_bad(rec, why, "unknown record flags");
    if (status < 100 || status > 599)
        return record_bad(rec, why, "status out of range");
    if (nheaders > HTTP1_MAX_HEADERS)
        return record_bad(rec, why, "too many headers");
    if (version == RECORD_VERSION_REASON) {
        if (record_get_uint(&r, 4, &reason_len) != 0 || record_take(&r, reason_len, &reason) != 0)
            return record_bad(rec, why, "truncated record");
        if (reason_len > RECORD_REASON_MAX || !record_is_value(reason, (size_t)reason_len))
            return record_bad(rec, why, "invalid reason phrase");
        strings += (size_t)reason_len + 1;
    }

    for (size_t i = 0; i < nheaders; i++) {
        uint64_t nl, vl;

        if (record_get_uint(&r, 4, &nl) != 0 || record_take(&r, nl, &f[i].name) != 0 ||
            record_get_uint(&r, 4, &vl) != 0 || record_take(&r, vl, &f[i].value) != 0)
            return record_bad(rec, why, "truncated record");
        if (!record_is_token(f[i].name, (size_t)nl))
            return record_bad(rec, why, "invalid header name");
        if (!record_is_value(f[i].value, (size_t)vl))
            return record_bad(rec, why, "invalid header value");
        f[i].name_len = (size_t)nl;
        f[i].value_len = (size_t)vl;
        /* both lie within data, so the sum stays below len + 2 * HTTP1_MAX_HEADERS */
        strings += f[i].name_len + 1 + f[i].value_len + 1;
    }
    if (record_get_uint(&r, 8, &body_len) != 0 || record_take(&r, body_len, &body) != 0)
        return record_bad(rec, why, "truncated record");
    if (r.left != 0)
        return record_bad(rec, why, "trailing bytes after record");

    /* the strings, then the field array (as http1 lays out a parsed head) */
    buf = malloc(HTTP1_FIELDS_AT(strings) + (size_t)nheaders * sizeof(struct http1_header) + 1);
    if (!buf)
        return record_bad(rec, why, "out of memory");
    rec->head.headers = (struct http1_header *)(void *)(buf + HTTP1_FIELDS_AT(strings));
    rec->head.cap = (size_t)nheaders;
    w = buf;
    if (reason) {
        rec->head.reason = w;
        memcpy(w, reason, (size_t)reason_len);
        w += reason_len;
        *w++ = '\0';
    }
    for (size_t i = 0; i < nheaders; i++) {
        struct http1_header *h = &rec->head.headers[i];

        h->name = w;
        h->name_len = f[i].name_len;
        memcpy(w, f[i].name, f[i].name_len);
        w += f[i].name_len;
        *w++ = '\0';
        h->value = w;
        h->value_len = f[i].value_len;
        if (f[i].value_len)
            memcpy(w, f[i].value, f[i].value_len);
        w += f[i].value_len;
        *w++ = '\0';
    }
    rec->flags = (int)flags;
    rec->status = (int)status;
    rec->created_ms = created;
    rec->head.buf = buf;
    rec->head.minor = 1;
    rec->head.status = (int)status;
    rec->head.nheaders = (size_t)nheaders;
    http1_head_index(&rec->head);
    rec->body = body;
    rec->body_len = (size_t)body_len;
    return 0;
}

void record_clear(struct record *rec)
{
    if (!rec)
        return;
    free(rec->head.buf);
    memset(rec, 0, sizeof(*rec));
}
