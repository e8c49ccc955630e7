/*
 * hist — a log-linear latency histogram of microsecond values (HDR style).
 *
 * Values 0..HIST_MAX_US (one hour) are counted in buckets whose width grows with the
 * value: below 2^HIST_SUB_BITS every microsecond has its own bucket; above, each power of
 * two is split into 2^(HIST_SUB_BITS-1) equal buckets. A bucket is therefore never wider
 * than 1/2^(HIST_SUB_BITS-1) of its lowest value: with 8 sub-bucket bits the relative
 * error of any reported value is below 0.79% (better than 2 significant digits), in a
 * fixed 3,328-bucket table (26 KiB) whatever the range or the number of samples.
 *
 * Percentiles follow HdrHistogram: hist_percentile(h, q) is the highest value equivalent
 * (same bucket) to the sample of rank ceil(q/100 * count), i.e. a value at or below which
 * at least q% of the samples fall; it never exceeds the exact maximum.
 *
 * Values above HIST_MAX_US are clamped to it (and counted in hist_clamped()); the exact
 * minimum and maximum are kept as recorded (after clamping).
 *
 * Ownership: hist_new() returns a histogram the caller frees with hist_free(). Nothing
 * else allocates; no function keeps a pointer to its arguments.
 */
#ifndef RETRYSTORM_HIST_H
#define RETRYSTORM_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BITS 8
#define HIST_MAX_US   3600000000ULL /* one hour */

struct hist;

/* A run of equivalent values: every value in lo..hi (inclusive) lands in this bucket. */
struct hist_bucket {
    uint64_t lo, hi;
    uint64_t count;
};

/* A zeroed histogram, or NULL when out of memory. */
struct hist *hist_new(void);
void hist_free(struct hist *h);

/* Forget every sample. */
void hist_reset(struct hist *h);

/* Count one (or n) samples of value us; values above HIST_MAX_US count as HIST_MAX_US. */
void hist_record(struct hist *h, uint64_t us);
void hist_record_n(struct hist *h, uint64_t us, uint64_t n);

/* Add every sample of src to dst (src unchanged). */
void hist_merge(struct hist *dst, const struct hist *src);

uint64_t hist_count(const struct hist *h);
uint64_t hist_clamped(const struct hist *h);
/* Exact extremes and mean of what was recorded; 0 when empty. */
uint64_t hist_min(const struct hist *h);
uint64_t hist_max(const struct hist *h);
double hist_mean(const struct hist *h);

/* Value at percentile q (0..100, clamped) as described above; 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double q);

/* The bounds of the bucket that value us falls in (after clamping). */
uint64_t hist_lowest_equivalent(uint64_t us);
uint64_t hist_highest_equivalent(uint64_t us);

/*
 * Walk the non-empty buckets in increasing order. Start with *cursor = 0; each call fills
 * b and returns 1, or returns 0 when there are no more.
 */
int hist_next(const struct hist *h, size_t *cursor, struct hist_bucket *b);

#endif
