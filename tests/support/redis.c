/*
 * redis — redis-server for the tests (conf/redis.conf, data in the test's temp dir) and
 * one-shot commands against it.
 */
#include "harness.h"
#include "harness-internal.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#ifndef SOURCE_DIR
#error "SOURCE_DIR must be defined by the build"
#endif

/*
 * Redis listens before it is done opening its append-only file: on a busy disk a first
 * command can wait longer than a proxy's redis-timeout. Wait until it answers one (any
 * reply counts: an error such as NOAUTH is an answer too). 0, or -1 after timeout_ms.
 */
static int redis_wait_serving(uint16_t port, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    struct timeval tv = {0, 500 * 1000};

    do {
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        redisReply *r = NULL;

        if (c && !c->err) {
            redisSetTimeout(c, tv);
            r = redisCommand(c, "PING");
        }
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
        if (r)
            return 0;
        sleep_ms(20);
    } while (now_ms() < deadline);
    return -1;
}

static pid_t redis_start(uint16_t fixed, uint16_t *port, const char *logname,
                         const char *const extra[])
{
    char dir[4200], *argv[32];
    int n = 0;
    pid_t pid;

    snprintf(dir, sizeof(dir), "%s/%s.data", harness_tmpdir(), logname);
    mkdir(dir, 0700);
    argv[n++] = "/usr/bin/redis-server";
    argv[n++] = SOURCE_DIR "/conf/redis.conf";
    argv[n++] = "--port";
    argv[n++] = NULL; /* the port */
    argv[n++] = "--dir";
    argv[n++] = dir;
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    pid = h_start_server_at(argv, 3, 1, fixed, port, logname, H_UPSTREAM_WAIT_MS);
    /* a loaded machine (the first run installs packages beside ASan builds) can take a
     * while to open the append-only file; a test on a Redis that does not answer would
     * only fail later and less clearly, so this one fails here */
    if (pid > 0 && redis_wait_serving(*port, H_REDIS_SERVING_MS) < 0) {
        fprintf(stderr,
                "harness: redis on port %u accepts connections but answered no command in %d "
                "ms; stopping it\n",
                *port, H_REDIS_SERVING_MS);
        harness_stop(pid, SIGKILL, 5000);
        return 0;
    }
    return pid;
}

pid_t harness_start_redis(uint16_t *port, const char *logname, const char *const extra[])
{
    return redis_start(0, port, logname, extra);
}

pid_t harness_restart_redis(uint16_t port, const char *logname)
{
    uint16_t got;
    long long deadline = now_ms() + 5000;
    pid_t pid;

    /* the old process's socket may linger a moment */
    while ((pid = redis_start(port, &got, logname, NULL)) == 0 && now_ms() < deadline)
        sleep_ms(100);
    return pid;
}

long long harness_redis(uint16_t port, char *buf, size_t len, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r;
    long long v = -1;
    va_list ap;

    if (buf && len)
        buf[0] = '\0';
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r) {
        if (r->type == REDIS_REPLY_INTEGER)
            v = r->integer;
        else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
            if (buf && len) { /* binary-safe: the bytes as they are, NUL after them */
                size_t n = r->len < len - 1 ? r->len : len - 1;
                memcpy(buf, r->str, n);
                buf[n] = '\0';
            }
            v = (long long)r->len;
        } else if (r->type == REDIS_REPLY_ARRAY)
            v = (long long)r->elements;
        else if (r->type == REDIS_REPLY_NIL)
            v = 0;
        freeReplyObject(r);
    }
    redisFree(c);
    return v;
}
