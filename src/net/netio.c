/*
 * netio — a non-blocking stream connection over a transport (see netio.h).
 */
#include "net/netio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "net/tls.h"

#define NETIO_READ_CHUNK 16384 /* bytes asked for per read: one full TLS record */
#define NETIO_READS_MAX  4     /* reads per wake-up before others get a turn */

enum nc_setup { NC_OPEN, NC_CONNECTING, NC_HANDSHAKE };

struct netio_conn {
    int fd;
    struct tport *t;
    struct evbuffer *in, *out;
    struct event *rev;   /* EV_READ | EV_PERSIST: reads, and a TLS write that must read */
    struct event *wev;   /* EV_WRITE | EV_PERSIST: output left over, connect, TLS reads */
    struct event *tev;   /* setup (connect + handshake) deadline; NULL until used */
    struct event *defer; /* reports from the loop: write errors, netio_write_done_soon */
    netio_cb readcb, writecb;
    netio_event_cb eventcb;
    void *arg;
    enum nc_setup setup;
    struct timeval rto, wto;
    int has_rto, has_wto;
    int reading;          /* netio_read_start is in force */
    int wpending;         /* output is waiting for the socket: writecb once drained */
    int write_wants_read; /* TLS: a write waits for the socket to be readable */
    int read_wants_write; /* TLS: a read waits for the socket to be writable */
    short defer_what;     /* an event to report from the loop (0: none) */
    int defer_writecb;
    int in_cb; /* callbacks running: free later */
    int dead;  /* netio_conn_free was called from a callback */
    char err[256];
};

static void nc_destroy(struct netio_conn *nc)
{
    if (nc->rev)
        event_free(nc->rev);
    if (nc->wev)
        event_free(nc->wev);
    if (nc->tev)
        event_free(nc->tev);
    if (nc->defer)
        event_free(nc->defer);
    if (nc->in)
        evbuffer_free(nc->in);
    if (nc->out)
        evbuffer_free(nc->out);
    if (nc->t)
        tport_free(nc->t); /* TLS: close_notify, if the socket takes it */
    if (nc->fd >= 0)
        close(nc->fd);
    free(nc);
}

/* End of a callback run: 1 when the connection is gone (do not touch it). */
static int nc_leave(struct netio_conn *nc)
{
    if (--nc->in_cb == 0 && nc->dead) {
        nc_destroy(nc);
        return 1;
    }
    return nc->dead;
}

static void nc_set_err(struct netio_conn *nc, const char *why)
{
    snprintf(nc->err, sizeof(nc->err), "%s", why && why[0] ? why : "connection error");
}

/* Report what from the loop (after the caller's stack unwinds). */
static void nc_defer(struct netio_conn *nc, short what)
{
    if (!nc->defer_what)
        nc->defer_what = what;
    event_active(nc->defer, EV_TIMEOUT, 0);
}

/* Write what the output holds: 1 drained, 0 waiting for the socket, -1 failed (err). */
static int nc_write(struct netio_conn *nc)
{
    int r;

    if (evbuffer_get_length(nc->out) == 0)
        return 1;
    r = tport_flush(nc->t, nc->out);
    if (r > 0)
        return 1;
    if (r < 0) {
        nc_set_err(nc, nc->t->err);
        return -1;
    }
    if (nc->t->want == EV_READ) {
        /* TLS: the write needs the peer's bytes first; the read event flushes again */
        nc->write_wants_read = 1;
        event_del(nc->wev);
        event_add(nc->rev, nc->reading && nc->has_rto ? &nc->rto : nc->has_wto ? &nc->wto : NULL);
    } else {
        event_add(nc->wev, nc->has_wto ? &nc->wto : NULL);
    }
    return 0;
}

