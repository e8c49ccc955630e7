/*
 * test-upstream — a scripted HTTP/1.1 origin for the integration tests.
 *
 * Built on libevent's evhttp on purpose: the proxy's own parser must never be the
 * thing that checks the proxy. Single-threaded; exits 0 on SIGTERM/SIGINT.
 *
 *   test-upstream --listen HOST:PORT [--id NAME]
 *
 * Routes (path only; the query string is ignored):
 *   /status/NNN  status NNN (200..999), body "status NNN\n" (none for 204/304)
 *   /reason/NNN  status NNN (200..599) with the reason phrase "Custom Reason"
 *   /slow/MS     the echo answer after MS milliseconds
 *   /bytes/N     N bytes, byte i = (i*31+7) % 256
 *   /chunked/N   the same bytes as a chunked response, in several chunks
 *   /truncate    raw head with Content-Length: 100, 10 body bytes, then shutdown
 *   /truncate/N  raw head with Content-Length: 2N, N body bytes, then shutdown
 *   /reset       read the request, shutdown without any answer
 *   /hop         hop-by-hop headers the proxy must strip, plus end-to-end ones
 *   /stats       {"requests": N, "connections": M}
 *   /executions  {"total": N, "keys": {"<Idempotency-Key>": count, ...}}
 *   anything else: 200, JSON echo of what was received, X-Upstream-Id: NAME
 *
 * HEAD gets the head a GET would get (Content-Length or Transfer-Encoding) and no body.
 *
 * "requests" counts every request but /stats. Every request but /stats and /executions
 * that carries an Idempotency-Key header counts as one execution of that key.
 */
#include <errno.h>
#include <poll.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define UP_MAX_BODY      (64 * 1024 * 1024)
#define UP_MAX_GEN_BYTES (256UL * 1024 * 1024) /* cap for /bytes and /chunked */
#define UP_MAX_SLOW_MS   600000UL
#define UP_MAX_EXEC_KEYS 100000
#define UP_ALL_METHODS                                                                             \
    (EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |     \
     EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH)

/* One key's execution count; entries keep first-seen order for /executions. */
struct exec_entry {
    char *key;
    unsigned long count;
};

/* Idempotency-Key -> count: an array in insertion order plus an open-addressing index
 * (slot holds entry index + 1, 0 = empty). */
struct exec_table {
    struct exec_entry *entries;
    size_t n, cap;
    size_t *slots;
    size_t nslots; /* power of two */
    unsigned long total;
};

struct slow_req;

struct upstream {
    struct event_base *base;
    struct evhttp *http;
    const char *id;
    unsigned long requests;
    unsigned long connections;
    struct exec_table execs;
    struct slow_req *slow; /* pending /slow requests, for shutdown */
};

/*
 * A /slow request waiting for its timer. The request belongs to evhttp until we answer,
 * except when the client went away first: then evhttp (2.1) detaches it from the dying
 * connection and it is ours to free. The connection's close callback tells us which.
 */
struct slow_req {
    struct upstream *up;
    struct evhttp_request *req;     /* NULL once evhttp freed it with its connection */
    struct evhttp_connection *conn; /* NULL once the connection is gone */
    struct event *timer;
    struct slow_req *prev, *next;
};

