#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http/http1.h"
#include "idem/record.h"

static void resp(struct http1_head *h, const char *raw)
{
    struct http1_error err;

    cr_assert_eq(http1_parse_response(h, raw, strlen(raw), &err), 0, "%s: %s", raw, err.detail);
}

/* The encoding as one malloc'd block (caller frees). */
static uint8_t *flatten(struct evbuffer *b, size_t *len)
{
    uint8_t *p;

    *len = evbuffer_get_length(b);
    p = malloc(*len ? *len : 1);
    cr_assert_eq(evbuffer_copyout(b, p, *len), (ev_ssize_t)*len);
    return p;
}

static uint8_t *encode(const char *raw, int status, struct evbuffer *body, uint64_t created,
                       size_t *len)
{
    struct http1_head h;
    struct evbuffer *out = evbuffer_new();
    uint8_t *p;

    resp(&h, raw);
    cr_assert_eq(record_encode(out, status, &h, body, created), 0);
    http1_head_clear(&h);
    p = flatten(out, len);
    evbuffer_free(out);
    return p;
}

static void decode_ok(struct record *rec, const uint8_t *p, size_t len)
{
    const char *why = NULL;

    cr_assert_eq(record_decode(rec, p, len, &why), 0, "rejected: %s", why ? why : "?");
}

static void decode_bad(const uint8_t *p, size_t len, const char *reason)
{
    struct record rec, zero;
    const char *why = NULL;

    memset(&rec, 0x5a, sizeof(rec));
    memset(&zero, 0, sizeof(zero));
    cr_assert_eq(record_decode(&rec, p, len, &why), -1, "accepted %zu bytes", len);
    cr_assert_not_null(why);
    if (reason)
        cr_assert_str_eq(why, reason);
    cr_assert(memcmp(&rec, &zero, sizeof(rec)) == 0, "rec not emptied on failure");
}

/* ---- an independent builder for hand-made (often corrupt) records ---- */

struct bb {
    uint8_t b[8192];
    size_t n;
};

static void put(struct bb *x, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--)
        x->b[x->n++] = (uint8_t)(v >> (8 * i));
}

static void put_bytes(struct bb *x, const void *p, size_t n)
{
    memcpy(x->b + x->n, p, n);
    x->n += n;
}

static void put_str(struct bb *x, const char *s)
{
    put(x, strlen(s), 4);
    put_bytes(x, s, strlen(s));
}

static void put_head(struct bb *x, int version, int flags, int status, uint32_t nheaders)
{
    x->n = 0;
    put_bytes(x, "IDRC", 4);
    put(x, (uint64_t)version, 1);
    put(x, (uint64_t)flags, 1);
    put(x, (uint64_t)status, 2);
    put(x, 1234, 8);
    put(x, nheaders, 4);
}

/* One header (name: value) and body "ok". */
static void build_one(struct bb *x, int status, const char *name, const char *value)
{
    put_head(x, 1, 0, status, 1);
    put_str(x, name);
    put_str(x, value);
    put(x, 2, 8);
    put_bytes(x, "ok", 2);
}

/* ---- encoding ---- */

Test(record, encoding_layout_is_pinned)
{
    /* clang-format off */
    static const uint8_t want[] = {
        'I', 'D', 'R', 'C', 1, 0, 0x00, 0xc9,   /* v1, no flags, 201 */
        1, 2, 3, 4, 5, 6, 7, 8,                 /* created */
        0, 0, 0, 1,                             /* one header */
        0, 0, 0, 3, 'X', '-', 'A',              /* name */
        0, 0, 0, 2, 'v', '1',                   /* value */
        0, 0, 0, 0, 0, 0, 0, 3, 'x', 0, 'y',    /* body */
    };
    /* clang-format on */
    struct evbuffer *body = evbuffer_new();
    uint8_t *p;
    size_t len;

    evbuffer_add(body, "x\0y", 3);
    p = encode("HTTP/1.1 201 Created\r\nX-A: v1\r\nContent-Length: 3\r\n\r\n", 201, body,
               0x0102030405060708ULL, &len);
    cr_assert_eq(len, sizeof(want));
    cr_assert(memcmp(p, want, len) == 0);
    cr_assert_eq(evbuffer_get_length(body), 3, "body was drained");
    free(p);
    evbuffer_free(body);
}

