#include "frontend.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "config.h"
#include "headers.h"
#include "idem.h"
#include "log.h"
#include "netio.h"
#include "problem.h"
#include "upstream.h"
#include "worker.h"

enum fe_state {
    FE_HEAD,   /* waiting for / reading a request head */
    FE_BODY,   /* reading the body of c->req */
    FE_BUSY,   /* c->req is being processed; reading is paused */
    FE_CLOSING /* last answer queued; close once it is written */
};

struct frontend_conn {
    struct worker *w;
    struct bufferevent *bev; /* writes, write timeout */
    struct netio_reader *rd; /* reads, client-timeout */
    struct timeval timeout;  /* client-timeout */
    enum fe_state state;
    size_t scan;
    struct frontend_req *req;
    int keepalive;
    enum http1_body kind;
    uint64_t remaining, total;
    struct http1_chunked chunked;
    char ip[64];
    TAILQ_ENTRY(frontend_conn) link;
};

static void fe_read_cb(struct bufferevent *bev, void *arg);
static void fe_write_cb(struct bufferevent *bev, void *arg);
static void fe_event_cb(struct bufferevent *bev, short what, void *arg);

static uint64_t fe_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The one place a request is freed. */
static void fe_req_free(struct frontend_req *r)
{
    struct worker *w = r->worker;

    if (r->x)
        upstream_exchange_detach(r->x);
    idem_ctx_free(r->idem);
    if (r->conn && r->conn->req == r)
        r->conn->req = NULL;
    TAILQ_REMOVE(&w->reqs, r, link);
    w->nreqs--;
    http1_head_clear(&r->head);
    evbuffer_free(r->body);
    free(r);
}

static void fe_conn_free(struct frontend_conn *c)
{
    struct worker *w = c->w;

    if (c->req) {
        if (c->state == FE_BUSY)
            c->req->conn = NULL; /* the work goes on; its answer is dropped */
        else
            fe_req_free(c->req);
        c->req = NULL;
    }
    TAILQ_REMOVE(&w->conns, c, link);
    w->nconns--;
    netio_reader_free(c->rd); /* deferred if we are inside its callback */
    bufferevent_free(c->bev); /* safe from its own callbacks (libevent refcounts it) */
    free(c);
}

void frontend_accept(struct worker *w, int fd, const struct sockaddr *sa, int salen)
{
    const struct config *cfg = w->cfg;
    struct frontend_conn *c;

    if (w->draining) {
        evutil_closesocket(fd);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->w = w;
    c->state = FE_HEAD;
    if (sa->sa_family == AF_INET)
        evutil_inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->ip,
                         sizeof(c->ip));
    else if (sa->sa_family == AF_INET6)
        evutil_inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->ip,
                         sizeof(c->ip));
    else
        snprintf(c->ip, sizeof(c->ip), "unknown");
    netio_nodelay(fd);
    evutil_make_socket_nonblocking(fd);
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->rd = netio_reader_new(c->bev, fe_read_cb, fe_event_cb, c);
    if (!c->rd) {
        bufferevent_free(c->bev);
        free(c);
        return;
    }
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    w->nconns++;
    c->timeout.tv_sec = (time_t)(cfg->client_timeout_ms / 1000);
    c->timeout.tv_usec = (suseconds_t)(cfg->client_timeout_ms % 1000) * 1000;
    bufferevent_set_timeouts(c->bev, NULL, &c->timeout);
    bufferevent_setcb(c->bev, NULL, fe_write_cb, fe_event_cb, c);
    /* The bufferevent neither reads (the netio reader does) nor watches writability
     * (answers are written directly by netio_flush; EV_WRITE is on by default). */
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    netio_reader_start(c->rd, &c->timeout);
}

/* After an answer is queued: go on with the next request, or close once written. */
static void fe_after_answer(struct frontend_conn *c)
{
    int flushed = netio_flush(c->bev);

    if (!c->keepalive || c->w->draining) {
        c->state = FE_CLOSING;
        netio_reader_stop(c->rd);
        /* close from the write callback, never from the caller's stack */
        if (flushed)
            bufferevent_trigger(c->bev, EV_WRITE,
                                BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
        return;
    }
    c->state = FE_HEAD;
    c->scan = 0;
    netio_reader_start(c->rd, &c->timeout); /* restarts the idle timeout */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        netio_reader_kick(c->rd); /* pipelined requests already read */
}

/* Problem answer for a request we could not parse or frame; the connection closes. */
static void fe_reject(struct frontend_conn *c, int status, const char *slug, const char *detail)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct evbuffer *body = evbuffer_new();
    char extra[64];

    if (c->req)
        fe_req_free(c->req); /* also clears c->req */
    log_info("%s: %d %s: %s", c->ip, status, slug, detail);
    problem_body(body, status, slug, detail, NULL);
    snprintf(extra, sizeof(extra), "Content-Type: application/problem+json\r\n");
    headers_write_response(out, status, NULL, NULL, extra, evbuffer_get_length(body), 0, 0);
    evbuffer_add_buffer(out, body);
    evbuffer_free(body);
    c->keepalive = 0;
    fe_after_answer(c);
}

