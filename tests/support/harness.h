/*
 * harness — what integration tests need to drive real processes over real sockets.
 *
 * The one public header of the test support library (libtestharness); each section
 * names the file that implements it. Private helpers: harness-internal.h.
 *
 * Processes: started with fork+exec, stdout/stderr appended to a log file in the
 * test's temp dir; every pid started is remembered and killed (SIGKILL) and reaped by
 * harness_cleanup(), which tests call from a Criterion .fini (or which runs atexit).
 * Ports: harness_free_port() binds 127.0.0.1:0, reads the port, closes (never fixed ports).
 * Every wait is bounded; a timeout is a test failure, never a hang.
 */
#ifndef IDEMPROXY_HARNESS_H
#define IDEMPROXY_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- processes, ports, logs (proc.c) ---- */

/* A fresh private directory under $TMPDIR (or /tmp), created once per process and removed
 * when it exits (IDEMTEST_KEEP=1 keeps it, logs and all). */
const char *harness_tmpdir(void);

/* Throwaway certificates by scripts/make-certs.sh in harness_tmpdir()/certs (made again
 * on each call: a test may overwrite them); returns that directory, or NULL. */
const char *harness_make_certs(void);
/* The path of one of them ("ca.crt"); 8 results may be held at once. */
const char *harness_cert(const char *file);

/* A port on 127.0.0.1 that was free a moment ago. */
uint16_t harness_free_port(void);

/*
 * Start argv[0] (a path) with argv; NULL-terminated. Output goes to <tmpdir>/<logname>.log.
 * Returns the pid (>0) or -1. The pid is tracked for harness_cleanup().
 */
pid_t harness_spawn(const char *logname, char *const argv[]);

/* Wait until 127.0.0.1:port accepts a TCP connection; 0 on success, -1 after timeout_ms. */
int harness_wait_port(uint16_t port, int timeout_ms);

/* Send sig to pid and wait (bounded by timeout_ms) for it to exit.
 * Returns the exit status as from waitpid (WIFEXITED etc.), or -1 on timeout (then the
 * process was SIGKILLed and reaped). */
int harness_stop(pid_t pid, int sig, int timeout_ms);

/* Resident memory of pid now (VmRSS), in kB; -1 when it cannot be read. */
long harness_rss_kb(pid_t pid);

/* Has pid (tracked) exited? 1 with *status (as from waitpid) and pid reaped, 0 when it
 * still runs, -1 when it is not ours. Never blocks. */
int harness_exited(pid_t pid, int *status);

/* scripts/redis-topology.sh KIND ACTION DIR [ARG] (sentinel|cluster, up|down|restart PORT;
 * arg NULL: none; kind "tls-cluster" / "tls-sentinel": with --tls), waited for (60 s): its
 * exit code (-1: killed), with its output into *out (malloc'd; caller frees). */
int harness_topology(const char *kind, const char *action, const char *dir, const char *arg,
                     char **out);

/* SIGTERM pid and wait up to timeout_ms: 1 if it exited with status 0 (a clean drain,
 * and under ASan no leak), else 0 after printing its log to stderr. pid <= 0: 1. */
int harness_stop_clean(pid_t pid, const char *logname, int timeout_ms);

/* Kill and reap every tracked process still alive. Idempotent. */
void harness_cleanup(void);

/* Contents of <tmpdir>/<logname>.log (malloc'd, NUL-terminated; caller frees), or NULL. */
char *harness_read_log(const char *logname);

/* Convenience starters. Both wait for the port to accept before returning; 0 on failure. */
/* test-upstream on a free port, --id logname. Returns pid, *port filled. */
pid_t harness_start_upstream(uint16_t *port, const char *logname);
/* idemproxy with --listen 127.0.0.1:<free> --workers 2 and the given NULL-terminated extra
 * args (e.g. "--upstream", "127.0.0.1:1234", NULL). Returns pid, *port filled. */
