#include "redis/rconn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/hiredis.h>

#include "net/netio.h"
#include "net/tls.h"

#define RCONN_READ_CHUNK 16384

struct rconn {
    struct event_base *base;
    const struct rconn_cbs *cbs;
    void *arg;
    int fd;
    const struct tls_client *tls;  /* NULL: plain */
    struct tls_session_slot *slot; /* TLS: where the node's session is kept (or NULL) */
    struct tport *t;               /* made once the TCP connection is up */
    int handshaking;               /* TLS: the handshake is running */
    int flush_on_read;             /* TLS: a write waits for the socket to be readable */
    int read_on_write;             /* TLS: a read waits for the socket to be writable */
    int connected;
    int in_cb;  /* a callback is running: rconn_free only marks */
    int dead;   /* rconn_free was called from a callback */
    int closed; /* on_close was called: nothing more is delivered */
    struct event *rev, *wev;
    struct event *flush_ev; /* the end-of-pass write */
    struct evbuffer *out;
    redisReader *reader;
    /* a host name being looked up (evdns): the connect starts from resolved_ev */
    struct evdns_getaddrinfo_request *dns_req;
    struct event *resolved_ev;
    struct evutil_addrinfo *res; /* its answer, until resolved_ev runs */
    int dns_err;
    char host[CONF_HOST_MAX];
    uint16_t port;
};

static void rconn_destroy(struct rconn *rc)
{
    if (rc->dns_req) /* its callback sees EVUTIL_EAI_CANCEL and touches nothing */
        evdns_getaddrinfo_cancel(rc->dns_req);
    if (rc->res)
        evutil_freeaddrinfo(rc->res);
    if (rc->resolved_ev)
        event_free(rc->resolved_ev);
    if (rc->rev)
        event_free(rc->rev);
    if (rc->wev)
        event_free(rc->wev);
    if (rc->flush_ev)
        event_free(rc->flush_ev);
    if (rc->out)
        evbuffer_free(rc->out);
    if (rc->reader)
        redisReaderFree(rc->reader);
    if (rc->t)
        tport_free(rc->t);
    if (rc->fd >= 0)
        close(rc->fd);
    free(rc);
}

/* Report the loss once; the owner frees rc (now, from the callback, or later). */
static void rconn_fail(struct rconn *rc, const char *why)
{
    if (rc->closed)
        return;
    rc->closed = 1;
    if (rc->rev)
        event_del(rc->rev);
    if (rc->wev)
        event_del(rc->wev);
    event_del(rc->flush_ev);
    rc->in_cb++;
    rc->cbs->on_close(why, rc->arg);
    rc->in_cb--;
}

/* At the end of an event callback: free rc if a callback asked for it meanwhile. */
static void rconn_gone(struct rconn *rc)
{
    if (rc->in_cb == 0 && rc->dead)
        rconn_destroy(rc);
}

static void rconn_flush(struct rconn *rc)
{
    char why[300];
    int r = tport_flush(rc->t, rc->out);

    rc->flush_on_read = 0;
    if (r < 0) {
        snprintf(why, sizeof(why), "write: %s", rc->t->err);
        rconn_fail(rc, why);
        return;
    }
    if (r == 0 && rc->t->want == EV_READ) {
        rc->flush_on_read = 1; /* TLS: the read event (always watched) flushes again */
        event_del(rc->wev);
    } else if (r == 0) {
        event_add(rc->wev, NULL);
    } else if (!rc->read_on_write) {
        event_del(rc->wev);
    }
}

/* The local and the peer address are the same (a TCP self-connection). */
static int rconn_self_connected(int fd)
{
    struct sockaddr_storage a, b;
    socklen_t alen = sizeof(a), blen = sizeof(b);

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0 ||
        getpeername(fd, (struct sockaddr *)&b, &blen) < 0 || a.ss_family == AF_UNIX)
        return 0;
    return alen == blen && memcmp(&a, &b, alen) == 0;
}

/* The transport is up (TLS: the handshake is done): tell the owner, send what waits. */
static void rconn_ready(struct rconn *rc)
{
    rc->connected = 1;
    event_add(rc->rev, NULL);
    rc->in_cb++;
    rc->cbs->on_connect(rc->arg);
    rc->in_cb--;
    if (rc->dead || rc->closed)
        return;
    rconn_flush(rc);
}

static void rconn_handshake(struct rconn *rc)
{
    char why[300];
    int r = tport_handshake(rc->t);

    if (r < 0) {
        snprintf(why, sizeof(why), "%s", rc->t->err);
        rconn_fail(rc, why);
        return;
    }
    if (r == 0) { /* wait for what it needs; the other event stays quiet */
        event_add(rc->t->want == EV_READ ? rc->rev : rc->wev, NULL);
        event_del(rc->t->want == EV_READ ? rc->wev : rc->rev);
        return;
    }
    rc->handshaking = 0;
    event_del(rc->wev);
    rconn_ready(rc);
}

