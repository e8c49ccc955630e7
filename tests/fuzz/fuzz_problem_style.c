/*
 * libFuzzer target: error templates (scripts/fuzz.sh). Whatever the template, loading must
 * not crash or over-read; one that loads must render every kind, and its header block
 * must stay lines of "Name: value" — no CR or LF inside a value, whatever the detail,
 * instance and request id hold (they carry client bytes).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "core/problem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct problem_style *st =
        problem_style_parse((const char *)data, size, "fuzz", err, sizeof(err));

    if (!st)
        return 0;
    for (int k = 0; k < PROBLEM_KIND_COUNT; k++) {
        struct evbuffer *body = evbuffer_new(), *hdrs = evbuffer_new();
        const char *h;
        size_t n;

        problem_render(st, body, hdrs, (enum problem_kind)k, "d\r\nX: \"<&>\x01", "/i\n", "r\r",
                       "Retry-After: 1\r\n");
        n = evbuffer_get_length(hdrs);
        h = (const char *)evbuffer_pullup(hdrs, -1);
        if (n == 0 || h[n - 1] != '\0' || strlen(h) != n - 1) {
            fprintf(stderr, "fuzz_problem_style: the header block is not one C string\n");
            abort();
        }
        for (size_t i = 0; i + 1 < n; i++) {
            if ((h[i] == '\r' && h[i + 1] != '\n') ||
                (h[i] == '\n' && (i == 0 || h[i - 1] != '\r'))) {
                fprintf(stderr, "fuzz_problem_style: a bare CR or LF in the headers:\n%s\n", h);
                abort();
            }
        }
        evbuffer_free(body);
        evbuffer_free(hdrs);
    }
    problem_style_free(st);
    return 0;
}
