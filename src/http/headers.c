#include "http/headers.h"

#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "http/http1.h"

/* has_conn: does h have a Connection header at all? Only then can a field be named by
 * one, so the common case costs no token scan per field. */
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
        return has_conn && http1_header_has_token(h, "Connection", h->headers[i].name);
    }
}

int headers_is_hop_by_hop(const struct http1_head *h, size_t i)
{
    return headers_hop(h, i, h->count[HTTP1_H_CONNECTION] > 0);
}

static int headers_is(const struct http1_header *f, int id)
{
    return f->id == id;
}

/* evbuffer_add_printf costs a vfprintf per call; the hot fields are strings and one
 * number, so they are added piece by piece. */
static void headers_add_str(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, s, strlen(s));
}

static void headers_add_u64(struct evbuffer *out, uint64_t v)
{
    char buf[24];
    size_t i = sizeof(buf);

    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    evbuffer_add(out, buf + i, sizeof(buf) - i);
}

/* "Name: value\r\n" from NUL-terminated parts */
static void headers_add_line(struct evbuffer *out, const char *name, const char *value)
{
    headers_add_str(out, name);
    headers_add_str(out, value);
    evbuffer_add(out, "\r\n", 2);
}

static void headers_add_field(struct evbuffer *out, const struct http1_header *f)
{
    evbuffer_add(out, f->name, f->name_len);
    evbuffer_add(out, ": ", 2);
    evbuffer_add(out, f->value, f->value_len);
    evbuffer_add(out, "\r\n", 2);
}

static int headers_method_has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

void headers_write_request(struct evbuffer *out, const struct http1_head *req,
                           const char *client_ip, int has_body, uint64_t body_len,
                           const char *default_host, const char *request_id)
{
    const char *host = NULL;
    int xff_done = 0, via_done = 0;
    int has_conn = req->count[HTTP1_H_CONNECTION] > 0;
    size_t nxff = req->count[HTTP1_H_X_FORWARDED_FOR], nvia = req->count[HTTP1_H_VIA];

    headers_add_str(out, req->method);
    evbuffer_add(out, " ", 1);
    headers_add_str(out, req->target);
    evbuffer_add(out, " HTTP/1.1\r\n", 11);
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
            evbuffer_add(out, "X-Forwarded-For: ", 17);
            for (size_t k = i, seen = 0; k < req->nheaders && seen < nxff; k++) {
                if (!headers_is(&req->headers[k], HTTP1_H_X_FORWARDED_FOR))
                    continue;
                if (req->headers[k].value_len) {
                    headers_add_str(out, req->headers[k].value);
                    evbuffer_add(out, ", ", 2);
                }
                seen++;
            }
            headers_add_line(out, "", client_ip);
            continue;
        }
        if (headers_is(f, HTTP1_H_VIA)) {
            if (via_done)
                continue;
            via_done = 1;
            evbuffer_add(out, "Via: ", 5);
            for (size_t k = i, seen = 0; k < req->nheaders && seen < nvia; k++) {
                if (!headers_is(&req->headers[k], HTTP1_H_VIA))
                    continue;
                if (req->headers[k].value_len) {
                    headers_add_str(out, req->headers[k].value);
                    evbuffer_add(out, ", ", 2);
                }
                seen++;
            }
            evbuffer_add(out, HEADERS_VIA_TOKEN "\r\n", sizeof(HEADERS_VIA_TOKEN) + 1);
            continue;
        }
        headers_add_field(out, f);
    }
    if (!host && default_host)
        headers_add_line(out, "Host: ", default_host);
    if (!xff_done)
        headers_add_line(out, "X-Forwarded-For: ", client_ip);
    if (!via_done)
        evbuffer_add(out, "Via: " HEADERS_VIA_TOKEN "\r\n", sizeof(HEADERS_VIA_TOKEN) + 6);
    evbuffer_add(out, "X-Forwarded-Proto: http\r\n", 25);
    if (host)
        headers_add_line(out, "X-Forwarded-Host: ", host);
    if (request_id)
        headers_add_line(out, "X-Request-Id: ", request_id);
    if (has_body || body_len || headers_method_has_body(req->method)) {
        evbuffer_add(out, "Content-Length: ", 16);
        headers_add_u64(out, body_len);
        evbuffer_add(out, "\r\n", 2);
    }
    evbuffer_add(out, "\r\n", 2);
}

void headers_write_response(struct evbuffer *out, int status, const char *reason,
                            const struct http1_head *resp, const char *extra, uint64_t body_len,
                            int length_as_is, int keepalive)
{
    int length_written = 0;
    int has_conn = resp && resp->count[HTTP1_H_CONNECTION] > 0;

    evbuffer_add(out, "HTTP/1.1 ", 9);
    headers_add_u64(out, (uint64_t)(status >= 100 && status <= 999 ? status : 500));
    evbuffer_add(out, " ", 1);
    headers_add_line(out, "", reason && *reason ? reason : http1_reason(status));
    for (size_t i = 0; resp && i < resp->nheaders; i++) {
        const struct http1_header *f = &resp->headers[i];

        if (headers_hop(resp, i, has_conn))
            continue;
        if (headers_is(f, HTTP1_H_CONTENT_LENGTH)) {
            if (length_as_is && !length_written) {
                headers_add_field(out, f);
                length_written = 1;
            }
            continue;
        }
        headers_add_field(out, f);
    }
    if (extra)
        evbuffer_add(out, extra, strlen(extra));
    if (!length_as_is && status >= 200 && status != 204 && status != 304) {
        evbuffer_add(out, "Content-Length: ", 16);
        headers_add_u64(out, body_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (!keepalive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (keepalive == HEADERS_KEEPALIVE_EXPLICIT)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
}
