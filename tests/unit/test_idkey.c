#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "http/http1.h"
#include "idem/idkey.h"

/* ---- idkey_parse ---- */

static char key[256];
static const char *why;

static int parse(const char *v, size_t max)
{
    why = NULL;
    return idkey_parse(v, max, key, sizeof(key), &why);
}

static void assert_valid(const char *v, size_t max, const char *want)
{
    int n = parse(v, max);

    cr_assert_eq(n, (int)strlen(want), "value [%s]: got %d (%s)", v, n, why ? why : "");
    cr_assert_str_eq(key, want, "value [%s]", v);
}

static void assert_invalid(const char *v, size_t max, const char *reason)
{
    int n = parse(v, max);

    cr_assert_eq(n, -1, "value [%s] accepted as [%s]", v, key);
    cr_assert_not_null(why, "value [%s]: no reason", v);
    cr_assert_str_eq(why, reason, "value [%s]", v);
}

Test(idkey_parse, bare_token)
{
    assert_valid("8e03978e-40d5-43e8-bc93-6894a57f9324", 255,
                 "8e03978e-40d5-43e8-bc93-6894a57f9324");
    assert_valid("a", 255, "a");
    assert_valid("!#$%&'()*+-./:;<=>?@[]^_`{|}~", 255, "!#$%&'()*+-./:;<=>?@[]^_`{|}~");
}

Test(idkey_parse, quoted_string)
{
    assert_valid("\"abc\"", 255, "abc");
    assert_valid("\"a b c\"", 255, "a b c");
    assert_valid("\" lead and trail \"", 255, " lead and trail ");
    assert_valid("\"a\\\"b\"", 255, "a\"b");
    assert_valid("\"a\\\\b\"", 255, "a\\b");
    assert_valid("\"\\\\\"", 255, "\\");
    assert_valid("\"a,b\"", 255, "a,b");
}

Test(idkey_parse, empty)
{
    assert_invalid("", 255, "empty key");
    assert_invalid("\"\"", 255, "empty key");
    assert_invalid(NULL, 255, "empty key");
    assert_invalid("   ", 255, "empty key");
}

Test(idkey_parse, surrounding_whitespace_is_tolerated)
{
    assert_valid("  abc\t", 255, "abc");
    assert_valid(" \"a b\" ", 255, "a b");
}

Test(idkey_parse, bad_quoted_strings)
{
    assert_invalid("\"a\\nb\"", 255, "invalid escape in quoted string");
    assert_invalid("\"a\\x\"", 255, "invalid escape in quoted string");
    assert_invalid("\"abc", 255, "unterminated quoted string");
    assert_invalid("\"", 255, "unterminated quoted string");
    assert_invalid("\"abc\\\"", 255, "unterminated quoted string");
    assert_invalid("\"abc\\", 255, "unterminated quoted string");
    assert_invalid("\"abc\"x", 255, "characters after closing quote");
    assert_invalid("\"abc\" x", 255, "characters after closing quote");
    assert_invalid("\"a\"\"b\"", 255, "characters after closing quote");
    assert_invalid("\"a\", \"b\"", 255, "characters after closing quote");
    assert_invalid("\"a\tb\"", 255, "non-printable character in quoted string");
    assert_invalid("\"a\x7f\"", 255, "non-printable character in quoted string");
    assert_invalid("\"caf\xc3\xa9\"", 255, "non-printable character in quoted string");
}

Test(idkey_parse, bad_bare_values)
{
    const char *r = "non-printable or reserved character";

    assert_invalid("a,b", 255, r);
    assert_invalid("a b", 255, r);
    assert_invalid("a\tb", 255, r);
    assert_invalid("ab\"", 255, r);
    assert_invalid("a\"b\"", 255, r);
    assert_invalid("a\\b", 255, r);
    assert_invalid("caf\xc3\xa9", 255, r);
    assert_invalid("\x80", 255, r);
    assert_invalid("\xff", 255, r);
    assert_invalid("a\x7f", 255, r);
    assert_invalid("a\x01", 255, r);
    assert_invalid("a\rb", 255, r);
}

Test(idkey_parse, max_length_bare)
{
    assert_valid("abcdefgh", 8, "abcdefgh");
    assert_invalid("abcdefghi", 8, "key too long");
    assert_valid("a", 1, "a");
    assert_invalid("ab", 1, "key too long");
}