pid_t harness_start_proxy(uint16_t *port, const char *logname, const char *const extra[]);

/* ---- a DNS server (dns.c) ---- */

/* UDP on 127.0.0.1 (harness_dns_port), in a thread of its own: every A question is
 * answered 127.0.0.1 (names whose first label is "nx": NXDOMAIN; other types: no data).
 * hold: questions are kept unanswered until harness_dns_hold(d, 0) answers them (a slow
 * server). NULL on failure. */
struct harness_dns;
struct harness_dns *harness_dns_start(int hold);
uint16_t harness_dns_port(const struct harness_dns *d);
void harness_dns_hold(struct harness_dns *d, int hold);
/* Questions received so far; *held (may be NULL): how many wait unanswered now. */
unsigned harness_dns_queries(struct harness_dns *d, unsigned *held);
void harness_dns_stop(struct harness_dns *d); /* d NULL: nothing */

/* ---- a TCP relay that can cut a stream (relay.c) ---- */

/* 127.0.0.1:harness_relay_port forwards every connection to 127.0.0.1:target_port, in a
 * thread of its own. harness_relay_cut(r, pattern): the next chunk a client sends that
 * holds pattern is forwarded, the target's reply to it read and dropped, and that
 * connection closed (the command ran, its answer was lost); once per call.
 * harness_relay_cuts: how many were made. NULL on failure. */
struct harness_relay;
struct harness_relay *harness_relay_start(uint16_t target_port);
uint16_t harness_relay_port(const struct harness_relay *r);
void harness_relay_cut(struct harness_relay *r, const char *pattern);
unsigned harness_relay_cuts(struct harness_relay *r);
void harness_relay_stop(struct harness_relay *r); /* r NULL: nothing */

/* ---- Redis (redis.c) ---- */

/* redis-server with conf/redis.conf on a free port, data in <tmpdir>/<logname>.data;
 * extra: more "--directive value" args (NULL-terminated, may be NULL). */
pid_t harness_start_redis(uint16_t *port, const char *logname, const char *const extra[]);
/* Start it again on the same port and data dir (after a stop). */
pid_t harness_restart_redis(uint16_t port, const char *logname);
/* One command (hiredis printf-style). Returns the integer reply, a string reply's length
 * (its bytes copied into buf as they are, NUL-terminated, cut at len - 1), an array's
 * size, 0 for nil, or -1 on error. */
long long harness_redis(uint16_t port, char *buf, size_t len, const char *fmt, ...);

/* ---- what test-upstream saw (upstream_ctl.c) ---- */

/* A counter from test-upstream's GET /stats ("requests", "connections"), or -1. */
long harness_upstream_stat(uint16_t up_port, const char *field);

/* test-upstream's execution count for key (NULL: the total), from GET /executions. */
long harness_executions(uint16_t up_port, const char *key);
/* In a Prometheus text exposition: the value of the sample line that is exactly series
 * ("name" or "name{labels}") followed by its value, or -1 when there is none. */
double harness_metric(const char *text, const char *series);

/* ---- a small HTTP/1.1 client over a blocking socket with deadlines (http_client.c) ---- */

struct harness_resp {
    int status; /* 0 if no complete status line was received */
    char *head; /* raw head incl. status line, NUL-terminated */
    char *body; /* body bytes (de-chunked), NUL-terminated for convenience */
    size_t body_len;
    int closed;   /* server closed the connection after this response */
    int complete; /* framing said the body was complete */
};

/* Connect to 127.0.0.1:port; returns fd or -1. */
int harness_connect(uint16_t port);

/* Write all of buf; 0 or -1. */
int harness_send(int fd, const void *buf, size_t len);

/* Read one response from fd (Content-Length, chunked, or until close), bounded by
 * timeout_ms. is_head_request: a response to HEAD has no body. 0 on success, -1 on
 * timeout/EOF-before-status. Fills r (free with harness_resp_free). */