/* Read what the transport has into the input: >0 bytes, 0 nothing yet, -1 EOF, -2 error. */
static int nc_read_some(struct netio_conn *nc)
{
    int total = 0;

    for (int i = 0; i < NETIO_READS_MAX; i++) {
        struct evbuffer_iovec vec;
        ssize_t got;

        if (evbuffer_reserve_space(nc->in, NETIO_READ_CHUNK, &vec, 1) != 1)
            return total ? total : -2;
        got = tport_read(nc->t, vec.iov_base, vec.iov_len);
        if (got <= 0) {
            vec.iov_len = 0;
            evbuffer_commit_space(nc->in, &vec, 1);
            if (got == 0)
                return total ? total : -1;
            if (got == -1) {
                if (nc->t->want == EV_WRITE) { /* TLS: the read must write first */
                    nc->read_wants_write = 1;
                    event_add(nc->wev, nc->wpending && nc->has_wto ? &nc->wto : NULL);
                }
                return total;
            }
            nc_set_err(nc, nc->t->err);
            return total ? total : -2;
        }
        total += (int)got;
        vec.iov_len = (size_t)got;
        evbuffer_commit_space(nc->in, &vec, 1);
        if ((size_t)got < NETIO_READ_CHUNK && tport_pending(nc->t) == 0)
            break; /* a short read: the socket is drained for now */
    }
    return total;
}

/* Read and tell the owner. Called inside a callback run; returns 1 if nc died. */
static int nc_do_read(struct netio_conn *nc, int from_socket)
{
    int n = from_socket ? nc_read_some(nc) : 0;

    if (n > 0 || evbuffer_get_length(nc->in) > 0) {
        nc->readcb(nc, nc->arg);
        if (nc->dead)
            return 1;
    }
    if (n == -1 || n == -2) {
        nc->reading = 0; /* as a bufferevent does: no more reads after EOF or an error */
        if (!nc->write_wants_read)
            event_del(nc->rev);
        nc->eventcb(nc, NETIO_READING | (n == -1 ? NETIO_EOF : NETIO_ERROR), nc->arg);
        return nc->dead;
    }
    if (nc->reading && tport_pending(nc->t) > 0)
        event_active(nc->rev, EV_READ, 0); /* decrypted bytes wait: no fd event will say so */
    return 0;
}

/* Flush from the loop; writecb when drained. Returns 1 if nc died. */
static int nc_do_flush(struct netio_conn *nc)
{
    int r = nc_write(nc);

    if (r == 0)
        return 0;
    event_del(nc->wev);
    if (r < 0) {
        nc->wpending = 0;
        nc->eventcb(nc, NETIO_WRITING | NETIO_ERROR, nc->arg);
        return nc->dead;
    }
    if (nc->wpending) {
        nc->wpending = 0;
        if (nc->writecb) {
            nc->writecb(nc, nc->arg);
            return nc->dead;
        }
    }
    return 0;
}