Test(record, too_large_layout)
{
    /* clang-format off */
    static const uint8_t want[] = {
        'I', 'D', 'R', 'C', 1, RECORD_F_TOO_LARGE, 0x01, 0xf4, /* 500 */
        0, 0, 0, 0, 0, 0, 0, 42,                               /* created */
        0, 0, 0, 0,                                            /* no headers */
        0, 0, 0, 0, 0, 0, 0, 0,                                /* no body */
    };
    /* clang-format on */
    struct evbuffer *out = evbuffer_new();
    struct record rec;
    uint8_t *p;
    size_t len;

    cr_assert_eq(record_encode_too_large(out, 500, 42), 0);
    p = flatten(out, &len);
    cr_assert_eq(len, sizeof(want));
    cr_assert(memcmp(p, want, len) == 0);
    decode_ok(&rec, p, len);
    cr_assert_eq(rec.flags, RECORD_F_TOO_LARGE);
    cr_assert_eq(rec.status, 500);
    cr_assert_eq(rec.head.status, 500);
    cr_assert_eq(rec.created_ms, 42);
    cr_assert_eq(rec.head.nheaders, 0);
    cr_assert_eq(rec.body_len, 0);
    record_clear(&rec);
    free(p);
    evbuffer_free(out);
}

Test(record, encode_appends_and_rejects_bad_status)
{
    struct evbuffer *out = evbuffer_new();
    struct http1_head h;

    resp(&h, "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n");
    evbuffer_add(out, "prefix", 6);
    cr_assert_eq(record_encode(out, 99, &h, NULL, 0), -1);
    cr_assert_eq(record_encode(out, 600, &h, NULL, 0), -1);
    cr_assert_eq(record_encode_too_large(out, 0, 0), -1);
    cr_assert_eq(evbuffer_get_length(out), 6, "failed encode left bytes behind");
    cr_assert_eq(record_encode(out, 200, &h, NULL, 0), 0);
    cr_assert_eq(evbuffer_get_length(out), 6 + 20 + 4 + 3 + 4 + 1 + 8);
    http1_head_clear(&h);
    evbuffer_free(out);
}

Test(record, hop_by_hop_and_content_length_dropped)
{
    struct record rec;
    uint8_t *p;
    size_t len;

    p = encode("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"
               "Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X-T\r\n"
               "Upgrade: h2c\r\ncontent-length: 0\r\nX-Keep: yes\r\nContent-Type: text/plain\r\n"
               "\r\n",
               200, NULL, 7, &len);
    decode_ok(&rec, p, len);
    cr_assert_eq(rec.head.nheaders, 2);
    cr_assert_str_eq(rec.head.headers[0].name, "X-Keep");
    cr_assert_str_eq(rec.head.headers[0].value, "yes");
    cr_assert_str_eq(rec.head.headers[1].name, "Content-Type");
    cr_assert_str_eq(rec.head.headers[1].value, "text/plain");
    cr_assert_eq(rec.body_len, 0);
    record_clear(&rec);
    free(p);

    p = encode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Keep: 1\r\n\r\n", 200, NULL, 7,
               &len);
    decode_ok(&rec, p, len);
    cr_assert_eq(rec.head.nheaders, 1);
    cr_assert_str_eq(rec.head.headers[0].name, "X-Keep");
    record_clear(&rec);
    free(p);
}

/* ---- round trips ---- */

