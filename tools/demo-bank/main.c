/*
 * demo-bank — a deliberately NON-idempotent payment service to put behind idemproxy.
 *
 * POST /payments executes at receipt: the balance drops and the ledger gains an entry,
 * then the answer waits --delay (+ up to --jitter). A client that times out and retries
 * therefore pays twice, and GET /ledger shows it: the retried key has count 2. With
 * idemproxy in front, every key stays at 1.
 *
 * Fault injection, for chaos tests (scripts/chaos.sh): each payment draws once from a
 * seeded PRNG (--seed), and a fraction of them fails in one of three ways —
 *   --fail-rate R          503 before executing: nothing is charged, the ledger is unchanged;
 *   --fail-after-rate R    executed (charged, in the ledger), then answered 500;
 *   --reset-after-rate R   executed, then the connection is reset (RST) instead of the answer.
 * The ledger holds real executions only. GET /faults counts the faults applied. The
 * sequence of draws is reproducible for a seed; which request gets which draw follows the
 * order the requests arrive in. A request may choose instead, with a "Demo-Fault: none |
 * 503 | 500 | reset" header (no draw is made then), and ask for its own answer delay with
 * "Demo-Delay: DURATION" (instead of --delay/--jitter), e.g. to be sure it is still at the
 * bank when its proxy is killed.
 *
 * One thread, one libevent loop, evhttp server. SIGTERM/SIGINT: stop at once, drop
 * unanswered replies, free everything, exit 0. Exit 1: cannot listen or open --ledger;
 * exit 2: bad command line.
 *
 * Ownership of a delayed answer (struct bank_pending): the evhttp request is ours until
 * we answer it. evhttp (2.1) stops reading a connection once a request has arrived, so it
 * would not notice a client leaving during the wait; we watch the socket ourselves, and on
 * EOF or reset we free the connection (and the request with it), like nginx's client
 * abort: a half-closed client loses its answer too. If libevent closes the connection
 * itself, its close callback tells us whether it detached the request (then we must free
 * it) or is about to free it (then we must forget it). In every case the timer still
 * fires and logs the answer as dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "amount.h"
#include "core/conf.h"
#include "ledger.h"
#include "core/log.h"
#include "core/problem.h"

#define BANK_START_BALANCE  1000000000LL
#define BANK_MAX_BODY       (64 * 1024)
#define BANK_MAX_HEADERS    (64 * 1024)
#define BANK_MAX_WAIT_MS    (24ULL * 3600 * 1000)
#define BANK_ID_MAX         64
#define BANK_PROBLEM_BASE   "tag:idemproxy.dev,2026:demo-bank:"
#define BANK_KEY_HEADER     "Idempotency-Key"
#define BANK_DELAY_HEADER   "Demo-Delay"
#define BANK_FAULT_HEADER   "Demo-Fault"
#define BANK_LOG_FIELD_MAX  120
#define BANK_EXIT_USAGE     2
#define BANK_ALLOW_GET      "GET, HEAD"
#define BANK_ALLOW_PAYMENTS "POST"

/* The command line; strings point into argv. */
struct bank_opts {
    struct conf_addr listen;
    int have_listen;
    uint64_t delay_ms;
    uint64_t jitter_ms;
    double fail_rate;          /* 503 before executing */
    const char *fail_rate_arg; /* as given, for messages */
    double fail_after_rate;    /* executed, then 500 */
    const char *fail_after_rate_arg;
    double reset_after_rate; /* executed, then the connection is reset */
    const char *reset_after_rate_arg;
    uint64_t seed;
    int have_seed;           /* --seed given; otherwise the clock and the pid */
    const char *ledger_path; /* NULL: memory only */
    const char *id;
    int check_only; /* --check: validate the arguments, serve nothing */
};

struct bank_pending;

/* What happens to an executed payment's answer. */
enum bank_fault {
    BANK_FAULT_NONE = 0, /* 201 */
    BANK_FAULT_500,      /* --fail-after-rate: 500 instead of the 201 */
    BANK_FAULT_RESET,    /* --reset-after-rate: the connection is reset, no answer */
};

/* Faults applied so far (GET /faults). */
struct bank_fault_counts {
    uint64_t fail_before; /* 503, not executed */
    uint64_t fail_after;  /* executed, answered 500 */
    uint64_t reset_after; /* executed, connection reset */
};

struct bank {
    const struct bank_opts *opts;
    struct event_base *base;
    struct evhttp *http;
    struct ledger *ledger;
    int ledger_fd; /* -1 without --ledger */
    long long balance;
    uint64_t rng;                 /* splitmix64 state */
    uint64_t seed;                /* where rng started (--seed, or clock and pid) */
    struct bank_pending *pending; /* answers waiting for their timer */
    struct bank_fault_counts faults;
};

