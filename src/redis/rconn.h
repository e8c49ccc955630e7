/*
 * rconn — one connection to one Redis node on a worker's event loop: our own socket
 * (non-blocking connect, TCP_NODELAY), our own output buffer, and hiredis's redisReader
 * as the RESP parser. It knows no command and keeps no queue: its owner writes bytes
 * and is handed every reply, in arrival order, and matches them to what it sent (the
 * command FIFO lives in redis.c). So push messages (message, smessage, sunsubscribe)
 * are replies like any other, which hiredis 0.14's async API cannot do for sharded
 * pub/sub; and the transport is ours: plain or TLS (net/tls.h), the same seam.
 *
 * Events, each from the event loop, never from inside an rconn call:
 *   on_connect(arg)              the connection is up (TCP, and the TLS handshake when
 *                                there is one; bytes written before are sent);
 *   on_reply(reply, arg)         one reply; it returns 1 when it keeps the reply (then
 *                                it frees it, freeReplyObject), 0 and rconn frees it;
 *   on_close(errstr, arg)        the connection was lost or could not be made; once, and
 *                                nothing after it. rconn_free never calls it.
 * A callback may call rconn_free on its own connection: the object then dies when the
 * callback returns (no other callback of it runs after).
 *
 * Writes are appended and go out together at the end of the current loop pass (every
 * command issued in one pass leaves in one write), or when the socket is writable again.
 */
#ifndef IDEMPROXY_REDIS_RCONN_H
#define IDEMPROXY_REDIS_RCONN_H

#include <stddef.h>

#include "core/conf.h"

struct event_base;
struct evdns_base;
struct redisReply;
struct rconn;
struct tls_client;
struct tls_session_slot;

struct rconn_cbs {
    void (*on_connect)(void *arg);
    int (*on_reply)(struct redisReply *reply, void *arg);
    void (*on_close)(const char *errstr, void *arg);
};

/* Start connecting to addr (host:port or unix:path). A host name is looked up with dns
 * (evdns: resolv.conf and the hosts file) without blocking the loop; a lookup that fails
 * ends in on_close, like a refused connect. dns NULL: the name is looked up here, blocking
 * (getaddrinfo). tls (borrowed; NULL: plain): TLS over the TCP connection, its handshake
 * done before on_connect, the certificate checked against addr's host (a failed check
 * ends in on_close with the reason), resuming slot's session and keeping the next one
 * there (slot NULL: none; borrowed, one thread); a unix socket stays plain. NULL with errstr filled
 * when the connection cannot even be started; cbs is borrowed and must outlive the
 * rconn. Bytes written before it is up wait for it. */
/* Over TLS: 1 when the handshake is done (on_connect) and resumed a session. */
int rconn_tls_reused(const struct rconn *rc);
/* 1 when the connection runs over TLS. */
int rconn_tls(const struct rconn *rc);

struct rconn *rconn_new(struct event_base *base, struct evdns_base *dns,
                        const struct tls_client *tls, struct tls_session_slot *slot,
                        const struct conf_addr *addr, const struct rconn_cbs *cbs, void *arg,
                        char *errstr, size_t errlen);

/* Append bytes to send (copied). 0, or -1 when out of memory or the connection is gone. */
int rconn_write(struct rconn *rc, const void *bytes, size_t len);

/* Close at once (unsent bytes are dropped) and free; safe inside rc's own callbacks. */
void rconn_free(struct rconn *rc);

/* Read what has already arrived and deliver its replies now (non-blocking), for an owner
 * about to give up on one: the loop may run a deadline timer before the read event of
 * a reply that is already in the socket. rc may be freed inside (as in any callback:
 * the owner learns it from its own on_close / rconn_free). */
void rconn_read_ready(struct rconn *rc);

/* on_connect ran (the connection may have closed since). */
int rconn_connected(const struct rconn *rc);

#endif