Test(record, round_trip_binary_body_and_repeated_headers)
{
    struct evbuffer *body = evbuffer_new();
    uint8_t all[512];
    struct record rec;
    size_t len, n;
    uint8_t *p;

    for (int i = 0; i < 512; i++)
        all[i] = (uint8_t)(i & 0xff);
    /* several chains, so the encoder walks them */
    evbuffer_add_reference(body, all, 100, NULL, NULL);
    evbuffer_add_reference(body, all + 100, 300, NULL, NULL);
    evbuffer_add_reference(body, all + 400, 112, NULL, NULL);
    p = encode("HTTP/1.1 201 Created\r\nSet-Cookie: a=1; Path=/\r\nLocation: /o/1\r\n"
               "Set-Cookie: b=2\r\nX-Empty:\r\nX-Odd: \x80\xff \t x\r\n\r\n",
               201, body, 1700000000123ULL, &len);
    cr_assert_eq(evbuffer_get_length(body), 512);
    decode_ok(&rec, p, len);
    cr_assert_eq(rec.flags, 0);
    cr_assert_eq(rec.status, 201);
    cr_assert_eq(rec.head.status, 201);
    cr_assert_eq(rec.created_ms, 1700000000123ULL);
    cr_assert_eq(rec.head.nheaders, 5);
    cr_assert_str_eq(rec.head.headers[0].name, "Set-Cookie");
    cr_assert_str_eq(rec.head.headers[0].value, "a=1; Path=/");
    cr_assert_str_eq(rec.head.headers[1].name, "Location");
    cr_assert_str_eq(rec.head.headers[2].name, "Set-Cookie");
    cr_assert_str_eq(rec.head.headers[2].value, "b=2");
    cr_assert_eq(rec.head.headers[2].value_len, 3);
    cr_assert_str_eq(rec.head.headers[3].value, "");
    cr_assert_eq(rec.head.headers[3].value_len, 0);
    cr_assert_str_eq(rec.head.headers[4].value, "\x80\xff \t x");
    cr_assert_str_eq(http1_header_get(&rec.head, "set-cookie", &n), "a=1; Path=/");
    cr_assert_eq(n, 2);
    cr_assert_eq(rec.body_len, 512);
    cr_assert(memcmp(rec.body, all, 512) == 0);
    cr_assert(rec.body >= p && rec.body + rec.body_len == p + len, "body does not borrow input");
    record_clear(&rec);
    cr_assert_null(rec.head.buf);
    cr_assert_eq(rec.head.nheaders, 0);
    record_clear(&rec); /* twice is harmless */
    free(p);
    evbuffer_free(body);
}

Test(record, round_trip_empty_body_no_headers)
{
    struct evbuffer *body = evbuffer_new();
    struct record rec;
    uint8_t *p;
    size_t len;

    p = encode("HTTP/1.1 204 No Content\r\n\r\n", 204, body, 0, &len);
    cr_assert_eq(len, 28);
    decode_ok(&rec, p, len);
    cr_assert_eq(rec.status, 204);
    cr_assert_eq(rec.head.nheaders, 0);
    cr_assert_eq(rec.body_len, 0);
    record_clear(&rec);
    free(p);
    evbuffer_free(body);
}

Test(record, round_trip_one_megabyte)
{
    size_t big = 1024 * 1024;
    uint8_t *data = malloc(big);
    struct evbuffer *body = evbuffer_new();
    struct record rec;
    uint8_t *p;
    size_t len;

    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (size_t off = 0; off < big; off += 65536)
        evbuffer_add(body, data + off, 65536);
    p = encode("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n", 200, body, 9,
               &len);
    cr_assert_eq(evbuffer_get_length(body), big);
    decode_ok(&rec, p, len);
    cr_assert_eq(rec.body_len, big);
    cr_assert(memcmp(rec.body, data, big) == 0);
    record_clear(&rec);
    free(p);
    free(data);
    evbuffer_free(body);
}

Test(record, status_bounds)
{
    struct bb x;
    struct record rec;

    build_one(&x, 100, "A", "b");
    decode_ok(&rec, x.b, x.n);
    cr_assert_eq(rec.status, 100);
    record_clear(&rec);
    build_one(&x, 599, "A", "b");
    decode_ok(&rec, x.b, x.n);
    cr_assert_eq(rec.status, 599);
    record_clear(&rec);

    build_one(&x, 0, "A", "b");
    decode_bad(x.b, x.n, "status out of range");
    build_one(&x, 99, "A", "b");
    decode_bad(x.b, x.n, "status out of range");
    build_one(&x, 600, "A", "b");
    decode_bad(x.b, x.n, "status out of range");
    build_one(&x, 65535, "A", "b");
    decode_bad(x.b, x.n, "status out of range");
}

