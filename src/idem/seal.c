/*
 * seal — AES-256-GCM envelopes for records at rest (see seal.h for the format).
 */
#include "idem/seal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "idem/idkey.h"

#define SEAL_MAGIC     "IDRE"
#define SEAL_VERSION   1
#define SEAL_ALG_GCM   1
#define SEAL_ID_LEN    10 /* magic, version, algorithm, key id: the nonce follows */
#define SEAL_NONCE_LEN 12
#define SEAL_AAD_LABEL "idemproxy/record/v1"

static const struct conf_choice seal_mode_choices[] = {
    {"off", SEAL_OFF}, {"aes-256-gcm", SEAL_AES_256_GCM}, {NULL, 0}};

const struct conf_directive seal_conf_rows[] = {
    {.name = "record-encryption",
     .type = CONF_T_ENUM,
     .def = "off",
     .off = offsetof(struct seal_conf, mode),
     .choices = seal_mode_choices,
     .arg = "off|aes-256-gcm",
     .help = "seal recorded answers (first key of record-keys)"},
    {.name = "record-keys",
     .type = CONF_T_STRING,
     .off = offsetof(struct seal_conf, keys_file),
     .arg = "FILE",
     .help = "\"ID BASE64\" lines: the first seals, all open"},
    {.name = "record-plaintext-read",
     .type = CONF_T_BOOL,
     .def = "no",
     .off = offsetof(struct seal_conf, plaintext_read),
     .arg = "yes|no",
     .help = "replay plain records while records are sealed"},
    CONF_END,
};

/* ---- the cipher, fetched once; one context per thread ---- */

/* EVP_aes_256_gcm() is a legacy handle: each init on it would fetch from the provider
 * store under a lock (OpenSSL 3). Fetched once, it lives for the process. */
static pthread_once_t seal_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *seal_cipher;
static pthread_key_t seal_ctx_key;
static int seal_ctx_cached;

static void seal_ctx_free(void *ctx)
{
    EVP_CIPHER_CTX_free(ctx);
}

static void seal_init(void)
{
    seal_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    seal_ctx_cached = pthread_key_create(&seal_ctx_key, seal_ctx_free) == 0;
}

/* This thread's context (NULL: out of memory or no cipher). Never freed by the caller. */
static EVP_CIPHER_CTX *seal_ctx(void)
{
    EVP_CIPHER_CTX *ctx;

    pthread_once(&seal_once, seal_init);
    if (!seal_cipher || !seal_ctx_cached)
        return NULL;
    if ((ctx = pthread_getspecific(seal_ctx_key)))
        return ctx;
    if ((ctx = EVP_CIPHER_CTX_new()) && pthread_setspecific(seal_ctx_key, ctx) != 0) {
        EVP_CIPHER_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

/*
 * Nonces: 96 bits, unique per key. RAND_bytes for each would cost about 2 us (measured:
 * 1.9 us per 12 bytes, OpenSSL 3.0 here — twice the sealing itself). Instead each thread
 * draws 64 random bits once and counts the records it seals in the other 32, drawing
 * again before its counter would wrap: NIST SP 800-38D 8.2.1's construction with a
 * random fixed field. Two nonces can only repeat when two draws of 64 bits do (about
 * k^2 / 2^65 for k draws under one key), far less likely than 96 random bits per record.
 */
static __thread unsigned char seal_nonce_prefix[8];
static __thread uint32_t seal_nonce_count;
static __thread int seal_nonce_ready;

static int seal_nonce(unsigned char nonce[SEAL_NONCE_LEN])
{
    if (!seal_nonce_ready || seal_nonce_count == UINT32_MAX) {
        if (RAND_bytes(seal_nonce_prefix, sizeof(seal_nonce_prefix)) != 1)
            return -1;
        seal_nonce_count = 0;
        seal_nonce_ready = 1;
    }
    seal_nonce_count++;
    memcpy(nonce, seal_nonce_prefix, 8);
    nonce[8] = (unsigned char)(seal_nonce_count >> 24);
    nonce[9] = (unsigned char)(seal_nonce_count >> 16);
    nonce[10] = (unsigned char)(seal_nonce_count >> 8);
    nonce[11] = (unsigned char)seal_nonce_count;
    return 0;
}

static void seal_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t seal_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The additional data: label, key (length first), fingerprint, the envelope's id. */
static int seal_aad(EVP_CIPHER_CTX *ctx, int enc, const char *rkey, const char *fp_hex,
                    const unsigned char *id)
{
    unsigned char klen[4];
    size_t n = strlen(rkey);
    int out;
    int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int) =
        enc ? EVP_EncryptUpdate : EVP_DecryptUpdate;

    if (n > 0x7fffffff)
        return -1;
    seal_put32(klen, (uint32_t)n);
    return update(ctx, NULL, &out, (const unsigned char *)SEAL_AAD_LABEL,
                  (int)sizeof(SEAL_AAD_LABEL) - 1) == 1 &&
                   update(ctx, NULL, &out, klen, 4) == 1 &&
                   update(ctx, NULL, &out, (const unsigned char *)rkey, (int)n) == 1 &&
                   update(ctx, NULL, &out, (const unsigned char *)fp_hex, IDKEY_HEX_LEN) == 1 &&
                   update(ctx, NULL, &out, id, SEAL_ID_LEN) == 1
               ? 0
               : -1;
}

int seal_record(const struct seal_keyring *kr, void *buf, size_t plain_len, const char *rkey,
                const char *fp_hex)
{
    EVP_CIPHER_CTX *ctx = seal_ctx();
    unsigned char *p = buf, *nonce = p + SEAL_ID_LEN, *text = p + SEAL_HEAD_LEN;
    int out = 0, fin = 0;

    if (!ctx || !kr || kr->n == 0 || plain_len > 0x7fffffff)
        return -1;
    memcpy(p, SEAL_MAGIC, 4);
    p[4] = SEAL_VERSION;
    p[5] = SEAL_ALG_GCM;
    seal_put32(p + 6, kr->keys[0].id);
    if (seal_nonce(nonce) < 0 ||
        EVP_EncryptInit_ex2(ctx, seal_cipher, kr->keys[0].key, nonce, NULL) != 1 ||
        seal_aad(ctx, 1, rkey, fp_hex, p) < 0 ||
        EVP_EncryptUpdate(ctx, text, &out, text, (int)plain_len) != 1 ||
        EVP_EncryptFinal_ex(ctx, text + out, &fin) != 1 || (size_t)(out + fin) != plain_len ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, text + plain_len) != 1)
        return -1;
    return 0;
}

