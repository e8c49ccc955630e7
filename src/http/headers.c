#include "http/headers.h"

#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "core/bytes.h"
#include "http/http1.h"

/* has_conn: does a Connection field of h name anything but close and keep-alive? Only
 * then can a field be named by one, so the common case costs no token scan per field. */
static int headers_hop(const struct http1_head *h, size_t i, int has_conn)
{
    switch (h->headers[i].id) {
    case HTTP1_H_CONNECTION:
    case HTTP1_H_KEEP_ALIVE:
    case HTTP1_H_PROXY_CONNECTION:
    case HTTP1_H_TE:
    case HTTP1_H_TRAILER:
    case HTTP1_H_TRANSFER_ENCODING:
    case HTTP1_H_UPGRADE:
        return 1;
    default:
        return has_conn && http1_header_has_token_id(h, HTTP1_H_CONNECTION, h->headers[i].name);
    }
}

int headers_is_hop_by_hop(const struct http1_head *h, size_t i)
{
    return headers_hop(h, i, h->connection_names);
}

static int headers_is(const struct http1_header *f, int id)
{
    return f->id == id;
}

/*
 * A head is written into a buffer on the stack and handed to the evbuffer in one add:
 * evbuffer_add runs the buffer's callbacks on every call, which cost more than the bytes
 * when a head is added piece by piece (4 calls a field). Pieces that do not fit go
 * straight through.
 */
struct headers_w {
    struct evbuffer *out;
    size_t n;
    char buf[4096];
};

static void headers_flush(struct headers_w *w)
{
    if (w->n)
        evbuffer_add(w->out, w->buf, w->n);
    w->n = 0;
}

static void headers_add(struct headers_w *w, const void *p, size_t len)
{
    if (len > sizeof(w->buf) - w->n) {
        headers_flush(w);
        if (len > sizeof(w->buf)) {
            evbuffer_add(w->out, p, len);
            return;
        }
    }
    memcpy(w->buf + w->n, p, len);
    w->n += len;
}

static void headers_add_str(struct headers_w *w, const char *s)
{
    headers_add(w, s, strlen(s));
}

static void headers_add_u64(struct headers_w *w, uint64_t v)
{
    char buf[20];

    headers_add(w, buf, bytes_u64(buf, v));
}

/* "Name: value\r\n" from NUL-terminated parts */
static void headers_add_line(struct headers_w *w, const char *name, const char *value)
{
    headers_add_str(w, name);
    headers_add_str(w, value);
    headers_add(w, "\r\n", 2);
}

static void headers_add_field(struct headers_w *w, const struct http1_header *f)
{
    size_t len = f->name_len + 2 + f->value_len + 2;
    char *p;

    if (len > sizeof(w->buf) - w->n) {
        headers_add(w, f->name, f->name_len);
        headers_add(w, ": ", 2);
        headers_add(w, f->value, f->value_len);
        headers_add(w, "\r\n", 2);
        return;
    }
    p = w->buf + w->n;
    memcpy(p, f->name, f->name_len);
    p += f->name_len;
    memcpy(p, ": ", 2);
    memcpy(p + 2, f->value, f->value_len);
    memcpy(p + 2 + f->value_len, "\r\n", 2);
    w->n += len;
}

static int headers_method_has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

