#include "core/metrics.h"

#include <stdio.h>

#include <event2/buffer.h>

const double metrics_buckets[METRICS_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10};

void metrics_hist_observe(struct metrics_hist *h, uint64_t us)
{
    size_t i = 0;

    while (i < METRICS_NBUCKETS && (double)us > metrics_buckets[i] * 1e6)
        i++;
    METRIC_INC(h->bucket[i]);
    METRIC_INC(h->count);
    METRIC_ADD(h->sum_us, us);
}

void metrics_hist_add(struct metrics_hist *sum, const struct metrics_hist *h)
{
    for (size_t i = 0; i <= METRICS_NBUCKETS; i++)
        sum->bucket[i] += METRIC_GET(h->bucket[i]);
    sum->count += METRIC_GET(h->count);
    sum->sum_us += METRIC_GET(h->sum_us);
}

void metrics_header(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_value(struct evbuffer *out, const char *name, const char *labels, uint64_t v)
{
    if (labels && *labels)
        evbuffer_add_printf(out, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
    else
        evbuffer_add_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

void metrics_histogram(struct evbuffer *out, const char *name, const char *help,
                       const struct metrics_hist *h)
{
    uint64_t cum = 0, count = 0;

    metrics_header(out, name, "histogram", help);
    for (size_t i = 0; i <= METRICS_NBUCKETS; i++)
        count += h->bucket[i];
    for (size_t i = 0; i < METRICS_NBUCKETS; i++) {
        cum += h->bucket[i];
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, metrics_buckets[i],
                            (unsigned long long)cum);
    }
    /* the buckets, read one by one, are the truth: count agrees with them */
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
    evbuffer_add_printf(out, "%s_sum %.6f\n", name, (double)h->sum_us / 1e6);
    evbuffer_add_printf(out, "%s_count %llu\n", name, (unsigned long long)count);
}