int seal_is_sealed(const void *data, size_t len, uint32_t *key_id)
{
    const unsigned char *p = data;

    if (len < SEAL_OVERHEAD || memcmp(p, SEAL_MAGIC, 4) != 0)
        return 0;
    if (key_id)
        *key_id = seal_get32(p + 6);
    return 1;
}

const char *seal_status_str(enum seal_status st)
{
    switch (st) {
    case SEAL_OPENED:
        return "opened";
    case SEAL_UNKNOWN_KEY:
        return "sealed with a key record-keys does not have";
    case SEAL_BAD:
        return "does not open (altered, truncated, or not this key's record)";
    case SEAL_NO_MEMORY:
        return "out of memory";
    }
    return "?";
}

enum seal_status seal_open(const struct seal_keyring *kr, const void *data, size_t len,
                           const char *rkey, const char *fp_hex, unsigned char **out,
                           size_t *out_len)
{
    const unsigned char *p = data;
    const struct seal_key *k = NULL;
    EVP_CIPHER_CTX *ctx;
    unsigned char *plain, tag[SEAL_TAG_LEN];
    size_t n;
    uint32_t id;
    int got = 0, fin = 0;

    *out = NULL;
    *out_len = 0;
    if (!seal_is_sealed(data, len, &id) || p[4] != SEAL_VERSION || p[5] != SEAL_ALG_GCM ||
        len - SEAL_OVERHEAD > 0x7fffffff)
        return SEAL_BAD;
    for (size_t i = 0; kr && i < kr->n; i++)
        if (kr->keys[i].id == id)
            k = &kr->keys[i];
    if (!k)
        return SEAL_UNKNOWN_KEY;
    if (!(ctx = seal_ctx()))
        return SEAL_NO_MEMORY;
    n = len - SEAL_OVERHEAD;
    if (!(plain = malloc(n ? n : 1)))
        return SEAL_NO_MEMORY;
    memcpy(tag, p + len - SEAL_TAG_LEN, SEAL_TAG_LEN);
    if (EVP_DecryptInit_ex2(ctx, seal_cipher, k->key, p + SEAL_ID_LEN, NULL) != 1 ||
        seal_aad(ctx, 0, rkey, fp_hex, p) < 0 ||
        EVP_DecryptUpdate(ctx, plain, &got, p + SEAL_HEAD_LEN, (int)n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, tag) != 1 ||
        EVP_DecryptFinal_ex(ctx, plain + got, &fin) != 1 || (size_t)(got + fin) != n) {
        OPENSSL_cleanse(plain, n);
        free(plain);
        return SEAL_BAD;
    }
    *out = plain;
    *out_len = n;
    return SEAL_OPENED;
}

/* ---- the key file ---- */

