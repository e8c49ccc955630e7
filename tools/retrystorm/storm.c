/*
 * storm — the client engine (contract in storm.h).
 *
 * One event loop, one dispatcher. Attempts never start other attempts directly: when one
 * ends it only "kicks" the dispatcher (an activated event), which then fills the free
 * connections from the plan (phase 1) or the ready queue (phase 2). So no callback
 * recurses, however fast connections fail.
 *
 * Connections: at most `concurrency` at once, idle ones kept per target for reuse. A
 * connection is never freed inside its own callbacks: conn_close() detaches it and puts
 * its bufferevent in a graveyard that the dispatcher (or storm_free) empties.
 */
#include "storm.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "hist.h"
#include "ledger.h"

#define STORM_BACKOFF_MIN_MS  100
#define STORM_BACKOFF_MAX_MS  2000
#define STORM_LEDGER_TIMEOUT  10000
#define STORM_LEDGER_MAX_BODY (512UL * 1024 * 1024)
#define STORM_BODY_MAX        128
#define STORM_NPARAMS         20
#define STORM_MAX_CLASSES     64  /* outcome kinds; the last one is "other" */
#define STORM_PEEK_MAX        256 /* body bytes kept to find a problem type */
#define STORM_HEADERS_MAX     4096
#define STORM_MAX_EXAMPLES    8

/* ---- PRNG: xoshiro256**, seeded through splitmix64 ---- */

struct storm_rng {
    uint64_t s[4];
};

static uint64_t storm_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void storm_rng_seed(struct storm_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = storm_splitmix(&seed);
}

static uint64_t storm_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t storm_rng_next(struct storm_rng *r)
{
    uint64_t *s = r->s, out = storm_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = storm_rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1). */
static double storm_rng_unit(struct storm_rng *r)
{
    return (double)(storm_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n), n >= 1 (rejection keeps it unbiased). */
static uint64_t storm_rng_below(struct storm_rng *r, uint64_t n)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;

    do
        x = storm_rng_next(r);
    while (x >= lim);
    return x % n;
}

/* ---- state ---- */

struct storm_key {
    uint64_t final_hash; /* body hash of the first final answer */
    uint64_t executions;
    uint32_t reexec_before;   /* executions in the --expect-reexec snapshots */
    uint16_t final_status;    /* status of the first final answer */
    uint16_t mismatch_status; /* status of the first final answer that differed */
    uint8_t final_class;      /* index in s->classes of the first final answer */
    uint8_t final, mismatched, in_flight;
    uint8_t queued;        /* in the ready ring */
    uint8_t waiting;       /* in the back-off heap */
    uint8_t backoff;       /* consecutive errors in phase 2 */
    uint8_t expect_reexec; /* in an --expect-reexec snapshot */
};

/* One outcome kind ("201", "503 store-unavailable", "error: timeout"), see report.h. */
struct storm_class {
    char name[72];
    int status;
    uint64_t answers, replayed, keys_final;
};

/* One copy of phase 1: the key and whether the client abandons it. */
struct storm_job {
    uint32_t key;
    uint8_t abort;
};

/* A key backing off in phase 2 until due_us. */
struct storm_due {
    uint64_t due_us;
    uint32_t key;
};

enum storm_conn_state { CONN_FREE = 0, CONN_OPEN };

struct storm_conn {
    struct storm *s;
    struct bufferevent *bev;
    struct event *timer;
    enum storm_conn_state state;
    int target;
    int busy; /* an attempt is on it */
    struct storm_conn *idle_prev, *idle_next;
    int in_idle;
    /* the attempt */
    uint32_t key;
    int phase;
    int abort;
    uint64_t origin_us; /* latency runs from here (intended time in --rate mode) */
    struct wire_resp resp;
    char peek[STORM_PEEK_MAX]; /* the body's first bytes, for its problem type */
    size_t npeek;
};

struct storm_target {
    struct wire_url url;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct storm_conn *idle; /* idle connections to this target */
};

struct storm {
    /* options, copied */
    struct storm_target *targets;
    size_t ntargets;
    struct wire_url *ledgers;
    size_t nledgers;
    uint64_t nkeys, dupes;
    int concurrency;
    double abort_rate, rate;
    uint64_t client_timeout_ms, give_up_ms, duration_ms, seed;
    int no_key, quiet, head;
    char method[32];
    char run_id[17];
    uint8_t retry_status[STORM_STATUS_MAX];
    char retry_text[64];             /* retry_status as given, for the parameters */
    char headers[STORM_HEADERS_MAX]; /* the extra header lines, NUL-separated */
    const char **header_texts;
    size_t nheaders;

    struct storm_key *keys;
    struct storm_job *jobs;
    uint64_t njobs, next_job;
    struct storm_rng rng_run;

    /* event machinery */
    struct event_base *base;
    struct event *kick_ev, *rate_ev, *give_up_ev, *sigint_ev, *sigterm_ev;
    struct storm_conn *conns;
    struct storm_conn **free_conns; /* stack of CONN_FREE slots */
    int nfree;
    int inflight;
    struct bufferevent **graveyard;
    size_t ngrave, cgrave;

    /* phase 2 */
    int phase;       /* 1, 2, or 3 = finished */
    uint32_t *ready; /* ring of keys due for a retry */
    uint64_t ready_head, ready_len;
    struct storm_due *waiting; /* min-heap of keys backing off, by due time */
    uint64_t nwaiting;
    struct event *retry_ev; /* fires at the earliest due time */
    uint64_t unresolved;    /* keys without a final answer */
    int gave_up, interrupted;

    /* results */
    uint64_t start_us, phase1_end_us, end_us;
    uint64_t requests, retries, aborted, errors, replays, conflicts, phase1_answers;
    uint64_t status_counts[STORM_STATUS_MAX];
    struct hist *latency;
    struct report_timeline timeline;
    int64_t keys_duplicated;
    uint64_t max_executions;
    char last_error[128];    /* the most recent attempt error, for the progress lines */
    uint64_t ledger_missing; /* keys with a 2xx answer that no ledger has */
    char ledger_note[160];
    int reexec_declared;
    uint64_t reexec_expected, reexec_observed, reexec_missing;
    struct storm_class classes[STORM_MAX_CLASSES];
    size_t nclasses;
    struct report_class rclasses[STORM_MAX_CLASSES];
    struct report_example examples[STORM_MAX_EXAMPLES];
    char example_keys[STORM_MAX_EXAMPLES][64], example_what[STORM_MAX_EXAMPLES][96];
    size_t nexamples;
    int verdict_done; /* the verdict's examples were collected */
    struct report_status *status;
    size_t nstatus;
    struct report_param params[STORM_NPARAMS];
    size_t nparams;
    char pbuf[STORM_NPARAMS][64];
    const char **target_texts, **ledger_texts;
};

