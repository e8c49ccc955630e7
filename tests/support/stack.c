/*
 * stack — the idempotency tests' fixture: redis-server, one test-upstream and two
 * idemproxy replicas on both, plus the keyed requests those tests send.
 *
 * Plain C that returns error codes and says on stderr what went wrong; the Criterion side
 * (assertions, .init/.fini) is the header-only stack_fixture.h.
 */
#include "harness.h"
#include "harness-internal.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define H_STACK_MAX_ARGS 32
#define H_STACK_STOP_MS  10000
#define H_KEYED_MAX      4096
#define H_KEYED_WAIT_MS  15000

int harness_stack_start(struct harness_stack *s, const char *const proxy_extra[],
                        const char *const redis_extra[])
{
    memset(s, 0, sizeof(*s));
    s->redis_pid = harness_start_redis(&s->redis_port, "redis", redis_extra);
    if (s->redis_pid <= 0) {
        fprintf(stderr, "harness: redis did not start\n");
        return -1;
    }
    s->up_pid = harness_start_upstream(&s->up_port, "upstream");
    if (s->up_pid <= 0) {
        fprintf(stderr, "harness: test-upstream did not start\n");
        return -1;
    }
    snprintf(s->up_arg, sizeof(s->up_arg), "127.0.0.1:%u", s->up_port);
    snprintf(s->redis_arg, sizeof(s->redis_arg), "127.0.0.1:%u", s->redis_port);
    /* both, even if the first fails: the caller's report then covers both logs */
    s->a_pid = harness_stack_proxy(s, &s->a_port, "proxyA", proxy_extra);
    s->b_pid = harness_stack_proxy(s, &s->b_port, "proxyB", proxy_extra);
    if (s->a_pid <= 0 || s->b_pid <= 0) {
        fprintf(stderr, "harness: idemproxy did not start\n");
        return -1;
    }
    return 0;
}

pid_t harness_stack_proxy(const struct harness_stack *s, uint16_t *port, const char *logname,
                          const char *const extra[])
{
    const char *args[H_STACK_MAX_ARGS];
    int n = 0, other_mode = 0;

    /* a proxy given Sentinels or cluster seeds takes no redis (the config refuses both) */
    for (int i = 0; extra && extra[i]; i++)
        other_mode |=
            strcmp(extra[i], "--redis-sentinel") == 0 || strcmp(extra[i], "--redis-cluster") == 0;
    args[n++] = "--upstream";
    args[n++] = s->up_arg;
    if (!other_mode) {
        args[n++] = "--redis";
        args[n++] = s->redis_arg;
    }
    for (int i = 0; extra && extra[i]; i++) {
        if (n == H_STACK_MAX_ARGS - 1) {
            fprintf(stderr, "harness: %s: more than %d arguments\n", logname, H_STACK_MAX_ARGS - 5);
            *port = 0;
            return 0;
        }
        args[n++] = extra[i];
    }
    args[n] = NULL;
    return harness_start_proxy(port, logname, args);
}

int harness_stack_stop(struct harness_stack *s)
{
    int unclean = 0;

    /* A test may have frozen it (SIGSTOP) and failed before resuming it. Only a pid we
     * still track: after harness_stop() the number may belong to someone else. */
    if (s->redis_pid > 0 && h_is_tracked(s->redis_pid))
        kill(s->redis_pid, SIGCONT);
    unclean += !harness_stop_clean(s->a_pid, "proxyA", H_STACK_STOP_MS);
    unclean += !harness_stop_clean(s->b_pid, "proxyB", H_STACK_STOP_MS);
    harness_cleanup();
    s->redis_pid = s->up_pid = s->a_pid = s->b_pid = 0;
    return unclean;
}

int harness_keyed_format(char *buf, size_t len, const struct harness_keyed *q)
{
    const char *body = q->body ? q->body : "";
    int n;

    /* each optional header is three %s: name, value, CRLF — all empty when absent */
    n = snprintf(buf, len,
                 "%s %s HTTP/1.1\r\nHost: shop\r\n%s%s%s%s%s%s%s%s%s"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 q->method ? q->method : "POST", q->path, q->key ? "Idempotency-Key: " : "",
                 q->key ? q->key : "", q->key ? "\r\n" : "", q->auth ? "Authorization: " : "",
                 q->auth ? q->auth : "", q->auth ? "\r\n" : "",
                 q->content_type ? "Content-Type: " : "", q->content_type ? q->content_type : "",
                 q->content_type ? "\r\n" : "", strlen(body), body);
    return n >= 0 && (size_t)n < len ? n : -1;
}

int harness_keyed_send(uint16_t port, const struct harness_keyed *q)
{
    char raw[H_KEYED_MAX];
    int n = harness_keyed_format(raw, sizeof(raw), q);
    int fd = n < 0 ? -1 : harness_connect(port);

    if (fd >= 0 && harness_send(fd, raw, (size_t)n) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

double harness_now_s(void)
{
    return (double)now_ms() / 1000.0;
}

int harness_keyed_post(uint16_t port, const struct harness_keyed *q, struct harness_resp *r)
{
    char raw[H_KEYED_MAX];
    int n = harness_keyed_format(raw, sizeof(raw), q);

    if (n < 0) {
        memset(r, 0, sizeof(*r));
        fprintf(stderr, "harness: %s %s: request longer than %d bytes\n",
                q->method ? q->method : "POST", q->path, H_KEYED_MAX);
        return -1;
    }
    return harness_request(port, raw, (size_t)n, r, H_KEYED_WAIT_MS);
}

int harness_replayed(const struct harness_resp *r)
{
    char buf[16];

    return harness_header(r, "Idempotent-Replayed", 0, buf, sizeof(buf)) != NULL &&
           strcmp(buf, "true") == 0;
}