Test(record, max_headers_accepted_one_more_rejected)
{
    struct bb x;
    struct record rec;

    put_head(&x, 1, 0, 200, HTTP1_MAX_HEADERS);
    for (int i = 0; i < HTTP1_MAX_HEADERS; i++) {
        put_str(&x, "X-N");
        put_str(&x, "v");
    }
    put(&x, 0, 8);
    decode_ok(&rec, x.b, x.n);
    cr_assert_eq(rec.head.nheaders, HTTP1_MAX_HEADERS);
    cr_assert_str_eq(rec.head.headers[HTTP1_MAX_HEADERS - 1].name, "X-N");
    record_clear(&rec);

    put_head(&x, 1, 0, 200, HTTP1_MAX_HEADERS + 1);
    for (int i = 0; i < HTTP1_MAX_HEADERS + 1; i++) {
        put_str(&x, "X-N");
        put_str(&x, "v");
    }
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "too many headers");
}

/* ---- corrupt input ---- */

Test(record, every_truncation_is_rejected)
{
    struct evbuffer *body = evbuffer_new();
    uint8_t *p;
    size_t len;

    evbuffer_add(body, "0123456789abcdef", 16);
    p = encode("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Empty:\r\nSet-Cookie: b=2\r\n\r\n", 200,
               body, 5, &len);
    for (size_t cut = 0; cut < len; cut++) {
        /* a copy of exactly cut bytes, so ASan catches any read past the end */
        uint8_t *q = malloc(cut ? cut : 1);

        memcpy(q, p, cut);
        decode_bad(q, cut, NULL);
        free(q);
    }
    decode_bad(NULL, 0, "bad magic");
    free(p);
    evbuffer_free(body);
}

Test(record, bad_magic_version_flags)
{
    struct bb x;

    build_one(&x, 200, "A", "b");
    x.b[0] = 'X';
    decode_bad(x.b, x.n, "bad magic");

    put_head(&x, 3, 0, 200, 0);
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "unsupported record version");
    put_head(&x, 0, 0, 200, 0);
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "unsupported record version");

    put_head(&x, 1, 0x80, 200, 0);
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "unknown record flags");
}

/* A reason phrase other than the standard one is kept (version 2) and replayed; the
 * standard one is not stored (version 1, readable by the previous release). */
Test(record, reason_phrase_kept_only_when_not_the_standard_one)
{
    struct record rec;
    size_t len;
    uint8_t *p;

    p = encode("HTTP/1.1 410 Gone\r\nA: b\r\n\r\n", 410, NULL, 1, &len);
    cr_assert_eq(p[4], RECORD_VERSION);
    decode_ok(&rec, p, len);
    cr_assert_null(rec.head.reason);
    cr_assert_str_eq(http1_reason(rec.status), "Gone");
    record_clear(&rec);
    free(p);

    p = encode("HTTP/1.1 402 Card Declined, Try Another\r\nA: b\r\n\r\n", 402, NULL, 1, &len);
    cr_assert_eq(p[4], RECORD_VERSION_REASON);
    decode_ok(&rec, p, len);
    cr_assert_str_eq(rec.head.reason, "Card Declined, Try Another");
    cr_assert_eq(rec.status, 402);
    cr_assert_eq(rec.head.nheaders, 1);
    cr_assert_str_eq(rec.head.headers[0].name, "A");
    record_clear(&rec);
    free(p);

    /* an empty phrase is not the standard one either: "HTTP/1.1 200 " replays as such */
    p = encode("HTTP/1.1 200 \r\n\r\n", 200, NULL, 1, &len);
    cr_assert_eq(p[4], RECORD_VERSION_REASON);
    decode_ok(&rec, p, len);
    cr_assert_str_eq(rec.head.reason, "");
    record_clear(&rec);
    free(p);
}

Test(record, reason_phrase_is_checked_on_decode)
{
    struct bb x;

    put_head(&x, 2, 0, 200, 0);
    put_str(&x, "Fine\r\nX-Injected: 1");
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "invalid reason phrase");
    put_head(&x, 2, 0, 200, 0);
    put(&x, 100, 4); /* longer than what follows */
    put_bytes(&x, "ab", 2);
    decode_bad(x.b, x.n, "truncated record");
    put_head(&x, 2, 0, 200, 0);
    put(&x, RECORD_REASON_MAX + 1, 4);
    for (int i = 0; i <= RECORD_REASON_MAX; i++)
        put_bytes(&x, "r", 1);
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "invalid reason phrase");
}

