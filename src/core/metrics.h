/*
 * metrics — counters and histograms kept per worker and read by the admin thread.
 *
 * Each value has one writer (its worker) and may be read at any time by the scrape.
 * Writers update with a relaxed atomic store of the new value — on x86-64 a plain add
 * and mov, no locked instruction, no fence — and readers load relaxed: no lock or
 * read-modify-write atomic on the request path, and no data race either. Sums across
 * workers are made at scrape time; a scrape may see one worker a moment before another.
 *
 * Writing the Prometheus text exposition format (version 0.0.4) is here too: names are
 * idemproxy_*, times in seconds, counters end in _total.
 */
#ifndef IDEMPROXY_CORE_METRICS_H
#define IDEMPROXY_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* One writer: x += n, visible to relaxed readers. */
#define METRIC_ADD(x, n) __atomic_store_n(&(x), (x) + (n), __ATOMIC_RELAXED)
#define METRIC_INC(x)    METRIC_ADD(x, 1)
#define METRIC_DEC(x)    __atomic_store_n(&(x), (x)-1, __ATOMIC_RELAXED)
#define METRIC_SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
/* Any thread. */
#define METRIC_GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Latency buckets, upper bounds in seconds (and +Inf). */
#define METRICS_NBUCKETS 14
extern const double metrics_buckets[METRICS_NBUCKETS];

struct metrics_hist {
    uint64_t bucket[METRICS_NBUCKETS + 1]; /* non-cumulative; the last is +Inf */
    uint64_t count;
    uint64_t sum_us;
};

/* The worker records one duration (microseconds). */
void metrics_hist_observe(struct metrics_hist *h, uint64_t us);
/* Any thread: add what h holds now into sum (a private copy). */
void metrics_hist_add(struct metrics_hist *sum, const struct metrics_hist *h);

/* Exposition. help is one line; labels is "" or 'name="v",...' (already escaped). */
void metrics_header(struct evbuffer *out, const char *name, const char *type, const char *help);
void metrics_value(struct evbuffer *out, const char *name, const char *labels, uint64_t v);
void metrics_histogram(struct evbuffer *out, const char *name, const char *help,
                       const struct metrics_hist *h);

#endif
