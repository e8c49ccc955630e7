/*
 * clock — the two clocks the proxy reads, in milliseconds, and the one ms → timeval
 * conversion every timer uses. Header-only: each is a few instructions.
 *
 *   clock_mono_ms()  CLOCK_MONOTONIC: deadlines, durations, back-offs (never jumps);
 *   clock_mono_us()  the same in microseconds, for durations that are logged.
 *   clock_unix_ms()  CLOCK_REALTIME: timestamps stored in records (wall clock).
 */
#ifndef IDEMPROXY_CORE_CLOCK_H
#define IDEMPROXY_CORE_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

static inline uint64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline uint64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static inline uint64_t clock_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A duration in ms as the timeval libevent timers take. */
static inline struct timeval clock_tv(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

#endif
