/*
 * bytes — small helpers over bytes that several layers need once each.
 */
#ifndef IDEMPROXY_CORE_BYTES_H
#define IDEMPROXY_CORE_BYTES_H

#include <stddef.h>

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

/*
 * Call fn(piece, n, arg) on each contiguous piece of the first len bytes of b, in order,
 * reading the chains in place (b is neither drained nor pulled up). Returns 0, or -1 when
 * fn returned non-zero or b holds fewer than len bytes.
 */
int bytes_each(struct evbuffer *b, size_t len, int (*fn)(const void *piece, size_t n, void *arg),
               void *arg);

#endif
