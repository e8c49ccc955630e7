#include "http/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/problem.h"

#define ACCESSLOG_FLUSH_MS    1000
#define ACCESSLOG_FLUSH_BYTES (64 * 1024)
#define ACCESSLOG_MAX_PENDING (8 * 1024 * 1024)

struct accesslog {
    char *path;
    int fd, own_fd; /* own_fd: ours to close (not stderr) */
    int worker_id;
    struct evbuffer *buf;
    struct event *flush_ev;
    uint64_t dropped;
};

static int accesslog_open(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void accesslog_flush(struct accesslog *al)
{
    while (evbuffer_get_length(al->buf) > 0) {
        int n = evbuffer_write(al->buf, al->fd);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            log_warn("access-log %s: write failed: %s; %zu bytes dropped", al->path,
                     n < 0 ? strerror(errno) : "nothing written", evbuffer_get_length(al->buf));
            evbuffer_drain(al->buf, evbuffer_get_length(al->buf));
            return;
        }
    }
}

static void accesslog_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    accesslog_flush(arg);
}

struct accesslog *accesslog_new(struct event_base *base, const char *path, int worker_id)
{
    struct accesslog *al = calloc(1, sizeof(*al));

    if (!al)
        return NULL;
    al->fd = -1;
    al->worker_id = worker_id;
    if (!(al->path = strdup(path)) || !(al->buf = evbuffer_new()) ||
        !(al->flush_ev = evtimer_new(base, accesslog_flush_cb, al)))
        goto err;
    if (strcmp(path, "stderr") == 0) {
        al->fd = STDERR_FILENO;
    } else if ((al->fd = accesslog_open(path)) < 0) {
        log_error("access-log %s: cannot open: %s", path, strerror(errno));
        goto err;
    } else {
        al->own_fd = 1;
    }
    return al;
err:
    accesslog_free(al);
    return NULL;
}

void accesslog_free(struct accesslog *al)
{
    if (!al)
        return;
    if (al->buf && al->fd >= 0)
        accesslog_flush(al);
    if (al->own_fd)
        close(al->fd);
    if (al->flush_ev)
        event_free(al->flush_ev);
    if (al->buf)
        evbuffer_free(al->buf);
    free(al->path);
    free(al);
}

int accesslog_reopen(struct accesslog *al)
{
    int fd;

    accesslog_flush(al);
    if (!al->own_fd)
        return 0;
    if ((fd = accesslog_open(al->path)) < 0) {
        log_error("access-log %s: cannot reopen: %s; still writing to the old file", al->path,
                  strerror(errno));
        return -1;
    }
    close(al->fd);
    al->fd = fd;
    return 0;
}

static void accesslog_str(struct evbuffer *b, const char *name, const char *v)
{
    if (!v)
        return;
    evbuffer_add_printf(b, ",\"%s\":\"", name);
    problem_json_escape(b, v, strlen(v));
    evbuffer_add(b, "\"", 1);
}

static void accesslog_ms(struct evbuffer *b, const char *name, double v)
{
    if (v >= 0)
        evbuffer_add_printf(b, ",\"%s\":%.3f", name, v);
}

void accesslog_write(struct accesslog *al, const struct accesslog_entry *e)
{
    struct evbuffer *b = al->buf;
    time_t secs = (time_t)(e->unix_ms / 1000);
    struct tm tm;

    if (evbuffer_get_length(b) > ACCESSLOG_MAX_PENDING) {
        if (al->dropped++ == 0)
            log_warn("access-log %s: cannot keep up; dropping lines", al->path);
        return;
    }
    gmtime_r(&secs, &tm);
    evbuffer_add_printf(b, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"worker\":%d",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                        tm.tm_sec, (int)(e->unix_ms % 1000), al->worker_id);
    accesslog_str(b, "client", e->client);
    accesslog_str(b, "method", e->method);
    accesslog_str(b, "target", e->target);
    evbuffer_add_printf(b, ",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu", e->status,
                        (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out);
    accesslog_ms(b, "duration_ms", e->duration_ms);
    accesslog_ms(b, "upstream_ms", e->upstream_ms);
    accesslog_ms(b, "redis_ms", e->redis_ms);
    accesslog_str(b, "outcome", e->outcome);
    accesslog_str(b, "record", e->record);
    accesslog_str(b, "upstream", e->upstream);
    accesslog_str(b, "request_id", e->request_id);
    evbuffer_add(b, "}\n", 2);
    if (evbuffer_get_length(b) >= ACCESSLOG_FLUSH_BYTES) {
        accesslog_flush(al);
    } else if (!evtimer_pending(al->flush_ev, NULL)) {
        struct timeval tv = clock_tv(ACCESSLOG_FLUSH_MS);
        evtimer_add(al->flush_ev, &tv);
    }
}