Test(record, trailing_bytes_rejected)
{
    struct bb x;

    build_one(&x, 200, "A", "b");
    put(&x, 0, 1);
    decode_bad(x.b, x.n, "trailing bytes after record");
}

Test(record, header_name_must_be_token)
{
    struct bb x;

    build_one(&x, 200, "Bad Name", "b");
    decode_bad(x.b, x.n, "invalid header name");
    build_one(&x, 200, "", "b");
    decode_bad(x.b, x.n, "invalid header name");
    build_one(&x, 200, "A:", "b");
    decode_bad(x.b, x.n, "invalid header name");
    build_one(&x, 200, "A\r\nX-Evil", "b");
    decode_bad(x.b, x.n, "invalid header name");

    put_head(&x, 1, 0, 200, 1);
    put(&x, 2, 4);
    put_bytes(&x, "A\0", 2);
    put_str(&x, "v");
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "invalid header name");
}

Test(record, header_value_must_not_split)
{
    struct bb x;

    build_one(&x, 200, "A", "x\r\nSet-Cookie: evil=1");
    decode_bad(x.b, x.n, "invalid header value");
    build_one(&x, 200, "A", "x\ny");
    decode_bad(x.b, x.n, "invalid header value");
    build_one(&x, 200, "A", "x\ry");
    decode_bad(x.b, x.n, "invalid header value");
    build_one(&x, 200, "A", "x\x7fy");
    decode_bad(x.b, x.n, "invalid header value");

    put_head(&x, 1, 0, 200, 1);
    put_str(&x, "A");
    put(&x, 3, 4);
    put_bytes(&x, "x\0y", 3);
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "invalid header value");
}

Test(record, huge_lengths_rejected_without_overflow)
{
    struct bb x;

    put_head(&x, 1, 0, 200, 0xffffffffu);
    put(&x, 0, 8);
    decode_bad(x.b, x.n, "too many headers");

    put_head(&x, 1, 0, 200, 0);
    put(&x, UINT64_MAX, 8);
    put_bytes(&x, "ok", 2);
    decode_bad(x.b, x.n, "truncated record");

    put_head(&x, 1, 0, 200, 0);
    put(&x, UINT64_MAX - 1, 8);
    put_bytes(&x, "ok", 2);
    decode_bad(x.b, x.n, "truncated record");

    put_head(&x, 1, 0, 200, 0);
    put(&x, (uint64_t)SIZE_MAX - 20, 8);
    decode_bad(x.b, x.n, "truncated record");

    put_head(&x, 1, 0, 200, 0);
    put(&x, 3, 8);
    put_bytes(&x, "ok", 2);
    decode_bad(x.b, x.n, "truncated record");

    put_head(&x, 1, 0, 200, 1);
    put(&x, 0xffffffffu, 4);
    put_bytes(&x, "A", 1);
    decode_bad(x.b, x.n, "truncated record");

    put_head(&x, 1, 0, 200, 1);
    put_str(&x, "A");
    put(&x, 0xffffffffu, 4);
    put_bytes(&x, "v", 1);
    decode_bad(x.b, x.n, "truncated record");

    /* body shorter than announced leaves bytes that look like trailing data: still bad */
    put_head(&x, 1, 0, 200, 0);
    put(&x, 1, 8);
    put_bytes(&x, "ok", 2);
    decode_bad(x.b, x.n, "trailing bytes after record");
}

Test(record, encode_refuses_what_decode_would_reject)
{
    struct http1_head h;
    struct evbuffer *out = evbuffer_new();
    char bad[] = "x\r\ny";

    resp(&h, "HTTP/1.1 200 OK\r\nX-A: ok\r\n\r\n");
    h.headers[0].value = bad;
    h.headers[0].value_len = strlen(bad);
    cr_assert_eq(record_encode(out, 200, &h, NULL, 0), -1);
    cr_assert_eq(evbuffer_get_length(out), 0);
    http1_head_clear(&h);
    evbuffer_free(out);
}
