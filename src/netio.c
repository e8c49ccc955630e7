#include "netio.h"

#include <errno.h>
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