static void up_log(const struct upstream *up, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void up_log(const struct upstream *up, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    n = snprintf(line, sizeof(line), "test-upstream[%s]: ", up->id);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    strcat(line, "\n");
    /* one write per line so concurrent writers to the same log do not interleave */
    if (write(STDERR_FILENO, line, strlen(line)) < 0)
        return;
}

/* ---- execution counts ---- */

static uint64_t exec_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int exec_rehash(struct exec_table *t, size_t nslots)
{
    size_t *slots = calloc(nslots, sizeof(*slots));
    size_t i;

    if (slots == NULL)
        return -1;
    for (i = 0; i < t->n; i++) {
        size_t s = (size_t)exec_hash(t->entries[i].key) & (nslots - 1);

        while (slots[s] != 0)
            s = (s + 1) & (nslots - 1);
        slots[s] = i + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = nslots;
    return 0;
}

/* Count one execution of key. The total is counted even when the key cannot be stored. */
static void exec_count(struct upstream *up, const char *key)
{
    struct exec_table *t = &up->execs;
    size_t s;

    t->total++;
    if (t->nslots == 0 && exec_rehash(t, 1024) < 0)
        goto nomem;
    s = (size_t)exec_hash(key) & (t->nslots - 1);
    while (t->slots[s] != 0) {
        struct exec_entry *e = &t->entries[t->slots[s] - 1];

        if (strcmp(e->key, key) == 0) {
            e->count++;
            return;
        }
        s = (s + 1) & (t->nslots - 1);
    }
    if (t->n >= UP_MAX_EXEC_KEYS) {
        up_log(up, "more than %d distinct keys; not recording %s", UP_MAX_EXEC_KEYS, key);
        return;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct exec_entry *v = realloc(t->entries, cap * sizeof(*v));

        if (v == NULL)
            goto nomem;
        t->entries = v;
        t->cap = cap;
    }
    t->entries[t->n].key = strdup(key);
    if (t->entries[t->n].key == NULL)
        goto nomem;
    t->entries[t->n].count = 1;
    t->slots[s] = ++t->n;
    /* keep the load factor under 1/2 so probes stay short */
    if (t->n * 2 > t->nslots && exec_rehash(t, t->nslots * 2) < 0)
        goto nomem;
    return;
nomem:
    up_log(up, "out of memory counting key %s", key);
}

static void exec_free(struct exec_table *t)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        free(t->entries[i].key);
    free(t->entries);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* ---- JSON ---- */

/* Append s[0..len) as a JSON string (with quotes); every byte that is not printable ASCII
 * becomes \u00XX, so the JSON maps bytes one to one. */
static void json_str(struct evbuffer *out, const char *s, size_t len)
{
    size_t i, run = 0;

    evbuffer_add(out, "\"", 1);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            continue;
        evbuffer_add(out, s + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\')
            evbuffer_add_printf(out, "\\%c", c);
        else
            evbuffer_add_printf(out, "\\u%04x", c);
    }
    evbuffer_add(out, s + run, len - run);
    evbuffer_add(out, "\"", 1);
}

static void json_cstr(struct evbuffer *out, const char *s)
{
    json_str(out, s, strlen(s));
}

/* ---- replies ---- */

static const char *method_name(enum evhttp_cmd_type cmd)
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
    return "UNKNOWN";
}

static void send_buf(struct upstream *up, struct evhttp_request *req, int code, const char *ctype,
                     struct evbuffer *body)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);

    if (ctype != NULL)
        evhttp_add_header(oh, "Content-Type", ctype);
    up_log(up, "%s %s -> %d (%zu bytes)", method_name(evhttp_request_get_command(req)),
           evhttp_request_get_uri(req), code, body ? evbuffer_get_length(body) : 0);
    /* evhttp 2.1 omits Content-Length for HEAD but would still write the body: say what
     * a GET would get, send nothing. */
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD && body != NULL) {
        char len[32];

        snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
        evhttp_add_header(oh, "Content-Length", len);
        body = NULL;
    }
    evhttp_send_reply(req, code, NULL, body);
}

static void send_text(struct upstream *up, struct evhttp_request *req, int code, const char *text)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(b, text, strlen(text));
    send_buf(up, req, code, "text/plain", b);
    evbuffer_free(b);
}

/* The default answer: everything we received, as JSON. */
static void send_echo(struct upstream *up, struct evhttp_request *req)
{
    struct evbuffer *out = evbuffer_new();
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
    const struct evkeyval *kv;
    size_t body_len = evbuffer_get_length(in);
    const char *body;
    int first = 1;

    if (out == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    body = (const char *)evbuffer_pullup(in, -1);
    evbuffer_add_printf(out, "{\"id\": ");
    json_cstr(out, up->id);
    evbuffer_add_printf(
        out, ", \"method\": \"%s\", \"uri\": ", method_name(evhttp_request_get_command(req)));
    json_cstr(out, evhttp_request_get_uri(req));
    evbuffer_add_printf(out, ", \"headers\": [");
    for (kv = hdrs->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        evbuffer_add_printf(out, "%s[", first ? "" : ", ");
        json_cstr(out, kv->key);
        evbuffer_add(out, ", ", 2);
        json_cstr(out, kv->value);
        evbuffer_add(out, "]", 1);
        first = 0;
    }
    evbuffer_add_printf(out, "], \"body_len\": %zu, \"body\": ", body_len);
    json_str(out, body_len ? body : "", body_len);
    evbuffer_add(out, "}\n", 2);
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Upstream-Id", up->id);
    send_buf(up, req, 200, "application/json", out);
    evbuffer_free(out);
}

/* The pattern /bytes and /chunked serve: byte i = (i*31+7) % 256. */
static void add_pattern(struct evbuffer *b, size_t from, size_t n)
{
    unsigned char tmp[4096];

    while (n > 0) {
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
        size_t j;

        for (j = 0; j < k; j++)
            tmp[j] = (unsigned char)(((from + j) * 31 + 7) % 256);
        evbuffer_add(b, tmp, k);
        from += k;
        n -= k;
    }
}

static void send_bytes(struct upstream *up, struct evhttp_request *req, size_t n)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    add_pattern(b, 0, n);
    send_buf(up, req, 200, "application/octet-stream", b);
    evbuffer_free(b);
}

