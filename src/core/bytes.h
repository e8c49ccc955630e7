/*
 * bytes — small helpers over bytes that several layers need once each.
 */
#ifndef IDEMPROXY_CORE_BYTES_H
#define IDEMPROXY_CORE_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct evbuffer;

/* The value of hex digit c (0-9, a-f, A-F), or -1. */
static inline int bytes_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* v in decimal at dst (room for 20 bytes, no NUL written); returns the length. printf's
 * machinery costs hundreds of instructions a number, on paths that write several. */
static inline size_t bytes_u64(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* 16 lower-case hex digits of v at dst (no NUL). */
static inline void bytes_hex64(char *dst, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 15; i >= 0; i--, v >>= 4)
        dst[i] = digits[v & 15];
}

/* src at dst (size bytes, NUL-terminated), cut to fit. */
static inline void bytes_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/*
 * Call fn(piece, n, arg) on each contiguous piece of the first len bytes of b, in order,
 * reading the chains in place (b is neither drained nor pulled up). Returns 0, or -1 when
 * fn returned non-zero or b holds fewer than len bytes.
 */
int bytes_each(struct evbuffer *b, size_t len, int (*fn)(const void *piece, size_t n, void *arg),
               void *arg);

#endif
