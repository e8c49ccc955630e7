/*
 * upstream_ctl — what test-upstream says about itself: GET /stats (requests,
 * connections) and GET /executions (how often each Idempotency-Key was executed).
 * Both answer one flat JSON object of counters, {"name":N,...}.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * GET path from test-upstream on up_port and return the counter "field" of its JSON
 * body: missing if the body has no such field, -1 if the request failed.
 */
static long upstream_counter(uint16_t up_port, const char *path, const char *field, long missing)
{
    struct harness_resp r;
    char raw[256], want[512];
    const char *p;
    long v = missing;

    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    if (harness_request(up_port, raw, strlen(raw), &r, 5000) < 0) {
        harness_resp_free(&r); /* a partial answer may have been read */
        return -1;
    }
    snprintf(want, sizeof(want), "\"%s\":", field);
    p = strstr(r.body, want);
    if (p)
        v = strtol(p + strlen(want), NULL, 10);
    harness_resp_free(&r);
    return v;
}

long harness_executions(uint16_t up_port, const char *key)
{
    /* a key never executed is simply absent: 0; the total is always there */
    if (key == NULL)
        return upstream_counter(up_port, "/executions", "total", -1);
    return upstream_counter(up_port, "/executions", key, 0);
}

long harness_upstream_stat(uint16_t up_port, const char *field)
{
    return upstream_counter(up_port, "/stats", field, -1);
}

double harness_metric(const char *text, const char *series)
{
    const char *p = text;
    size_t n = strlen(series);

    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return atof(p + n + 1);
        p += n;
    }
    return -1;
}