/* The same bytes in chunks of varied sizes (1, 7, 100, then 4096s), so a proxy that
 * re-frames or passes chunks through meets small and odd sizes. */
static void send_chunked(struct upstream *up, struct evhttp_request *req, size_t n)
{
    static const size_t sizes[] = {1, 7, 100, 4096};
    struct evbuffer *b = evbuffer_new();
    size_t off = 0, i = 0;

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/octet-stream");
    up_log(up, "%s %s -> 200 (%zu bytes, chunked)", method_name(evhttp_request_get_command(req)),
           evhttp_request_get_uri(req), n);
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* the head a GET would get; the chunk writers would put a body on the wire */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Transfer-Encoding", "chunked");
        evhttp_send_reply(req, 200, "OK", NULL);
        evbuffer_free(b);
        return;
    }
    evhttp_send_reply_start(req, 200, "OK");
    while (off < n) {
        size_t k = sizes[i < 3 ? i : 3];

        if (k > n - off)
            k = n - off;
        add_pattern(b, off, k);
        evhttp_send_reply_chunk(req, b); /* drains b */
        off += k;
        i++;
    }
    evhttp_send_reply_end(req);
    evbuffer_free(b);
}

static void send_hop(struct upstream *up, struct evhttp_request *req)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);

    evhttp_add_header(oh, "Connection", "X-Secret-Hop");
    evhttp_add_header(oh, "X-Secret-Hop", "1");
    evhttp_add_header(oh, "Keep-Alive", "timeout=5");
    evhttp_add_header(oh, "Proxy-Connection", "keep-alive");
    evhttp_add_header(oh, "Upgrade", "h2c");
    evhttp_add_header(oh, "Trailer", "X-Foo");
    evhttp_add_header(oh, "X-End", "1");
    evhttp_add_header(oh, "Set-Cookie", "a=1");
    evhttp_add_header(oh, "Set-Cookie", "b=2");
    send_text(up, req, 200, "hop\n");
}

static void send_stats(struct upstream *up, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"requests\": %lu, \"connections\": %lu}\n", up->requests,
                        up->connections);
    send_buf(up, req, 200, "application/json", b);
    evbuffer_free(b);
}

static void send_executions(struct upstream *up, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    size_t i;

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(b, "{\"total\": %lu, \"keys\": {", up->execs.total);
    for (i = 0; i < up->execs.n; i++) {
        if (i > 0)
            evbuffer_add(b, ", ", 2);
        json_cstr(b, up->execs.entries[i].key);
        evbuffer_add_printf(b, ": %lu", up->execs.entries[i].count);
    }
    evbuffer_add(b, "}}\n", 3);
    send_buf(up, req, 200, "application/json", b);
    evbuffer_free(b);
}

static int request_fd(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);

    return conn ? bufferevent_getfd(evhttp_connection_get_bufferevent(conn)) : -1;
}

/*
 * /truncate and /reset break the connection under evhttp's feet. evhttp stopped reading
 * once the request was complete, so it would never notice; answering the request
 * makes its write fail (EPIPE, SIGPIPE is ignored), and evhttp then frees the
 * connection and the request itself. Nothing of evhttp's is freed here.
 */