/* Standard base64 (with padding) of exactly SEAL_KEY_LEN bytes. 0 or -1. */
static int seal_base64_key(const char *s, size_t len, unsigned char key[SEAL_KEY_LEN])
{
    unsigned char buf[48];
    int n;

    /* 32 bytes are 44 characters, the last one '=' */
    if (len != 44 || s[43] != '=' || s[42] == '=')
        return -1;
    for (size_t i = 0; i < 43; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '+' || s[i] == '/'))
            return -1;
    n = EVP_DecodeBlock(buf, (const unsigned char *)s, 44);
    if (n != 33) /* EVP_DecodeBlock counts the padding as a zero byte */
        return -1;
    memcpy(key, buf, SEAL_KEY_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/* One line (NUL-terminated, comment and spaces around it allowed) into kr. 0, 1 when the
 * line is empty, or -1 with err set. */
static int seal_parse_line(struct seal_keyring *kr, char *line, const char *where, char *err,
                           size_t errlen)
{
    char *p = line, *id_end, *key, *end;
    unsigned long long id;

    if ((end = strchr(p, '#')))
        *end = '\0';
    while (*p == ' ' || *p == '\t')
        p++;
    end = p + strlen(p);
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        *--end = '\0';
    if (!*p)
        return 1;
    if (*p < '0' || *p > '9')
        return conf_fail(err, errlen, "%s: a key line is \"ID BASE64\" (ID a number)", where);
    errno = 0;
    id = strtoull(p, &id_end, 10);
    if (errno || id == 0 || id > 0xffffffffULL || (*id_end != ' ' && *id_end != '\t'))
        return conf_fail(err, errlen, "%s: key id must be a number 1..4294967295", where);
    for (key = id_end; *key == ' ' || *key == '\t'; key++)
        ;
    if (kr->n == SEAL_MAX_KEYS)
        return conf_fail(err, errlen, "%s: more than %d keys", where, SEAL_MAX_KEYS);
    for (size_t i = 0; i < kr->n; i++)
        if (kr->keys[i].id == (uint32_t)id)
            return conf_fail(err, errlen, "%s: key id %llu given twice", where, id);
    if (seal_base64_key(key, strlen(key), kr->keys[kr->n].key) < 0)
        return conf_fail(err, errlen,
                         "%s: key %llu is not 32 bytes in base64 (44 characters, e.g. "
                         "openssl rand -base64 32)",
                         where, id);
    kr->keys[kr->n++].id = (uint32_t)id;
    return 0;
}

struct seal_keyring *seal_keyring_load(const char *path, char *err, size_t errlen)
{
    struct seal_keyring *kr = calloc(1, sizeof(*kr));
    char *text = NULL, *line, *next, where[600];
    FILE *f = NULL;
    size_t len;
    int lineno = 0;

    if (!kr) {
        conf_fail(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    if (!(f = fopen(path, "r"))) {
        conf_fail(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!(text = malloc(SEAL_FILE_MAX + 1))) {
        conf_fail(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    len = fread(text, 1, SEAL_FILE_MAX + 1, f);
    if (ferror(f) || len > SEAL_FILE_MAX) {
        conf_fail(err, errlen, "%s: %s", path,
                  ferror(f) ? "read error" : "larger than 64 KiB: not a key file");
        goto fail;
    }
    text[len] = '\0';
    if (memchr(text, '\0', len)) {
        conf_fail(err, errlen, "%s: not a text file", path);
        goto fail;
    }
    for (line = text; line; line = next) {
        if ((next = strchr(line, '\n')))
            *next++ = '\0';
        snprintf(where, sizeof(where), "%s:%d", path, ++lineno);
        if (seal_parse_line(kr, line, where, err, errlen) < 0)
            goto fail;
    }
    if (kr->n == 0) {
        conf_fail(err, errlen, "%s: no key in the file", path);
        goto fail;
    }
    OPENSSL_cleanse(text, len);
    free(text);
    fclose(f);
    return kr;
fail:
    if (text) {
        OPENSSL_cleanse(text, len <= SEAL_FILE_MAX ? len : SEAL_FILE_MAX);
        free(text);
    }
    if (f)
        fclose(f);
    seal_keyring_free(kr);
    return NULL;
}

void seal_keyring_free(struct seal_keyring *kr)
{
    if (!kr)
        return;
    OPENSSL_cleanse(kr, sizeof(*kr));
    free(kr);
}

int seal_conf_load(struct seal_conf *conf, char *err, size_t errlen)
{
    struct seal_keyring *kr = NULL;
    char why[700];

    if (conf->mode != SEAL_OFF && !conf->keys_file)
        return conf_fail(err, errlen, "record-encryption %s needs record-keys FILE",
                         seal_mode_choices[conf->mode].name);
    if (conf->keys_file && !(kr = seal_keyring_load(conf->keys_file, why, sizeof(why))))
        return conf_fail(err, errlen, "record-keys: %s", why);
    seal_keyring_free(conf->ring);
    conf->ring = kr;
    return 0;
}

void seal_conf_release(struct seal_conf *conf)
{
    seal_keyring_free(conf->ring);
    conf->ring = NULL;
}

int seal_conf_warnings(const struct seal_conf *conf, FILE *out)
{
    struct stat st;

    if (!conf->keys_file || stat(conf->keys_file, &st) != 0 || !(st.st_mode & 077))
        return 0;
    fprintf(out,
            "idemproxy: warning: record-keys %s can be read by other users (mode %03o): "
            "anyone who reads it and Redis reads every recorded answer; chmod 600 it\n",
            conf->keys_file, (unsigned)(st.st_mode & 0777));
    return 1;
}
