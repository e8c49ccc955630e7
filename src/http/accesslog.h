/*
 * accesslog — one JSON object per request, for one worker: buffered, written at least
 * once a second (and whenever 64 KiB are waiting), reopened on request (SIGUSR1, for
 * logrotate). Each worker appends to the file with O_APPEND and writes whole lines, so
 * the workers' lines never interleave.
 *
 * A line holds what an operator needs and nothing a caller would not want logged: never
 * the raw Idempotency-Key, Authorization, cookies or bodies.
 *   {"time":"2026-12-01T20:51:00.123Z","worker":1,"client":"10.0.0.7","method":"POST",
 *    "target":"/pay","status":201,"bytes_in":42,"bytes_out":310,"duration_ms":12.4,
 *    "upstream_ms":11.9,"redis_ms":0.4,"outcome":"executed","record":"9f2c1e0a77b3d5e1",
 *    "upstream":"10.0.0.9:8000","request_id":"5b1f..."}
 * Absent parts are left out (a keyless request has no record, a 400 no upstream).
 */
#ifndef IDEMPROXY_HTTP_ACCESSLOG_H
#define IDEMPROXY_HTTP_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct accesslog;

/* One request, as the frontend saw it. Strings may be NULL (left out). */
struct accesslog_entry {
    uint64_t unix_ms; /* when the request started */
    const char *client, *method, *target;
    int status; /* 0: no answer was sent */
    uint64_t bytes_in, bytes_out;
    double duration_ms, upstream_ms, redis_ms; /* < 0: left out */
    const char *outcome, *record, *upstream, *request_id;
};

/*
 * A log for one worker writing to path ("stderr" for standard error), with a flush
 * timer on base. NULL when the file cannot be opened (logged).
 */
struct accesslog *accesslog_new(struct event_base *base, const char *path, int worker_id);

/* Flush what is buffered, close, free. NULL is a no-op. */
void accesslog_free(struct accesslog *al);

/* Append one line. Never blocks the loop for long: lines wait in memory until the
 * next flush (bounded: past 8 MiB waiting, lines are dropped and counted). */
void accesslog_write(struct accesslog *al, const struct accesslog_entry *e);

/* Flush, then open the path again (the file was rotated away). 0 or -1 (logged; the old
 * file stays in use). */
int accesslog_reopen(struct accesslog *al);

#endif