/* A payment that has executed and waits to be answered. Released in bank_pending_free. */
struct bank_pending {
    struct bank *bank;
    struct evhttp_request *req; /* ours until answered; NULL once libevent frees it */
    int gone;                   /* the client's connection closed before the answer */
    enum bank_fault fault;      /* what the answer will be */
    struct event *timer;
    struct event *watch;   /* readable client socket during the wait; NULL when off */
    struct evbuffer *body; /* the 201 body, built at execution */
    char location[32];     /* "/payments/pay_…" */
    char pay_id[LEDGER_ID_MAX];
    char logline[BANK_LOG_FIELD_MAX * 2 + 128]; /* what the request log line says */
    struct bank_pending *prev, *next;
};

/* ---- small helpers ---- */

static uint64_t bank_random(struct bank *b)
{
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double bank_random_unit(struct bank *b)
{
    return (double)(bank_random(b) >> 11) * 0x1.0p-53;
}

static int64_t bank_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *bank_method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "?";
}

/* Copy s into buf for a log line: printable ASCII only, cut at BANK_LOG_FIELD_MAX. */
static const char *bank_log_field(const char *s, char *buf, size_t len)
{
    size_t n = 0;

    for (; *s && n + 4 < len && n < BANK_LOG_FIELD_MAX; s++)
        buf[n++] = (*s > 0x20 && *s < 0x7f) ? *s : '?';
    if (*s && n + 4 <= len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static const char *bank_req_path(struct evhttp_request *req)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

    return path ? path : "";
}

static const char *bank_req_key(struct evhttp_request *req)
{
    return evhttp_find_header(evhttp_request_get_input_headers(req), BANK_KEY_HEADER);
}

/* "POST /payments 201 key=k1" + extra: the one log line of a request. */
static void bank_log_request(struct evhttp_request *req, int status, const char *extra)
{
    char path[BANK_LOG_FIELD_MAX + 4], key[BANK_LOG_FIELD_MAX + 4];
    const char *k = bank_req_key(req);

    log_info("%s %s %d%s%s%s%s", bank_method_name(evhttp_request_get_command(req)),
             bank_log_field(bank_req_path(req), path, sizeof(path)), status, k ? " key=" : "",
             k ? bank_log_field(k, key, sizeof(key)) : "", extra ? " " : "", extra ? extra : "");
}

/* Send body (may be NULL) with a Content-Type, log the request. req is gone afterwards. */
static void bank_send(struct evhttp_request *req, int status, const char *ctype,
                      struct evbuffer *body, const char *extra)
{
    bank_log_request(req, status, extra);
    if (ctype)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    /* HEAD gets the headers only, with the length a GET would have. */
    if (body && evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        char len[32];
        snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    evhttp_send_reply(req, status, NULL, body);
}

/* An application/problem+json answer; allow (for 405) may be NULL. */
static void bank_problem(struct evhttp_request *req, int status, const char *slug,
                         const char *title, const char *detail, const char *allow)
{
    struct evbuffer *body = evbuffer_new();
    char extra[BANK_LOG_FIELD_MAX + 16];

    if (body) {
        evbuffer_add_printf(body, "{\"type\":\"%s%s\",\"title\":\"", BANK_PROBLEM_BASE, slug);
        problem_json_escape(body, title, strlen(title));
        evbuffer_add_printf(body, "\",\"status\":%d,\"detail\":\"", status);
        problem_json_escape(body, detail, strlen(detail));
        evbuffer_add(body, "\"}\n", 3);
    }
    if (allow)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    snprintf(extra, sizeof(extra), "- %s", detail);
    bank_send(req, status, "application/problem+json", body, extra);
    if (body)
        evbuffer_free(body);
}

static void bank_method_not_allowed(struct evhttp_request *req, const char *allow)
{
    char detail[96];

    snprintf(detail, sizeof(detail), "%s is not allowed here; allowed: %s",
             bank_method_name(evhttp_request_get_command(req)), allow);
    bank_problem(req, 405, "method-not-allowed", "Method not allowed", detail, allow);
}

/* ---- the ledger file ---- */

/* Append one entry as a JSON line to --ledger. Failures are logged; the payment stands. */
static void bank_ledger_file(struct bank *b, const struct ledger_entry *e)
{
    struct evbuffer *line;
    const char *p;
    size_t len;

    if (b->ledger_fd < 0)
        return;
    line = evbuffer_new();
    if (!line || ledger_write_entry(b->ledger, e, line) < 0 || evbuffer_add(line, "\n", 1) < 0) {
        log_warn("--ledger %s: out of memory, entry %llu not written", b->opts->ledger_path,
                 (unsigned long long)e->seq);
        goto out;
    }
    len = evbuffer_get_length(line);
    p = (const char *)evbuffer_pullup(line, -1);
    while (len > 0) {
        ssize_t n = write(b->ledger_fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            log_warn("--ledger %s: write failed, entry %llu lost: %s", b->opts->ledger_path,
                     (unsigned long long)e->seq, n < 0 ? strerror(errno) : "short write");
            break;
        }
        p += n;
        len -= (size_t)n;
    }
out:
    if (line)
        evbuffer_free(line);
}

/* ---- delayed answers ---- */

/* Stop watching the socket (before anything may close it). */
static void bank_pending_unwatch(struct bank_pending *p)
{
    if (p->watch) {
        event_free(p->watch);
        p->watch = NULL;
    }
}

/* Unlink p and release what it owns (not p->req: see the callers). */
static void bank_pending_free(struct bank_pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        p->bank->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    bank_pending_unwatch(p);
    event_free(p->timer);
    evbuffer_free(p->body);
    free(p);
}

/*
 * The client's connection is closing while p waits. On EOF or timeout libevent has
 * already detached the unanswered request (its connection is NULL) and left it to us;
 * in any other case the connection frees the request right after this callback.
 */
static void bank_pending_closed(struct evhttp_connection *evcon, void *arg)
{
    struct bank_pending *p = arg;

    bank_pending_unwatch(p);
    if (p->req && evhttp_request_get_connection(p->req) != NULL)
        p->req = NULL;
    p->gone = 1;
}

/*
 * The client's socket became readable during the wait: EOF or a reset means the client
 * left, so free its connection now (we are not inside an evhttp callback, so that is
 * safe); bytes mean a pipelined next request, which evhttp reads after our answer.
 */
static void bank_pending_peek(evutil_socket_t fd, short what, void *arg)
{
    struct bank_pending *p = arg;
    struct evhttp_connection *evcon;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(p->watch, NULL);
        return;
    }
    bank_pending_unwatch(p);
    if (n > 0 || !p->req)
        return;
    evcon = evhttp_request_get_connection(p->req);
    p->gone = 1;
    if (!evcon)
        return;    /* already detached, so still ours: the timer frees it */
    p->req = NULL; /* freed with its connection */
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    evhttp_connection_free(evcon);
}

/*
 * Reset the connection req is on instead of answering (SO_LINGER 0: RST on close). The
 * connection frees req with itself; we are in a timer callback, not in one of evhttp's,
 * so that is safe.
 */
static void bank_reset_connection(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct linger lg = {1, 0};
    evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));

    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    evhttp_connection_free(evcon);
}