/* Connect and handshake, one step per readiness (inside a callback run). */
static void nc_setup_step(struct netio_conn *nc)
{
    int r;

    if (nc->setup == NC_CONNECTING) {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(nc->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            soerr = errno;
        if (soerr == EINPROGRESS)
            return;
        if (soerr) {
            nc_set_err(nc, strerror(soerr));
            goto failed;
        }
        nc->setup = NC_HANDSHAKE;
    }
    r = tport_handshake(nc->t);
    if (r == 0) {
        event_add(nc->t->want == EV_READ ? nc->rev : nc->wev, NULL);
        event_del(nc->t->want == EV_READ ? nc->wev : nc->rev);
        return;
    }
    event_del(nc->rev);
    event_del(nc->wev);
    if (nc->tev)
        event_del(nc->tev);
    if (r < 0) {
        nc_set_err(nc, nc->t->err);
        goto failed_quiet;
    }
    nc->setup = NC_OPEN;
    if (nc->reading)
        event_add(nc->rev, nc->has_rto ? &nc->rto : NULL);
    nc->eventcb(nc, NETIO_CONNECTED, nc->arg);
    if (nc->dead)
        return;
    if (evbuffer_get_length(nc->out) > 0)
        netio_flush(nc);
    return;
failed:
    event_del(nc->rev);
    event_del(nc->wev);
    if (nc->tev)
        event_del(nc->tev);
failed_quiet:
    nc->eventcb(nc, NETIO_ERROR, nc->arg);
}

static void nc_read_ev(evutil_socket_t fd, short what, void *arg)
{
    struct netio_conn *nc = arg;

    (void)fd;
    nc->in_cb++;
    if (nc->setup != NC_OPEN) {
        nc_setup_step(nc);
        goto out;
    }
    if (what & EV_TIMEOUT) {
        if (nc->write_wants_read && !nc->reading) {
            nc->write_wants_read = 0;
            event_del(nc->rev);
            nc->wpending = 0;
            nc->eventcb(nc, NETIO_WRITING | NETIO_TIMEOUT, nc->arg);
        } else {
            nc->eventcb(nc, NETIO_READING | NETIO_TIMEOUT, nc->arg);
        }
        goto out;
    }
    if (nc->write_wants_read && (what & EV_READ)) {
        nc->write_wants_read = 0;
        if (!nc->reading)
            event_del(nc->rev);
        if (nc_do_flush(nc))
            goto out;
    }
    if (nc->reading || !(what & EV_READ))
        nc_do_read(nc, (what & EV_READ) && nc->reading);
out:
    nc_leave(nc);
}

static void nc_write_ev(evutil_socket_t fd, short what, void *arg)
{
    struct netio_conn *nc = arg;

    (void)fd;
    nc->in_cb++;
    if (nc->setup != NC_OPEN) {
        nc_setup_step(nc);
        goto out;
    }
    if (what & EV_TIMEOUT) {
        event_del(nc->wev);
        nc->wpending = 0;
        nc->eventcb(nc, NETIO_WRITING | NETIO_TIMEOUT, nc->arg);
        goto out;
    }
    if (nc->read_wants_write) {
        nc->read_wants_write = 0;
        if (!nc->wpending)
            event_del(nc->wev);
        if (nc_do_read(nc, 1))
            goto out;
    }
    if (nc->wpending && !nc->write_wants_read)
        nc_do_flush(nc);
out:
    nc_leave(nc);
}

static void nc_timer_ev(evutil_socket_t fd, short what, void *arg)
{
    struct netio_conn *nc = arg;

    (void)fd;
    (void)what;
    nc->in_cb++;
    if (nc->setup != NC_OPEN) {
        event_del(nc->rev);
        event_del(nc->wev);
        snprintf(nc->err, sizeof(nc->err), "%s timed out",
                 nc->setup == NC_CONNECTING ? "connect" : "TLS handshake");
        nc->eventcb(nc, NETIO_TIMEOUT, nc->arg);
    }
    nc_leave(nc);
}

static void nc_defer_ev(evutil_socket_t fd, short what, void *arg)
{
    struct netio_conn *nc = arg;
    short ev = nc->defer_what;

    (void)fd;
    (void)what;
    nc->in_cb++;
    nc->defer_what = 0;
    if (ev) {
        nc->defer_writecb = 0;
        nc->eventcb(nc, ev, nc->arg);
        goto out;
    }
    if (nc->defer_writecb) {
        nc->defer_writecb = 0;
        if (nc->writecb)
            nc->writecb(nc, nc->arg);
    }
out:
    nc_leave(nc);
}

struct netio_conn *netio_conn_new(struct event_base *base, int fd, struct tport *t, netio_cb readcb,
                                  netio_cb writecb, netio_event_cb eventcb, void *arg)
{
    struct netio_conn *nc = calloc(1, sizeof(*nc));

    if (!nc) {
        if (t)
            tport_free(t);
        close(fd);
        return NULL;
    }
    nc->fd = fd;
    nc->t = t ? t : tport_plain(fd);
    nc->readcb = readcb;
    nc->writecb = writecb;
    nc->eventcb = eventcb;
    nc->arg = arg;
    nc->in = evbuffer_new();
    nc->out = evbuffer_new();
    nc->rev = event_new(base, fd, EV_READ | EV_PERSIST, nc_read_ev, nc);
    nc->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, nc_write_ev, nc);
    nc->defer = event_new(base, -1, 0, nc_defer_ev, nc);
    if (!nc->t || !nc->in || !nc->out || !nc->rev || !nc->wev || !nc->defer) {
        nc_destroy(nc);
        return NULL;
    }
    return nc;
}