void headers_write_request(struct evbuffer *out, const struct http1_head *req,
                           const char *client_ip, int tls, int has_body, uint64_t body_len,
                           const char *default_host, const char *request_id)
{
    struct headers_w wr, *w = &wr;
    const char *host = NULL;
    int xff_done = 0, via_done = 0;
    int has_conn = req->connection_names;
    size_t nxff = req->count[HTTP1_H_X_FORWARDED_FOR], nvia = req->count[HTTP1_H_VIA];

    w->out = out;
    w->n = 0;

    headers_add_str(w, req->method);
    headers_add(w, " ", 1);
    headers_add_str(w, req->target);
    headers_add(w, " HTTP/1.1\r\n", 11);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http1_header *f = &req->headers[i];

        if (headers_hop(req, i, has_conn) || headers_is(f, HTTP1_H_CONTENT_LENGTH) ||
            headers_is(f, HTTP1_H_EXPECT) || headers_is(f, HTTP1_H_X_FORWARDED_PROTO) ||
            headers_is(f, HTTP1_H_X_FORWARDED_HOST))
            continue;
        if (headers_is(f, HTTP1_H_HOST))
            host = f->value;
        if (headers_is(f, HTTP1_H_X_FORWARDED_FOR)) {
            /* fold repeated fields into one list, then append the client */
            if (xff_done)
                continue;
            xff_done = 1;
            headers_add(w, "X-Forwarded-For: ", 17);
            for (size_t k = i, seen = 0; k < req->nheaders && seen < nxff; k++) {
                if (!headers_is(&req->headers[k], HTTP1_H_X_FORWARDED_FOR))
                    continue;
                if (req->headers[k].value_len) {
                    headers_add_str(w, req->headers[k].value);
                    headers_add(w, ", ", 2);
                }
                seen++;
            }
            headers_add_line(w, "", client_ip);
            continue;
        }
        if (headers_is(f, HTTP1_H_VIA)) {
            if (via_done)
                continue;
            via_done = 1;
            headers_add(w, "Via: ", 5);
            for (size_t k = i, seen = 0; k < req->nheaders && seen < nvia; k++) {
                if (!headers_is(&req->headers[k], HTTP1_H_VIA))
                    continue;
                if (req->headers[k].value_len) {
                    headers_add_str(w, req->headers[k].value);
                    headers_add(w, ", ", 2);
                }
                seen++;
            }
            headers_add(w, HEADERS_VIA_TOKEN "\r\n", sizeof(HEADERS_VIA_TOKEN) + 1);
            continue;
        }
        headers_add_field(w, f);
    }
    if (!host && default_host)
        headers_add_line(w, "Host: ", default_host);
    if (!xff_done)
        headers_add_line(w, "X-Forwarded-For: ", client_ip);
    if (!via_done)
        headers_add(w, "Via: " HEADERS_VIA_TOKEN "\r\n", sizeof(HEADERS_VIA_TOKEN) + 6);
    if (tls)
        headers_add(w, "X-Forwarded-Proto: https\r\n", 26);
    else
        headers_add(w, "X-Forwarded-Proto: http\r\n", 25);
    if (host)
        headers_add_line(w, "X-Forwarded-Host: ", host);
    if (request_id)
        headers_add_line(w, "X-Request-Id: ", request_id);
    if (has_body || body_len || headers_method_has_body(req->method)) {
        headers_add(w, "Content-Length: ", 16);
        headers_add_u64(w, body_len);
        headers_add(w, "\r\n", 2);
    }
    headers_add(w, "\r\n", 2);
    headers_flush(w);
}

void headers_write_response(struct evbuffer *out, int status, const char *reason,
                            const struct http1_head *resp, const char *extra, uint64_t body_len,
                            int length_as_is, int keepalive)
{
    struct headers_w wr, *w = &wr;
    int length_written = 0;
    int has_conn = resp && resp->connection_names;

    w->out = out;
    w->n = 0;

    headers_add(w, "HTTP/1.1 ", 9);
    headers_add_u64(w, (uint64_t)(status >= 100 && status <= 999 ? status : 500));
    headers_add(w, " ", 1);
    headers_add_line(w, "", reason && *reason ? reason : http1_reason(status));
    for (size_t i = 0; resp && i < resp->nheaders; i++) {
        const struct http1_header *f = &resp->headers[i];

        if (headers_hop(resp, i, has_conn))
            continue;
        if (headers_is(f, HTTP1_H_CONTENT_LENGTH)) {
            if (length_as_is && !length_written) {
                headers_add_field(w, f);
                length_written = 1;
            }
            continue;
        }
        headers_add_field(w, f);
    }
    if (extra)
        headers_add(w, extra, strlen(extra));
    if (!length_as_is && status >= 200 && status != 204 && status != 304) {
        headers_add(w, "Content-Length: ", 16);
        headers_add_u64(w, body_len);
        headers_add(w, "\r\n", 2);
    }
    if (!keepalive)
        headers_add(w, "Connection: close\r\n", 19);
    else if (keepalive == HEADERS_KEEPALIVE_EXPLICIT)
        headers_add(w, "Connection: keep-alive\r\n", 24);
    headers_add(w, "\r\n", 2);
    headers_flush(w);
}