/* Answer p (or drop the answer if the client left), then release p. */
static void bank_pending_fire(evutil_socket_t fd, short what, void *arg)
{
    struct bank_pending *p = arg;
    struct bank *b = p->bank;
    struct evhttp_request *req = p->req;
    char detail[160];

    bank_pending_unwatch(p);
    p->req = NULL;
    if (req && !p->gone) {
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        switch (p->fault) {
        case BANK_FAULT_RESET:
            b->faults.reset_after++;
            log_info("%s (injected fault; executed, connection reset, no answer)", p->logline);
            bank_reset_connection(req);
            break;
        case BANK_FAULT_500:
            b->faults.fail_after++;
            snprintf(detail, sizeof(detail), "injected failure after executing payment %s",
                     p->pay_id);
            bank_problem(req, 500, "failed-after-executing", "Internal error", detail, NULL);
            break;
        case BANK_FAULT_NONE:
            evhttp_add_header(evhttp_request_get_output_headers(req), "Location", p->location);
            log_info("%s", p->logline);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "application/json");
            evhttp_send_reply(req, 201, NULL, p->body);
            break;
        }
    } else {
        log_info("%s (client went away; answer dropped)", p->logline);
        if (req)
            evhttp_request_free(req);
    }
    bank_pending_free(p);
}

/* At shutdown: drop every waiting answer. Must run before evhttp_free. */
static void bank_pending_drop_all(struct bank *b)
{
    while (b->pending) {
        struct bank_pending *p = b->pending;
        bank_pending_unwatch(p);
        if (p->req && !p->gone)
            /* Still on its connection, which evhttp_free will close and free it with. */
            evhttp_connection_set_closecb(evhttp_request_get_connection(p->req), NULL, NULL);
        else if (p->req)
            evhttp_request_free(p->req);
        p->req = NULL;
        log_info("%s (shutting down; answer dropped)", p->logline);
        bank_pending_free(p);
    }
}

