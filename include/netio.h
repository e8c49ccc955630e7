/*
 * netio — small socket helpers shared by the client and upstream sides.
 */
#ifndef IDEMPROXY_NETIO_H
#define IDEMPROXY_NETIO_H

struct bufferevent;

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

/* TCP_NODELAY on fd (errors ignored: a unix socket has no Nagle). */
void netio_nodelay(int fd);

#endif
