/*
 * harness-internal — what the support files share and the tests never see.
 *
 * Public API: harness.h. Everything here is private to the tests/support sources; the
 * h_ prefix keeps the few non-static names out of the way of the test programs that link
 * the library.
 */
#ifndef IDEMPROXY_HARNESS_INTERNAL_H
#define IDEMPROXY_HARNESS_INTERNAL_H

#include <errno.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* How long a freshly started test-upstream or redis-server may take to listen. */
#define H_UPSTREAM_WAIT_MS 5000
#define H_REDIS_SERVING_MS 20000 /* a first command, after it listens */

static inline long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- proc.c ---- */

/*
 * Spawn argv (whose listen_slot entry gets "127.0.0.1:<port>", or only "<port>" if
 * port_only) and wait up to timeout_ms for the port. fixed: that port, else a free one.
 * A child that exits before listening because the port was taken in between (its log
 * says "Address already in use") is retried on a new port unless fixed. Returns the pid
 * with *port filled, or 0 after printing the log. argv[listen_slot] is left pointing at
 * this function's stack: the caller must not use argv afterwards.
 */
pid_t h_start_server_at(char **argv, int listen_slot, int port_only, uint16_t fixed, uint16_t *port,
                        const char *logname, int timeout_ms);

/* Is pid one this process started and has not reaped yet? 1/0 */
int h_is_tracked(pid_t pid);

#endif