void frontend_respond(struct frontend_req *r, int status, const char *reason,
                      const struct http1_head *head, const char *extra, struct evbuffer *body)
{
    struct frontend_conn *c = r->conn;
    struct worker *w = r->worker;

    if (c) {
        struct evbuffer *out = bufferevent_get_output(c->bev);
        size_t len = body ? evbuffer_get_length(body) : 0;
        /* HEAD and 304 answers keep the upstream's Content-Length, describing the
         * representation rather than this (empty) message. */
        int as_is = head && (r->is_head || status == 304);

        if (w->draining)
            c->keepalive = 0;
        /* an HTTP/1.0 client keeps the connection only if told so */
        int keep = c->keepalive && r->head.minor == 0 ? HEADERS_KEEPALIVE_EXPLICIT : c->keepalive;

        headers_write_response(out, status, reason, head, extra, len, as_is, keep);
        if (body && !r->is_head)
            evbuffer_add_buffer(out, body);
        log_debug("%s %s %s → %d (%llu ms)", c->ip, r->head.method, r->head.target, status,
                  (unsigned long long)(fe_now_ms() - r->started_ms));
        c->req = NULL;
        r->conn = NULL;
        fe_req_free(r);
        fe_after_answer(c);
    } else {
        fe_req_free(r);
    }
    worker_maybe_finish(w);
}

void frontend_problem(struct frontend_req *r, int status, const char *slug, const char *detail,
                      const char *extra)
{
    struct evbuffer *body = evbuffer_new();
    char hdrs[512];

    problem_body(body, status, slug, detail, r->head.target);
    snprintf(hdrs, sizeof(hdrs), "Content-Type: application/problem+json\r\n%s",
             extra ? extra : "");
    frontend_respond(r, status, NULL, NULL, hdrs, body);
    evbuffer_free(body);
}

#define FE_STREAM_HIGH (1024 * 1024) /* client output that pauses the upstream */

void frontend_stream_start(struct frontend_req *r, const struct http1_head *head,
                           struct evbuffer *body)
{
    struct frontend_conn *c = r->conn;
    int length_known = head->count[HTTP1_H_CONTENT_LENGTH] > 0;
    const char *extra = NULL;

    r->streaming = 1;
    if (c) {
        int keep;
        if (c->w->draining)
            c->keepalive = 0;
        if (!length_known && r->head.minor >= 1) {
            extra = "Transfer-Encoding: chunked\r\n";
            r->chunked_out = 1;
        } else if (!length_known) {
            c->keepalive = 0; /* an HTTP/1.0 client learns the end from the close */
        }
        keep = c->keepalive && r->head.minor == 0 ? HEADERS_KEEPALIVE_EXPLICIT : c->keepalive;
        /* length_as_is: the upstream's Content-Length, or (streamed) none at all */
        headers_write_response(bufferevent_get_output(c->bev), head->status, head->reason, head,
                               extra, 0, 1, keep);
        log_debug("%s %s %s → %d (streaming)", c->ip, r->head.method, r->head.target, head->status);
    }
    frontend_stream_data(r, body);
}

void frontend_stream_data(struct frontend_req *r, struct evbuffer *body)
{
    struct frontend_conn *c = r->conn;
    struct evbuffer *out;
    size_t len = body ? evbuffer_get_length(body) : 0;

    if (!c || len == 0) {
        if (len)
            evbuffer_drain(body, len); /* the client is gone: drop it */
        return;
    }
    out = bufferevent_get_output(c->bev);
    if (r->chunked_out) {
        char size[24];
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        evbuffer_add(out, size, (size_t)n);
        evbuffer_add_buffer(out, body);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add_buffer(out, body);
    }
    if (!netio_flush(c->bev) && evbuffer_get_length(out) > FE_STREAM_HIGH && r->x && !r->paused) {
        r->paused = 1; /* resumed by fe_write_cb once the client has caught up */
        upstream_exchange_pause(r->x, 1);
    }
}