/*
 * Hold the answer (the 201 body and Location, or the fault that replaces them) for
 * wait_ms. Returns 0 and owns body; or -1 out of memory, with nothing changed (the caller
 * answers now).
 */
static int bank_answer_later(struct bank *b, struct evhttp_request *req, struct evbuffer *body,
                             const char *location, const char *pay_id, enum bank_fault fault,
                             const char *extra, uint64_t wait_ms)
{
    struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)(wait_ms % 1000) * 1000};
    struct bank_pending *p = calloc(1, sizeof(*p));
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const char *key = bank_req_key(req);
    char keylog[BANK_LOG_FIELD_MAX + 4];
    evutil_socket_t fd;

    if (!p)
        return -1;
    p->timer = evtimer_new(b->base, bank_pending_fire, p);
    if (!p->timer || evtimer_add(p->timer, &tv) < 0) {
        if (p->timer)
            event_free(p->timer);
        free(p);
        return -1;
    }
    p->bank = b;
    p->req = req;
    p->body = body;
    p->fault = fault;
    snprintf(p->location, sizeof(p->location), "%s", location);
    snprintf(p->pay_id, sizeof(p->pay_id), "%s", pay_id);
    snprintf(p->logline, sizeof(p->logline), "POST %s %s%s%s %s", bank_req_path(req),
             fault == BANK_FAULT_RESET ? "RST"
             : fault == BANK_FAULT_500 ? "500"
                                       : "201",
             key ? " key=" : "", key ? bank_log_field(key, keylog, sizeof(keylog)) : "", extra);
    p->next = b->pending;
    if (b->pending)
        b->pending->prev = p;
    b->pending = p;

    evhttp_connection_set_closecb(evcon, bank_pending_closed, p);
    /* Without the watch we only lose the early "client went away" notice. */
    fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    p->watch = fd >= 0 ? event_new(b->base, fd, EV_READ, bank_pending_peek, p) : NULL;
    if (p->watch && event_add(p->watch, NULL) < 0)
        bank_pending_unwatch(p);
    return 0;
}

/* ---- routes ---- */

/*
 * The fault of a payment: the request's Demo-Fault header, or else one draw against the
 * rates. Returns 1 when the request is already answered (503 before executing, or 400 for
 * a bad Demo-Fault), else 0 with the fault its answer will carry in *fault. Without a
 * header and without rates nothing is drawn, so the other uses of the PRNG (ids, jitter)
 * stay as they were.
 */
static int bank_draw_fault(struct bank *b, struct evhttp_request *req, enum bank_fault *fault)
{
    const struct bank_opts *o = b->opts;
    const char *force =
        evhttp_find_header(evhttp_request_get_input_headers(req), BANK_FAULT_HEADER);
    char detail[96];
    double u;

    *fault = BANK_FAULT_NONE;
    if (force) {
        if (strcmp(force, "none") == 0)
            return 0;
        if (strcmp(force, "500") == 0) {
            *fault = BANK_FAULT_500;
            return 0;
        }
        if (strcmp(force, "reset") == 0) {
            *fault = BANK_FAULT_RESET;
            return 0;
        }
        if (strcmp(force, "503") != 0) {
            bank_problem(req, 400, "bad-request", "Bad request",
                         "Demo-Fault must be none, 503, 500 or reset", NULL);
            return 1;
        }
        b->faults.fail_before++;
        bank_problem(req, 503, "unavailable", "Service unavailable",
                     "injected failure (Demo-Fault: 503); nothing executed", NULL);
        return 1;
    }
    if (o->fail_rate <= 0 && o->fail_after_rate <= 0 && o->reset_after_rate <= 0)
        return 0;
    u = bank_random_unit(b);
    if (u < o->fail_rate) {
        b->faults.fail_before++;
        snprintf(detail, sizeof(detail), "injected failure (--fail-rate %s); nothing executed",
                 o->fail_rate_arg);
        bank_problem(req, 503, "unavailable", "Service unavailable", detail, NULL);
        return 1;
    }
    u -= o->fail_rate;
    if (u < o->fail_after_rate)
        *fault = BANK_FAULT_500;
    else if (u - o->fail_after_rate < o->reset_after_rate)
        *fault = BANK_FAULT_RESET;
    return 0;
}

/* The request's Demo-Delay header: 1 with *ms set, 0 when absent, -1 (answered 400) when
 * it is not a duration of at most 24 h. */
