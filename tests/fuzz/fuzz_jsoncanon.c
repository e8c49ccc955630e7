/*
 * libFuzzer target: the canonical JSON form (scripts/fuzz.sh). Whatever the input, the
 * canonicaliser must not crash or over-read, and its output — when it accepts — must be
 * accepted again and be its own canonical form (canon(canon(x)) == canon(x)).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "idem/jsoncanon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *a = evbuffer_new(), *b = evbuffer_new();

    if (a && b && jsoncanon(a, (const char *)data, size) == 0) {
        size_t n = evbuffer_get_length(a);
        const char *p = (const char *)evbuffer_pullup(a, -1);
        if (jsoncanon(b, p, n) != 0 || evbuffer_get_length(b) != n ||
            memcmp(evbuffer_pullup(b, -1), p, n) != 0) {
            fprintf(stderr, "fuzz_jsoncanon: the canonical form is not canonical\n");
            abort();
        }
    }
    if (a)
        evbuffer_free(a);
    if (b)
        evbuffer_free(b);
    return 0;
}
