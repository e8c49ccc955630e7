/*
 * wire — URL parsing, the incremental response parser, and the blocking GET.
 *
 * The parser is a byte-at-a-time state machine over lines (head, chunk sizes, trailers)
 * and counted runs (body, chunk data), so a response may arrive split anywhere, and
 * nothing it says is trusted before it has been checked (see wire.h for what is an error).
 */
#include "wire.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum wire_phase {
    P_STATUS = 0,
    P_HEADERS,
    P_BODY_LEN,
    P_CHUNK_SIZE,
    P_CHUNK_DATA,
    P_CHUNK_END,
    P_TRAILERS,
    P_BODY_CLOSE,
    P_DONE,
    P_ERROR
};

#define WIRE_MAX_LENGTH (1ULL << 60) /* larger Content-Length / chunk sizes are garbage */

uint64_t wire_fnv(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void wire_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- URLs ---- */

static int wire_host_char(int c)
{
    return isalnum(c) || c == '.' || c == '-' || c == '_';
}

int wire_url_parse(const char *s, const char *def_path, struct wire_url *u, char *err,
                   size_t errlen)
{
    const char *p, *h, *hend;
    unsigned long port = 80;
    int v6 = 0;

    memset(u, 0, sizeof(*u));
    if (strncasecmp(s, "http://", 7) != 0) {
        wire_errf(err, errlen, "'%s': expected http://HOST:PORT[/path]%s", s,
                  strncasecmp(s, "https://", 8) == 0 ? " (https is not supported)" : "");
        return -1;
    }
    p = s + 7;
    if (*p == '[') {
        h = ++p;
        while (*p != '\0' && *p != ']' && (isxdigit((unsigned char)*p) || *p == ':' || *p == '.'))
            p++;
        if (*p != ']' || p == h) {
            wire_errf(err, errlen, "'%s': bad IPv6 address", s);
            return -1;
        }
        hend = p++;
        v6 = 1;
    } else {
        h = p;
        while (wire_host_char((unsigned char)*p))
            p++;
        hend = p;
        if (hend == h) {
            wire_errf(err, errlen, "'%s': missing host", s);
            return -1;
        }
    }
    if ((size_t)(hend - h) >= sizeof(u->host)) {
        wire_errf(err, errlen, "'%s': host name too long", s);
        return -1;
    }
    memcpy(u->host, h, (size_t)(hend - h));
    if (*p == ':') {
        const char *d = ++p;

        port = 0;
        while (isdigit((unsigned char)*p) && port <= 65535)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == d || port == 0 || port > 65535 || isdigit((unsigned char)*p)) {
            wire_errf(err, errlen, "'%s': bad port", s);
            return -1;
        }
    }
    if (*p != '\0' && *p != '/') {
        wire_errf(err, errlen, "'%s': unexpected '%c' after the host (expected :PORT or /path)", s,
                  *p);
        return -1;
    }
    if (*p == '\0')
        p = def_path;
    for (const char *q = p; *q != '\0'; q++) {
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f || *q == '#') {
            wire_errf(err, errlen, "'%s': the path may not contain spaces, controls or '#'", s);
            return -1;
        }
    }
    if (strlen(p) >= sizeof(u->path)) {
        wire_errf(err, errlen, "'%s': path too long", s);
        return -1;
    }
    strcpy(u->path, p);
    u->port = (uint16_t)port;
    snprintf(u->hostport, sizeof(u->hostport), v6 ? "[%s]:%u" : "%s:%u", u->host, u->port);
    snprintf(u->text, sizeof(u->text), "http://%s%s", u->hostport, u->path);
    return 0;
}

/* ---- the response parser ---- */

void wire_resp_init(struct wire_resp *r, int head_request, wire_body_fn sink, void *sink_arg)
{
    memset(r, 0, offsetof(struct wire_resp, line));
    r->retry_after = -1;
    r->body_hash = WIRE_FNV_INIT;
    r->no_body = head_request;
    r->sink = sink;
    r->sink_arg = sink_arg;
    r->phase = P_STATUS;
}

