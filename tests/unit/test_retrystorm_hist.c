#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "hist.h"

/* The documented bound: a bucket is never wider than 1/128 of its lowest value. */
#define REL_ERR (1.0 / (1 << (HIST_SUB_BITS - 1)))

static struct hist *h;

static void setup(void)
{
    h = hist_new();
    cr_assert_not_null(h);
}

static void teardown(void)
{
    hist_free(h);
    h = NULL;
}

TestSuite(hist, .init = setup, .fini = teardown);

static void assert_near(uint64_t got, double want, const char *what)
{
    cr_assert(fabs((double)got - want) <= want * REL_ERR + 1, "%s: got %llu, want %.1f +- %.3f%%",
              what, (unsigned long long)got, want, REL_ERR * 100);
}

Test(hist, empty)
{
    cr_assert_eq(hist_count(h), 0);
    cr_assert_eq(hist_percentile(h, 50), 0);
    cr_assert_eq(hist_percentile(h, 100), 0);
    cr_assert_eq(hist_max(h), 0);
    cr_assert_eq(hist_min(h), 0);
    cr_assert_eq(hist_mean(h), 0.0);
    {
        size_t cur = 0;
        struct hist_bucket b;

        cr_assert_eq(hist_next(h, &cur, &b), 0);
    }
}

Test(hist, single_value_is_exact_everywhere)
{
    hist_record(h, 123457);
    cr_assert_eq(hist_count(h), 1);
    cr_assert_eq(hist_min(h), 123457);
    cr_assert_eq(hist_max(h), 123457);
    /* the bucket's upper bound is clamped to the exact max, so every percentile is exact */
    cr_assert_eq(hist_percentile(h, 0), 123457);
    cr_assert_eq(hist_percentile(h, 50), 123457);
    cr_assert_eq(hist_percentile(h, 99.9), 123457);
    cr_assert_eq(hist_percentile(h, 100), 123457);
}

Test(hist, uniform_1_to_100000)
{
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(h, v);
    cr_assert_eq(hist_count(h), 100000);
    assert_near(hist_percentile(h, 50), 50000, "p50");
    assert_near(hist_percentile(h, 90), 90000, "p90");
    assert_near(hist_percentile(h, 99), 99000, "p99");
    assert_near(hist_percentile(h, 99.9), 99900, "p99.9");
    cr_assert_eq(hist_max(h), 100000, "max is exact");
    cr_assert_eq(hist_min(h), 1, "min is exact");
    cr_assert_eq(hist_percentile(h, 100), 100000);
    cr_assert_float_eq(hist_mean(h), 50000.5, 1e-6);
    /* HdrHistogram semantics: at least q% of the samples are at or below the value */
    for (double q = 1; q <= 100; q += 7.5) {
        uint64_t v = hist_percentile(h, q);

        cr_assert_geq((double)v, q / 100.0 * 100000 - 1, "q=%g: %llu below the rank", q,
                      (unsigned long long)v);
    }
}

Test(hist, small_values_are_exact)
{
    for (uint64_t v = 0; v < 256; v++)
        cr_assert_eq(hist_highest_equivalent(v), v, "value %llu", (unsigned long long)v);
    hist_record(h, 1);
    hist_record(h, 2);
    hist_record(h, 3);
    hist_record(h, 4);
    cr_assert_eq(hist_percentile(h, 50), 2);
    cr_assert_eq(hist_percentile(h, 75), 3);
    cr_assert_eq(hist_percentile(h, 76), 4);
}

Test(hist, relative_error_bound_across_the_range)
{
    /* every value from 1 us to 1 h, on a geometric walk that hits bucket edges too */
    for (double x = 1; x <= (double)HIST_MAX_US; x *= 1.0137) {
        uint64_t v = (uint64_t)x;
        uint64_t lo = hist_lowest_equivalent(v), hi = hist_highest_equivalent(v);

        cr_assert_leq(lo, v);
        cr_assert_geq(hi, v);
        cr_assert_leq((double)(hi - lo), (double)lo * REL_ERR, "bucket %llu..%llu for %llu",
                      (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)v);
        /* neighbouring buckets touch: the value after a bucket starts the next one */
        if (hi + 1 <= HIST_MAX_US)
            cr_assert_eq(hist_lowest_equivalent(hi + 1), hi + 1, "gap after %llu",
                         (unsigned long long)hi);
    }
}

Test(hist, percentile_of_two_clusters)
{
    /* 990 fast answers around 2 ms, 10 slow ones at 1.5 s */
    for (int i = 0; i < 990; i++)
        hist_record(h, 2000 + (uint64_t)(i % 7));
    for (int i = 0; i < 10; i++)
        hist_record(h, 1500000);
    assert_near(hist_percentile(h, 50), 2003, "p50");
    assert_near(hist_percentile(h, 99), 2006, "p99 (rank 990 is still fast)");
    assert_near(hist_percentile(h, 99.1), 1500000, "p99.1");
    cr_assert_eq(hist_max(h), 1500000);
}

Test(hist, merge_adds_everything)
{
    struct hist *b = hist_new();
    struct hist *all = hist_new();

    for (uint64_t v = 1; v <= 50000; v++) {
        hist_record(h, v);
        hist_record(all, v);
    }
    for (uint64_t v = 50001; v <= 100000; v++) {
        hist_record(b, v);
        hist_record(all, v);
    }
    hist_merge(h, b);
    cr_assert_eq(hist_count(h), 100000);
    cr_assert_eq(hist_min(h), 1);
    cr_assert_eq(hist_max(h), 100000);
    for (double q = 0; q <= 100; q += 0.5)
        cr_assert_eq(hist_percentile(h, q), hist_percentile(all, q), "q=%g", q);
    /* merging an empty histogram changes nothing, merging into an empty one copies */
    hist_reset(b);
    hist_merge(h, b);
    cr_assert_eq(hist_count(h), 100000);
    hist_merge(b, h);
    cr_assert_eq(hist_min(b), 1);
    cr_assert_eq(hist_percentile(b, 50), hist_percentile(h, 50));
    hist_free(b);
    hist_free(all);
}

Test(hist, huge_values_clamp)
{
    hist_record(h, UINT64_MAX);
    hist_record(h, HIST_MAX_US * 10);
    hist_record(h, 5);
    cr_assert_eq(hist_count(h), 3);
    cr_assert_eq(hist_clamped(h), 2);
    cr_assert_eq(hist_max(h), HIST_MAX_US);
    cr_assert_eq(hist_percentile(h, 100), HIST_MAX_US);
    cr_assert_eq(hist_percentile(h, 10), 5);
    cr_assert_eq(hist_highest_equivalent(UINT64_MAX), hist_highest_equivalent(HIST_MAX_US));
}

Test(hist, iteration_covers_every_sample_in_order)
{
    struct hist_bucket b;
    size_t cur = 0;
    uint64_t total = 0, prev_hi = 0;
    int n = 0;

    for (uint64_t v = 1; v <= 3600000000ULL; v *= 3)
        hist_record_n(h, v, 2);
    while (hist_next(h, &cur, &b)) {
        cr_assert_leq(b.lo, b.hi);
        cr_assert(n == 0 || b.lo > prev_hi, "buckets out of order");
        cr_assert_gt(b.count, 0);
        prev_hi = b.hi;
        total += b.count;
        n++;
    }
    cr_assert_eq(total, hist_count(h));
    cr_assert_eq(n, 21); /* 3^0 .. 3^20 < 3.6e9, each in its own bucket */
}