Test(idkey_parse, max_length_counts_unquoted_bytes)
{
    /* 8 bytes once unquoted, though 10 or 11 on the wire */
    assert_valid("\"abcdefgh\"", 8, "abcdefgh");
    assert_valid("\"abcdefg\\\"\"", 8, "abcdefg\"");
    assert_valid("\"\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\"", 8, "\\\\\\\\\\\\\\\\");
    assert_invalid("\"abcdefghi\"", 8, "key too long");
    assert_invalid("\"abcdefgh\\\\\"", 8, "key too long");
}

Test(idkey_parse, output_never_overflows_small_buffer)
{
    char small[4];
    const char *w = NULL;

    memset(small, 'X', sizeof(small));
    /* max_len claims 255 but the buffer only holds 3 bytes plus NUL */
    cr_assert_eq(idkey_parse("abcd", 255, small, sizeof(small), &w), -1);
    cr_assert_str_eq(w, "key too long");
    cr_assert_eq(idkey_parse("abc", 255, small, sizeof(small), &w), 3);
    cr_assert_str_eq(small, "abc");
}

Test(idkey_parse, longest_default_key)
{
    char v[258];

    memset(v, 'k', 255);
    v[255] = '\0';
    cr_assert_eq(parse(v, 255), 255);
    v[255] = 'k';
    v[256] = '\0';
    cr_assert_eq(parse(v, 255), -1);
    cr_assert_str_eq(why, "key too long");
}

/* ---- hashing ---- */

static void req(struct http1_head *h, const char *raw)
{
    struct http1_error err;

    cr_assert_eq(http1_parse_request(h, raw, strlen(raw), &err), 0, "%s: %s", raw, err.detail);
}

static void rid(const char *raw, char *const *scope, size_t nscope, const char *k,
                uint8_t out[IDKEY_HASH_LEN])
{
    struct http1_head h;

    req(&h, raw);
    cr_assert_eq(idkey_record_id(&h, scope, nscope, NULL, k, strlen(k), out), 0);
    http1_head_clear(&h);
}

static void fp(const char *raw, const char *body, char *const *hdrs, size_t n,
               uint8_t out[IDKEY_HASH_LEN])
{
    struct http1_head h;
    struct evbuffer *b = evbuffer_new();

    req(&h, raw);
    evbuffer_add(b, body, strlen(body));
    cr_assert_eq(idkey_fingerprint(&h, b, hdrs, n, out), 0);
    cr_assert_eq(evbuffer_get_length(b), strlen(body), "body was drained");
    evbuffer_free(b);
    http1_head_clear(&h);
}

#define SAME(a, b)   cr_assert(memcmp((a), (b), IDKEY_HASH_LEN) == 0)
#define DIFFER(a, b) cr_assert(memcmp((a), (b), IDKEY_HASH_LEN) != 0)

static char *scope2[] = {"Authorization", "X-Tenant"};

Test(idkey_hash, record_id_is_deterministic)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];
    const char *r = "POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n";

    rid(r, scope2, 2, "k1", a);
    rid(r, scope2, 2, "k1", b);
    SAME(a, b);
}

Test(idkey_hash, record_id_differs_by_key)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];
    const char *r = "POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n";

    rid(r, scope2, 2, "k1", a);
    rid(r, scope2, 2, "k2", b);
    DIFFER(a, b);
    rid(r, scope2, 2, "k", b);
    DIFFER(a, b);
}

Test(idkey_hash, record_id_scope_split_is_unambiguous)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];

    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nX-Tenant: bc\r\n\r\n", scope2, 2, "k",
        a);
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: ab\r\nX-Tenant: c\r\n\r\n", scope2, 2, "k",
        b);
    DIFFER(a, b);
    /* and between the last scope value and the key */
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nX-Tenant: b\r\n\r\n", scope2, 2, "ck",
        a);
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nX-Tenant: bc\r\n\r\n", scope2, 2, "k",
        b);
    DIFFER(a, b);
}

Test(idkey_hash, record_id_absent_differs_from_empty)
{
    uint8_t absent[IDKEY_HASH_LEN], empty[IDKEY_HASH_LEN], set[IDKEY_HASH_LEN];

    rid("POST / HTTP/1.1\r\nHost: h\r\n\r\n", scope2, 1, "k", absent);
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization:\r\n\r\n", scope2, 1, "k", empty);
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: x\r\n\r\n", scope2, 1, "k", set);
    DIFFER(absent, empty);
    DIFFER(absent, set);
    DIFFER(empty, set);
}

