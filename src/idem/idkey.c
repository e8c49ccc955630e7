/*
 * idkey — key parsing, record id and request fingerprint.
 *
 * Exact byte layout hashed (pinned by a known-answer test in tests/unit/test_idkey.c):
 *
 *   field(x)   = u64be(len(x)) || x
 *   opt(x)     = 0x00                    when the header is absent
 *              = 0x01 || field(value)    when present (first occurrence; may be empty)
 *
 *   record id   = SHA-256( field("idem-id/1") || u64be(nscope)
 *                          || opt(scope value 1) || ... || opt(scope value n)
 *                          || field(key) )
 *                 (the scope entry ":client-cert" is the client certificate's SHA-256
 *                 in hex: opt() of it, absent without a verified certificate)
 *   fingerprint = SHA-256( field("idem-fp/1") || field(method) || field(target)
 *                          || field(body) || u64be(nfp)
 *                          || opt(fp header value 1) || ... || opt(fp header value n) )
 *   host fingerprint = SHA-256( field("idem-fp/2") || fingerprint (32 bytes)
 *                               || opt(lower-case Host name, without its port) )
 *
 * The host fingerprint is what claims store: a key sent to another virtual host is
 * another request (422), never a replay. The plain fingerprint is what the previous
 * release stored; claims accept it too, so records written before an upgrade still
 * replay (idem.c).
 *
 * Every variable-length part carries its length and every list its count, so the stream
 * decodes back into exactly one tuple of inputs: ("a","bc") and ("ab","c") cannot collide,
 * nor can an absent header and an empty one, nor two configurations with different numbers
 * of scope or fingerprint headers.
 */
#include "idem/idkey.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "core/bytes.h"
#include "http/http1.h"

#define IDKEY_DOMAIN_ID      "idem-id/1"
#define IDKEY_DOMAIN_FP      "idem-fp/1"
#define IDKEY_DOMAIN_FP_HOST "idem-fp/2"

/*
 * EVP_sha256() is a legacy handle: with OpenSSL 3 every EVP_DigestInit_ex on it performs an
 * implicit provider fetch (a locked method-store lookup). Fetch once instead; the handle
 * lives for the process and stays reachable from this static, so it is not a leak.
 */
static pthread_once_t idkey_md_once = PTHREAD_ONCE_INIT;
static const EVP_MD *idkey_md;
/* One digest context per thread, kept between digests (the digests of a request never
 * nest): a new one per digest cost 3 allocations and their frees each time. Freed at
 * thread exit by the key's destructor. */
static pthread_key_t idkey_ctx_key;
static int idkey_ctx_cached;

static void idkey_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void idkey_md_init(void)
{
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);

    idkey_md = md ? md : EVP_sha256();
    idkey_ctx_cached = pthread_key_create(&idkey_ctx_key, idkey_ctx_free) == 0;
}

static void idkey_end_ctx(EVP_MD_CTX *ctx);

static EVP_MD_CTX *idkey_begin(void)
{
    EVP_MD_CTX *ctx;

    if (pthread_once(&idkey_md_once, idkey_md_init) != 0 || !idkey_md)
        return NULL;
    ctx = idkey_ctx_cached ? pthread_getspecific(idkey_ctx_key) : NULL;
    if (!ctx) {
        if (!(ctx = EVP_MD_CTX_new()))
            return NULL;
        if (idkey_ctx_cached && pthread_setspecific(idkey_ctx_key, ctx) != 0) {
            EVP_MD_CTX_free(ctx);
            return NULL;
        }
    }
    if (EVP_DigestInit_ex(ctx, idkey_md, NULL) != 1) {
        idkey_end_ctx(ctx);
        return NULL;
    }
    return ctx;
}

/* Done with ctx: kept for the thread's next digest, or freed when there is no cache. */
static void idkey_end_ctx(EVP_MD_CTX *ctx)
{
    if (!idkey_ctx_cached)
        EVP_MD_CTX_free(ctx);
}

/* Finish the digest into out and let ctx go. ok carries earlier update failures. */
static int idkey_end(EVP_MD_CTX *ctx, int ok, uint8_t out[IDKEY_HASH_LEN])
{
    unsigned int n = 0;

    if (ok && (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != IDKEY_HASH_LEN))
        ok = 0;
    idkey_end_ctx(ctx);
    return ok ? 0 : -1;
}