static void rconn_connected_now(struct rconn *rc)
{
    int err = 0;
    socklen_t len = sizeof(err);
    char why[300];

    if (getsockopt(rc->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        snprintf(why, sizeof(why), "connect: %s", strerror(err));
        rconn_fail(rc, why);
        return;
    }
    if (rconn_self_connected(rc->fd)) {
        /* nothing listened, and the kernel picked the target port as our source port:
         * TCP simultaneous open joined the socket to itself; our commands would come
         * back to us as "replies" */
        rconn_fail(rc, "connect: connected to itself (nothing listens on that port)");
        return;
    }
    rc->t = rc->tls ? tport_tls_client(rc->tls, rc->fd, rc->host, rc->slot, why, sizeof(why))
                    : tport_plain(rc->fd);
    if (!rc->t) {
        rconn_fail(rc, rc->tls ? why : "out of memory");
        return;
    }
    if (rc->tls) {
        rc->handshaking = 1;
        rconn_handshake(rc);
        return;
    }
    rconn_ready(rc);
}

static void rconn_read(struct rconn *rc);

static void rconn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;

    if (rc->handshaking)
        rconn_handshake(rc);
    else if (!rc->connected)
        rconn_connected_now(rc);
    else
        rconn_flush(rc);
    if (rc->read_on_write && !rc->closed && !rc->dead) {
        rc->read_on_write = 0;
        rconn_read(rc); /* (it ends with rconn_gone) */
        return;
    }
    rconn_gone(rc);
}

static void rconn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;

    if (rc->connected && !rc->closed)
        rconn_flush(rc);
    rconn_gone(rc);
}

static void rconn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;

    if (rc->handshaking) {
        rconn_handshake(rc);
        rconn_gone(rc);
        return;
    }
    if (rc->flush_on_read) {
        rconn_flush(rc);
        if (rc->closed) {
            rconn_gone(rc);
            return;
        }
    }
    rconn_read(rc);
}

void rconn_read_ready(struct rconn *rc)
{
    if (rc && rc->connected && !rc->closed && !rc->dead)
        rconn_read(rc);
}

/* Read what is there (TLS: until nothing decrypted is left buffered — the socket would
 * not say so) and deliver every whole reply it completes. Frees rc at the end if a
 * callback asked for it (unless an outer callback of rc is still running). */
static void rconn_read(struct rconn *rc)
{
    char buf[RCONN_READ_CHUNK], why[300];
    ssize_t n;
    void *reply;

    do {
        n = tport_read(rc->t, buf, sizeof(buf));
        if (n == -1) {
            if (rc->t->want == EV_WRITE) { /* TLS: a read that must write first */
                rc->read_on_write = 1;
                event_add(rc->wev, NULL);
            }
            break;
        }
        if (n == 0) {
            rconn_fail(rc, "closed by the server");
            break;
        }
        if (n < 0) {
            snprintf(why, sizeof(why), "read: %s", rc->t->err);
            rconn_fail(rc, why);
            break;
        }
        if (redisReaderFeed(rc->reader, buf, (size_t)n) != REDIS_OK) {
            rconn_fail(rc, "protocol error");
            break;
        }
        for (;;) {
            reply = NULL;
            if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
                snprintf(why, sizeof(why), "protocol error: %s", rc->reader->errstr);
                rconn_fail(rc, why);
                break;
            }
            if (!reply)
                break;
            rc->in_cb++;
            if (!rc->cbs->on_reply(reply, rc->arg))
                freeReplyObject(reply);
            rc->in_cb--;
            if (rc->dead || rc->closed)
                break;
        }
    } while (!rc->dead && !rc->closed && tport_pending(rc->t) > 0);
    rconn_gone(rc);
}

static int rconn_socket(struct rconn *rc, int family, const struct sockaddr *sa, socklen_t salen)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (family != AF_UNIX)
        netio_nodelay(fd);
    rc->fd = fd;
    return 0;
}

/* Connect to the first address of res that takes a socket. 0, or -1 with errno set. */
static int rconn_connect_any(struct rconn *rc, const struct evutil_addrinfo *res)
{
    errno = EADDRNOTAVAIL;
    for (const struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next)
        if (rconn_socket(rc, ai->ai_family, ai->ai_addr, (socklen_t)ai->ai_addrlen) == 0)
            return 0;
    return -1;
}

/* The socket is connecting: watch it. 0, or -1 (out of memory). */
static int rconn_watch(struct rconn *rc)
{
    rc->rev = event_new(rc->base, rc->fd, EV_READ | EV_PERSIST, rconn_read_cb, rc);
    rc->wev = event_new(rc->base, rc->fd, EV_WRITE | EV_PERSIST, rconn_write_cb, rc);
    if (!rc->rev || !rc->wev)
        return -1;
    event_add(rc->wev, NULL); /* writable: the non-blocking connect finished */
    return 0;
}

/* evdns answered (maybe inside evdns_getaddrinfo itself): go on from the loop. */
static void rconn_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct rconn *rc = arg;

    if (result == EVUTIL_EAI_CANCEL)
        return; /* rc is being freed */
    rc->dns_req = NULL;
    rc->dns_err = result;
    rc->res = res;
    event_active(rc->resolved_ev, EV_TIMEOUT, 0);
}