Test(idkey_hash, record_id_scope_lookup_is_case_insensitive)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN], c[IDKEY_HASH_LEN];
    char *lower[] = {"authorization"};

    rid("POST / HTTP/1.1\r\nHost: h\r\nAUTHORIZATION: t\r\n\r\n", lower, 1, "k", a);
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: t\r\n\r\n", scope2, 1, "k", b);
    rid("POST / HTTP/1.1\r\nHost: h\r\n\r\n", scope2, 1, "k", c);
    SAME(a, b);
    DIFFER(a, c);
}

Test(idkey_hash, record_id_uses_first_occurrence_and_ignores_other_headers)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN], c[IDKEY_HASH_LEN];

    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: t\r\nAuthorization: u\r\n\r\n", scope2, 1,
        "k", a);
    rid("PUT /other HTTP/1.1\r\nHost: h2\r\nX-Other: 1\r\nAuthorization: t\r\n\r\n", scope2, 1, "k",
        b);
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: u\r\n\r\n", scope2, 1, "k", c);
    SAME(a, b);
    DIFFER(a, c);
}

Test(idkey_hash, record_id_depends_on_scope_count)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];
    const char *r = "POST / HTTP/1.1\r\nHost: h\r\n\r\n";

    rid(r, scope2, 1, "k", a);
    rid(r, scope2, 2, "k", b);
    DIFFER(a, b);
}

static char *fph[] = {"Content-Type", "X-Sig"};

Test(idkey_hash, fingerprint_equal_for_identical_requests)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];

    fp("POST /pay HTTP/1.1\r\nHost: h\r\nContent-Type: json\r\nUser-Agent: a\r\n\r\n", "{}", fph, 2,
       a);
    /* headers outside the list (and their order) do not count */
    fp("POST /pay HTTP/1.1\r\nUser-Agent: b\r\nContent-Type: json\r\nHost: other\r\n\r\n", "{}",
       fph, 2, b);
    SAME(a, b);
}

Test(idkey_hash, fingerprint_differs)
{
    uint8_t base[IDKEY_HASH_LEN], x[IDKEY_HASH_LEN];
    const char *hdr = "Host: h\r\nContent-Type: json\r\n\r\n";
    char raw[256];

    snprintf(raw, sizeof(raw), "POST /pay HTTP/1.1\r\n%s", hdr);
    fp(raw, "{\"a\":1}", fph, 2, base);

    snprintf(raw, sizeof(raw), "PUT /pay HTTP/1.1\r\n%s", hdr);
    fp(raw, "{\"a\":1}", fph, 2, x);
    DIFFER(base, x);

    snprintf(raw, sizeof(raw), "POST /pay?x HTTP/1.1\r\n%s", hdr);
    fp(raw, "{\"a\":1}", fph, 2, x);
    DIFFER(base, x);

    snprintf(raw, sizeof(raw), "POST /pay HTTP/1.1\r\n%s", hdr);
    fp(raw, "{\"a\":2}", fph, 2, x);
    DIFFER(base, x);
    fp(raw, "", fph, 2, x);
    DIFFER(base, x);

    fp("POST /pay HTTP/1.1\r\nHost: h\r\nContent-Type: xml\r\n\r\n", "{\"a\":1}", fph, 2, x);
    DIFFER(base, x);
    fp("POST /pay HTTP/1.1\r\nHost: h\r\n\r\n", "{\"a\":1}", fph, 2, x);
    DIFFER(base, x);
    fp("POST /pay HTTP/1.1\r\nHost: h\r\nContent-Type: json\r\nX-Sig: s\r\n\r\n", "{\"a\":1}", fph,
       2, x);
    DIFFER(base, x);
}

Test(idkey_hash, fingerprint_method_target_split_is_unambiguous)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];

    /* target "/ab" body "c" vs target "/a" body "bc" */
    fp("POST /ab HTTP/1.1\r\nHost: h\r\n\r\n", "c", NULL, 0, a);
    fp("POST /a HTTP/1.1\r\nHost: h\r\n\r\n", "bc", NULL, 0, b);
    DIFFER(a, b);
}