void frontend_stream_end(struct frontend_req *r, int complete)
{
    struct frontend_conn *c = r->conn;
    struct worker *w = r->worker;

    r->x = NULL; /* the exchange is finishing */
    if (!c) {
        fe_req_free(r);
    } else if (complete) {
        if (r->chunked_out)
            evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
        c->req = NULL;
        r->conn = NULL;
        fe_req_free(r);
        fe_after_answer(c);
    } else {
        log_warn("%s %s %s: the upstream cut its answer short mid-stream; closing the "
                 "client connection",
                 c->ip, r->head.method, r->head.target);
        c->req = NULL;
        r->conn = NULL;
        fe_req_free(r);
        fe_conn_free(c);
    }
    worker_maybe_finish(w);
}

static void fe_upstream_done(const struct upstream_response *resp, void *arg)
{
    struct frontend_req *r = arg;

    if (resp->result == UPSTREAM_STREAM) {
        if (!r->streaming)
            frontend_stream_start(r, resp->head, resp->body);
        else
            frontend_stream_data(r, resp->body);
        return;
    }
    r->x = NULL;
    if (r->streaming) {
        if (resp->result == UPSTREAM_OK)
            frontend_stream_data(r, resp->body);
        frontend_stream_end(r, resp->result == UPSTREAM_OK);
        return;
    }
    switch (resp->result) {

    case UPSTREAM_OK:
        frontend_respond(r, resp->head->status, resp->head->reason, resp->head, NULL, resp->body);
        return;
    case UPSTREAM_UNAVAILABLE:
        frontend_problem(r, 502, "upstream-unavailable", resp->error, NULL);
        return;
    case UPSTREAM_TIMEOUT:
        frontend_problem(r, 504, "upstream-timeout", resp->error, NULL);
        return;
    case UPSTREAM_FAILED:
    case UPSTREAM_STREAM: /* handled above */
        frontend_problem(r, 502, "upstream-failed", resp->error, NULL);
        return;
    }
}

struct upstream_exchange *frontend_send_upstream(struct frontend_req *r, size_t stream_after,
                                                 upstream_cb cb, void *arg)
{
    struct worker *w = r->worker;
    struct evbuffer *wire = evbuffer_new();
    struct upstream_exchange *x = NULL;

    if (!wire)
        return NULL;
    headers_write_request(wire, &r->head, r->client_ip, r->has_body, evbuffer_get_length(r->body),
                          w->default_host);
    evbuffer_add_buffer(wire, r->body);
    x = upstream_forward(w->pool, wire, r->is_head, stream_after, cb, arg);
    evbuffer_free(wire);
    return x;
}

void frontend_forward(struct frontend_req *r)
{
    r->x = frontend_send_upstream(r, r->worker->cfg->response_buffer, fe_upstream_done, r);
    if (!r->x)
        frontend_problem(r, 500, "internal-error", "could not start the upstream request", NULL);
}

/* The request is complete: hand it to the right path. */
static void fe_dispatch(struct frontend_conn *c)
{
    struct frontend_req *r = c->req;

    /* Reading stays enabled (no epoll_ctl per request): a client that goes away is
     * noticed, and pipelined bytes wait in the input buffer, bounded in fe_read_cb. */
    c->state = FE_BUSY;
    c->keepalive = http1_keepalive(&r->head) && !c->w->draining;
    if (idem_method_applies(r))
        idem_handle(r);
    else
        frontend_forward(r);
}

/* A head arrived: parse it, check framing and limits. 0 to go on, -1 when rejected. */
static int fe_start_request(struct frontend_conn *c, struct evbuffer *in, long n)
{
    const struct config *cfg = c->w->cfg;
    struct frontend_req *r;
    struct http1_error err;
    const char *expect;

    r = calloc(1, sizeof(*r));
    if (!r || !(r->body = evbuffer_new())) {
        free(r);
        fe_reject(c, 500, "internal-error", "out of memory");
        return -1;
    }
    r->worker = c->w;
    r->conn = c;
    r->started_ms = fe_now_ms();
    snprintf(r->client_ip, sizeof(r->client_ip), "%s", c->ip);
    TAILQ_INSERT_TAIL(&c->w->reqs, r, link);
    c->w->nreqs++;
    c->req = r;

    if (http1_parse_request(&r->head, (const char *)evbuffer_pullup(in, n), (size_t)n, &err) < 0) {
        fe_reject(c, err.status, err.slug, err.detail);
        return -1;
    }
    evbuffer_drain(in, (size_t)n);
    c->scan = 0;
    if (http1_request_framing(&r->head, &c->kind, &c->remaining, &err) < 0) {
        fe_reject(c, err.status, err.slug, err.detail);
        return -1;
    }
    if (strcmp(r->head.method, "CONNECT") == 0) {
        fe_reject(c, 501, "method-not-supported", "CONNECT is not supported by a reverse proxy");
        return -1;
    }
    r->is_head = strcmp(r->head.method, "HEAD") == 0;
    r->has_body = c->kind != HTTP1_BODY_NONE || http1_header_get(&r->head, "Content-Length", NULL);
    if (c->kind == HTTP1_BODY_LENGTH && c->remaining > cfg->max_body) {
        char d[128];
        snprintf(d, sizeof(d), "Content-Length %llu exceeds the limit of %zu bytes",
                 (unsigned long long)c->remaining, cfg->max_body);
        fe_reject(c, 413, "body-too-large", d);
        return -1;
    }
    c->total = 0;
    memset(&c->chunked, 0, sizeof(c->chunked));
    expect = http1_header_get(&r->head, "Expect", NULL);
    if (expect && r->head.minor == 1 && c->kind != HTTP1_BODY_NONE &&
        strcasecmp(expect, "100-continue") == 0 && evbuffer_get_length(in) == 0) {
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        netio_flush(c->bev);
    }
    c->state = FE_BODY;
    return 0;
}