static int idkey_u64(EVP_MD_CTX *ctx, uint64_t v)
{
    unsigned char b[8];

    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    return EVP_DigestUpdate(ctx, b, sizeof(b)) == 1;
}

static int idkey_field(EVP_MD_CTX *ctx, const void *p, size_t len)
{
    if (!idkey_u64(ctx, len))
        return 0;
    return len == 0 || EVP_DigestUpdate(ctx, p, len) == 1;
}

/* opt(): absent (NULL) and present-but-empty hash differently. */
static int idkey_opt(EVP_MD_CTX *ctx, const struct http1_header *f)
{
    unsigned char tag = f ? 1 : 0;

    if (EVP_DigestUpdate(ctx, &tag, 1) != 1)
        return 0;
    return !f || idkey_field(ctx, f->value, f->value_len);
}

static int idkey_digest_piece(const void *piece, size_t n, void *arg)
{
    return EVP_DigestUpdate(arg, piece, n) == 1 ? 0 : -1;
}

/* field(body), read chain by chain in place: neither drained nor pulled up. */
static int idkey_body(EVP_MD_CTX *ctx, struct evbuffer *body)
{
    size_t total = body ? evbuffer_get_length(body) : 0;

    if (!idkey_u64(ctx, total))
        return 0;
    return total == 0 || bytes_each(body, total, idkey_digest_piece, ctx) == 0;
}