static void send_broken(struct upstream *up, struct evhttp_request *req, int truncate)
{
    static const char raw[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
    int fd = request_fd(req);

    up_log(up, "%s %s -> %s", method_name(evhttp_request_get_command(req)),
           evhttp_request_get_uri(req), truncate ? "10 of 100 bytes, shutdown" : "shutdown");
    if (fd >= 0) {
        if (truncate && write(fd, raw, sizeof(raw) - 1) != (ssize_t)(sizeof(raw) - 1))
            up_log(up, "/truncate: short write: %s", strerror(errno));
        shutdown(fd, SHUT_RDWR);
    }
    evhttp_send_reply(req, 200, "OK", NULL);
}

/* /truncate/N: a large answer cut off halfway (the proxy is streaming by then). */
static void send_truncated_big(struct upstream *up, struct evhttp_request *req, size_t n)
{
    char head[96];
    int fd = request_fd(req),
        hl = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", 2 * n);
    char *body = malloc(n ? n : 1);

    up_log(up, "%s %s -> %zu of %zu bytes, shutdown", method_name(evhttp_request_get_command(req)),
           evhttp_request_get_uri(req), n, 2 * n);
    if (fd >= 0 && body) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++)
            body[i] = (char)((i * 31 + 7) % 256);
        if (write(fd, head, (size_t)hl) != hl)
            up_log(up, "/truncate: short write");
        while (off < n) { /* the socket is non-blocking: wait for room */
            struct pollfd p = {fd, POLLOUT, 0};
            ssize_t w = write(fd, body + off, n - off);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno == EAGAIN && poll(&p, 1, 2000) > 0)
                continue;
            else
                break;
        }
        shutdown(fd, SHUT_RDWR);
    }
    free(body);
    evhttp_send_reply(req, 200, "OK", NULL);
}

/* ---- /slow ---- */

static void slow_unlink(struct slow_req *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->up->slow = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    event_free(s->timer);
    free(s);
}

/* Runs from evhttp_connection_free(), before it frees the requests still queued. */
static void slow_conn_closed(struct evhttp_connection *conn, void *arg)
{
    struct slow_req *s = arg;

    s->conn = NULL;
    /* Still attached: it is about to be freed with the connection. Detached: ours. */
    if (evhttp_request_get_connection(s->req) != NULL)
        s->req = NULL;
}

static void slow_fire(evutil_socket_t fd, short what, void *arg)
{
    struct slow_req *s = arg;

    if (s->req != NULL && s->conn != NULL) {
        evhttp_connection_set_closecb(s->conn, NULL, NULL);
        send_echo(s->up, s->req);
    } else if (s->req != NULL) {
        up_log(s->up, "%s: client went away", evhttp_request_get_uri(s->req));
        evhttp_request_free(s->req);
    } else {
        up_log(s->up, "/slow: client went away");
    }
    slow_unlink(s);
}

static void start_slow(struct upstream *up, struct evhttp_request *req, unsigned long ms)
{
    struct slow_req *s = calloc(1, sizeof(*s));
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    if (s == NULL)
        goto err;
    s->up = up;
    s->req = req;
    s->conn = evhttp_request_get_connection(req);
    s->timer = evtimer_new(up->base, slow_fire, s);
    if (s->timer == NULL || evtimer_add(s->timer, &tv) < 0)
        goto err;
    evhttp_connection_set_closecb(s->conn, slow_conn_closed, s);
    s->next = up->slow;
    if (s->next != NULL)
        s->next->prev = s;
    up->slow = s;
    return;
err:
    if (s != NULL && s->timer != NULL)
        event_free(s->timer);
    free(s);
    evhttp_send_error(req, 500, "out of memory");
}

/* ---- dispatch ---- */

/* Parse the decimal number that ends path after prefix; -1 if there is none or it is
 * above max. */
