/*
 * The access log and the request id (issue 10): one JSON line per request with what an
 * operator needs and never the key, Authorization or cookies; X-Request-Id passed
 * through or made, in the log and in the proxy's own error bodies; SIGUSR1 reopens.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(accesslog, .fini = stack_teardown, .timeout = 60);

static char log_path[512], log_arg[600];

static void start(void)
{
    const char *extra[] = {"--access-log", log_arg, "--workers", "1", NULL};

    snprintf(log_path, sizeof(log_path), "%s/access.log", harness_tmpdir());
    snprintf(log_arg, sizeof(log_arg), "%s", log_path);
    unlink(log_path);
    stack_start(extra, NULL);
}

/* The log's text once it holds at least n lines (flushed within a second), or fail. */
static char *wait_lines(const char *path, int n)
{
    for (int tries = 0; tries < 40; tries++) {
        FILE *f = fopen(path, "r");
        if (f) {
            static char buf[65536];
            size_t len = fread(buf, 1, sizeof(buf) - 1, f);
            int lines = 0;
            fclose(f);
            buf[len] = '\0';
            for (size_t i = 0; i < len; i++)
                lines += buf[i] == '\n';
            if (lines >= n)
                return buf;
        }
        usleep(100 * 1000);
    }
    cr_assert_fail("%s: fewer than %d lines after 4 s", path, n);
    return NULL;
}

/* The line (in text) whose request_id is id; NULL-terminated copy in out. */
static const char *line_of(const char *text, const char *id, char *out, size_t len)
{
    char want[200];
    const char *p, *start, *end;

    snprintf(want, sizeof(want), "\"request_id\":\"%s\"", id);
    p = strstr(text, want);
    cr_assert_not_null(p, "no line for request %s in:\n%s", id, text);
    for (start = p; start > text && start[-1] != '\n'; start--)
        ;
    end = strchr(p, '\n');
    snprintf(out, len, "%.*s", (int)(end - start), start);
    cr_assert_eq(strncmp(out, "{\"time\":\"", 9), 0, "%s", out);
    cr_assert_eq(out[strlen(out) - 1], '}', "%s", out);
    return out;
}

static void raw(uint16_t port, const char *req, struct harness_resp *r)
{
    cr_assert_eq(harness_request(port, req, strlen(req), r, 5000), 0, "no answer");
}

Test(accesslog, a_line_per_request_with_outcome_and_never_the_key)
{
    const char *post = "POST /pay HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: secret-key-1\r\n"
                       "Authorization: Bearer s3cr3t\r\nCookie: sid=abc\r\nX-Request-Id: req-1\r\n"
                       "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    const char *again = "POST /pay HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: secret-key-1\r\n"
                        "Authorization: Bearer s3cr3t\r\nX-Request-Id: req-2\r\n"
                        "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    const char *keyless = "GET /free HTTP/1.1\r\nHost: shop\r\nX-Request-Id: req-3\r\n"
                          "Connection: close\r\n\r\n";
    struct harness_resp r;
    char line[2048];
    const char *text;

    start();
    raw(stack.a_port, post, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "[\"X-Request-Id\", \"req-1\"]"), "not passed through: %s", r.body);
    harness_resp_free(&r);
    raw(stack.a_port, again, &r);
    cr_assert(harness_replayed(&r));
    harness_resp_free(&r);
    raw(stack.a_port, keyless, &r);
    harness_resp_free(&r);
    text = wait_lines(log_path, 3);
    cr_assert_null(strstr(text, "secret-key-1"), "the raw key reached the log");
    cr_assert_null(strstr(text, "s3cr3t"), "Authorization reached the log");
    cr_assert_null(strstr(text, "sid=abc"), "a cookie reached the log");
    line_of(text, "req-1", line, sizeof(line));
    cr_assert(strstr(line, "\"worker\":1,\"client\":\"127.0.0.1\",\"method\":\"POST\","
                           "\"target\":\"/pay\",\"status\":200,\"bytes_in\":2,"),
              "%s", line);
    cr_assert(strstr(line, "\"outcome\":\"executed\",\"record\":\""), "%s", line);
    cr_assert(strstr(line, "\"upstream_ms\":") && strstr(line, "\"redis_ms\":"), "%s", line);
    cr_assert(strstr(line, "\"upstream\":\"127.0.0.1:"), "%s", line);
    line_of(text, "req-2", line, sizeof(line));
    cr_assert(strstr(line, "\"outcome\":\"replayed\""), "%s", line);
    cr_assert_null(strstr(line, "\"upstream\":"), "a replay has no upstream: %s", line);
    line_of(text, "req-3", line, sizeof(line));
    cr_assert(strstr(line, "\"outcome\":\"keyless\""), "%s", line);
    cr_assert_null(strstr(line, "\"redis_ms\""), "a keyless request has no Redis time: %s", line);
}

Test(accesslog, a_request_id_is_made_when_absent_and_is_in_error_bodies)
{
    const char *post = "POST /pay HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: k\r\n"
                       "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    const char *reused = "POST /pay HTTP/1.1\r\nHost: shop\r\nIdempotency-Key: k\r\n"
                         "X-Request-Id: mine\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{ }";
    struct harness_resp r;
    char id[64] = "", line[2048];
    const char *p;

    start();
    raw(stack.a_port, post, &r);
    p = strstr(r.body, "[\"X-Request-Id\", \"");
    cr_assert_not_null(p, "the upstream got no request id: %s", r.body);
    cr_assert_eq(sscanf(p + 18, "%63[0-9a-f]", id), 1);
    cr_assert_eq(strlen(id), 32, "%s", id);
    harness_resp_free(&r);
    raw(stack.a_port, reused, &r);
    cr_assert_eq(r.status, 422);
    cr_assert(strstr(r.body, ",\"request_id\":\"mine\"}"), "not in the error body: %s", r.body);
    harness_resp_free(&r);
    line_of(wait_lines(log_path, 2), id, line, sizeof(line));
    line_of(wait_lines(log_path, 2), "mine", line, sizeof(line));
    cr_assert(strstr(line, "\"status\":422") && strstr(line, "\"outcome\":\"mismatch\""), "%s",
              line);
}

Test(accesslog, sigusr1_reopens_the_file)
{
    const char *get = "GET /free HTTP/1.1\r\nHost: shop\r\nX-Request-Id: after\r\n"
                      "Connection: close\r\n\r\n";
    struct harness_resp r;
    char rotated[600], line[2048];

    start();
    raw(stack.a_port,
        "GET /free HTTP/1.1\r\nHost: shop\r\nX-Request-Id: before\r\n"
        "Connection: close\r\n\r\n",
        &r);
    harness_resp_free(&r);
    wait_lines(log_path, 1);
    snprintf(rotated, sizeof(rotated), "%s.1", log_path);
    cr_assert_eq(rename(log_path, rotated), 0);
    cr_assert_eq(kill(stack.a_pid, SIGUSR1), 0);
    usleep(200 * 1000);
    raw(stack.a_port, get, &r);
    harness_resp_free(&r);
    line_of(wait_lines(log_path, 1), "after", line, sizeof(line));
    line_of(wait_lines(rotated, 1), "before", line, sizeof(line));
}