static int bank_req_delay(struct evhttp_request *req, uint64_t *ms)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), BANK_DELAY_HEADER);

    if (!v)
        return 0;
    if (conf_parse_duration(v, ms) < 0 || *ms > BANK_MAX_WAIT_MS) {
        bank_problem(req, 400, "bad-request", "Bad request",
                     "Demo-Delay must be a duration of at most 24h (e.g. 300ms, 2s)", NULL);
        return -1;
    }
    return 1;
}

static void bank_payments(struct bank *b, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *json = "", *why = NULL, *key = bank_req_key(req);
    struct ledger_entry e;
    struct evbuffer *body = NULL;
    enum bank_fault fault;
    long long amount, after;
    uint64_t seq, wait_ms, asked_ms = 0;
    char location[32], extra[160];
    int asked;

    if (len > 0 && (json = (const char *)evbuffer_pullup(in, -1)) == NULL)
        goto oom;
    if (bank_parse_amount(json, len, &amount, &why) < 0) {
        bank_problem(req, 400, "bad-request", "Bad request", why, NULL);
        return;
    }
    if ((asked = bank_req_delay(req, &asked_ms)) < 0)
        return;
    if (bank_draw_fault(b, req, &fault))
        return;
    if (__builtin_sub_overflow(b->balance, amount, &after)) {
        bank_problem(req, 500, "internal", "Internal error", "balance would overflow", NULL);
        return;
    }

    /* Execute now, whatever happens to the answer later: that is the demo. */
    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "pay_%016llx", (unsigned long long)bank_random(b));
    e.amount = amount;
    e.key = key;
    e.keylen = key ? strlen(key) : 0;
    e.unix_ms = bank_now_ms();
    seq = ledger_append(b->ledger, &e);
    if (seq == 0)
        goto oom;
    b->balance = after;
    bank_ledger_file(b, ledger_entry_at(b->ledger, seq));

    body = evbuffer_new();
    if (!body)
        goto oom_executed;
    evbuffer_add_printf(body, "{\"id\":\"%s\",\"amount\":%lld,\"balance\":%lld,\"replica\":\"",
                        e.id, amount, after);
    problem_json_escape(body, b->opts->id, strlen(b->opts->id));
    evbuffer_add(body, "\",\"key\":", 8);
    if (key) {
        evbuffer_add(body, "\"", 1);
        problem_json_escape(body, key, strlen(key));
        evbuffer_add(body, "\"}\n", 3);
    } else {
        evbuffer_add(body, "null}\n", 6);
    }

    wait_ms = asked ? asked_ms : b->opts->delay_ms;
    if (!asked && b->opts->jitter_ms > 0)
        wait_ms += bank_random(b) % (b->opts->jitter_ms + 1);
    snprintf(extra, sizeof(extra), "id=%s amount=%lld balance=%lld seq=%llu wait=%llums", e.id,
             amount, after, (unsigned long long)seq, (unsigned long long)wait_ms);

    snprintf(location, sizeof(location), "/payments/%s", e.id);
    /* A fault always goes through the timer, even without a delay: a reset frees the
     * connection, which must not happen inside evhttp's own callback. */
    if ((wait_ms > 0 || fault != BANK_FAULT_NONE) &&
        bank_answer_later(b, req, body, location, e.id, fault, extra, wait_ms) == 0)
        return;
    if (fault != BANK_FAULT_NONE)
        log_warn("out of memory: the fault for payment %s is not injected", e.id);
    /* No delay asked for (or no memory to delay): answer now. */
    evhttp_add_header(evhttp_request_get_output_headers(req), "Location", location);
    bank_send(req, 201, "application/json", body, extra);
    evbuffer_free(body);
    return;

oom:
    bank_problem(req, 500, "internal", "Internal error", "out of memory; nothing executed", NULL);
    return;
oom_executed:
    bank_problem(req, 500, "internal", "Internal error", "out of memory after executing", NULL);
}

/* GET /faults: what was injected so far, and the seed that drew it. */
static void bank_faults(struct bank *b, struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();

    if (!body ||
        evbuffer_add_printf(
            body,
            "{\"fail_before\": %llu, \"fail_after\": %llu, \"reset_after\": %llu, "
            "\"seed\": %llu}\n",
            (unsigned long long)b->faults.fail_before, (unsigned long long)b->faults.fail_after,
            (unsigned long long)b->faults.reset_after, (unsigned long long)b->seed) < 0) {
        bank_problem(req, 500, "internal", "Internal error", "out of memory", NULL);
    } else {
        bank_send(req, 200, "application/json", body, NULL);
    }
    if (body)
        evbuffer_free(body);
}