static long long path_number(const char *path, size_t pathlen, const char *prefix,
                             unsigned long long max)
{
    size_t plen = strlen(prefix), i;
    unsigned long long v = 0;

    if (pathlen <= plen || strncmp(path, prefix, plen) != 0)
        return -1;
    for (i = plen; i < pathlen; i++) {
        if (path[i] < '0' || path[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(path[i] - '0');
        if (v > max)
            return -1;
    }
    return (long long)v;
}

static int path_is(const char *path, size_t len, const char *what)
{
    return len == strlen(what) && strncmp(path, what, len) == 0;
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct upstream *up = arg;
    const char *uri = evhttp_request_get_uri(req);
    size_t plen = strcspn(uri, "?#");
    const char *key;
    long long n;

    if (!path_is(uri, plen, "/stats")) {
        up->requests++;
        key = evhttp_find_header(evhttp_request_get_input_headers(req), "Idempotency-Key");
        if (key != NULL && !path_is(uri, plen, "/executions"))
            exec_count(up, key);
    }

    if (path_is(uri, plen, "/stats")) {
        send_stats(up, req);
    } else if (path_is(uri, plen, "/executions")) {
        send_executions(up, req);
    } else if (path_is(uri, plen, "/truncate")) {
        send_broken(up, req, 1);
    } else if (strncmp(uri, "/truncate/", 10) == 0) {
        send_truncated_big(up, req, (size_t)strtoul(uri + 10, NULL, 10));
    } else if (path_is(uri, plen, "/reset")) {
        send_broken(up, req, 0);
    } else if (path_is(uri, plen, "/hop")) {
        send_hop(up, req);
    } else if ((n = path_number(uri, plen, "/status/", 999)) >= 0) {
        char text[32];

        if (n < 200) { /* 600..999 are sent as they are: the proxy must refuse them */
            send_text(up, req, 400, "status must be 200..999\n");
        } else if (n == 204 || n == 304) {
            send_buf(up, req, (int)n, NULL, NULL);
        } else {
            snprintf(text, sizeof(text), "status %lld\n", n);
            send_text(up, req, (int)n, text);
        }
    } else if ((n = path_number(uri, plen, "/reason/", 599)) >= 200) {
        struct evbuffer *b = evbuffer_new();

        if (b)
            evbuffer_add(b, "custom\n", 7);
        up_log(up, "%s -> %lld Custom Reason", uri, n);
        evhttp_send_reply(req, (int)n, "Custom Reason", b);
        if (b)
            evbuffer_free(b);
    } else if ((n = path_number(uri, plen, "/slow/", UP_MAX_SLOW_MS)) >= 0) {
        start_slow(up, req, (unsigned long)n);
    } else if ((n = path_number(uri, plen, "/bytes/", UP_MAX_GEN_BYTES)) >= 0) {
        send_bytes(up, req, (size_t)n);
    } else if ((n = path_number(uri, plen, "/chunked/", UP_MAX_GEN_BYTES)) >= 0) {
        send_chunked(up, req, (size_t)n);
    } else {
        send_echo(up, req);
    }
}

/* Called by evhttp once per accepted connection; evhttp sets the fd. */
static struct bufferevent *on_accept(struct event_base *base, void *arg)
{
    struct upstream *up = arg;

    up->connections++;
    return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct upstream *up = arg;

    up_log(up, "signal %d, exiting", (int)sig);
    event_base_loopbreak(up->base);
}

static void __attribute__((noreturn)) usage(void)
{
    fprintf(stderr, "usage: test-upstream --listen HOST:PORT [--id NAME]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct upstream up = {.id = "upstream"};
    struct event *sigterm = NULL, *sigint = NULL;
    const char *listen_addr = NULL;
    char host[256];
    const char *colon;
    char *end;
    unsigned long port;
    int i, rc = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen_addr = argv[++i];
        else if (strcmp(argv[i], "--id") == 0 && i + 1 < argc)
            up.id = argv[++i];
        else
            usage();
    }
    if (listen_addr == NULL || (colon = strrchr(listen_addr, ':')) == NULL ||
        (size_t)(colon - listen_addr) >= sizeof(host))
        usage();
    memcpy(host, listen_addr, (size_t)(colon - listen_addr));
    host[colon - listen_addr] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || colon[1] == '\0' || port > 65535)
        usage();

    /* /truncate and /reset make evhttp write to a shut-down socket */
    signal(SIGPIPE, SIG_IGN);

    up.base = event_base_new();
    if (up.base == NULL)
        goto out;
    up.http = evhttp_new(up.base);
    if (up.http == NULL)
        goto out;
    evhttp_set_allowed_methods(up.http, UP_ALL_METHODS);
    evhttp_set_max_body_size(up.http, UP_MAX_BODY);
    evhttp_set_bevcb(up.http, on_accept, &up);
    evhttp_set_gencb(up.http, handle, &up);
    if (evhttp_bind_socket(up.http, host, (ev_uint16_t)port) != 0) {
        up_log(&up, "cannot listen on %s: %s", listen_addr, strerror(errno));
        goto out;
    }
    sigterm = evsignal_new(up.base, SIGTERM, on_signal, &up);
    sigint = evsignal_new(up.base, SIGINT, on_signal, &up);
    if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0)
        goto out;
    up_log(&up, "listening on %s", listen_addr);
    if (event_base_dispatch(up.base) < 0)
        goto out;
    rc = 0;
out:
    /* Pending /slow requests: the attached ones go with evhttp_free(), which must not
     * call back into a freed slow_req; detached ones are ours. */
    while (up.slow != NULL) {
        struct slow_req *s = up.slow;

        if (s->conn != NULL)
            evhttp_connection_set_closecb(s->conn, NULL, NULL);
        else if (s->req != NULL)
            evhttp_request_free(s->req);
        slow_unlink(s);
    }
    if (up.http != NULL)
        evhttp_free(up.http);
    if (sigterm != NULL)
        event_free(sigterm);
    if (sigint != NULL)
        event_free(sigint);
    if (up.base != NULL)
        event_base_free(up.base);
    exec_free(&up.execs);
    return rc;
}