static void rconn_resolved_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *rc = arg;
    char why[CONF_HOST_MAX + 128];

    if (rc->closed || rc->dead)
        return;
    if (rc->dns_err) {
        snprintf(why, sizeof(why), "%s: %s", rc->host, evutil_gai_strerror(rc->dns_err));
        rconn_fail(rc, why);
    } else if (rconn_connect_any(rc, rc->res) < 0) {
        snprintf(why, sizeof(why), "connect %s:%u: %s", rc->host, (unsigned)rc->port,
                 strerror(errno));
        rconn_fail(rc, why);
    } else if (rconn_watch(rc) < 0) {
        rconn_fail(rc, "out of memory");
    }
    if (rc->res) {
        evutil_freeaddrinfo(rc->res);
        rc->res = NULL;
    }
    rconn_gone(rc);
}

/* An IPv4 or IPv6 literal (no lookup needed). */
static int rconn_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static int rconn_open(struct rconn *rc, struct evdns_base *dns, const struct conf_addr *a,
                      char *errstr, size_t errlen)
{
    struct evutil_addrinfo hints, *res = NULL;
    char port[8];
    int rv;

    if (a->unix_path[0]) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", a->unix_path);
        if (rconn_socket(rc, AF_UNIX, (struct sockaddr *)&sun, sizeof(sun)) == 0)
            return rconn_watch(rc);
        snprintf(errstr, errlen, "connect unix:%s: %s", a->unix_path, strerror(errno));
        return -1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", (unsigned)a->port);
    snprintf(rc->host, sizeof(rc->host), "%s", a->host); /* also TLS's name to check */
    rc->port = a->port;
    if (dns && !rconn_numeric(a->host)) {
        /* a name: looked up by evdns (resolv.conf, hosts file), never blocking the loop */
        if (!(rc->resolved_ev = event_new(rc->base, -1, 0, rconn_resolved_cb, rc))) {
            snprintf(errstr, errlen, "out of memory");
            return -1;
        }
        hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
        rc->dns_req = evdns_getaddrinfo(dns, a->host, port, &hints, rconn_dns_cb, rc);
        return 0; /* rconn_dns_cb may have run already: resolved_ev goes on */
    }
    hints.ai_flags = EVUTIL_AI_NUMERICHOST * (dns != NULL);
    if ((rv = evutil_getaddrinfo(a->host, port, &hints, &res)) != 0) {
        snprintf(errstr, errlen, "%s: %s", a->host, evutil_gai_strerror(rv));
        return -1;
    }
    rv = rconn_connect_any(rc, res);
    evutil_freeaddrinfo(res);
    if (rv < 0) {
        snprintf(errstr, errlen, "connect %s:%u: %s", a->host, (unsigned)a->port, strerror(errno));
        return -1;
    }
    return rconn_watch(rc);
}

int rconn_tls_reused(const struct rconn *rc)
{
    return rc->tls && rc->t && tport_tls_reused(rc->t);
}

int rconn_tls(const struct rconn *rc)
{
    return rc->tls != NULL;
}

struct rconn *rconn_new(struct event_base *base, struct evdns_base *dns,
                        const struct tls_client *tls, struct tls_session_slot *slot,
                        const struct conf_addr *addr, const struct rconn_cbs *cbs, void *arg,
                        char *errstr, size_t errlen)
{
    struct rconn *rc = calloc(1, sizeof(*rc));

    if (!rc) {
        snprintf(errstr, errlen, "out of memory");
        return NULL;
    }
    rc->fd = -1;
    rc->tls = addr->unix_path[0] ? NULL : tls;
    rc->slot = slot;
    rc->base = base;
    rc->cbs = cbs;
    rc->arg = arg;
    if (!(rc->out = evbuffer_new()) || !(rc->reader = redisReaderCreate()) ||
        !(rc->flush_ev = event_new(base, -1, 0, rconn_flush_cb, rc))) {
        snprintf(errstr, errlen, "out of memory");
        goto err;
    }
    if (rconn_open(rc, dns, addr, errstr, errlen) < 0)
        goto err;
    return rc;
err:
    rconn_destroy(rc);
    return NULL;
}

int rconn_write(struct rconn *rc, const void *bytes, size_t len)
{
    if (rc->closed || rc->dead || evbuffer_add(rc->out, bytes, len) < 0)
        return -1;
    if (rc->connected && !event_pending(rc->wev, EV_WRITE, NULL))
        event_active(rc->flush_ev, EV_WRITE, 0);
    return 0;
}

void rconn_free(struct rconn *rc)
{
    if (!rc)
        return;
    if (rc->in_cb) {
        rc->dead = 1;
        if (rc->rev)
            event_del(rc->rev);
        if (rc->wev)
            event_del(rc->wev);
        event_del(rc->flush_ev);
        return;
    }
    rconn_destroy(rc);
}

int rconn_connected(const struct rconn *rc)
{
    return rc && rc->connected;
}