static void bank_ledger_counts(struct bank *b, struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();

    if (!body || ledger_write_counts(b->ledger, body) < 0 || evbuffer_add(body, "\n", 1) < 0) {
        bank_problem(req, 500, "internal", "Internal error", "out of memory", NULL);
    } else {
        bank_send(req, 200, "application/json", body, NULL);
    }
    if (body)
        evbuffer_free(body);
}

static void bank_ledger_entries(struct bank *b, struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();

    if (!body || ledger_write_entries(b->ledger, body) < 0 || evbuffer_add(body, "\n", 1) < 0) {
        bank_problem(req, 500, "internal", "Internal error", "out of memory", NULL);
    } else {
        bank_send(req, 200, "application/json", body, NULL);
    }
    if (body)
        evbuffer_free(body);
}

static void bank_healthz(struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();

    if (body)
        evbuffer_add(body, "ok\n", 3);
    bank_send(req, 200, "text/plain; charset=utf-8", body, NULL);
    if (body)
        evbuffer_free(body);
}

/* Every request lands here (evhttp_set_gencb). */
static void bank_request(struct evhttp_request *req, void *arg)
{
    struct bank *b = arg;
    const char *path = bank_req_path(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;

    if (strcmp(path, "/payments") == 0) {
        if (cmd == EVHTTP_REQ_POST)
            bank_payments(b, req);
        else
            bank_method_not_allowed(req, BANK_ALLOW_PAYMENTS);
    } else if (strcmp(path, "/ledger") == 0 || strcmp(path, "/ledger/entries") == 0 ||
               strcmp(path, "/faults") == 0 || strcmp(path, "/healthz") == 0) {
        if (!get)
            bank_method_not_allowed(req, BANK_ALLOW_GET);
        else if (strcmp(path, "/ledger") == 0)
            bank_ledger_counts(b, req);
        else if (strcmp(path, "/ledger/entries") == 0)
            bank_ledger_entries(b, req);
        else if (strcmp(path, "/faults") == 0)
            bank_faults(b, req);
        else
            bank_healthz(req);
    } else {
        bank_problem(req, 404, "not-found", "Not found",
                     "no such resource; try POST /payments, GET /ledger, GET /ledger/entries, "
                     "GET /faults, GET /healthz",
                     NULL);
    }
}

/* ---- command line ---- */

static void bank_usage(FILE *out)
{
    fprintf(out,
            "usage: demo-bank --listen HOST:PORT [--delay DURATION] [--jitter DURATION]\n"
            "                 [--fail-rate R] [--fail-after-rate R] [--reset-after-rate R]\n"
            "                 [--seed S] [--ledger FILE] [--id NAME] [--check]\n"
            "\n"
            "A deliberately non-idempotent payment service, to put behind idemproxy.\n"
            "POST /payments {\"amount\": N} executes at once (balance -= N, one ledger entry),\n"
            "then answers 201 after the delay: a client that gives up and retries pays twice.\n"
            "\n"
            "  --listen HOST:PORT  address to listen on (port 0: any free port, logged)\n"
            "  --delay DURATION    wait this long before answering [0] (e.g. 300ms, 2s)\n"
            "  --jitter DURATION   plus a uniformly random extra wait up to this [0]\n"
            "  --fail-rate R       answer this fraction (0..1) of payments 503 without\n"
            "                      executing them [0]\n"
            "  --fail-after-rate R execute this fraction of payments, then answer 500 [0]\n"
            "  --reset-after-rate R  execute this fraction of payments, then reset the\n"
            "                      connection instead of answering [0]\n"
            "                      (the three rates together at most 1; one draw per payment)\n"
            "  --seed S            seed of the fault draws, payment ids and jitter [clock, pid]\n"
            "  --ledger FILE       also append every ledger entry to FILE as a JSON line\n"
            "  --id NAME           replica name reported in answers and entries [demo-bank]\n"
            "  --check             only check the arguments (exit 0 if they are valid)\n"
            "  -h, --help          this text\n"
            "\n"
            "Routes: POST /payments, GET /ledger ({\"total\": T, \"keys\": {\"KEY\": COUNT}}),\n"
            "GET /ledger/entries, GET /faults (faults applied so far), GET /healthz.\n"
            "A payment with a \"Demo-Delay: DURATION\" header is answered after that delay\n"
            "instead of --delay/--jitter; one with \"Demo-Fault: none|503|500|reset\" gets that\n"
            "fault instead of a draw. The ledger holds real executions only.\n"
            "Durations: a number with ms, s, m, h or d (a bare number is seconds).\n");
}

static int bank_usage_error(const char *flag, const char *fmt, const char *arg)
{
    fprintf(stderr, "demo-bank: %s%s", flag ? flag : "", flag ? ": " : "");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return -1;
}

static int bank_parse_wait(const char *flag, const char *v, uint64_t *ms)
{
    if (conf_parse_duration(v, ms) < 0)
        return bank_usage_error(flag,
                                "invalid duration '%s' (use e.g. 300ms, 2s; a bare number "
                                "is seconds)",
                                v);
    if (*ms > BANK_MAX_WAIT_MS)
        return bank_usage_error(flag, "'%s' is too long (at most 24h)", v);
    return 0;
}

static int bank_parse_rate(const char *flag, const char *v, double *rate, const char **arg)
{
    char *end;

    errno = 0;
    *rate = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || errno != 0 || !(*rate >= 0 && *rate <= 1))
        return bank_usage_error(flag, "'%s' is not a number from 0 to 1", v);
    *arg = v;
    return 0;
}