/* Consume what is buffered, as far as the state allows. */
static void fe_process(struct frontend_conn *c)
{
    const struct config *cfg = c->w->cfg;
    struct evbuffer *in = bufferevent_get_input(c->bev);

    for (;;) {
        if (c->state == FE_HEAD) {
            long n = http1_head_end(in, &c->scan, cfg->max_headers, 1);
            if (n == 0)
                return;
            if (n < 0) {
                char d[96];
                snprintf(d, sizeof(d), "request head exceeds the limit of %zu bytes",
                         cfg->max_headers);
                fe_reject(c, 431, "headers-too-large", d);
                return;
            }
            if (fe_start_request(c, in, n) < 0)
                return;
        }
        if (c->state != FE_BODY)
            return;
        if (c->kind == HTTP1_BODY_LENGTH) {
            size_t avail = evbuffer_get_length(in);
            size_t take = avail < c->remaining ? avail : (size_t)c->remaining;
            evbuffer_remove_buffer(in, c->req->body, take);
            c->remaining -= take;
            if (c->remaining)
                return;
        } else if (c->kind == HTTP1_BODY_CHUNKED) {
            struct http1_error err;
            int r = http1_chunked_decode(&c->chunked, in, c->req->body, cfg->max_body, &c->total,
                                         cfg->max_headers, &err);
            if (r < 0) {
                fe_reject(c, err.status, err.slug, err.detail);
                return;
            }
            if (r == 0)
                return;
        }
        fe_dispatch(c);
        return; /* the rest waits until the answer is queued */
    }
}

static void fe_read_cb(struct bufferevent *bev, void *arg)
{
    struct frontend_conn *c = arg;

    if (c->state == FE_HEAD || c->state == FE_BODY)
        fe_process(c);
    else if (evbuffer_get_length(bufferevent_get_input(bev)) > c->w->cfg->max_headers)
        netio_reader_stop(c->rd); /* enough pipelined; resumed after the answer */
}

static void fe_write_cb(struct bufferevent *bev, void *arg)
{
    struct frontend_conn *c = arg;
    struct worker *w = c->w;

    bufferevent_disable(bev, EV_WRITE); /* drained: back to direct writes */
    if (c->req && c->req->paused && c->req->x) {
        c->req->paused = 0; /* the client caught up with a streamed answer */
        upstream_exchange_pause(c->req->x, 0);
    }
    if (c->state == FE_CLOSING) {
        fe_conn_free(c);
        worker_maybe_finish(w);
    }
}

static void fe_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct frontend_conn *c = arg;
    struct worker *w = c->w;

    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
        (c->state == FE_BUSY || c->state == FE_CLOSING)) {
        /* the client waits for a slow answer: that is not the client's fault (and a
         * closing connection's write timeout is the bufferevent's) */
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
        (c->state == FE_BODY ||
         (c->state == FE_HEAD && evbuffer_get_length(bufferevent_get_input(bev))))) {
        /* a request started but did not arrive in time */
        fe_reject(c, 408, "request-timeout", "the request did not arrive within client-timeout");
        return;
    }
    /* EOF, error, idle keep-alive timeout or write timeout: just close */
    fe_conn_free(c);
    worker_maybe_finish(w);
}

void frontend_drain(struct worker *w)
{
    struct frontend_conn *c, *next;

    for (c = TAILQ_FIRST(&w->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        c->keepalive = 0;
        if (c->state == FE_HEAD && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
            evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            fe_conn_free(c);
    }
}

void frontend_free_all(struct worker *w)
{
    struct frontend_conn *c;
    struct frontend_req *r;

    while ((c = TAILQ_FIRST(&w->conns))) {
        if (c->req)
            c->state = FE_BODY; /* free the request with the connection */
        fe_conn_free(c);
    }
    while ((r = TAILQ_FIRST(&w->reqs)))
        fe_req_free(r);
}