Test(idkey_hash, fingerprint_absent_differs_from_empty_header)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];

    fp("POST / HTTP/1.1\r\nHost: h\r\n\r\n", "x", fph, 1, a);
    fp("POST / HTTP/1.1\r\nHost: h\r\nContent-Type:\r\n\r\n", "x", fph, 1, b);
    DIFFER(a, b);
}

Test(idkey_hash, fingerprint_body_chains_hash_like_contiguous)
{
    static const char *parts[] = {"he", "", "llo, ", "w", "orld", "!"};
    uint8_t whole[IDKEY_HASH_LEN], split[IDKEY_HASH_LEN];
    struct http1_head h;
    struct evbuffer *b = evbuffer_new();
    struct evbuffer_iovec v[8];
    char big[3000];

    fp("POST / HTTP/1.1\r\nHost: h\r\n\r\n", "hello, world!", NULL, 0, whole);
    req(&h, "POST / HTTP/1.1\r\nHost: h\r\n\r\n");
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        evbuffer_add_reference(b, parts[i], strlen(parts[i]), NULL, NULL);
    cr_assert_geq(evbuffer_peek(b, -1, NULL, v, 8), 4, "body is not split into chains");
    cr_assert_eq(idkey_fingerprint(&h, b, NULL, 0, split), 0);
    SAME(whole, split);
    cr_assert_eq(evbuffer_get_length(b), 13);
    evbuffer_free(b);

    /* more chains than the 16-iovec window */
    memset(big, 'z', sizeof(big));
    big[sizeof(big) - 1] = '\0';
    fp("POST / HTTP/1.1\r\nHost: h\r\n\r\n", big, NULL, 0, whole);
    b = evbuffer_new();
    for (size_t off = 0; off < sizeof(big) - 1; off += 37) {
        size_t n = sizeof(big) - 1 - off < 37 ? sizeof(big) - 1 - off : 37;
        evbuffer_add_reference(b, big + off, n, NULL, NULL);
    }
    cr_assert_gt(evbuffer_peek(b, -1, NULL, NULL, 0), 16);
    cr_assert_eq(idkey_fingerprint(&h, b, NULL, 0, split), 0);
    SAME(whole, split);
    evbuffer_free(b);
    http1_head_clear(&h);
}

