/*
 * Answers larger than response-buffer stream through instead of being held whole:
 * byte-exact, framed right for the client, paused for a slow client, and never passed
 * off as complete when the upstream cuts them short.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static uint16_t up_port, px_port, redis_port;
static pid_t px_pid;

static void setup(void)
{
    char up[32], redis[32];
    const char *args[] = {"--upstream",   up,    "--redis", redis, "--response-buffer", "64k",
                          "--max-record", "16k", NULL};

    cr_assert_gt(harness_start_redis(&redis_port, "redis", NULL), 0);
    cr_assert_gt(harness_start_upstream(&up_port, "upstream"), 0);
    snprintf(up, sizeof(up), "127.0.0.1:%u", up_port);
    snprintf(redis, sizeof(redis), "127.0.0.1:%u", redis_port);
    px_pid = harness_start_proxy(&px_port, "proxy", args);
    cr_assert_gt(px_pid, 0);
}

static void teardown(void)
{
    cr_expect(harness_stop_clean(px_pid, "proxy", 10000), "idemproxy did not exit cleanly");
    harness_cleanup();
}

TestSuite(stream, .init = setup, .fini = teardown, .timeout = 90);

static void check_bytes(const struct harness_resp *r, size_t n)
{
    cr_assert_eq(r->body_len, n, "got %zu of %zu bytes", r->body_len, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r->body[i] != (unsigned char)((i * 31 + 7) % 256))
            cr_assert_fail("byte %zu differs", i);
}

static void get(const char *raw, struct harness_resp *r)
{
    cr_assert_eq(harness_request(px_port, raw, strlen(raw), r, 30000), 0, "no answer");
}

Test(stream, large_answer_with_length_streams_byte_exact)
{
    struct harness_resp r;
    char buf[32];

    get("GET /bytes/3000000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert(r.complete);
    cr_assert_str_eq(harness_header(&r, "Content-Length", 0, buf, sizeof(buf)), "3000000");
    check_bytes(&r, 3000000);
    harness_resp_free(&r);
}

Test(stream, large_chunked_answer_is_rechunked_or_close_delimited)
{
    struct harness_resp r;
    char buf[32];

    get("GET /chunked/500000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert(r.complete);
    cr_assert_str_eq(harness_header(&r, "Transfer-Encoding", 0, buf, sizeof(buf)), "chunked");
    cr_assert_null(harness_header(&r, "Content-Length", 0, buf, sizeof(buf)));
    check_bytes(&r, 500000);
    harness_resp_free(&r);

    /* an HTTP/1.0 client cannot take chunks: the end is the close */
    get("GET /chunked/500000 HTTP/1.0\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_null(harness_header(&r, "Transfer-Encoding", 0, buf, sizeof(buf)));
    cr_assert(r.closed);
    check_bytes(&r, 500000);
    harness_resp_free(&r);
}

Test(stream, keep_alive_continues_after_a_streamed_answer)
{
    struct harness_resp r;
    int fd = harness_connect(px_port);
    const char *raw = "GET /chunked/300000 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /bytes/5 HTTP/1.1\r\nHost: a\r\n\r\n";

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    cr_assert_eq(harness_read_response(fd, &r, 0, 30000), 0);
    check_bytes(&r, 300000);
    harness_resp_free(&r);
    cr_assert_eq(harness_read_response(fd, &r, 0, 10000), 0);
    check_bytes(&r, 5);
    harness_resp_free(&r);
    close(fd);
}

/* The client reads nothing for a while: the proxy stops reading the upstream instead of
 * buffering all of it, and resumes when the client catches up. */
Test(stream, slow_client_gets_everything)
{
    struct harness_resp r;
    int fd = harness_connect(px_port);
    const char *raw = "GET /bytes/30000000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    usleep(1500 * 1000);
    cr_assert_eq(harness_read_response(fd, &r, 0, 60000), 0);
    cr_assert(r.complete);
    check_bytes(&r, 30000000);
    harness_resp_free(&r);
    close(fd);
}

Test(stream, answer_cut_short_mid_stream_is_never_complete)
{
    struct harness_resp r;
    int fd = harness_connect(px_port);
    const char *raw = "GET /truncate/200000 HTTP/1.1\r\nHost: a\r\n\r\n";
    char *log;

    cr_assert_geq(fd, 0);
    cr_assert_eq(harness_send(fd, raw, strlen(raw)), 0);
    harness_read_response(fd, &r, 0, 10000);
    cr_assert_eq(r.status, 200, "the head went out before the cut");
    cr_assert_not(r.complete, "a cut-off answer was passed off as complete");
    cr_assert_lt(r.body_len, 400000);
    harness_resp_free(&r);
    close(fd);
    usleep(100 * 1000);
    log = harness_read_log("proxy");
    cr_assert(log && strstr(log, "cut its answer short mid-stream"), "%s", log ? log : "");
    free(log);
}

Test(stream, keyed_answer_over_max_record_streams_and_is_not_replayable)
{
    struct harness_resp r;
    const char *raw = "POST /bytes/400000 HTTP/1.1\r\nHost: a\r\nIdempotency-Key: big-stream\r\n"
                      "Content-Length: 2\r\nConnection: close\r\n\r\n{}";

    get(raw, &r);
    cr_assert_eq(r.status, 200);
    check_bytes(&r, 400000);
    harness_resp_free(&r);
    get(raw, &r);
    cr_assert_eq(r.status, 502);
    cr_assert(strstr(r.body, "response-not-replayable"), "%s", r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(up_port, "big-stream"), 1);
}
