/*
 * netio — small socket helpers shared by the client and upstream sides.
 */
#ifndef IDEMPROXY_NET_NETIO_H
#define IDEMPROXY_NET_NETIO_H

struct bufferevent;
struct timeval;

/*
 * Write what bev's output holds right now, from the caller's stack, instead of waiting
 * for the loop to report writability. A bufferevent with EV_WRITE enabled costs two
 * epoll_ctl calls per answer (watch, unwatch); keeping EV_WRITE disabled and writing
 * directly costs none when the socket takes everything, which it nearly always does.
 * Returns 1 when the output is empty; 0 when bytes remain (or the write failed): then
 * EV_WRITE is enabled and the bufferevent finishes (or reports the error) itself, and
 * its write callback runs once the output is drained.
 */
int netio_flush(struct bufferevent *bev);

/*
 * The read side of a socket bufferevent, done by hand. libevent 2.1's bufferevent asks
 * the kernel how much is readable (ioctl FIONREAD) before every read: one syscall per
 * read that nginx does not pay. A reader is a persistent read event on the same fd that
 * reads into the bufferevent's input buffer directly and calls the usual callbacks:
 * readcb(bev, arg) when bytes arrived (or netio_reader_kick asked to look again),
 * eventcb(bev, BEV_EVENT_READING | EOF/ERROR/TIMEOUT, arg) otherwise. The bufferevent's
 * own EV_READ must stay disabled; it still does writes (netio_flush), connects and
 * write timeouts.
 *
 * The timeout given to netio_reader_start is an inactivity timeout; after it fires
 * the reader keeps reading (call netio_reader_stop to stop). Callbacks may free the
 * reader (and the bufferevent): the reader then dies when the callback returns.
 */
struct netio_reader;
typedef void (*netio_read_cb)(struct bufferevent *bev, void *arg);
typedef void (*netio_event_cb)(struct bufferevent *bev, short what, void *arg);

/* NULL on allocation failure. The reader does not own bev; free the reader first. */
struct netio_reader *netio_reader_new(struct bufferevent *bev, netio_read_cb readcb,
                                      netio_event_cb eventcb, void *arg);
/* Watch for input; timeout NULL = none. Calling it again only changes the timeout. */
void netio_reader_start(struct netio_reader *r, const struct timeval *timeout);
void netio_reader_stop(struct netio_reader *r);
/* Run readcb from the loop (soon) even if nothing new arrives: for input already read. */
void netio_reader_kick(struct netio_reader *r);
void netio_reader_free(struct netio_reader *r);

/* TCP_NODELAY on fd (errors ignored: a unix socket has no Nagle). */
void netio_nodelay(int fd);

#endif