/* First header named name (case-insensitive), or NULL when absent (or req is NULL). */
static const struct http1_header *idkey_header(const struct http1_head *req, const char *name)
{
    for (size_t i = 0; req && name && i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return &req->headers[i];
    return NULL;
}

static int idkey_fail(const char **why, const char *reason, char *out, size_t outlen)
{
    if (why)
        *why = reason;
    if (out && outlen)
        out[0] = '\0';
    return -1;
}

int idkey_parse(const char *value, size_t max_len, char *out, size_t outlen, const char **why)
{
    const char *p, *end;
    size_t limit, n = 0;

    if (!out || outlen == 0)
        return idkey_fail(why, "no room for the key", out, outlen);
    limit = max_len < outlen - 1 ? max_len : outlen - 1;
    if (limit > INT_MAX)
        limit = INT_MAX;
    if (!value)
        return idkey_fail(why, "empty key", out, outlen);

    /* The HTTP parser already strips OWS; tolerate it anyway. */
    p = value;
    end = value + strlen(value);
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (p == end)
        return idkey_fail(why, "empty key", out, outlen);

    if (*p == '"') {
        /* sf-string: printable ASCII; only \" and \\ escape; nothing after the close */
        for (p++;; p++) {
            unsigned char c;

            if (p == end)
                return idkey_fail(why, "unterminated quoted string", out, outlen);
            c = (unsigned char)*p;
            if (c == '"')
                break;
            if (c == '\\') {
                if (++p == end)
                    return idkey_fail(why, "unterminated quoted string", out, outlen);
                c = (unsigned char)*p;
                if (c != '"' && c != '\\')
                    return idkey_fail(why, "invalid escape in quoted string", out, outlen);
            } else if (c < 0x20 || c > 0x7e) {
                return idkey_fail(why, "non-printable character in quoted string", out, outlen);
            }
            if (n == limit)
                return idkey_fail(why, "key too long", out, outlen);
            out[n++] = (char)c;
        }
        if (p + 1 != end)
            return idkey_fail(why, "characters after closing quote", out, outlen);
        if (n == 0)
            return idkey_fail(why, "empty key", out, outlen);
    } else {
        /* bare value: VCHAR except DQUOTE, ',' and '\' */
        for (; p < end; p++) {
            unsigned char c = (unsigned char)*p;

            if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == '\\')
                return idkey_fail(why, "non-printable or reserved character", out, outlen);
            if (n == limit)
                return idkey_fail(why, "key too long", out, outlen);
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return (int)n;
}

int idkey_record_id(const struct http1_head *req, char *const *scope_headers, size_t nscope,
                    const char *client_cert, const char *key, size_t keylen,
                    uint8_t out[IDKEY_HASH_LEN])
{
    EVP_MD_CTX *ctx = idkey_begin();
    int ok;

    if (!ctx)
        return -1;
    ok = idkey_field(ctx, IDKEY_DOMAIN_ID, sizeof(IDKEY_DOMAIN_ID) - 1) && idkey_u64(ctx, nscope);
    for (size_t i = 0; ok && i < nscope; i++) {
        if (strcmp(scope_headers[i], IDKEY_SCOPE_CLIENT_CERT) == 0) {
            size_t n = client_cert ? strlen(client_cert) : 0;
            unsigned char tag = n ? 1 : 0; /* opt(), as for a header */
            ok = EVP_DigestUpdate(ctx, &tag, 1) == 1 && (!n || idkey_field(ctx, client_cert, n));
        } else {
            ok = idkey_opt(ctx, idkey_header(req, scope_headers[i]));
        }
    }
    ok = ok && idkey_field(ctx, key, keylen);
    return idkey_end(ctx, ok, out);
}

int idkey_fingerprint(const struct http1_head *req, struct evbuffer *body, char *const *fp_headers,
                      size_t nfp, uint8_t out[IDKEY_HASH_LEN])
{
    const char *method = req && req->method ? req->method : "";
    const char *target = req && req->target ? req->target : "";
    EVP_MD_CTX *ctx = idkey_begin();
    int ok;

    if (!ctx)
        return -1;
    ok = idkey_field(ctx, IDKEY_DOMAIN_FP, sizeof(IDKEY_DOMAIN_FP) - 1) &&
         idkey_field(ctx, method, strlen(method)) && idkey_field(ctx, target, strlen(target)) &&
         idkey_body(ctx, body) && idkey_u64(ctx, nfp);
    for (size_t i = 0; ok && i < nfp; i++)
        ok = idkey_opt(ctx, idkey_header(req, fp_headers[i]));
    return idkey_end(ctx, ok, out);
}

/* The length of a Host value's name: without ":port" ("[v6]:port" keeps its brackets). */
static size_t idkey_host_name_len(const char *v, size_t len)
{
    const char *end = v + len, *colon;

    if (len && v[0] == '[') {
        const char *close = memchr(v, ']', len);
        return close ? (size_t)(close + 1 - v) : len;
    }
    colon = memchr(v, ':', len);
    return colon ? (size_t)(colon - v) : (size_t)(end - v);
}

int idkey_fingerprint_host(const uint8_t fp[IDKEY_HASH_LEN], const struct http1_head *req,
                           uint8_t out[IDKEY_HASH_LEN])
{
    const struct http1_header *host = idkey_header(req, "Host");
    EVP_MD_CTX *ctx = idkey_begin();
    unsigned char tag = host ? 1 : 0;
    char lower[256];
    size_t len = host ? idkey_host_name_len(host->value, host->value_len) : 0;
    int ok;

    if (!ctx)
        return -1;
    ok = idkey_field(ctx, IDKEY_DOMAIN_FP_HOST, sizeof(IDKEY_DOMAIN_FP_HOST) - 1) &&
         EVP_DigestUpdate(ctx, fp, IDKEY_HASH_LEN) == 1 && EVP_DigestUpdate(ctx, &tag, 1) == 1;
    if (ok && host) {
        /* host names are case-insensitive: hash them in one case (in chunks) */
        ok = idkey_u64(ctx, len);
        for (size_t off = 0; ok && off < len; off += sizeof(lower)) {
            size_t n = len - off < sizeof(lower) ? len - off : sizeof(lower);
            for (size_t i = 0; i < n; i++) {
                char c = host->value[off + i];
                lower[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
            }
            ok = EVP_DigestUpdate(ctx, lower, n) == 1;
        }
    }
    return idkey_end(ctx, ok, out);
}

char *idkey_hex(const uint8_t hash[IDKEY_HASH_LEN], char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < IDKEY_HASH_LEN; i++) {
        out[2 * i] = digits[hash[i] >> 4];
        out[2 * i + 1] = digits[hash[i] & 0x0f];
    }
    out[IDKEY_HEX_LEN] = '\0';
    return out;
}