int harness_read_response(int fd, struct harness_resp *r, int is_head_request, int timeout_ms);

/* Connect, send the raw request, read one response, close. 0 or -1. */
int harness_request(uint16_t port, const char *raw, size_t raw_len, struct harness_resp *r,
                    int timeout_ms);

/* Value of header name in r->head (case-insensitive), copied into buf; NULL if absent.
 * nth selects among repeated headers (0 = first). */
const char *harness_header(const struct harness_resp *r, const char *name, int nth, char *buf,
                           size_t len);

/* Does the peer close the connection within timeout_ms (read returns 0 or ECONNRESET)? 1/0 */
int harness_wait_closed(int fd, int timeout_ms);

void harness_resp_free(struct harness_resp *r);

/* ---- the idempotency stack (stack.c; as a Criterion fixture: stack_fixture.h) ---- */

/* redis-server, one test-upstream and two idemproxy replicas (2 workers each) on both. */
struct harness_stack {
    uint16_t redis_port, up_port, a_port, b_port;
    pid_t redis_pid, up_pid, a_pid, b_pid; /* 0: not running (or a test stopped it) */
    char up_arg[32], redis_arg[32];        /* "127.0.0.1:<port>", for --upstream/--redis */
};

/*
 * Start the stack into s (zeroed first): redis-server (log "redis"; redis_extra: more
 * "--directive value" args), test-upstream ("upstream"), then the replicas "proxyA" and
 * "proxyB" with --upstream, --redis and proxy_extra. Both lists are NULL-terminated and
 * may be NULL. Returns 0, or -1 after saying on stderr what did not start; what did start
 * is tracked, so harness_stack_stop() or harness_cleanup() still stops it.
 */
int harness_stack_start(struct harness_stack *s, const char *const proxy_extra[],
                        const char *const redis_extra[]);

/* One more replica on s's redis and upstream, logged as logname, with extra after
 * --upstream/--redis (NULL-terminated, may be NULL). Returns the pid with *port filled,
 * or 0. Not part of s: the caller stops it (harness_stop_clean), or harness_cleanup()
 * kills it. */
pid_t harness_stack_proxy(const struct harness_stack *s, uint16_t *port, const char *logname,
                          const char *const extra[]);

/* Resume redis (a test may have left it frozen), SIGTERM both replicas and wait up to 10 s
 * each (harness_stop_clean: the log of one that did not exit cleanly goes to stderr),
 * then harness_cleanup(). The pids in s are zeroed. Returns how many replicas did not exit
 * with status 0 (0, 1 or 2). */
int harness_stack_stop(struct harness_stack *s);

/* A request as the idempotency tests send it; NULL fields are left out. */
struct harness_keyed {
    const char *method; /* NULL: POST */
    const char *path;
    const char *key;          /* Idempotency-Key */
    const char *auth;         /* Authorization */
    const char *content_type; /* Content-Type */
    const char *body;         /* NULL: empty; Content-Length is always sent */
};

/* "<method> <path> HTTP/1.1", Host: shop, the headers set in q in the order above,
 * Content-Length, Connection: close, the body. Returns the length (buf NUL-terminated),
 * or -1 if it does not fit in len. */
int harness_keyed_format(char *buf, size_t len, const struct harness_keyed *q);

/* harness_request() of q (at most 4 KiB) with a 15 s deadline. 0 or -1; r is filled (and
 * must be freed) either way. */
int harness_keyed_post(uint16_t port, const struct harness_keyed *q, struct harness_resp *r);

/* Send q on a new connection and leave it running: the fd (read the answer, close it),
 * or -1. */
int harness_keyed_send(uint16_t port, const struct harness_keyed *q);

/* A monotonic clock in seconds, for bounded waits in tests. */
double harness_now_s(void);

/* Was r answered from a record ("Idempotent-Replayed: true")? 1/0 */
int harness_replayed(const struct harness_resp *r);

#endif
