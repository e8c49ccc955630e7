/*
 * headers — what crosses the proxy: hop-by-hop filtering and the X-Forwarded-* / Via
 * fields, in both directions. Pure functions over parsed heads; they write wire bytes.
 *
 * Hop-by-hop (never forwarded, either way): Connection and every field it names,
 * Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade. Content-Length is
 * always rebuilt from the buffered body. Requests additionally lose Expect (the proxy
 * buffers the body itself and answers 100-continue) and get X-Forwarded-For (appended),
 * X-Forwarded-Proto, X-Forwarded-Host (replaced) and Via (appended).
 */
#ifndef IDEMPROXY_HTTP_HEADERS_H
#define IDEMPROXY_HTTP_HEADERS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct http1_head;

#define HEADERS_VIA_TOKEN "1.1 idemproxy"

/* Is header i of h hop-by-hop (static list or named by a Connection header of h)? */
int headers_is_hop_by_hop(const struct http1_head *h, size_t i);

/*
 * Write the upstream request head to out: request line (HTTP/1.1), filtered headers,
 * forwarding fields for client_ip (X-Forwarded-Proto: https when it came over TLS, tls),
 * and Content-Length: body_len when the client sent a
 * body (has_body) or the method conventionally carries one. default_host is used as
 * Host when an HTTP/1.0 client sent none. request_id (may be NULL) is added as
 * X-Request-Id: the one the proxy made for a request that carried none.
 */
void headers_write_request(struct evbuffer *out, const struct http1_head *req,
                           const char *client_ip, int tls, int has_body, uint64_t body_len,
                           const char *default_host, const char *request_id);

/*
 * Write the client response head: "HTTP/1.1 status reason", the end-to-end headers of
 * resp (NULL for none), extra (preformatted "Name: value\r\n" lines, may be NULL),
 * Content-Length (omitted for 1xx/204; for 304 and HEAD answers kept as the upstream
 * sent it, via length_as_is) and "Connection: close" when !keepalive, or
 * "Connection: keep-alive" when keepalive is HEADERS_KEEPALIVE_EXPLICIT (HTTP/1.0 peers).
 */
#define HEADERS_KEEPALIVE_EXPLICIT 2
void headers_write_response(struct evbuffer *out, int status, const char *reason,
                            const struct http1_head *resp, const char *extra, uint64_t body_len,
                            int length_as_is, int keepalive);

#endif
