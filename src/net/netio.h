/*
 * netio — a non-blocking stream connection over a transport (net/tls.h: plain or TLS),
 * shared by the client side and the upstream side.
 *
 * A netio_conn owns a socket, its transport, an input and an output buffer, a read event
 * and a write event. It replaces libevent's socket bufferevent, whose costs we measured
 * (an ioctl FIONREAD before every read, two epoll_ctl calls per answer) and which cannot
 * carry TLS the way nginx and Redis do (SSL_set_fd, WANT_READ / WANT_WRITE, SSL_pending).
 *
 * Reads: netio_read_start watches the socket; every time bytes arrive they are read (at
 * most NETIO_READS_MAX reads of 16 KiB per wake-up, decrypted bytes buffered by TLS
 * included) into the input buffer and readcb runs. The timeout given is an inactivity
 * timeout: eventcb(NETIO_READING | NETIO_TIMEOUT) runs when it passes without input, and
 * the connection keeps reading (call netio_read_stop to stop).
 *
 * Writes: append to netio_output, then netio_flush writes from the caller's stack. When
 * the socket takes everything (nearly always) it returns 1 and no event is touched; when
 * bytes remain it arms the write event with the write timeout and returns 0; writecb runs
 * once the output is drained. A write error is reported from the loop, never from the
 * caller's stack: eventcb(NETIO_WRITING | NETIO_ERROR).
 *
 * Setup: netio_connect (a new socket to an address, then the transport's handshake) or
 * netio_handshake (an accepted socket with a server-side TLS transport) end with
 * eventcb(NETIO_CONNECTED), or NETIO_ERROR / NETIO_TIMEOUT within the timeout given,
 * which bounds connect and handshake together. A plain accepted connection needs neither.
 *
 * Callbacks may call netio_conn_free on their connection: it then dies when the callback
 * returns. Never from another thread: a connection belongs to its event base's thread.
 */
#ifndef IDEMPROXY_NET_NETIO_H
#define IDEMPROXY_NET_NETIO_H

#include <sys/socket.h>

struct event_base;
struct evbuffer;
struct timeval;
struct tport;
struct netio_conn;

/* what eventcb reports (a direction | a cause) */
#define NETIO_READING   0x01
#define NETIO_WRITING   0x02
#define NETIO_EOF       0x10
#define NETIO_ERROR     0x20
#define NETIO_TIMEOUT   0x40
#define NETIO_CONNECTED 0x80

typedef void (*netio_cb)(struct netio_conn *nc, void *arg);
typedef void (*netio_event_cb)(struct netio_conn *nc, short what, void *arg);

/*
 * A connection on fd (non-blocking, connected or accepted) over transport t (NULL:
 * plain). It owns both: netio_conn_free frees t and closes fd, and so does a failure
 * here (NULL). writecb may be NULL.
 */
struct netio_conn *netio_conn_new(struct event_base *base, int fd, struct tport *t, netio_cb readcb,
                                  netio_cb writecb, netio_event_cb eventcb, void *arg);
/*
 * A new non-blocking socket of sa's family: for netio_conn_new then netio_connect.
 * -1 with errno set.
 */
int netio_socket(const struct sockaddr *sa);
/* Connect fd (the connection's) to sa, then run the transport's handshake; -1 when the
 * connect failed at once (errno set; nothing will be reported). */
int netio_connect(struct netio_conn *nc, const struct sockaddr *sa, socklen_t salen,
                  const struct timeval *timeout);
/* Run the transport's (server-side) handshake on an accepted connection. */
void netio_handshake(struct netio_conn *nc, const struct timeval *timeout);

struct evbuffer *netio_input(struct netio_conn *nc);
struct evbuffer *netio_output(struct netio_conn *nc);
int netio_fd(const struct netio_conn *nc);
struct tport *netio_tport(struct netio_conn *nc);
/* Why the last NETIO_ERROR happened (a socket error or the transport's words). */
const char *netio_error(const struct netio_conn *nc);

/* Watch for input; timeout NULL = none. Calling it again only changes the timeout. */
void netio_read_start(struct netio_conn *nc, const struct timeval *timeout);
void netio_read_stop(struct netio_conn *nc);
/* Run readcb from the loop (soon) even if nothing new arrives: for input already read. */
void netio_read_kick(struct netio_conn *nc);

/* 1: the output is empty; 0: bytes remain (writecb follows, or an error). */
int netio_flush(struct netio_conn *nc);
/* Bounds how long output may wait for the socket (NULL: no bound). */
void netio_set_write_timeout(struct netio_conn *nc, const struct timeval *timeout);
/* Run writecb from the loop (soon), as if the output had just drained. */
void netio_write_done_soon(struct netio_conn *nc);
/* Say we will send no more (TLS close_notify, then shutdown(SHUT_WR)); reads go on. */
void netio_shutdown_write(struct netio_conn *nc);

void netio_conn_free(struct netio_conn *nc); /* NULL: nothing */

/* TCP_NODELAY on fd (errors ignored: a unix socket has no Nagle). */
void netio_nodelay(int fd);

#endif
