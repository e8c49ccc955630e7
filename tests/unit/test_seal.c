/*
 * seal: AES-256-GCM envelopes of records and the key file (issue 17, part 5).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idem/seal.h"

#define K1   "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMTI=" /* 32 bytes */
#define K2   "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define FP_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static char path[256];

static struct seal_keyring *ring_of(const char *text, char *err, size_t errlen)
{
    FILE *f;

    snprintf(path, sizeof(path), "/tmp/test-seal-%d.keys", (int)getpid());
    cr_assert_not_null(f = fopen(path, "w"));
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
    return seal_keyring_load(path, err, errlen);
}

static void ring_fini(void)
{
    if (path[0])
        unlink(path);
}

TestSuite(seal, .fini = ring_fini);

/* An envelope of plain (len bytes) sealed for key rkey and fingerprint fp; its length. */
static unsigned char *sealed(const struct seal_keyring *kr, const char *plain, size_t len,
                             const char *rkey, const char *fp, size_t *out_len)
{
    unsigned char *buf = malloc(len + SEAL_OVERHEAD);

    cr_assert_not_null(buf);
    memcpy(buf + SEAL_HEAD_LEN, plain, len);
    cr_assert_eq(seal_record(kr, buf, len, rkey, fp), 0);
    *out_len = len + SEAL_OVERHEAD;
    return buf;
}

Test(seal, a_record_opens_under_its_own_key_and_fingerprint_only)
{
    char err[512];
    struct seal_keyring *kr = ring_of("7 " K1 "\n", err, sizeof(err));
    static const char plain[] = "IDRC\x01 card 4242 4242 4242 4242";
    unsigned char *env, *out;
    size_t len, out_len;
    uint32_t id = 0;

    cr_assert_not_null(kr, "%s", err);
    env = sealed(kr, plain, sizeof(plain) - 1, "idem:k1", FP_A, &len);
    cr_assert_eq(len, sizeof(plain) - 1 + 38, "38 bytes of overhead");
    cr_assert(seal_is_sealed(env, len, &id));
    cr_assert_eq(id, 7);
    cr_assert_null(memmem(env, len, "4242", 4), "the record is not readable in the envelope");
    cr_assert_eq(seal_open(kr, env, len, "idem:k1", FP_A, &out, &out_len), SEAL_OPENED);
    cr_assert_eq(out_len, sizeof(plain) - 1);
    cr_assert_eq(memcmp(out, plain, out_len), 0);
    free(out);
    /* moved under another key, or paired with another fingerprint: it does not open */
    cr_assert_eq(seal_open(kr, env, len, "idem:k2", FP_A, &out, &out_len), SEAL_BAD);
    cr_assert_null(out);
    cr_assert_eq(seal_open(kr, env, len, "idem:k1", FP_B, &out, &out_len), SEAL_BAD);
    /* one byte changed anywhere (key id aside): it does not open */
    for (size_t i = 0; i < len; i++) {
        if (i >= 6 && i < 10)
            continue;
        env[i] ^= 0x01;
        cr_assert_neq(seal_open(kr, env, len, "idem:k1", FP_A, &out, &out_len), SEAL_OPENED,
                      "byte %zu altered and still opened", i);
        env[i] ^= 0x01;
    }
    /* truncated */
    cr_assert_eq(seal_open(kr, env, len - 1, "idem:k1", FP_A, &out, &out_len), SEAL_BAD);
    cr_assert_eq(seal_open(kr, env, SEAL_OVERHEAD - 1, "idem:k1", FP_A, &out, &out_len), SEAL_BAD);
    free(env);
    seal_keyring_free(kr);
}

Test(seal, two_seals_of_one_record_differ)
{
    char err[512];
    struct seal_keyring *kr = ring_of("1 " K1 "\n", err, sizeof(err));
    unsigned char *a, *b;
    size_t la, lb;

    cr_assert_not_null(kr, "%s", err);
    a = sealed(kr, "same", 4, "k", FP_A, &la);
    b = sealed(kr, "same", 4, "k", FP_A, &lb);
    cr_assert_neq(memcmp(a + 10, b + 10, 12), 0, "a nonce of its own per record");
    cr_assert_neq(memcmp(a + SEAL_HEAD_LEN, b + SEAL_HEAD_LEN, 4), 0);
    free(a);
    free(b);
    seal_keyring_free(kr);
}

