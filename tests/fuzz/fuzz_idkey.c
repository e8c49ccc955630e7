/*
 * libFuzzer target: the Idempotency-Key parser (scripts/fuzz.sh).
 *
 * The input is the header value (cut at its first NUL, as a C string would be). It is
 * parsed with several max lengths, each into a heap buffer of exactly the advertised size
 * so ASan sees any write past it, and the results are checked against each other:
 *   - a key is 1..max_len printable ASCII bytes, NUL-terminated, within outlen;
 *   - a failure says why and leaves out empty;
 *   - a longer max_len never turns a success into a failure or changes the key;
 *   - a key written back as an sf-string parses to itself.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idem/idkey.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_idkey: %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The largest max_len last: every other result is compared with it. */
static const size_t max_lens[] = {0, 1, 2, 16, 255, 8192};
#define NMAX (sizeof(max_lens) / sizeof(max_lens[0]))

struct parsed {
    int rc;
    char *key; /* malloc'd copy of out, or NULL */
};

/* idkey_parse(value, max_len) into a buffer of exactly outlen (>= 1) bytes; checks the
 * contract. */
static struct parsed parse(const char *value, size_t max_len, size_t outlen)
{
    struct parsed res = {-1, NULL};
    char *out = malloc(outlen);
    const char *why = NULL;

    CHECK(out != NULL);
    res.rc = idkey_parse(value, max_len, out, outlen, &why);
    if (res.rc >= 0) {
        size_t n = (size_t)res.rc;

        CHECK(n >= 1);
        CHECK(n <= max_len);
        CHECK(n < outlen);
        CHECK(out[n] == '\0');
        for (size_t i = 0; i < n; i++)
            CHECK(out[i] >= 0x20 && out[i] <= 0x7e);
        res.key = strdup(out);
        CHECK(res.key != NULL);
    } else {
        CHECK(res.rc == -1);
        CHECK(why != NULL && why[0] != '\0');
        CHECK(out[0] == '\0');
    }
    free(out);
    return res;
}

/* key as an sf-string: "..." with \ and " escaped. Caller frees. */
static char *quote(const char *key)
{
    size_t n = strlen(key);
    char *q = malloc(2 * n + 3), *w = q;

    CHECK(q != NULL);
    *w++ = '"';
    for (const char *p = key; *p; p++) {
        if (*p == '"' || *p == '\\')
            *w++ = '\\';
        *w++ = *p;
    }
    *w++ = '"';
    *w = '\0';
    return q;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct parsed res[NMAX], longest, clamped;
    char *value = malloc(size + 1);

    if (!value)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';

    for (size_t i = 0; i < NMAX; i++)
        res[i] = parse(value, max_lens[i], max_lens[i] + 1);
    longest = res[NMAX - 1];
    for (size_t i = 0; i < NMAX; i++) {
        if (res[i].rc >= 0) {
            /* more room never changes a key that fitted */
            CHECK(longest.rc == res[i].rc);
            CHECK(strcmp(longest.key, res[i].key) == 0);
        }
    }
    /* a buffer smaller than max_len + 1 caps the key instead of overflowing */
    clamped = parse(value, 255, 9);
    CHECK(clamped.rc < 0 || clamped.rc <= 8);
    if (clamped.rc >= 0)
        CHECK(longest.rc == clamped.rc && strcmp(longest.key, clamped.key) == 0);
    free(clamped.key);

    if (longest.rc >= 0) {
        char *q = quote(longest.key);
        struct parsed again = parse(q, max_lens[NMAX - 1], max_lens[NMAX - 1] + 1);

        CHECK(again.rc == longest.rc);
        CHECK(strcmp(again.key, longest.key) == 0);
        free(again.key);
        free(q);
    }
    /* no room at all, and no value: refused, not dereferenced */
    CHECK(idkey_parse(value, 16, NULL, 0, NULL) == -1);
    CHECK(parse(NULL, 16, 17).rc == -1);

    for (size_t i = 0; i < NMAX; i++)
        free(res[i].key);
    free(value);
    return 0;
}
