/*
 * http_client — a small blocking HTTP/1.1 client with deadlines.
 *
 * The client never reads past the response it is parsing (heads and chunk lines are
 * found with MSG_PEEK and only their own bytes consumed), so a test can read several
 * pipelined responses from one fd without the harness holding hidden buffers.
 */
#include "harness.h"
#include "harness-internal.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#define H_MAX_HEAD        (1024 * 1024)
#define H_MAX_LINE        8192
#define H_MAX_BODY        (512UL * 1024 * 1024)
#define H_SEND_TIMEOUT_MS 30000
#define H_CLOSE_PROBE_MS  500

/* Wait for events on fd until deadline (a now_ms() value): 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    struct pollfd p = {.fd = fd, .events = events};

    for (;;) {
        long long left = deadline - now_ms();
        int n;

        if (left < 0)
            left = 0;
        n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

struct buf {
    char *data;
    size_t len, cap;
};

/* Room for extra more bytes plus a NUL. */
static int buf_reserve(struct buf *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 4096;
    char *d;

    while (cap - b->len < extra + 1)
        cap *= 2;
    if (cap == b->cap)
        return 0;
    d = realloc(b->data, cap);
    if (d == NULL)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Outcome of a read step. */
enum rd { RD_OK, RD_EOF, RD_TIMEOUT, RD_ERROR };

/* recv() bounded by deadline; ECONNRESET counts as EOF. Sets *n to the bytes read. */
static enum rd recv_some(int fd, void *dst, size_t len, int flags, long long deadline, size_t *n)
{
    for (;;) {
        ssize_t r;
        int w = wait_fd(fd, POLLIN, deadline);

        if (w == 0)
            return RD_TIMEOUT;
        if (w < 0)
            return RD_ERROR;
        r = recv(fd, dst, len, flags | MSG_DONTWAIT);
        if (r > 0) {
            *n = (size_t)r;
            return RD_OK;
        }
        if (r == 0 || errno == ECONNRESET)
            return RD_EOF;
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return RD_ERROR;
    }
}

/*
 * Append bytes from fd to b up to and including the first delim (searched from
 * b->data + from). Consumes nothing past delim. RD_ERROR also when b would exceed max.
 */
static enum rd read_until(int fd, struct buf *b, size_t from, const char *delim, size_t max,
                          long long deadline)
{
    size_t dlen = strlen(delim);

    for (;;) {
        size_t n, old = b->len, start, take;
        const char *hit;
        enum rd st;

        if (b->len >= max || buf_reserve(b, 4096) < 0)
            return RD_ERROR;
        st = recv_some(fd, b->data + old, 4096, MSG_PEEK, deadline, &n);
        if (st != RD_OK)
            return st;
        start = old >= from + dlen - 1 ? old - (dlen - 1) : from;
        hit = memmem(b->data + start, old + n - start, delim, dlen);
        take = hit ? (size_t)(hit - b->data) + dlen - old : n;
        /* consume exactly what was peeked and belongs to us; it is already in place */
        while (take > 0) {
            ssize_t r = recv(fd, b->data + b->len, take, MSG_DONTWAIT);

            if (r <= 0)
                return RD_ERROR; /* peeked bytes vanished: cannot happen */
            b->len += (size_t)r;
            take -= (size_t)r;
        }
        b->data[b->len] = '\0';
        if (hit != NULL)
            return RD_OK;
    }
}

/* Append exactly n bytes to b. */
static enum rd read_n(int fd, struct buf *b, size_t n, long long deadline)
{
    while (n > 0) {
        size_t want = n < 65536 ? n : 65536, got;
        enum rd st;

        if (buf_reserve(b, want) < 0)
            return RD_ERROR;
        st = recv_some(fd, b->data + b->len, want, 0, deadline, &got);
        if (st != RD_OK)
            return st;
        b->len += got;
        b->data[b->len] = '\0';
        n -= got;
    }
    return RD_OK;
}

/* Append to b until the peer closes (RD_EOF). */
static enum rd read_to_eof(int fd, struct buf *b, long long deadline)
{
    for (;;) {
        size_t got;
        enum rd st;

        if (b->len >= H_MAX_BODY || buf_reserve(b, 65536) < 0)
            return RD_ERROR;
        st = recv_some(fd, b->data + b->len, 65536, 0, deadline, &got);
        if (st != RD_OK)
            return st;
        b->len += got;
        b->data[b->len] = '\0';
    }
}

/* Find the nth header called name in head (after the status line); value trimmed. */
static int find_header(const char *head, const char *name, int nth, const char **val, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *line;

    if (head == NULL)
        return -1;
    line = strstr(head, "\r\n");
    while (line != NULL) {
        const char *end, *v, *e;

        line += 2;
        end = strstr(line, "\r\n");
        if (end == NULL)
            end = line + strlen(line);
        if (end == line)
            break; /* the empty line ending the head */
        if ((size_t)(end - line) > nlen && line[nlen] == ':' &&
            strncasecmp(line, name, nlen) == 0 && nth-- == 0) {
            v = line + nlen + 1;
            e = end;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *val = v;
            *vlen = (size_t)(e - v);
            return 0;
        }
        line = *end ? end : NULL;
    }
    return -1;
}

/* Does any header called name list token (comma-separated, case-insensitive)? */
static int header_has_token(const char *head, const char *name, const char *token)
{
    size_t tlen = strlen(token), vlen;
    const char *v;
    int i;

    for (i = 0; find_header(head, name, i, &v, &vlen) == 0; i++) {
        const char *end = v + vlen;

        while (v < end) {
            const char *c = memchr(v, ',', (size_t)(end - v)), *e;

            e = c ? c : end;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if ((size_t)(e - v) == tlen && strncasecmp(v, token, tlen) == 0)
                return 1;
            v = c ? c + 1 : end;
        }
    }
    return 0;
}

/* "HTTP/x.y NNN ..." -> NNN, or 0. */
static int parse_status(const char *head)
{
    if (strncmp(head, "HTTP/", 5) != 0 || head[5] < '0' || head[5] > '9' || head[6] != '.' ||
        head[7] < '0' || head[7] > '9' || head[8] != ' ')
        return 0;
    if (head[9] < '1' || head[9] > '9' || head[10] < '0' || head[10] > '9' || head[11] < '0' ||
        head[11] > '9' || (head[12] != ' ' && head[12] != '\r'))
        return 0;
    return (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
}

/* Decode a chunked body into body. RD_OK when the last chunk and trailers were read;
 * RD_ERROR also for malformed framing. */
static enum rd read_chunked(int fd, struct buf *body, long long deadline)
{
    struct buf line = {0};
    enum rd st;

    for (;;) {
        unsigned long long size = 0;
        const char *p;
        int digits = 0;

        line.len = 0;
        st = read_until(fd, &line, 0, "\r\n", H_MAX_LINE, deadline);
        if (st != RD_OK)
            goto out;
        for (p = line.data; *p != '\0'; p++) {
            int d;

            if (*p >= '0' && *p <= '9')
                d = *p - '0';
            else if (*p >= 'a' && *p <= 'f')
                d = *p - 'a' + 10;
            else if (*p >= 'A' && *p <= 'F')
                d = *p - 'A' + 10;
            else
                break;
            if (size > (H_MAX_BODY >> 4)) {
                st = RD_ERROR;
                goto out;
            }
            size = size * 16 + (unsigned)d;
            digits++;
        }
        /* after the size: optional whitespace, then ";ext" or the end of the line */
        while (*p == ' ' || *p == '\t')
            p++;
        if (digits == 0 || (*p != ';' && *p != '\r') || body->len + size > H_MAX_BODY) {
            st = RD_ERROR;
            goto out;
        }
        if (size == 0)
            break;
        st = read_n(fd, body, (size_t)size, deadline);
        if (st != RD_OK)
            goto out;
        line.len = 0;
        st = read_n(fd, &line, 2, deadline);
        if (st != RD_OK)
            goto out;
        if (memcmp(line.data, "\r\n", 2) != 0) {
            st = RD_ERROR;
            goto out;
        }
    }
    /* trailer fields, up to the empty line */
    for (;;) {
        line.len = 0;
        st = read_until(fd, &line, 0, "\r\n", H_MAX_LINE, deadline);
        if (st != RD_OK || line.len == 2)
            break;
    }
out:
    free(line.data);
    return st;
}

/* After a self-delimited response that said "Connection: close": does the peer close? */
static int probe_closed(int fd)
{
    char c;
    ssize_t r;

    if (wait_fd(fd, POLLIN, now_ms() + H_CLOSE_PROBE_MS) != 1)
        return 0;
    r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

int harness_read_response(int fd, struct harness_resp *r, int is_head_request, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    struct buf head = {0}, body = {0};
    const char *v;
    size_t vlen;
    enum rd st;
    int rc = -1;

    memset(r, 0, sizeof(*r));
    if (buf_reserve(&head, 0) < 0 || buf_reserve(&body, 0) < 0)
        goto out;
    head.data[0] = body.data[0] = '\0';

    /* the head; interim 1xx responses (but 101) are skipped */
    for (;;) {
        head.len = 0;
        head.data[0] = '\0';
        st = read_until(fd, &head, 0, "\r\n\r\n", H_MAX_HEAD, deadline);
        r->status = strstr(head.data, "\r\n") ? parse_status(head.data) : 0;
        if (st != RD_OK) {
            r->closed = st == RD_EOF;
            goto out;
        }
        if (r->status == 0)
            goto out;
        if (r->status >= 200 || r->status == 101)
            break;
    }

    if (is_head_request || r->status == 204 || r->status == 304 || r->status == 101) {
        r->complete = 1;
    } else if (header_has_token(head.data, "Transfer-Encoding", "chunked")) {
        st = read_chunked(fd, &body, deadline);
        if (st == RD_TIMEOUT)
            goto out;
        r->closed = st == RD_EOF;
        r->complete = st == RD_OK;
    } else if (find_header(head.data, "Transfer-Encoding", 0, &v, &vlen) < 0 &&
               find_header(head.data, "Content-Length", 0, &v, &vlen) == 0) {
        unsigned long long n = 0;
        size_t i;

        if (vlen == 0)
            goto out;
        for (i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9' || n > H_MAX_BODY)
                goto out;
            n = n * 10 + (unsigned)(v[i] - '0');
        }
        if (n > H_MAX_BODY)
            goto out;
        st = read_n(fd, &body, (size_t)n, deadline);
        if (st == RD_TIMEOUT)
            goto out;
        r->closed = st == RD_EOF;
        r->complete = st == RD_OK;
    } else {
        st = read_to_eof(fd, &body, deadline);
        if (st == RD_TIMEOUT)
            goto out;
        r->closed = 1;
        r->complete = st == RD_EOF;
    }
    if (r->complete && !r->closed && header_has_token(head.data, "Connection", "close"))
        r->closed = probe_closed(fd);
    rc = 0;
out:
    r->head = head.data;
    r->body = body.data;
    r->body_len = body.len;
    return rc;
}

int harness_connect(uint16_t port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    /* Polling a port nothing listens on yet can join the socket to itself (the kernel
     * picked that very port as the source port): that is not a server. */
    struct sockaddr_in local;
    socklen_t len = sizeof(local);
    if (getsockname(fd, (struct sockaddr *)&local, &len) == 0 && local.sin_port == sa.sin_port) {
        close(fd);
        return -1;
    }
    return fd;
}

int harness_send(int fd, const void *buf, size_t len)
{
    long long deadline = now_ms() + H_SEND_TIMEOUT_MS;
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) != 1)
                return -1;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

int harness_request(uint16_t port, const char *raw, size_t raw_len, struct harness_resp *r,
                    int timeout_ms)
{
    int is_head = raw_len >= 5 && memcmp(raw, "HEAD ", 5) == 0;
    int fd, rc;

    memset(r, 0, sizeof(*r));
    fd = harness_connect(port);
    if (fd < 0)
        return -1;
    /* a failed send still leaves an early answer (say, 413) to read */
    harness_send(fd, raw, raw_len);
    rc = harness_read_response(fd, r, is_head, timeout_ms);
    close(fd);
    return rc;
}

const char *harness_header(const struct harness_resp *r, const char *name, int nth, char *buf,
                           size_t len)
{
    const char *v;
    size_t vlen;

    if (len == 0 || find_header(r->head, name, nth, &v, &vlen) < 0)
        return NULL;
    if (vlen >= len)
        vlen = len - 1;
    memcpy(buf, v, vlen);
    buf[vlen] = '\0';
    return buf;
}

int harness_wait_closed(int fd, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    char sink[4096];

    for (;;) {
        size_t n;

        switch (recv_some(fd, sink, sizeof(sink), 0, deadline, &n)) {
        case RD_OK:
            continue;
        case RD_EOF:
            return 1;
        case RD_TIMEOUT:
        case RD_ERROR:
            return 0;
        }
    }
}

void harness_resp_free(struct harness_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}
