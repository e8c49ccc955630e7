/*
 * hist — log-linear bucket arithmetic (layout in hist.h).
 *
 * With B = HIST_SUB_BITS and H = 2^(B-1): a value v < 2H is its own index. Above, let
 * shift = msb(v) - (B-1) >= 1; the top B bits of v (v >> shift, in H..2H-1) pick the
 * bucket inside the power of two, and index = shift*H + (v >> shift). The two formulas
 * meet at v = 2H (index 2H), so indexes are dense and increase with the value.
 */
#include "hist.h"

#include <stdlib.h>
#include <string.h>

#define HIST_HALF     (1ULL << (HIST_SUB_BITS - 1))
#define HIST_MAX_MSB  31 /* HIST_MAX_US < 2^32 */
#define HIST_NBUCKETS ((size_t)((HIST_MAX_MSB - (HIST_SUB_BITS - 1)) * HIST_HALF + 2 * HIST_HALF))

struct hist {
    uint64_t total;
    uint64_t clamped;
    uint64_t min, max;
    double sum;
    uint64_t counts[HIST_NBUCKETS];
};

static int hist_msb(uint64_t v)
{
    return 63 - __builtin_clzll(v);
}

static uint64_t hist_clamp(uint64_t us)
{
    return us > HIST_MAX_US ? HIST_MAX_US : us;
}

static size_t hist_index(uint64_t v)
{
    int shift;

    if (v < 2 * HIST_HALF)
        return (size_t)v;
    shift = hist_msb(v) - (HIST_SUB_BITS - 1);
    return (size_t)((uint64_t)shift * HIST_HALF + (v >> shift));
}

/* Inverse of hist_index: the bucket's lowest value and its width. */
static void hist_bounds(size_t idx, uint64_t *lo, uint64_t *width)
{
    uint64_t shift, sub;

    if (idx < 2 * HIST_HALF) {
        *lo = idx;
        *width = 1;
        return;
    }
    shift = idx / HIST_HALF - 1;
    sub = idx - shift * HIST_HALF; /* H..2H-1 */
    *lo = sub << shift;
    *width = 1ULL << shift;
}

struct hist *hist_new(void)
{
    return calloc(1, sizeof(struct hist));
}

void hist_free(struct hist *h)
{
    free(h);
}

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof(*h));
}

void hist_record_n(struct hist *h, uint64_t us, uint64_t n)
{
    if (n == 0)
        return;
    if (us > HIST_MAX_US)
        h->clamped += n;
    us = hist_clamp(us);
    if (h->total == 0 || us < h->min)
        h->min = us;
    if (us > h->max)
        h->max = us;
    h->counts[hist_index(us)] += n;
    h->total += n;
    h->sum += (double)us * (double)n;
}

void hist_record(struct hist *h, uint64_t us)
{
    hist_record_n(h, us, 1);
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    if (src->total == 0)
        return;
    if (dst->total == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    for (size_t i = 0; i < HIST_NBUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->clamped += src->clamped;
    dst->sum += src->sum;
}

uint64_t hist_count(const struct hist *h)
{
    return h->total;
}

uint64_t hist_clamped(const struct hist *h)
{
    return h->clamped;
}

uint64_t hist_min(const struct hist *h)
{
    return h->min;
}

uint64_t hist_max(const struct hist *h)
{
    return h->max;
}

double hist_mean(const struct hist *h)
{
    return h->total ? h->sum / (double)h->total : 0.0;
}

uint64_t hist_lowest_equivalent(uint64_t us)
{
    uint64_t lo, width;

    hist_bounds(hist_index(hist_clamp(us)), &lo, &width);
    return lo;
}

uint64_t hist_highest_equivalent(uint64_t us)
{
    uint64_t lo, width;

    hist_bounds(hist_index(hist_clamp(us)), &lo, &width);
    return lo + width - 1;
}

uint64_t hist_percentile(const struct hist *h, double q)
{
    uint64_t rank, seen = 0;
    double r;

    if (h->total == 0)
        return 0;
    if (!(q > 0.0)) /* also NaN */
        q = 0.0;
    if (q > 100.0)
        q = 100.0;
    /* ceil(q/100 * total), computed so that 50% of 100 is exactly rank 50 */
    r = q / 100.0 * (double)h->total;
    rank = (uint64_t)r;
    if ((double)rank < r - 1e-9)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    for (size_t i = 0; i < HIST_NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, width, v;

            hist_bounds(i, &lo, &width);
            v = lo + width - 1;
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max; /* not reached: the counts add up to total */
}

int hist_next(const struct hist *h, size_t *cursor, struct hist_bucket *b)
{
    for (size_t i = *cursor; i < HIST_NBUCKETS; i++) {
        uint64_t lo, width;

        if (h->counts[i] == 0)
            continue;
        hist_bounds(i, &lo, &width);
        b->lo = lo;
        b->hi = lo + width - 1;
        b->count = h->counts[i];
        *cursor = i + 1;
        return 1;
    }
    *cursor = HIST_NBUCKETS;
    return 0;
}