static int bank_parse_flag(struct bank_opts *o, const char *flag, const char *v)
{
    if (strcmp(flag, "--listen") == 0) {
        if (conf_parse_addr(v, &o->listen, 0, 1) < 0)
            return bank_usage_error(flag,
                                    "invalid address '%s' (expected HOST:PORT, e.g. "
                                    "127.0.0.1:8081 or [::1]:8081)",
                                    v);
        o->have_listen = 1;
    } else if (strcmp(flag, "--delay") == 0) {
        return bank_parse_wait(flag, v, &o->delay_ms);
    } else if (strcmp(flag, "--jitter") == 0) {
        return bank_parse_wait(flag, v, &o->jitter_ms);
    } else if (strcmp(flag, "--fail-rate") == 0) {
        return bank_parse_rate(flag, v, &o->fail_rate, &o->fail_rate_arg);
    } else if (strcmp(flag, "--fail-after-rate") == 0) {
        return bank_parse_rate(flag, v, &o->fail_after_rate, &o->fail_after_rate_arg);
    } else if (strcmp(flag, "--reset-after-rate") == 0) {
        return bank_parse_rate(flag, v, &o->reset_after_rate, &o->reset_after_rate_arg);
    } else if (strcmp(flag, "--seed") == 0) {
        char *end;
        errno = 0;
        o->seed = strtoull(v, &end, 10);
        if (*v < '0' || *v > '9' || *end != '\0' || errno != 0)
            return bank_usage_error(flag, "'%s' is not a whole number", v);
        o->have_seed = 1;
    } else if (strcmp(flag, "--ledger") == 0) {
        if (*v == '\0')
            return bank_usage_error(flag, "empty file name%s", "");
        o->ledger_path = v;
    } else if (strcmp(flag, "--id") == 0) {
        size_t n = strlen(v);
        if (n == 0 || n > BANK_ID_MAX ||
            strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx"
                      "yz0123456789._-") != n)
            return bank_usage_error(flag,
                                    "invalid name '%s' (1-64 characters: letters, digits, "
                                    "'.', '_', '-')",
                                    v);
        o->id = v;
    } else {
        return bank_usage_error(NULL, "unknown option '%s'", flag);
    }
    return 0;
}

/* 0: run; 1: help was printed; -1: error printed. */
static int bank_parse_args(struct bank_opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof(*o));
    o->id = "demo-bank";
    o->fail_rate_arg = o->fail_after_rate_arg = o->reset_after_rate_arg = "0";
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq, *v;
        char flag[32];

        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            bank_usage(stdout);
            return 1;
        }
        if (strcmp(arg, "--check") == 0) {
            o->check_only = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return bank_usage_error(NULL, "unexpected argument '%s'", arg);
        eq = strchr(arg, '=');
        if ((size_t)(eq ? eq - arg : (ptrdiff_t)strlen(arg)) >= sizeof(flag))
            return bank_usage_error(NULL, "unknown option '%s'", arg);
        snprintf(flag, sizeof(flag), "%.*s", (int)(eq ? eq - arg : (ptrdiff_t)strlen(arg)), arg);
        if (eq) {
            v = eq + 1;
        } else if (strcmp(flag, "--listen") != 0 && strcmp(flag, "--delay") != 0 &&
                   strcmp(flag, "--jitter") != 0 && strcmp(flag, "--fail-rate") != 0 &&
                   strcmp(flag, "--fail-after-rate") != 0 &&
                   strcmp(flag, "--reset-after-rate") != 0 && strcmp(flag, "--seed") != 0 &&
                   strcmp(flag, "--ledger") != 0 && strcmp(flag, "--id") != 0) {
            return bank_usage_error(NULL, "unknown option '%s'", arg);
        } else if (i + 1 >= argc) {
            return bank_usage_error(flag, "missing value%s", "");
        } else {
            v = argv[++i];
        }
        if (bank_parse_flag(o, flag, v) < 0)
            return -1;
    }
    if (!o->have_listen)
        return bank_usage_error("--listen", "HOST:PORT is required%s", "");
    if (o->fail_rate + o->fail_after_rate + o->reset_after_rate > 1 + 1e-9)
        return bank_usage_error(NULL,
                                "--fail-rate, --fail-after-rate and --reset-after-rate add up "
                                "to more than 1%s",
                                "");
    return 0;
}