static void storm_kick(struct storm *s);
static void storm_conn_close(struct storm_conn *c);

static uint64_t storm_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static struct timeval storm_tv(uint64_t us)
{
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};

    return tv;
}

static void storm_progress(const struct storm *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void storm_progress(const struct storm *s, const char *fmt, ...)
{
    va_list ap;

    if (s->quiet)
        return;
    fputs("retrystorm: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int storm_key_str(const struct storm *s, uint32_t k, char *buf, size_t len)
{
    return snprintf(buf, len, "%s-%u", s->run_id, k);
}

/* ---- setup ---- */

static int storm_resolve(struct storm_target *t, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    int rc;

    snprintf(port, sizeof(port), "%u", t->url.port);
    rc = getaddrinfo(t->url.host, port, &hints, &res);
    if (rc != 0) {
        wire_errf(err, errlen, "resolve %s: %s", t->url.host, gai_strerror(rc));
        return -1;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void storm_param(struct storm *s, const char *name, enum report_ptype type, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static void storm_param(struct storm *s, const char *name, enum report_ptype type, const char *fmt,
                        ...)
{
    struct report_param *p = &s->params[s->nparams];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->pbuf[s->nparams], sizeof(s->pbuf[0]), fmt, ap);
    va_end(ap);
    p->name = name;
    p->type = type;
    p->value = s->pbuf[s->nparams];
    s->nparams++;
}

static void storm_params(struct storm *s)
{
    struct report_param *p;

    p = &s->params[s->nparams++];
    p->name = "targets";
    p->type = REPORT_P_LIST;
    p->list = s->target_texts;
    p->nlist = s->ntargets;
    storm_param(s, "keys", REPORT_P_NUM, "%llu", (unsigned long long)s->nkeys);
    storm_param(s, "dupes", REPORT_P_NUM, "%llu", (unsigned long long)s->dupes);
    storm_param(s, "requests_planned", REPORT_P_NUM, "%llu", (unsigned long long)s->njobs);
    storm_param(s, "concurrency", REPORT_P_NUM, "%d", s->concurrency);
    storm_param(s, "abort_rate", REPORT_P_NUM, "%g", s->abort_rate);
    storm_param(s, "client_timeout_ms", REPORT_P_NUM, "%llu",
                (unsigned long long)s->client_timeout_ms);
    if (s->rate > 0)
        storm_param(s, "rate", REPORT_P_NUM, "%g", s->rate);
    else
        storm_param(s, "rate", REPORT_P_NUM, "null");
    if (s->duration_ms > 0)
        storm_param(s, "duration_ms", REPORT_P_NUM, "%llu", (unsigned long long)s->duration_ms);
    else
        storm_param(s, "duration_ms", REPORT_P_NUM, "null");
    p = &s->params[s->nparams++];
    p->name = "ledgers";
    p->type = REPORT_P_LIST;
    p->list = s->ledger_texts;
    p->nlist = s->nledgers;
    storm_param(s, "give_up_ms", REPORT_P_NUM, "%llu", (unsigned long long)s->give_up_ms);
    storm_param(s, "seed", REPORT_P_STR, "%llu", (unsigned long long)s->seed);
    storm_param(s, "no_key", REPORT_P_BOOL, "%s", s->no_key ? "true" : "false");
    storm_param(s, "method", REPORT_P_STR, "%s", s->method);
    storm_param(s, "retry_statuses", REPORT_P_STR, "%s", s->retry_text);
    p = &s->params[s->nparams++];
    p->name = "headers";
    p->type = REPORT_P_LIST;
    p->list = s->header_texts;
    p->nlist = s->nheaders;
}

/* "409,429,500-599": the statuses marked in bits, as ranges. */
static void storm_status_text(const uint8_t *bits, char *buf, size_t len)
{
    size_t n = 0;

    buf[0] = '\0';
    for (int i = 0; i < STORM_STATUS_MAX && n + 16 < len; i++) {
        int j = i;

        if (!bits[i])
            continue;
        while (j + 1 < STORM_STATUS_MAX && bits[j + 1])
            j++;
        n += (size_t)snprintf(buf + n, len - n, j > i ? "%s%d-%d" : "%s%d", n ? "," : "", i, j);
        i = j;
    }
    if (n == 0)
        snprintf(buf, len, "none");
}

struct storm *storm_new(const struct storm_opts *o, char *err, size_t errlen)
{
    struct storm *s = calloc(1, sizeof(*s));
    struct storm_rng plan;
    unsigned char idb[8];

    if (s == NULL)
        goto nomem;
    s->keys_duplicated = -1;
    s->ntargets = o->ntargets;
    s->nledgers = o->nledgers;
    s->nkeys = o->keys;
    s->dupes = o->dupes;
    s->concurrency = o->concurrency;
    s->abort_rate = o->abort_rate;
    s->rate = o->rate;
    s->client_timeout_ms = o->client_timeout_ms;
    s->give_up_ms = o->give_up_ms;
    s->duration_ms = o->duration_ms;
    s->seed = o->seed;
    s->no_key = o->no_key;
    s->quiet = o->quiet;
    snprintf(s->method, sizeof(s->method), "%s", o->method ? o->method : "POST");
    s->head = strcmp(s->method, "HEAD") == 0;
    s->njobs = o->keys * o->dupes;
    if (o->retry_status) {
        memcpy(s->retry_status, o->retry_status, sizeof(s->retry_status));
    } else {
        s->retry_status[409] = s->retry_status[429] = 1;
        memset(s->retry_status + 500, 1, 100);
    }
    storm_status_text(s->retry_status, s->retry_text, sizeof(s->retry_text));
    s->header_texts = calloc(o->nheaders + 1, sizeof(char *));
    if (!s->header_texts)
        goto nomem;
    for (size_t i = 0, n = 0; i < o->nheaders; i++) {
        size_t len = strlen(o->headers[i]);

        if (n + len + 3 > sizeof(s->headers)) {
            wire_errf(err, errlen, "--header: more than %d bytes of extra headers",
                      STORM_HEADERS_MAX - 1);
            goto fail;
        }
        s->header_texts[i] = s->headers + n;
        memcpy(s->headers + n, o->headers[i], len);
        n += len;
        s->headers[n++] = '\0';
        s->nheaders++;
    }

    s->targets = calloc(o->ntargets, sizeof(*s->targets));
    s->target_texts = calloc(o->ntargets + 1, sizeof(char *));
    s->ledgers = calloc(o->nledgers + 1, sizeof(*s->ledgers));
    s->ledger_texts = calloc(o->nledgers + 1, sizeof(char *));
    s->keys = calloc(o->keys, sizeof(*s->keys));
    s->jobs = calloc(s->njobs, sizeof(*s->jobs));
    s->latency = hist_new();
    if (!s->targets || !s->target_texts || !s->ledgers || !s->ledger_texts || !s->keys ||
        !s->jobs || !s->latency)
        goto nomem;
    for (size_t i = 0; i < o->ntargets; i++) {
        s->targets[i].url = o->targets[i];
        s->target_texts[i] = s->targets[i].url.text;
        if (storm_resolve(&s->targets[i], err, errlen) < 0)
            goto fail;
    }
    for (size_t i = 0; i < o->nledgers; i++) {
        s->ledgers[i] = o->ledgers[i];
        s->ledger_texts[i] = s->ledgers[i].text;
    }

    /* The run id is always fresh (not from the seed), so two runs never share keys. */
    if (getrandom(idb, sizeof(idb), 0) != (ssize_t)sizeof(idb)) {
        wire_errf(err, errlen, "getrandom: %s", strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < sizeof(idb); i++)
        snprintf(s->run_id + 2 * i, 3, "%02x", idb[i]);

    /* The plan (order, aborts) comes from the seed; targets and jitter from a second
     * stream, so the plan is the same for a seed however the timing goes. */
    storm_rng_seed(&plan, s->seed);
    storm_rng_seed(&s->rng_run, s->seed ^ 0x5bd1e9955bd1e995ULL);
    for (uint64_t i = 0; i < s->njobs; i++)
        s->jobs[i].key = (uint32_t)(i % s->nkeys);
    for (uint64_t i = s->njobs - 1; i > 0; i--) {
        uint64_t j = storm_rng_below(&plan, i + 1);
        struct storm_job t = s->jobs[i];

        s->jobs[i] = s->jobs[j];
        s->jobs[j] = t;
    }
    for (uint64_t i = 0; i < s->njobs; i++)
        s->jobs[i].abort = s->abort_rate > 0 && storm_rng_unit(&plan) < s->abort_rate;

    report_timeline_init(&s->timeline);
    storm_params(s);
    return s;
nomem:
    wire_errf(err, errlen, "out of memory");
fail:
    storm_free(s);
    return NULL;
}

const char *storm_run_id(const struct storm *s)
{
    return s->run_id;
}

/* ---- connections ---- */

static void storm_idle_remove(struct storm_conn *c)
{
    struct storm_target *t = &c->s->targets[c->target];

    if (!c->in_idle)
        return;
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        t->idle = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
    c->in_idle = 0;
}

static void storm_idle_add(struct storm_conn *c)
{
    struct storm_target *t = &c->s->targets[c->target];

    c->idle_prev = NULL;
    c->idle_next = t->idle;
    if (t->idle)
        t->idle->idle_prev = c;
    t->idle = c;
    c->in_idle = 1;
}

static void storm_bury(struct storm *s, struct bufferevent *bev)
{
    if (s->ngrave == s->cgrave) {
        size_t cap = s->cgrave ? s->cgrave * 2 : 64;
        struct bufferevent **g = realloc(s->graveyard, cap * sizeof(*g));

        if (g == NULL) {
            /* cannot defer: freeing now is safe for libevent, only our style suffers */
            bufferevent_free(bev);
            return;
        }
        s->graveyard = g;
        s->cgrave = cap;
    }
    s->graveyard[s->ngrave++] = bev;
}

static void storm_empty_graveyard(struct storm *s)
{
    for (size_t i = 0; i < s->ngrave; i++)
        bufferevent_free(s->graveyard[i]);
    s->ngrave = 0;
}

/* Detach c's connection (freed later, outside any of its callbacks); c becomes free. */
static void storm_conn_close(struct storm_conn *c)
{
    struct storm *s = c->s;

    if (c->state == CONN_FREE)
        return;
    storm_idle_remove(c);
    evtimer_del(c->timer);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    storm_bury(s, c->bev);
    c->bev = NULL;
    c->state = CONN_FREE;
    c->busy = 0;
    s->free_conns[s->nfree++] = c;
    storm_kick(s);
}

static void storm_readcb(struct bufferevent *bev, void *arg);
static void storm_writecb(struct bufferevent *bev, void *arg);
static void storm_eventcb(struct bufferevent *bev, short what, void *arg);

/* A connection to target t: an idle one, a new one in a free slot, or a new one in the
 * slot of an idle connection to another target. NULL when none can be had (err set). */
static struct storm_conn *storm_conn_get(struct storm *s, int t, char *err, size_t errlen)
{
    struct storm_target *tg = &s->targets[t];
    struct storm_conn *c = tg->idle;
    int fd, one = 1;

    if (c != NULL) {
        storm_idle_remove(c);
        return c;
    }
    if (s->nfree == 0) {
        for (size_t i = 0; i < s->ntargets && c == NULL; i++)
            c = s->targets[i].idle;
        if (c == NULL) {
            wire_errf(err, errlen, "no connection slot (internal)");
            return NULL;
        }
        storm_conn_close(c); /* puts it on the free stack */
    }
    c = s->free_conns[--s->nfree];
    fd = socket(tg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        s->free_conns[s->nfree++] = c;
        wire_errf(err, errlen, "socket: %s", strerror(errno));
        return NULL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        close(fd);
        s->free_conns[s->nfree++] = c;
        wire_errf(err, errlen, "bufferevent: out of memory");
        return NULL;
    }
    c->state = CONN_OPEN;
    c->target = t;
    bufferevent_setcb(c->bev, storm_readcb, storm_writecb, storm_eventcb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&tg->addr, (int)tg->addrlen) < 0) {
        wire_errf(err, errlen, "connect %s: %s", tg->url.hostport, strerror(errno));
        c->busy = 0;
        storm_conn_close(c);
        return NULL;
    }
    return c;
}

/* ---- attempts ---- */

static int storm_is_final(const struct storm *s, int status)
{
    return status >= 200 && status < STORM_STATUS_MAX && !s->retry_status[status];
}

/* ---- outcome kinds ---- */

/* The index of the kind (status, name), added if new; the last slot collects the rest. */
static uint8_t storm_class(struct storm *s, int status, const char *name)
{
    struct storm_class *c;

    for (size_t i = 0; i < s->nclasses; i++)
        if (s->classes[i].status == status && strcmp(s->classes[i].name, name) == 0)
            return (uint8_t)i;
    if (s->nclasses == STORM_MAX_CLASSES - 1) {
        c = &s->classes[STORM_MAX_CLASSES - 1];
        if (c->name[0] == '\0')
            snprintf(c->name, sizeof(c->name), "other kinds");
        return STORM_MAX_CLASSES - 1;
    }
    c = &s->classes[s->nclasses];
    c->status = status;
    snprintf(c->name, sizeof(c->name), "%s", name);
    return (uint8_t)s->nclasses++;
}

/*
 * The slug of a problem+json body's "type" (after its last ':' or '/') into slug, or ""
 * when the body's first bytes hold no "type" string. Only what was peeked is looked at.
 */
static void storm_problem_slug(const char *body, size_t len, char *slug, size_t slen)
{
    static const char needle[] = "\"type\"";
    const char *p = NULL, *end = body + len, *last;
    size_t n;

    slug[0] = '\0';
    for (const char *q = body; q + sizeof(needle) - 1 <= end; q++)
        if (memcmp(q, needle, sizeof(needle) - 1) == 0) {
            p = q + sizeof(needle) - 1;
            break;
        }
    if (!p)
        return;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p >= end || *p++ != ':')
        return;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p >= end || *p++ != '"')
        return;
    for (last = p; p < end && *p != '"'; p++) {
        if (*p == '\\' || (unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return; /* escapes and odd bytes: not worth decoding for a label */
        if (*p == ':' || *p == '/')
            last = p + 1;
    }
    if (p >= end || last == p)
        return;
    n = (size_t)(p - last);
    if (n >= slen)
        n = slen - 1;
    memcpy(slug, last, n);
    slug[n] = '\0';
}

static void storm_peek_sink(void *arg, const char *data, size_t len)
{
    struct storm_conn *c = arg;
    size_t room = sizeof(c->peek) - c->npeek;

    if (len > room)
        len = room;
    memcpy(c->peek + c->npeek, data, len);
    c->npeek += len;
}

/* Count an attempt that got no answer: "error: <why>" (or "aborted"). */
static void storm_count_error(struct storm *s, const char *why)
{
    char name[72];

    snprintf(name, sizeof(name), "error: %.60s", why && *why ? why : "unknown");
    s->classes[storm_class(s, 0, name)].answers++;
}

static void storm_schedule_retry(struct storm *s, uint32_t k, int status, long retry_after);

static void storm_timeline(struct storm *s, enum report_cat cat)
{
    uint64_t now = storm_now_us();

    report_timeline_add(&s->timeline, now > s->start_us ? now - s->start_us : 0, cat);
}

/* The attempt on c is over (answered, failed or abandoned); c stays as it is. */
static void storm_attempt_over(struct storm_conn *c)
{
    struct storm *s = c->s;

    evtimer_del(c->timer);
    c->busy = 0;
    s->inflight--;
    s->keys[c->key].in_flight = 0;
    storm_kick(s);
}

/* Not answered: a connection error, garbage, a timeout, or cancelled at give-up. */
static void storm_attempt_failed(struct storm_conn *c, const char *why)
{
    struct storm *s = c->s;
    uint32_t k = c->key;
    int phase = c->phase;

    snprintf(s->last_error, sizeof(s->last_error), "%s", why && *why ? why : "error");
    s->errors++;
    storm_count_error(s, why);
    storm_timeline(s, REPORT_CAT_ERROR);
    storm_attempt_over(c);
    storm_conn_close(c);
    if (phase == 2 && s->phase == 2)
        storm_schedule_retry(s, k, 0, -1);
}

static void storm_attempt_answered(struct storm_conn *c, int extra_bytes)
{
    struct storm *s = c->s;
    struct wire_resp *r = &c->resp;
    struct storm_key *key = &s->keys[c->key];
    uint64_t now = storm_now_us();
    uint32_t k = c->key;
    int phase = c->phase, keep = r->keep_alive && !extra_bytes;
    enum report_cat cat;
    char slug[48], name[72];
    uint8_t cls;

    hist_record(s->latency, now > c->origin_us ? now - c->origin_us : 0);
    s->status_counts[r->status < STORM_STATUS_MAX ? r->status : 0]++;
    if (phase == 1)
        s->phase1_answers++;
    if (r->replayed)
        s->replays++;
    if (r->status == 409)
        s->conflicts++;
    if (r->replayed)
        cat = REPORT_CAT_REPLAY;
    else if (r->status >= 200 && r->status < 300)
        cat = REPORT_CAT_2XX;
    else if (r->status == 409)
        cat = REPORT_CAT_409;
    else if (r->status >= 400 && r->status < 500)
        cat = REPORT_CAT_4XX;
    else if (r->status >= 500)
        cat = REPORT_CAT_5XX;
    else
        cat = REPORT_CAT_OTHER;
    storm_timeline(s, cat);
    storm_problem_slug(c->peek, c->npeek, slug, sizeof(slug));
    snprintf(name, sizeof(name), slug[0] ? "%d %s" : "%d", r->status, slug);
    cls = storm_class(s, r->status, name);
    s->classes[cls].answers++;
    if (r->replayed)
        s->classes[cls].replayed++;

    /* A final answer is recorded by the proxy and replayed byte for byte: every final
     * answer of a key must equal its first, whatever the status. */
    if (!s->no_key && storm_is_final(s, r->status)) {
        if (!key->final) {
            key->final = 1;
            key->final_hash = r->body_hash;
            key->final_status = (uint16_t)r->status;
            key->final_class = cls;
            s->classes[cls].keys_final++;
            s->unresolved--;
        } else if ((key->final_hash != r->body_hash || key->final_status != r->status) &&
                   !key->mismatched) {
            key->mismatched = 1;
            key->mismatch_status = (uint16_t)r->status;
        }
    }
    storm_attempt_over(c);
    if (keep)
        storm_idle_add(c);
    else
        storm_conn_close(c);
    if (phase == 2 && s->phase == 2 && !key->final)
        storm_schedule_retry(s, k, r->status, r->retry_after);
}

static void storm_readcb(struct bufferevent *bev, void *arg)
{
    struct storm_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (c->busy && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        enum wire_state st;
        size_t used;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        st = wire_resp_feed(&c->resp, v.iov_base, v.iov_len, &used);
        evbuffer_drain(in, used);
        if (st == WIRE_DONE) {
            storm_attempt_answered(c, evbuffer_get_length(in) > 0);
            return;
        }
        if (st == WIRE_ERROR) {
            storm_attempt_failed(c, c->resp.err);
            return;
        }
    }
    if (!c->busy && evbuffer_get_length(in) > 0)
        storm_conn_close(c); /* bytes nobody asked for: the connection is unusable */
}

static void storm_writecb(struct bufferevent *bev, void *arg)
{
    struct storm_conn *c = arg;
    struct storm *s = c->s;

    if (!c->busy || !c->abort || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    /* The request is out: a client that gives up now never reads the answer. */
    s->aborted++;
    s->classes[storm_class(s, 0, "aborted")].answers++;
    storm_timeline(s, REPORT_CAT_ABORTED);
    storm_attempt_over(c);
    storm_conn_close(c);
}

static void storm_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct storm_conn *c = arg;

    if (what & BEV_EVENT_CONNECTED)
        return;
    if (!c->busy) {
        storm_conn_close(c); /* an idle connection closed by the server */
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
        /* drain what is buffered first, then the EOF may complete a close-delimited body */
        storm_readcb(bev, arg);
        if (!c->busy) {
            storm_conn_close(c); /* answered, but the connection is gone */
            return;
        }
        if (wire_resp_eof(&c->resp) == WIRE_DONE) {
            storm_attempt_answered(c, 0);
            return;
        }
        storm_attempt_failed(c, c->resp.err);
        return;
    }
    storm_attempt_failed(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void storm_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct storm_conn *c = arg;

    if (c->busy)
        storm_attempt_failed(c, "timeout");
}

/*
 * Start one attempt of key k. Returns 0 when it is on its way (its outcome will arrive
 * through the callbacks) or when it failed at once (already counted as an error).
 */
static void storm_attempt_start(struct storm *s, uint32_t k, int phase, int abort,
                                uint64_t origin_us)
{
    int t = (int)storm_rng_below(&s->rng_run, s->ntargets);
    struct storm_target *tg = &s->targets[t];
    struct storm_conn *c;
    struct evbuffer *out;
    char key[64], body[STORM_BODY_MAX], err[160];
    int klen, blen = 0, has_body = !(strcmp(s->method, "GET") == 0 || s->head);
    struct timeval tv = storm_tv(s->client_timeout_ms * 1000);

    s->requests++;
    if (phase == 2)
        s->retries++;
    s->inflight++;
    s->keys[k].in_flight = 1;
    c = storm_conn_get(s, t, err, sizeof(err));
    if (c == NULL) {
        s->inflight--;
        s->keys[k].in_flight = 0;
        s->errors++;
        storm_count_error(s, err);
        storm_timeline(s, REPORT_CAT_ERROR);
        if (phase == 2)
            storm_schedule_retry(s, k, 0, -1);
        return;
    }
    c->busy = 1;
    c->key = k;
    c->phase = phase;
    c->abort = abort;
    c->origin_us = origin_us;
    c->npeek = 0;
    wire_resp_init(&c->resp, s->head, storm_peek_sink, c);
    klen = storm_key_str(s, k, key, sizeof(key));
    if (has_body)
        blen = snprintf(body, sizeof(body), "{\"amount\": %u, \"ref\": \"%s\"}", 1 + k % 1000, key);
    out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: retrystorm\r\n", s->method,
                        tg->url.path, tg->url.hostport);
    if (!s->no_key)
        evbuffer_add_printf(out, "Idempotency-Key: %.*s\r\n", klen, key);
    for (size_t i = 0; i < s->nheaders; i++)
        evbuffer_add_printf(out, "%s\r\n", s->header_texts[i]);
    if (has_body)
        evbuffer_add_printf(out, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                            blen, body);
    else
        evbuffer_add(out, "\r\n", 2);
    evtimer_add(c->timer, &tv);
}

/* ---- phase 2: the ready queue and the back-off heap ---- */

static void storm_ready_push(struct storm *s, uint32_t k)
{
    if (s->keys[k].queued || s->keys[k].final)
        return;
    s->keys[k].queued = 1;
    s->ready[(s->ready_head + s->ready_len) % s->nkeys] = k;
    s->ready_len++;
    storm_kick(s);
}

static void storm_heap_swap(struct storm_due *a, struct storm_due *b)
{
    struct storm_due t = *a;

    *a = *b;
    *b = t;
}

static void storm_heap_push(struct storm *s, uint64_t due_us, uint32_t k)
{
    uint64_t i = s->nwaiting++;

    s->waiting[i].due_us = due_us;
    s->waiting[i].key = k;
    while (i > 0 && s->waiting[(i - 1) / 2].due_us > s->waiting[i].due_us) {
        storm_heap_swap(&s->waiting[(i - 1) / 2], &s->waiting[i]);
        i = (i - 1) / 2;
    }
}

static struct storm_due storm_heap_pop(struct storm *s)
{
    struct storm_due top = s->waiting[0];
    uint64_t i = 0;

    s->waiting[0] = s->waiting[--s->nwaiting];
    for (;;) {
        uint64_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < s->nwaiting && s->waiting[l].due_us < s->waiting[m].due_us)
            m = l;
        if (r < s->nwaiting && s->waiting[r].due_us < s->waiting[m].due_us)
            m = r;
        if (m == i)
            break;
        storm_heap_swap(&s->waiting[i], &s->waiting[m]);
        i = m;
    }
    return top;
}

static void storm_arm_retry(struct storm *s)
{
    uint64_t now = storm_now_us();
    struct timeval tv;

    if (s->nwaiting == 0) {
        evtimer_del(s->retry_ev);
        return;
    }
    tv = storm_tv(s->waiting[0].due_us > now ? s->waiting[0].due_us - now : 0);
    evtimer_add(s->retry_ev, &tv);
}

static void storm_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct storm *s = arg;
    uint64_t now = storm_now_us();

    /* timers fire with ms granularity: take what is due within half a millisecond */
    while (s->nwaiting > 0 && s->waiting[0].due_us <= now + 500) {
        uint32_t k = storm_heap_pop(s).key;

        s->keys[k].waiting = 0;
        storm_ready_push(s, k);
    }
    storm_arm_retry(s);
}

/* Back off before the next attempt of k (after an answer with that status, or after an
 * error when status is 0), then queue it. */
static void storm_schedule_retry(struct storm *s, uint32_t k, int status, long retry_after)
{
    struct storm_key *key = &s->keys[k];
    double ms;

    if (key->final || key->queued || key->waiting)
        return;
    if (status == 409 || status == 429 || status == 503) {
        ms = retry_after >= 0 ? (double)retry_after * 1000.0 : STORM_BACKOFF_MIN_MS;
        if (ms > STORM_BACKOFF_MAX_MS)
            ms = STORM_BACKOFF_MAX_MS;
        ms += storm_rng_unit(&s->rng_run) * ms / 4; /* jitter, never earlier than asked */
        if (ms > STORM_BACKOFF_MAX_MS)
            ms = STORM_BACKOFF_MAX_MS - storm_rng_unit(&s->rng_run) * STORM_BACKOFF_MAX_MS / 10;
        key->backoff = 0;
    } else {
        double d = STORM_BACKOFF_MIN_MS * pow(2, key->backoff);

        if (d >= STORM_BACKOFF_MAX_MS)
            d = STORM_BACKOFF_MAX_MS;
        else
            key->backoff++;
        ms = d / 2 + storm_rng_unit(&s->rng_run) * d / 2; /* "equal jitter" */
    }
    key->waiting = 1;
    storm_heap_push(s, storm_now_us() + (uint64_t)(ms * 1000), k);
    if (s->waiting[0].key == k)
        storm_arm_retry(s);
}

/* ---- the dispatcher and the phases ---- */

static void storm_kick(struct storm *s)
{
    if (s->kick_ev != NULL && s->phase < 3)
        event_active(s->kick_ev, EV_TIMEOUT, 0);
}

static void storm_finish(struct storm *s)
{
    if (s->phase == 3)
        return;
    s->end_us = storm_now_us();
    if (s->phase1_end_us == 0)
        s->phase1_end_us = s->end_us;
    /* attempts still out (give-up, signal) are cancelled: they count as errors */
    for (int i = 0; i < s->concurrency; i++) {
        struct storm_conn *c = &s->conns[i];

        if (c->busy) {
            s->errors++;
            storm_count_error(s, "cancelled (give-up or signal)");
            storm_timeline(s, REPORT_CAT_ERROR);
            storm_attempt_over(c);
        }
        storm_conn_close(c);
    }
    s->phase = 3;
    evtimer_del(s->rate_ev);
    evtimer_del(s->give_up_ev);
    evtimer_del(s->retry_ev);
    event_base_loopbreak(s->base);
}

static void storm_give_up_cb(evutil_socket_t fd, short what, void *arg)
{
    struct storm *s = arg;

    storm_progress(s, "giving up after %.1f s of retries: %llu keys still without a final answer",
                   (double)s->give_up_ms / 1000.0, (unsigned long long)s->unresolved);
    s->gave_up = 1;
    storm_finish(s);
}

static void storm_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct storm *s = arg;

    storm_progress(s, "interrupted (%s): stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    s->interrupted = 1;
    storm_finish(s);
}

static void storm_phase2_start(struct storm *s)
{
    struct timeval tv = storm_tv(s->give_up_ms * 1000);

    s->phase = 2;
    storm_progress(s, "phase 2: retrying %llu keys without a final answer (give up after %.1f s)",
                   (unsigned long long)s->unresolved, (double)s->give_up_ms / 1000.0);
    for (uint64_t k = 0; k < s->nkeys; k++)
        if (!s->keys[k].final)
            storm_ready_push(s, (uint32_t)k);
    evtimer_add(s->give_up_ev, &tv);
}

static void storm_phase1(struct storm *s)
{
    while (s->next_job < s->njobs && s->inflight < s->concurrency) {
        uint64_t now = storm_now_us(), origin = now;
        const struct storm_job *job;

        if (s->rate > 0) {
            uint64_t due = s->start_us + (uint64_t)((double)s->next_job * 1e6 / s->rate);

            if (due > now) {
                struct timeval tv = storm_tv(due - now);

                evtimer_add(s->rate_ev, &tv);
                return;
            }
            origin = due; /* a late request's clock is already running */
        }
        job = &s->jobs[s->next_job++];
        storm_attempt_start(s, job->key, 1, job->abort, origin);
    }
    if (s->next_job < s->njobs || s->inflight > 0)
        return;
    s->phase1_end_us = storm_now_us();
    storm_progress(s, "phase 1 done in %.2f s: %llu answers, %llu aborted, %llu errors%s%s%s",
                   (double)(s->phase1_end_us - s->start_us) / 1e6,
                   (unsigned long long)s->phase1_answers, (unsigned long long)s->aborted,
                   (unsigned long long)s->errors, s->errors ? " (last: " : "",
                   s->errors ? s->last_error : "", s->errors ? ")" : "");
    if (s->no_key || s->unresolved == 0) {
        storm_finish(s);
        return;
    }
    storm_phase2_start(s);
}

static void storm_phase2(struct storm *s)
{
    while (s->ready_len > 0 && s->inflight < s->concurrency) {
        uint32_t k = s->ready[s->ready_head];

        s->ready_head = (s->ready_head + 1) % s->nkeys;
        s->ready_len--;
        s->keys[k].queued = 0;
        if (s->keys[k].final || s->keys[k].in_flight)
            continue;
        storm_attempt_start(s, k, 2, 0, storm_now_us());
    }
    if (s->unresolved == 0 && s->inflight == 0)
        storm_finish(s);
}

static void storm_dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct storm *s = arg;

    storm_empty_graveyard(s);
    if (s->phase == 1)
        storm_phase1(s);
    if (s->phase == 2)
        storm_phase2(s);
}

static void storm_rate_cb(evutil_socket_t fd, short what, void *arg)
{
    storm_kick(arg);
}

int storm_run(struct storm *s, char *err, size_t errlen)
{
    {
        /* microsecond timers (timerfd): in --rate mode a late tick would be counted as
         * latency of every request it releases */
        struct event_config *cfg = event_config_new();

        if (cfg == NULL)
            goto nomem;
        event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
        s->base = event_base_new_with_config(cfg);
        event_config_free(cfg);
    }
    if (s->base == NULL)
        goto nomem;
    s->kick_ev = event_new(s->base, -1, 0, storm_dispatch_cb, s);
    s->rate_ev = evtimer_new(s->base, storm_rate_cb, s);
    s->give_up_ev = evtimer_new(s->base, storm_give_up_cb, s);
    s->retry_ev = evtimer_new(s->base, storm_retry_cb, s);
    s->sigint_ev = evsignal_new(s->base, SIGINT, storm_signal_cb, s);
    s->sigterm_ev = evsignal_new(s->base, SIGTERM, storm_signal_cb, s);
    s->conns = calloc((size_t)s->concurrency, sizeof(*s->conns));
    s->free_conns = calloc((size_t)s->concurrency, sizeof(*s->free_conns));
    s->ready = calloc(s->nkeys, sizeof(*s->ready));
    s->waiting = calloc(s->nkeys, sizeof(*s->waiting));
    if (!s->kick_ev || !s->rate_ev || !s->give_up_ev || !s->retry_ev || !s->sigint_ev ||
        !s->sigterm_ev || !s->conns || !s->free_conns || !s->ready || !s->waiting)
        goto nomem;
    if (evsignal_add(s->sigint_ev, NULL) < 0 || evsignal_add(s->sigterm_ev, NULL) < 0) {
        wire_errf(err, errlen, "cannot install signal handlers");
        return -1;
    }
    for (int i = s->concurrency - 1; i >= 0; i--) {
        struct storm_conn *c = &s->conns[i];

        c->s = s;
        c->timer = evtimer_new(s->base, storm_timer_cb, c);
        if (c->timer == NULL)
            goto nomem;
        s->free_conns[s->nfree++] = c;
    }
    s->unresolved = s->no_key ? 0 : s->nkeys;
    s->phase = 1;
    s->start_us = storm_now_us();
    storm_progress(s,
                   "run %s: %llu keys x %llu copies = %llu requests -> %zu target%s, %d "
                   "connections, abort rate %g%s",
                   s->run_id, (unsigned long long)s->nkeys, (unsigned long long)s->dupes,
                   (unsigned long long)s->njobs, s->ntargets, s->ntargets == 1 ? "" : "s",
                   s->concurrency, s->abort_rate, s->rate > 0 ? ", open loop" : "");
    storm_kick(s);
    event_base_dispatch(s->base);
    if (s->phase != 3)
        storm_finish(s); /* the loop ran dry: cannot happen while work is pending */
    storm_empty_graveyard(s);
    return 0;
nomem:
    wire_errf(err, errlen, "out of memory");
    return -1;
}

/* Keep key k as an example of a failed check (the first STORM_MAX_EXAMPLES only). */
static void storm_example(struct storm *s, uint32_t k, uint64_t allowed, const char *what)
{
    size_t i = s->nexamples;

    if (i == STORM_MAX_EXAMPLES)
        return;
    storm_key_str(s, k, s->example_keys[i], sizeof(s->example_keys[i]));
    snprintf(s->example_what[i], sizeof(s->example_what[i]), "%s", what);
    s->examples[i].key = s->example_keys[i];
    s->examples[i].executions = s->keys[k].executions;
    s->examples[i].allowed = allowed;
    s->examples[i].what = s->example_what[i];
    s->nexamples++;
}

/* ---- ledgers ---- */

enum storm_ledger_use {
    STORM_LEDGER_PROBE = 0, /* only parse */
    STORM_LEDGER_COUNT,     /* add to the keys' executions */
    STORM_LEDGER_SNAPSHOT,  /* an --expect-reexec snapshot: add to reexec_before */
};

struct storm_ledger_ctx {
    struct storm *s;
    enum storm_ledger_use use;
    uint64_t ours;
};

static void storm_ledger_key(void *arg, const char *key, size_t len, uint64_t count)
{
    struct storm_ledger_ctx *x = arg;
    struct storm *s = x->s;
    size_t idlen = strlen(s->run_id);
    uint64_t k = 0;

    if (len <= idlen + 1 || memcmp(key, s->run_id, idlen) != 0 || key[idlen] != '-')
        return;
    key += idlen + 1;
    len -= idlen + 1;
    if (len > 10 || (key[0] == '0' && len > 1))
        return;
    for (size_t i = 0; i < len; i++) {
        if (key[i] < '0' || key[i] > '9')
            return;
        k = k * 10 + (uint64_t)(key[i] - '0');
    }
    if (k >= s->nkeys)
        return;
    x->ours++;
    if (x->use == STORM_LEDGER_COUNT) {
        s->keys[k].executions += count;
    } else if (x->use == STORM_LEDGER_SNAPSHOT) {
        s->keys[k].expect_reexec = 1;
        s->keys[k].reexec_before += (uint32_t)(count > UINT32_MAX - 1 ? UINT32_MAX - 1 : count);
    }
}

static int storm_fetch_ledger(struct storm *s, const struct wire_url *u, enum storm_ledger_use use,
                              char *err, size_t errlen)
{
    struct storm_ledger_ctx x = {s, use, 0};
    char why[200];
    char *body = NULL;
    size_t len = 0;
    uint64_t total;

    if (wire_get(u, STORM_LEDGER_TIMEOUT, STORM_LEDGER_MAX_BODY, &body, &len, why, sizeof(why)) <
        0) {
        wire_errf(err, errlen, "ledger %s unreachable: %s", u->text, why);
        return -1;
    }
    if (ledger_parse(body, len, &total, storm_ledger_key, &x, why, sizeof(why)) < 0) {
        wire_errf(err, errlen, "ledger %s: not a ledger document: %s", u->text, why);
        free(body);
        return -1;
    }
    free(body);
    return 0;
}

int storm_probe_ledgers(struct storm *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->nledgers; i++)
        if (storm_fetch_ledger(s, &s->ledgers[i], STORM_LEDGER_PROBE, err, errlen) < 0)
            return -1;
    return 0;
}

int storm_check_ledgers(struct storm *s, char *err, size_t errlen)
{
    int64_t dup = 0;

    s->keys_duplicated = -1;
    s->ledger_missing = 0;
    if (s->no_key) {
        snprintf(s->ledger_note, sizeof(s->ledger_note), "skipped (--no-key)");
        return 0;
    }
    if (s->nledgers == 0) {
        snprintf(s->ledger_note, sizeof(s->ledger_note), "no --ledger given");
        return 0;
    }
    for (uint64_t k = 0; k < s->nkeys; k++)
        s->keys[k].executions = 0;
    for (size_t i = 0; i < s->nledgers; i++) {
        if (storm_fetch_ledger(s, &s->ledgers[i], STORM_LEDGER_COUNT, err, errlen) < 0) {
            snprintf(s->ledger_note, sizeof(s->ledger_note), "ledger unreachable");
            return -1;
        }
    }
    s->max_executions = 0;
    s->reexec_observed = s->reexec_missing = 0;
    for (uint64_t k = 0; k < s->nkeys; k++) {
        struct storm_key *key = &s->keys[k];
        uint64_t allowed = key->expect_reexec ? (uint64_t)key->reexec_before + 1 : 1;
        char what[96];

        if (key->executions > allowed) {
            dup++;
            snprintf(what, sizeof(what), "executed %llu times%s",
                     (unsigned long long)key->executions,
                     key->expect_reexec ? " (one re-execution was expected)" : "");
            storm_example(s, (uint32_t)k, allowed, what);
        } else if (key->expect_reexec && key->executions == allowed) {
            s->reexec_observed++;
        } else if (key->expect_reexec) {
            s->reexec_missing++;
            snprintf(what, sizeof(what),
                     "executed %llu time(s): the expected re-execution did not happen",
                     (unsigned long long)key->executions);
            storm_example(s, (uint32_t)k, allowed, what);
        }
        if (key->executions > s->max_executions)
            s->max_executions = key->executions;
        if (key->final && key->final_status >= 200 && key->final_status < 300 &&
            key->executions == 0)
            s->ledger_missing++;
    }
    s->keys_duplicated = dup;
    if (s->ledger_missing > 0)
        snprintf(s->ledger_note, sizeof(s->ledger_note),
                 "summed over %zu ledger%s; %llu keys answered 2xx are missing from them "
                 "(wrong --ledger?)",
                 s->nledgers, s->nledgers == 1 ? "" : "s", (unsigned long long)s->ledger_missing);
    else
        snprintf(s->ledger_note, sizeof(s->ledger_note), "summed over %zu ledger%s", s->nledgers,
                 s->nledgers == 1 ? "" : "s");
    return 0;
}

int storm_expect_reexec(struct storm *s, const char *json, size_t len, const char *name, char *err,
                        size_t errlen)
{
    struct storm_ledger_ctx x = {s, STORM_LEDGER_SNAPSHOT, 0};
    char why[200];
    uint64_t total;

    if (ledger_parse(json, len, &total, storm_ledger_key, &x, why, sizeof(why)) < 0) {
        wire_errf(err, errlen, "%s: not a ledger document: %s", name, why);
        return -1;
    }
    s->reexec_declared = 1;
    s->reexec_expected = 0;
    for (uint64_t k = 0; k < s->nkeys; k++)
        s->reexec_expected += s->keys[k].expect_reexec;
    return 0;
}

/* ---- verdict and cleanup ---- */

void storm_verdict(struct storm *s, struct report_verdict *v)
{
    size_t n = 0;

    memset(v, 0, sizeof(*v));
    free(s->status);
    s->status = NULL;
    s->nstatus = 0;
    for (int i = 0; i < STORM_STATUS_MAX; i++)
        if (s->status_counts[i])
            n++;
    if (n > 0 && (s->status = calloc(n, sizeof(*s->status))) != NULL) {
        for (int i = 0; i < STORM_STATUS_MAX; i++) {
            if (s->status_counts[i]) {
                s->status[s->nstatus].code = i;
                s->status[s->nstatus].count = s->status_counts[i];
                s->nstatus++;
            }
        }
    }
    v->requests = s->requests;
    v->retries = s->retries;
    v->status = s->status;
    v->nstatus = s->nstatus;
    v->aborted = s->aborted;
    v->errors = s->errors;
    v->replays = s->replays;
    v->conflicts = s->conflicts;
    v->latency = s->latency;
    v->corrected = s->rate > 0;
    v->phase1_s = (double)(s->phase1_end_us - s->start_us) / 1e6;
    v->duration_s = (double)(s->end_us - s->start_us) / 1e6;
    v->throughput_rps = v->phase1_s > 0 ? (double)s->phase1_answers / v->phase1_s : 0;
    v->key_checks = !s->no_key;
    v->keys = s->nkeys;
    for (uint64_t k = 0; k < s->nkeys; k++) {
        const struct storm_key *key = &s->keys[k];
        char what[96];

        v->keys_ok += key->final && key->final_status >= 200 && key->final_status < 300;
        v->keys_mismatched += key->mismatched;
        v->keys_unanswered += !key->final;
        if (s->no_key || s->verdict_done)
            continue;
        if (key->mismatched) {
            if (key->final_status == key->mismatch_status)
                snprintf(what, sizeof(what), "answered %u twice with different bodies",
                         key->final_status);
            else
                snprintf(what, sizeof(what), "answered %u, later %u", key->final_status,
                         key->mismatch_status);
            storm_example(s, (uint32_t)k, 1, what);
        } else if (!key->final) {
            storm_example(s, (uint32_t)k, 1, "no final answer");
        }
    }
    for (size_t i = 0; i < s->nclasses + (s->classes[STORM_MAX_CLASSES - 1].name[0] != 0); i++) {
        const struct storm_class *c = &s->classes[i < s->nclasses ? i : STORM_MAX_CLASSES - 1];

        s->rclasses[i].name = c->name;
        s->rclasses[i].status = c->status;
        s->rclasses[i].answers = c->answers;
        s->rclasses[i].replayed = c->replayed;
        s->rclasses[i].keys_final = c->keys_final;
        v->nclasses = i + 1;
    }
    s->verdict_done = 1;
    v->classes = s->rclasses;
    v->examples = s->examples;
    v->nexamples = s->nexamples;
    v->reexec_declared = s->reexec_declared;
    v->reexec_expected = s->reexec_expected;
    v->reexec_observed = s->reexec_observed;
    v->reexec_missing = s->reexec_missing;
    if (s->no_key) {
        v->keys_ok = v->keys_mismatched = v->keys_unanswered = 0;
    }
    v->keys_duplicated = s->no_key ? -1 : s->keys_duplicated;
    v->max_executions = s->max_executions;
    v->ledger_note = s->ledger_note[0] ? s->ledger_note : NULL;
    v->interrupted = s->interrupted;
    v->timeline = &s->timeline;
    v->phase2_start_s =
        s->retries > 0 || s->gave_up ? (double)(s->phase1_end_us - s->start_us) / 1e6 : -1;
    v->params = s->params;
    v->nparams = s->nparams;
    v->run_id = s->run_id;
}

void storm_free(struct storm *s)
{
    if (s == NULL)
        return;
    if (s->conns != NULL) {
        for (int i = 0; i < s->concurrency; i++) {
            if (s->conns[i].bev != NULL)
                bufferevent_free(s->conns[i].bev);
            if (s->conns[i].timer != NULL)
                event_free(s->conns[i].timer);
        }
    }
    storm_empty_graveyard(s);
    free(s->graveyard);
    if (s->kick_ev)
        event_free(s->kick_ev);
    if (s->rate_ev)
        event_free(s->rate_ev);
    if (s->give_up_ev)
        event_free(s->give_up_ev);
    if (s->retry_ev)
        event_free(s->retry_ev);
    if (s->sigint_ev)
        event_free(s->sigint_ev);
    if (s->sigterm_ev)
        event_free(s->sigterm_ev);
    if (s->base)
        event_base_free(s->base);
    free(s->conns);
    free(s->free_conns);
    free(s->ready);
    free(s->waiting);
    free(s->targets);
    free(s->target_texts);
    free(s->ledgers);
    free(s->ledger_texts);
    free(s->keys);
    free(s->jobs);
    free(s->header_texts);
    free(s->status);
    hist_free(s->latency);
    free(s);
}