static enum wire_state wire_fail(struct wire_resp *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum wire_state wire_fail(struct wire_resp *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
    r->phase = P_ERROR;
    return WIRE_ERROR;
}

static int wire_tchar(int c)
{
    return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Does the comma-separated list v contain token t (case-insensitive)? */
static int wire_list_has(const char *v, const char *t)
{
    size_t tl = strlen(t);

    while (*v != '\0') {
        const char *e;

        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        e = v;
        while (*e != '\0' && *e != ',')
            e++;
        {
            const char *end = e;

            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if ((size_t)(end - v) == tl && strncasecmp(v, t, tl) == 0)
                return 1;
        }
        v = e;
    }
    return 0;
}

static int wire_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (!isdigit((unsigned char)*s))
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

static enum wire_state wire_status_line(struct wire_resp *r, char *l)
{
    /* HTTP/1.x SP 3DIGIT [SP reason] */
    if (strncmp(l, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)l[7]) || l[8] != ' ')
        return wire_fail(r, "not an HTTP/1.x status line");
    if (!isdigit((unsigned char)l[9]) || !isdigit((unsigned char)l[10]) ||
        !isdigit((unsigned char)l[11]) || (l[12] != '\0' && l[12] != ' '))
        return wire_fail(r, "bad status code");
    r->minor = l[7] - '0';
    r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    if (r->status < 100)
        return wire_fail(r, "bad status code %d", r->status);
    if (r->status == 101)
        return wire_fail(r, "unexpected 101 Switching Protocols");
    for (const char *q = l + 12; *q != '\0'; q++)
        if ((unsigned char)*q < 0x20 && *q != '\t')
            return wire_fail(r, "control byte in the reason phrase");
    r->phase = P_HEADERS;
    return WIRE_MORE;
}

static enum wire_state wire_header_line(struct wire_resp *r, char *l, int trailer)
{
    char *colon = strchr(l, ':'), *v, *end;

    if (++r->nheaders > WIRE_HEADERS_MAX)
        return wire_fail(r, "more than %d header lines", WIRE_HEADERS_MAX);
    if (colon == NULL || colon == l)
        return wire_fail(r, "header line without a name and ':'");
    for (char *q = l; q < colon; q++)
        if (!wire_tchar((unsigned char)*q))
            return wire_fail(r, "bad byte in a header name");
    *colon = '\0';
    v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    end = v + strlen(v);
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    for (const char *q = v; *q != '\0'; q++)
        if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
            return wire_fail(r, "control byte in header %s", l);
    if (trailer)
        return WIRE_MORE; /* framing and semantics come from the head only */

    if (strcasecmp(l, "Content-Length") == 0) {
        uint64_t n;

        if (wire_parse_u64(v, WIRE_MAX_LENGTH, &n) < 0)
            return wire_fail(r, "bad Content-Length");
        if (r->have_length && n != r->length)
            return wire_fail(r, "conflicting Content-Length headers");
        r->have_length = 1;
        r->length = n;
    } else if (strcasecmp(l, "Transfer-Encoding") == 0) {
        if (strcasecmp(v, "chunked") != 0 || r->chunked)
            return wire_fail(r, "unsupported Transfer-Encoding '%.40s'", v);
        r->chunked = 1;
    } else if (strcasecmp(l, "Connection") == 0) {
        if (wire_list_has(v, "close"))
            r->conn_close = 1;
        if (wire_list_has(v, "keep-alive"))
            r->conn_keep = 1;
    } else if (strcasecmp(l, "Retry-After") == 0) {
        uint64_t n;

        r->retry_after = wire_parse_u64(v, 86400 * 365, &n) == 0 ? (long)n : -1;
    } else if (strcasecmp(l, "Idempotent-Replayed") == 0) {
        r->replayed = strcasecmp(v, "true") == 0;
    }
    return WIRE_MORE;
}

/* The empty line after the head: decide how the body is framed. */
static enum wire_state wire_head_done(struct wire_resp *r)
{
    if (r->status >= 100 && r->status < 200) {
        /* interim response: the real one follows */
        int no_body = r->no_body;
        wire_body_fn sink = r->sink;
        void *arg = r->sink_arg;
        size_t head_bytes = r->head_bytes;

        wire_resp_init(r, no_body, sink, arg);
        r->head_bytes = head_bytes;
        return WIRE_MORE;
    }
    if (r->chunked && r->have_length)
        return wire_fail(r, "both Content-Length and Transfer-Encoding");
    r->keep_alive = r->minor >= 1 ? !r->conn_close : (r->conn_keep && !r->conn_close);
    if (r->no_body || r->status == 204 || r->status == 304) {
        r->phase = P_DONE;
        return WIRE_DONE;
    }
    if (r->chunked) {
        r->phase = P_CHUNK_SIZE;
    } else if (r->have_length) {
        r->remaining = r->length;
        r->phase = P_BODY_LEN;
        if (r->remaining == 0) {
            r->phase = P_DONE;
            return WIRE_DONE;
        }
    } else {
        r->close_delimited = 1;
        r->keep_alive = 0;
        r->phase = P_BODY_CLOSE;
    }
    return WIRE_MORE;
}

static enum wire_state wire_chunk_size(struct wire_resp *r, const char *l)
{
    uint64_t n = 0;
    const char *q = l;

    if (!isxdigit((unsigned char)*q))
        return wire_fail(r, "bad chunk size");
    for (; isxdigit((unsigned char)*q); q++) {
        int d = isdigit((unsigned char)*q) ? *q - '0' : (tolower((unsigned char)*q) - 'a' + 10);

        n = n * 16 + (uint64_t)d;
        if (n > WIRE_MAX_LENGTH)
            return wire_fail(r, "chunk size too large");
    }
    while (*q == ' ' || *q == '\t')
        q++;
    if (*q != '\0' && *q != ';')
        return wire_fail(r, "bad chunk size");
    if (n == 0) {
        r->phase = P_TRAILERS;
    } else {
        r->remaining = n;
        r->phase = P_CHUNK_DATA;
    }
    return WIRE_MORE;
}

/* One complete line (CR LF or bare LF removed) in r->line. */
static enum wire_state wire_line(struct wire_resp *r)
{
    char *l = r->line;

    switch (r->phase) {
    case P_STATUS:
        return wire_status_line(r, l);
    case P_HEADERS:
        if (*l == '\0')
            return wire_head_done(r);
        if (*l == ' ' || *l == '\t')
            return wire_fail(r, "obsolete line folding");
        return wire_header_line(r, l, 0);
    case P_CHUNK_SIZE:
        return wire_chunk_size(r, l);
    case P_CHUNK_END:
        if (*l != '\0')
            return wire_fail(r, "chunk data longer than its size");
        r->phase = P_CHUNK_SIZE;
        return WIRE_MORE;
    case P_TRAILERS:
        if (*l == '\0') {
            r->phase = P_DONE;
            return WIRE_DONE;
        }
        return wire_header_line(r, l, 1);
    default:
        return wire_fail(r, "internal: line in phase %d", r->phase);
    }
}

static void wire_body(struct wire_resp *r, const char *data, size_t n)
{
    r->body_hash = wire_fnv(r->body_hash, data, n);
    r->body_len += n;
    if (r->sink != NULL)
        r->sink(r->sink_arg, data, n);
}

enum wire_state wire_resp_feed(struct wire_resp *r, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    enum wire_state st = WIRE_MORE;

    while (i < len && st == WIRE_MORE) {
        switch (r->phase) {
        case P_BODY_LEN:
        case P_CHUNK_DATA: {
            size_t n = len - i;

            if ((uint64_t)n > r->remaining)
                n = (size_t)r->remaining;
            wire_body(r, data + i, n);
            i += n;
            r->remaining -= n;
            if (r->remaining == 0) {
                if (r->phase == P_BODY_LEN) {
                    r->phase = P_DONE;
                    st = WIRE_DONE;
                } else {
                    r->phase = P_CHUNK_END;
                }
            }
            break;
        }
        case P_BODY_CLOSE:
            wire_body(r, data + i, len - i);
            i = len;
            break;
        case P_DONE:
            st = WIRE_DONE;
            break;
        case P_ERROR:
            st = WIRE_ERROR;
            break;
        default: {
            /* line phases: a line ends at LF; a CR right before it is dropped */
            char c = data[i++];
            int in_head = r->phase == P_STATUS || r->phase == P_HEADERS || r->phase == P_TRAILERS;

            if (in_head && ++r->head_bytes > WIRE_HEAD_MAX) {
                st = wire_fail(r, "head longer than %d bytes", WIRE_HEAD_MAX);
                break;
            }
            if (c == '\n') {
                if (r->line_len > 0 && r->line[r->line_len - 1] == '\r')
                    r->line_len--;
                r->line[r->line_len] = '\0';
                r->line_len = 0;
                st = wire_line(r);
                break;
            }
            if (c == '\0') {
                st = wire_fail(r, "NUL byte in the head");
                break;
            }
            if (r->line_len > 0 && r->line[r->line_len - 1] == '\r') {
                st = wire_fail(r, "bare CR in a line");
                break;
            }
            if (r->line_len + 1 >= sizeof(r->line)) {
                st = wire_fail(r, "line longer than %d bytes", WIRE_LINE_MAX);
                break;
            }
            r->line[r->line_len++] = c;
            break;
        }
        }
    }
    *used = i;
    return st;
}

enum wire_state wire_resp_eof(struct wire_resp *r)
{
    switch (r->phase) {
    case P_DONE:
        return WIRE_DONE;
    case P_BODY_CLOSE:
        r->phase = P_DONE;
        return WIRE_DONE;
    case P_ERROR:
        return WIRE_ERROR;
    case P_STATUS:
        if (r->line_len == 0 && r->head_bytes == 0)
            return wire_fail(r, "connection closed before any answer");
        return wire_fail(r, "connection closed inside the head");
    case P_HEADERS:
        return wire_fail(r, "connection closed inside the head");
    default:
        return wire_fail(r, "connection closed inside the body");
    }
}

/* ---- blocking GET ---- */

struct wire_sink_buf {
    char *data;
    size_t len, cap, max;
    int overflow;
};

static void wire_sink_append(void *arg, const char *data, size_t n)
{
    struct wire_sink_buf *b = arg;

    if (b->overflow)
        return;
    if (b->len + n + 1 > b->max) {
        b->overflow = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->data, cap);
        if (p == NULL) {
            b->overflow = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static uint64_t wire_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait for events on fd until deadline; returns 1 when ready, 0 on timeout, -1 on error. */
static int wire_wait(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = wire_now_ms();
        struct pollfd pfd = {.fd = fd, .events = events};
        int n;

        if (now >= deadline)
            return 0;
        n = poll(&pfd, 1, (int)(deadline - now > 60000 ? 60000 : deadline - now));
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static int wire_connect(const struct wire_url *u, uint64_t deadline, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    int fd = -1, rc, soerr = 0;
    socklen_t sl = sizeof(soerr);

    snprintf(port, sizeof(port), "%u", u->port);
    rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0) {
        wire_errf(err, errlen, "resolve %s: %s", u->host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        wire_errf(err, errlen, "socket: %s", strerror(errno));
        goto fail;
    }
    if (connect(fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) {
        wire_errf(err, errlen, "connect %s: %s", u->hostport, strerror(errno));
        goto fail;
    }
    rc = wire_wait(fd, POLLOUT, deadline);
    if (rc <= 0) {
        wire_errf(err, errlen, "connect %s: %s", u->hostport,
                  rc == 0 ? "timed out" : strerror(errno));
        goto fail;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
        wire_errf(err, errlen, "connect %s: %s", u->hostport, strerror(soerr ? soerr : errno));
        goto fail;
    }
    freeaddrinfo(res);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

int wire_get(const struct wire_url *u, uint64_t timeout_ms, size_t max_body, char **body,
             size_t *len, char *err, size_t errlen)
{
    uint64_t deadline = wire_now_ms() + timeout_ms;
    struct wire_sink_buf b = {.max = max_body};
    struct wire_resp *r = NULL;
    enum wire_state st = WIRE_MORE;
    char req[WIRE_PATH_MAX + WIRE_HOST_MAX + 128], buf[16384];
    size_t reqlen, off = 0;
    int fd;

    *body = NULL;
    *len = 0;
    fd = wire_connect(u, deadline, err, errlen);
    if (fd < 0)
        return -1;
    r = malloc(sizeof(*r));
    if (r == NULL) {
        wire_errf(err, errlen, "out of memory");
        goto fail;
    }
    wire_resp_init(r, 0, wire_sink_append, &b);
    reqlen = (size_t)snprintf(req, sizeof(req),
                              "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                              "User-Agent: retrystorm\r\nConnection: close\r\n\r\n",
                              u->path, u->hostport);
    while (off < reqlen) {
        ssize_t n = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);

        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wire_wait(fd, POLLOUT, deadline) <= 0) {
                wire_errf(err, errlen, "send to %s: timed out", u->hostport);
                goto fail;
            }
        } else {
            wire_errf(err, errlen, "send to %s: %s", u->hostport, strerror(errno));
            goto fail;
        }
    }
    while (st == WIRE_MORE) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        size_t used;

        if (n > 0) {
            st = wire_resp_feed(r, buf, (size_t)n, &used);
        } else if (n == 0) {
            st = wire_resp_eof(r);
        } else if (errno == EAGAIN || errno == EINTR) {
            int w = wire_wait(fd, POLLIN, deadline);

            if (w <= 0) {
                wire_errf(err, errlen, "%s: %s", u->text, w == 0 ? "timed out" : strerror(errno));
                goto fail;
            }
        } else {
            wire_errf(err, errlen, "%s: %s", u->text, strerror(errno));
            goto fail;
        }
    }
    if (st == WIRE_ERROR) {
        wire_errf(err, errlen, "%s: bad answer: %s", u->text, r->err);
        goto fail;
    }
    if (b.overflow) {
        wire_errf(err, errlen, "%s: body larger than %zu bytes", u->text, max_body);
        goto fail;
    }
    if (r->status < 200 || r->status > 299) {
        wire_errf(err, errlen, "%s: status %d", u->text, r->status);
        goto fail;
    }
    if (b.data == NULL) {
        b.data = calloc(1, 1);
        if (b.data == NULL) {
            wire_errf(err, errlen, "out of memory");
            goto fail;
        }
    }
    close(fd);
    free(r);
    *body = b.data;
    *len = b.len;
    return 0;
fail:
    close(fd);
    free(r);
    free(b.data);
    return -1;
}