int netio_socket(const struct sockaddr *sa)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd >= 0 && sa->sa_family != AF_UNIX)
        netio_nodelay(fd);
    return fd;
}

static void nc_start_setup(struct netio_conn *nc, enum nc_setup setup, const struct timeval *tv)
{
    nc->setup = setup;
    if (tv) {
        if (!nc->tev)
            nc->tev = evtimer_new(event_get_base(nc->rev), nc_timer_ev, nc);
        if (nc->tev)
            evtimer_add(nc->tev, tv);
    }
}

int netio_connect(struct netio_conn *nc, const struct sockaddr *sa, socklen_t salen,
                  const struct timeval *timeout)
{
    int rc;

    do
        rc = connect(nc->fd, sa, salen);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
        nc_set_err(nc, strerror(errno));
        return -1;
    }
    nc_start_setup(nc, NC_CONNECTING, timeout);
    event_add(nc->wev, NULL); /* writable: connected (or failed: SO_ERROR says) */
    return 0;
}

void netio_handshake(struct netio_conn *nc, const struct timeval *timeout)
{
    nc_start_setup(nc, NC_HANDSHAKE, timeout);
    event_active(nc->rev, EV_READ, 0); /* the first step from the loop */
}

struct evbuffer *netio_input(struct netio_conn *nc)
{
    return nc->in;
}

struct evbuffer *netio_output(struct netio_conn *nc)
{
    return nc->out;
}

int netio_fd(const struct netio_conn *nc)
{
    return nc->fd;
}

struct tport *netio_tport(struct netio_conn *nc)
{
    return nc->t;
}

const char *netio_error(const struct netio_conn *nc)
{
    return nc->err[0] ? nc->err : "connection error";
}

void netio_read_start(struct netio_conn *nc, const struct timeval *timeout)
{
    if (nc->dead)
        return;
    nc->reading = 1;
    nc->has_rto = timeout != NULL;
    if (timeout)
        nc->rto = *timeout;
    if (nc->setup == NC_OPEN)
        event_add(nc->rev, timeout);
}

void netio_read_stop(struct netio_conn *nc)
{
    nc->reading = 0;
    if (nc->setup == NC_OPEN && !nc->write_wants_read)
        event_del(nc->rev);
}

void netio_read_kick(struct netio_conn *nc)
{
    if (!nc->dead && nc->setup == NC_OPEN)
        event_active(nc->rev, 0, 0);
}

int netio_flush(struct netio_conn *nc)
{
    int r;

    if (nc->dead)
        return 0;
    if (nc->setup != NC_OPEN)
        return evbuffer_get_length(nc->out) == 0; /* sent once set up */
    if (nc->wpending || nc->defer_what)
        return 0; /* already waiting for the socket (or failed) */
    r = nc_write(nc);
    if (r > 0)
        return 1;
    if (r < 0) {
        nc_defer(nc, NETIO_WRITING | NETIO_ERROR);
        return 0;
    }
    nc->wpending = 1;
    return 0;
}

void netio_set_write_timeout(struct netio_conn *nc, const struct timeval *timeout)
{
    nc->has_wto = timeout != NULL;
    if (timeout)
        nc->wto = *timeout;
    if (nc->setup == NC_OPEN && nc->wpending && !nc->write_wants_read)
        event_add(nc->wev, timeout);
}

void netio_write_done_soon(struct netio_conn *nc)
{
    if (nc->dead)
        return;
    nc->defer_writecb = 1;
    event_active(nc->defer, EV_TIMEOUT, 0);
}

void netio_shutdown_write(struct netio_conn *nc)
{
    tport_shutdown(nc->t);
    shutdown(nc->fd, SHUT_WR);
}

void netio_conn_free(struct netio_conn *nc)
{
    if (!nc)
        return;
    /* nothing more is reported, even from a callback running now */
    event_del(nc->rev);
    event_del(nc->wev);
    event_del(nc->defer);
    if (nc->tev)
        event_del(nc->tev);
    if (nc->in_cb) {
        nc->dead = 1;
        return;
    }
    nc_destroy(nc);
}

void netio_nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
