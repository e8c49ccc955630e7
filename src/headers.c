#include "headers.h"

#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "http1.h"

static const char *const headers_hop[] = {
    "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
};

int headers_is_hop_by_hop(const struct http1_head *h, size_t i)
{
    const char *name = h->headers[i].name;

    for (size_t k = 0; k < sizeof(headers_hop) / sizeof(headers_hop[0]); k++)
        if (strcasecmp(name, headers_hop[k]) == 0)
            return 1;
    return http1_header_has_token(h, "Connection", name);
}

static int headers_is(const struct http1_header *f, const char *name)
{
    return strcasecmp(f->name, name) == 0;
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
                           const char *default_host)
{
    const char *host = NULL;
    int xff_done = 0, via_done = 0;
    size_t nxff, nvia;

    evbuffer_add_printf(out, "%s %s HTTP/1.1\r\n", req->method, req->target);
    http1_header_get(req, "X-Forwarded-For", &nxff);
    http1_header_get(req, "Via", &nvia);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http1_header *f = &req->headers[i];

        if (headers_is_hop_by_hop(req, i) || headers_is(f, "Content-Length") ||
            headers_is(f, "Expect") || headers_is(f, "X-Forwarded-Proto") ||
            headers_is(f, "X-Forwarded-Host"))
            continue;
        if (headers_is(f, "Host"))
            host = f->value;
        if (headers_is(f, "X-Forwarded-For")) {
            /* fold repeated fields into one list, then append the client */
            if (xff_done)
                continue;
            xff_done = 1;
            evbuffer_add(out, "X-Forwarded-For: ", 17);
            for (size_t k = i, seen = 0; k < req->nheaders && seen < nxff; k++) {
                if (!headers_is(&req->headers[k], "X-Forwarded-For"))
                    continue;
                if (req->headers[k].value_len)
                    evbuffer_add_printf(out, "%s, ", req->headers[k].value);
                seen++;
            }
            evbuffer_add_printf(out, "%s\r\n", client_ip);
            continue;
        }
        if (headers_is(f, "Via")) {
            if (via_done)
                continue;
            via_done = 1;
            evbuffer_add(out, "Via: ", 5);
            for (size_t k = i, seen = 0; k < req->nheaders && seen < nvia; k++) {
                if (!headers_is(&req->headers[k], "Via"))
                    continue;
                if (req->headers[k].value_len)
                    evbuffer_add_printf(out, "%s, ", req->headers[k].value);
                seen++;
            }
            evbuffer_add(out, HEADERS_VIA_TOKEN "\r\n", sizeof(HEADERS_VIA_TOKEN) + 1);
            continue;
        }
        headers_add_field(out, f);
    }
    if (!host && default_host)
        evbuffer_add_printf(out, "Host: %s\r\n", default_host);
    if (!xff_done)
        evbuffer_add_printf(out, "X-Forwarded-For: %s\r\n", client_ip);
    if (!via_done)
        evbuffer_add(out, "Via: " HEADERS_VIA_TOKEN "\r\n", sizeof(HEADERS_VIA_TOKEN) + 6);
    evbuffer_add(out, "X-Forwarded-Proto: http\r\n", 25);
    if (host)
        evbuffer_add_printf(out, "X-Forwarded-Host: %s\r\n", host);
    if (has_body || body_len || headers_method_has_body(req->method))
        evbuffer_add_printf(out, "Content-Length: %llu\r\n", (unsigned long long)body_len);
    evbuffer_add(out, "\r\n", 2);
}

void headers_write_response(struct evbuffer *out, int status, const char *reason,
                            const struct http1_head *resp, const char *extra, uint64_t body_len,
                            int length_as_is, int keepalive)
{
    int length_written = 0;

    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status,
                        reason && *reason ? reason : http1_reason(status));
    for (size_t i = 0; resp && i < resp->nheaders; i++) {
        const struct http1_header *f = &resp->headers[i];

        if (headers_is_hop_by_hop(resp, i))
            continue;
        if (headers_is(f, "Content-Length")) {
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
    if (!length_as_is && status >= 200 && status != 204 && status != 304)
        evbuffer_add_printf(out, "Content-Length: %llu\r\n", (unsigned long long)body_len);
    if (!keepalive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (keepalive == HEADERS_KEEPALIVE_EXPLICIT)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
}