/* ---- main ---- */

static void bank_signal(evutil_socket_t sig, short what, void *arg)
{
    struct bank *b = arg;

    log_info("received %s, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    event_base_loopbreak(b->base);
}

static int bank_run(const struct bank_opts *o)
{
    struct bank b;
    struct event *sigterm = NULL, *sigint = NULL;
    struct evhttp_bound_socket *bound;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    unsigned port = o->listen.port;
    int rc = 1;

    memset(&b, 0, sizeof(b));
    b.opts = o;
    b.ledger_fd = -1;
    b.balance = BANK_START_BALANCE;
    if (o->have_seed) {
        b.rng = o->seed;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        b.rng = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
        b.rng ^= (uint64_t)getpid() << 32;
        b.rng ^= (uint64_t)(uintptr_t)&b;
    }
    b.seed = b.rng;

    b.base = event_base_new();
    b.ledger = ledger_new(o->id);
    if (!b.base || !b.ledger) {
        log_error("%s: out of memory", __func__);
        goto out;
    }
    if (o->ledger_path) {
        b.ledger_fd = open(o->ledger_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (b.ledger_fd < 0) {
            log_error("--ledger %s: cannot open: %s", o->ledger_path, strerror(errno));
            goto out;
        }
    }
    b.http = evhttp_new(b.base);
    sigterm = evsignal_new(b.base, SIGTERM, bank_signal, &b);
    sigint = evsignal_new(b.base, SIGINT, bank_signal, &b);
    if (!b.http || !sigterm || !sigint || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0) {
        log_error("%s: cannot set up the event loop", __func__);
        goto out;
    }
    /* Accept every method so that a wrong one gets our 405 with Allow, not evhttp's. */
    evhttp_set_allowed_methods(b.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                           EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
                                           EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(b.http, BANK_MAX_BODY);
    evhttp_set_max_headers_size(b.http, BANK_MAX_HEADERS);
    evhttp_set_gencb(b.http, bank_request, &b);

    bound = evhttp_bind_socket_with_handle(b.http, o->listen.host, o->listen.port);
    if (!bound) {
        int err = errno;
        log_error("cannot listen on %s:%u: %s", o->listen.host, o->listen.port,
                  err ? strerror(err) : "bind failed");
        goto out;
    }
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_INET)
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    log_info("demo-bank listening on %s%s%s:%u (replica %s, delay %llums, jitter %llums, "
             "fail-rate %s, fail-after-rate %s, reset-after-rate %s, seed %llu%s%s)",
             strchr(o->listen.host, ':') ? "[" : "", o->listen.host,
             strchr(o->listen.host, ':') ? "]" : "", port, o->id, (unsigned long long)o->delay_ms,
             (unsigned long long)o->jitter_ms, o->fail_rate_arg, o->fail_after_rate_arg,
             o->reset_after_rate_arg, (unsigned long long)b.seed, o->ledger_path ? ", ledger " : "",
             o->ledger_path ? o->ledger_path : "");

    if (event_base_dispatch(b.base) < 0) {
        log_error("%s: event loop failed", __func__);
        goto out;
    }
    rc = 0;
out:
    bank_pending_drop_all(&b);
    if (rc == 0)
        log_info("stopped after %llu payment(s); balance %lld; faults: %llu 503 before "
                 "executing, %llu 500 after, %llu reset after",
                 (unsigned long long)ledger_total(b.ledger), b.balance,
                 (unsigned long long)b.faults.fail_before, (unsigned long long)b.faults.fail_after,
                 (unsigned long long)b.faults.reset_after);
    if (b.http)
        evhttp_free(b.http);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (b.base)
        event_base_free(b.base);
    if (b.ledger_fd >= 0)
        close(b.ledger_fd);
    ledger_free(b.ledger);
    return rc;
}

int main(int argc, char **argv)
{
    struct bank_opts opts;
    int rc = bank_parse_args(&opts, argc, argv);

    if (rc > 0)
        return 0;
    if (rc < 0)
        return BANK_EXIT_USAGE;
    if (opts.check_only) {
        printf("demo-bank: arguments ok\n");
        return 0;
    }
    /* Answers to clients that went away must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    return bank_run(&opts);
}