Test(idkey_hash, fingerprint_null_body_is_empty_body)
{
    uint8_t a[IDKEY_HASH_LEN], b[IDKEY_HASH_LEN];
    struct http1_head h;

    fp("GET /x HTTP/1.1\r\nHost: h\r\n\r\n", "", NULL, 0, a);
    req(&h, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert_eq(idkey_fingerprint(&h, NULL, NULL, 0, b), 0);
    http1_head_clear(&h);
    SAME(a, b);
}

/* ---- known answers: the byte layout documented in src/idkey.c, spelled out here ---- */

static void sha256_hex(const void *data, size_t len, char hex[IDKEY_HEX_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    cr_assert_eq(EVP_Digest(data, len, md, &n, EVP_sha256(), NULL), 1);
    cr_assert_eq(n, 32);
    for (unsigned int i = 0; i < n; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
}

Test(idkey_hash, record_id_known_answer)
{
    static const char layout[] = "\0\0\0\0\0\0\0\x09"
                                 "idem-id/1"
                                 "\0\0\0\0\0\0\0\x02" /* two scope headers */
                                 "\x01"               /* Authorization present */
                                 "\0\0\0\0\0\0\0\x08"
                                 "Bearer t"
                                 "\x00" /* X-Tenant absent */
                                 "\0\0\0\0\0\0\0\x02"
                                 "k1"; /* the key */
    char want[IDKEY_HEX_LEN + 1], got[IDKEY_HEX_LEN + 1];
    uint8_t h[IDKEY_HASH_LEN];

    sha256_hex(layout, sizeof(layout) - 1, want);
    rid("POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n", scope2, 2, "k1", h);
    cr_assert_str_eq(idkey_hex(h, got), want);
}

Test(idkey_hash, fingerprint_known_answer)
{
    static const char layout[] = "\0\0\0\0\0\0\0\x09"
                                 "idem-fp/1"
                                 "\0\0\0\0\0\0\0\x04"
                                 "POST"
                                 "\0\0\0\0\0\0\0\x04"
                                 "/pay"
                                 "\0\0\0\0\0\0\0\x03"
                                 "a\0b"               /* body, with a NUL */
                                 "\0\0\0\0\0\0\0\x02" /* two fingerprint headers */
                                 "\x01"
                                 "\0\0\0\0\0\0\0\x04"
                                 "json"
                                 "\x00";
    char want[IDKEY_HEX_LEN + 1], got[IDKEY_HEX_LEN + 1];
    uint8_t h[IDKEY_HASH_LEN];
    struct http1_head hd;
    struct evbuffer *b = evbuffer_new();

    sha256_hex(layout, sizeof(layout) - 1, want);
    req(&hd, "POST /pay HTTP/1.1\r\nHost: h\r\nContent-Type: json\r\n\r\n");
    evbuffer_add(b, "a\0b", 3);
    cr_assert_eq(idkey_fingerprint(&hd, b, fph, 2, h), 0);
    cr_assert_str_eq(idkey_hex(h, got), want);
    evbuffer_free(b);
    http1_head_clear(&hd);
}

Test(idkey_hash, host_fingerprint_known_answer)
{
    uint8_t fp1[IDKEY_HASH_LEN], h[IDKEY_HASH_LEN], lower[IDKEY_HASH_LEN], none[IDKEY_HASH_LEN];
    unsigned char layout[9 + 9 + 32 + 1 + 8 + 14];
    char want[IDKEY_HEX_LEN + 1], got[IDKEY_HEX_LEN + 1];
    struct http1_head hd;
    size_t n = 0;

    fp("POST /pay HTTP/1.1\r\nHost: Shop.Example\r\n\r\n", "{}", NULL, 0, fp1);
    memcpy(layout + n, "\0\0\0\0\0\0\0\x09idem-fp/2", 17);
    n += 17;
    memcpy(layout + n, fp1, 32);
    n += 32;
    memcpy(layout + n, "\x01\0\0\0\0\0\0\0\x0cshop.example", 21); /* in lower case */
    n += 21;
    sha256_hex(layout, n, want);
    req(&hd, "POST /pay HTTP/1.1\r\nHost: Shop.Example\r\n\r\n");
    cr_assert_eq(idkey_fingerprint_host(fp1, &hd, h), 0);
    cr_assert_str_eq(idkey_hex(h, got), want);
    http1_head_clear(&hd);
    /* the same host in another case is the same request; another host, or none, is not */
    req(&hd, "POST /pay HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    cr_assert_eq(idkey_fingerprint_host(fp1, &hd, lower), 0);
    SAME(h, lower);
    http1_head_clear(&hd);
    /* the port is not part of the host: replicas on two ports serve one virtual host */
    req(&hd, "POST /pay HTTP/1.1\r\nHost: shop.example:8081\r\n\r\n");
    cr_assert_eq(idkey_fingerprint_host(fp1, &hd, lower), 0);
    SAME(h, lower);
    http1_head_clear(&hd);
    req(&hd, "POST /pay HTTP/1.1\r\nHost: other.example\r\n\r\n");
    cr_assert_eq(idkey_fingerprint_host(fp1, &hd, lower), 0);
    DIFFER(h, lower);
    http1_head_clear(&hd);
    req(&hd, "POST /pay HTTP/1.0\r\n\r\n");
    cr_assert_eq(idkey_fingerprint_host(fp1, &hd, none), 0);
    DIFFER(h, none);
    http1_head_clear(&hd);
    req(&hd, "POST /pay HTTP/1.1\r\nHost: \r\n\r\n");
    cr_assert_eq(idkey_fingerprint_host(fp1, &hd, lower), 0);
    DIFFER(none, lower); /* absent and empty differ */
    http1_head_clear(&hd);
}

Test(idkey_hex, lower_case_hex)
{
    uint8_t h[IDKEY_HASH_LEN];
    char out[IDKEY_HEX_LEN + 1];

    for (int i = 0; i < IDKEY_HASH_LEN; i++)
        h[i] = (uint8_t)(i * 8 + 7);
    cr_assert_str_eq(idkey_hex(h, out),
                     "070f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff");
    cr_assert_eq(strlen(out), IDKEY_HEX_LEN);
}

Test(idkey_hex, sha256_of_empty_input)
{
    /* SHA-256("") — anchors the helper itself against a published value */
    char hex[IDKEY_HEX_LEN + 1];

    sha256_hex("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