/* The first key seals, every key opens; a key dropped from the file no longer opens. */
Test(seal, rotation)
{
    char err[512];
    struct seal_keyring *old = ring_of("1 " K1 "\n", err, sizeof(err)), *both, *next, *only2;
    unsigned char *env1, *env2, *out;
    size_t l1, l2, ol;
    uint32_t id;

    cr_assert_not_null(old, "%s", err);
    env1 = sealed(old, "one", 3, "k", FP_A, &l1);
    cr_assert_not_null(
        both = ring_of("# step 1: the new key second\n1 " K1 "\n2 " K2 "\n", err, sizeof(err)),
        "%s", err);
    cr_assert_not_null(next = ring_of("2 " K2 "  # step 2: first\n1 " K1 "\n", err, sizeof(err)),
                       "%s", err);
    cr_assert_not_null(only2 = ring_of("\n  2 " K2 "\n\n", err, sizeof(err)), "%s", err);
    env2 = sealed(next, "two", 3, "k", FP_A, &l2);
    cr_assert(seal_is_sealed(env2, l2, &id));
    cr_assert_eq(id, 2, "the first key seals");
    cr_assert_eq(seal_open(both, env1, l1, "k", FP_A, &out, &ol), SEAL_OPENED);
    free(out);
    cr_assert_eq(seal_open(both, env2, l2, "k", FP_A, &out, &ol), SEAL_OPENED);
    free(out);
    cr_assert_eq(seal_open(only2, env1, l1, "k", FP_A, &out, &ol), SEAL_UNKNOWN_KEY);
    cr_assert_eq(seal_open(NULL, env1, l1, "k", FP_A, &out, &ol), SEAL_UNKNOWN_KEY);
    cr_assert_eq(seal_open(only2, env2, l2, "k", FP_A, &out, &ol), SEAL_OPENED);
    free(out);
    free(env1);
    free(env2);
    seal_keyring_free(old);
    seal_keyring_free(both);
    seal_keyring_free(next);
    seal_keyring_free(only2);
}

Test(seal, a_plain_record_is_not_an_envelope)
{
    cr_assert_not(seal_is_sealed("IDRC\x01\x00\x00\xc8 and the rest of a record....", 40, NULL));
    cr_assert_not(seal_is_sealed("IDRE", 4, NULL), "too short to be one");
}

/* Every mistake in a key file names its line. */
Test(seal, key_file_errors_name_the_line)
{
    static const struct {
        const char *text, *want;
    } rows[] = {
        {"1 " K1 "\nx " K2 "\n", ":2: a key line is \"ID BASE64\""},
        {"0 " K1 "\n", ":1: key id must be a number 1..4294967295"},
        {"4294967296 " K1 "\n", ":1: key id must be a number"},
        {"1" K1 "\n", ":1: key id must be a number"},
        {"1 " K1 "\n\n1 " K2 "\n", ":3: key id 1 given twice"},
        {"3 Zm9v\n", ":1: key 3 is not 32 bytes in base64"},
        {"3 " K1 "AAAA\n", ":1: key 3 is not 32 bytes"},
        {"3 Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMT*=\n", ":1: key 3 is not 32 bytes"},
        {"# only a comment\n\n", "no key in the file"},
    };
    char err[512];

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct seal_keyring *kr = ring_of(rows[i].text, err, sizeof(err));
        cr_assert_null(kr, "row %zu loaded", i);
        cr_assert(strstr(err, rows[i].want) && strstr(err, path), "row %zu: %s", i, err);
    }
    cr_assert_null(seal_keyring_load("/nonexistent/keys", err, sizeof(err)));
    cr_assert(strstr(err, "/nonexistent/keys: No such file"), "%s", err);
}

Test(seal, conf_needs_keys_to_seal_and_warns_about_a_readable_file)
{
    struct seal_conf c = {.mode = SEAL_AES_256_GCM};
    char err[512], *text = NULL;
    size_t n = 0;
    FILE *mem;
    struct seal_keyring *kr;

    cr_assert_eq(seal_conf_load(&c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "record-encryption aes-256-gcm needs record-keys FILE"), "%s", err);
    cr_assert_not_null(kr = ring_of("1 " K1 "\n", err, sizeof(err)));
    seal_keyring_free(kr);
    c.keys_file = path;
    cr_assert_eq(seal_conf_load(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_not_null(c.ring);
    mem = open_memstream(&text, &n);
    cr_assert_eq(seal_conf_warnings(&c, mem), 0, "mode 600: no warning");
    chmod(path, 0644);
    cr_assert_eq(seal_conf_warnings(&c, mem), 1);
    fclose(mem);
    cr_assert(strstr(text, "can be read by other users (mode 644)"), "%s", text);
    free(text);
    seal_conf_release(&c);
}
