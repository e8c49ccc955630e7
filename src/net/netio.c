#include "net/netio.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

int netio_flush(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    int fd = bufferevent_getfd(bev);

    /* A socket bufferevent keeps the front of its output frozen so that only it drains
     * it; its own write callback thaws it around the write, and so do we. */
    evbuffer_unfreeze(out, 1);
    while (evbuffer_get_length(out) > 0) {
        if (evbuffer_write(out, fd) <= 0)
            break; /* EAGAIN, or an error the bufferevent will report */
    }
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) == 0)
        return 1;
    bufferevent_enable(bev, EV_WRITE);
    return 0;
}

void netio_nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

#define NETIO_READ_CHUNK 16384 /* bytes asked for per read */
#define NETIO_READS_MAX  4     /* reads per wake-up before others get a turn */

struct netio_reader {
    struct bufferevent *bev;
    struct event *ev;
    netio_read_cb readcb;
    netio_event_cb eventcb;
    void *arg;
    int in_cb; /* a callback is running: free later */
    int dead;  /* netio_reader_free was called from a callback */
};

/* Read what the socket has into the input buffer: >0 bytes, 0 nothing (EAGAIN), -1 EOF,
 * -2 error. */
static int netio_read_some(struct netio_reader *r)
{
    struct evbuffer *in = bufferevent_get_input(r->bev);
    int fd = bufferevent_getfd(r->bev), total = 0;

    /* the bufferevent freezes its input's end so that only it adds to it; we are it now */
    evbuffer_unfreeze(in, 0);
    for (int i = 0; i < NETIO_READS_MAX; i++) {
        struct evbuffer_iovec vec[2];
        struct iovec iov[2];
        int n = evbuffer_reserve_space(in, NETIO_READ_CHUNK, vec, 2);
        ssize_t got;

        if (n <= 0)
            break;
        for (int k = 0; k < n; k++) {
            iov[k].iov_base = vec[k].iov_base;
            iov[k].iov_len = vec[k].iov_len;
        }
        do
            got = readv(fd, iov, n);
        while (got < 0 && errno == EINTR);
        if (got <= 0) {
            evbuffer_commit_space(in, vec, 0);
            evbuffer_freeze(in, 0);
            if (got == 0)
                return total ? total : -1;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return total;
            return total ? total : -2;
        }
        total += (int)got;
        for (int k = 0; k < n; k++) {
            size_t used = (size_t)got < vec[k].iov_len ? (size_t)got : vec[k].iov_len;
            vec[k].iov_len = used;
            got -= (ssize_t)used;
        }
        evbuffer_commit_space(in, vec, n);
        if (vec[n - 1].iov_len < (size_t)(iov[n - 1].iov_len))
            break; /* a short read: the socket is drained for now */
    }
    evbuffer_freeze(in, 0);
    return total;
}

static void netio_reader_cb(evutil_socket_t fd, short what, void *arg)
{
    struct netio_reader *r = arg;
    int n = 0;

    r->in_cb++;
    if (what & EV_TIMEOUT) {
        r->eventcb(r->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, r->arg);
        goto out;
    }
    if (what & EV_READ)
        n = netio_read_some(r);
    if (n > 0 || evbuffer_get_length(bufferevent_get_input(r->bev)) > 0) {
        r->readcb(r->bev, r->arg);
        if (r->dead)
            goto out;
    }
    if (n == -1) {
        r->eventcb(r->bev, BEV_EVENT_READING | BEV_EVENT_EOF, r->arg);
    } else if (n == -2) {
        r->eventcb(r->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, r->arg);
    }
out:
    if (--r->in_cb == 0 && r->dead) {
        event_free(r->ev);
        free(r);
    }
}

struct netio_reader *netio_reader_new(struct bufferevent *bev, netio_read_cb readcb,
                                      netio_event_cb eventcb, void *arg)
{
    struct netio_reader *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->bev = bev;
    r->readcb = readcb;
    r->eventcb = eventcb;
    r->arg = arg;
    r->ev = event_new(bufferevent_get_base(bev), bufferevent_getfd(bev), EV_READ | EV_PERSIST,
                      netio_reader_cb, r);
    if (!r->ev) {
        free(r);
        return NULL;
    }
    return r;
}

void netio_reader_start(struct netio_reader *r, const struct timeval *timeout)
{
    if (!r->dead)
        event_add(r->ev, timeout);
}

void netio_reader_stop(struct netio_reader *r)
{
    event_del(r->ev);
}

void netio_reader_kick(struct netio_reader *r)
{
    if (!r->dead)
        event_active(r->ev, 0, 0);
}

void netio_reader_free(struct netio_reader *r)
{
    if (!r)
        return;
    event_del(r->ev); /* before the bufferevent closes the fd */
    if (r->in_cb) {
        r->dead = 1;
        return;
    }
    event_free(r->ev);
    free(r);
}
