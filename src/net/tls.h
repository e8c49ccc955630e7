/*
 * tls — a connection's byte transport, plain or TLS, behind one small vtable (as Redis's
 * connection.h does it), and the client-side TLS context that makes the TLS ones.
 *
 * A transport does no waiting and owns no event: its owner watches the non-blocking fd
 * and calls it; a call that cannot finish says what it waits for in t->want (EV_READ or
 * EV_WRITE — with TLS, a write may need a read first, and a read a write), and the owner
 * calls again when the fd is ready for that. TLS uses SSL_set_fd on the owner's socket
 * (not a BIO pair, not libevent's bufferevent_openssl: see docs/ARCHITECTURE.md), with
 * partial writes and moving write buffers allowed, and OpenSSL's error queue cleared
 * before every call.
 *
 * Ownership: a transport does not own its fd (the owner closes it after tport_free).
 * A tls_client is immutable once made and may be shared by every thread (SSL_CTX is
 * thread-safe for SSL_new); it must outlive the transports made from it.
 */
#ifndef IDEMPROXY_NET_TLS_H
#define IDEMPROXY_NET_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct evbuffer;
struct tport;

struct tport_ops {
    const char *name; /* "tcp" | "tls" */
    /* 1 done, 0 call again once t->want is ready, -1 failed (t->err says why) */
    int (*handshake)(struct tport *t);
    /* bytes read (> 0), 0 the peer closed, -1 call again once t->want is ready, -2 failed */
    ssize_t (*read)(struct tport *t, void *buf, size_t len);
    /* write what out holds (drained as written): 1 all of it, 0 some is left (t->want),
     * -1 failed */
    int (*flush)(struct tport *t, struct evbuffer *out);
    /* bytes already decrypted and buffered: read again without waiting for the fd */
    size_t (*pending)(const struct tport *t);
    void (*free)(struct tport *t);
};

struct tport {
    const struct tport_ops *ops;
    int fd;
    short want;    /* EV_READ or EV_WRITE: what the last call that could not finish needs */
    char err[256]; /* why the last call failed */
};

#define tport_handshake(t)  ((t)->ops->handshake(t))
#define tport_read(t, b, n) ((t)->ops->read((t), (b), (n)))
#define tport_flush(t, out) ((t)->ops->flush((t), (out)))
#define tport_pending(t)    ((t)->ops->pending(t))
#define tport_free(t)       ((t)->ops->free(t))

/* Plain TCP (or a unix socket) on fd. NULL on allocation failure. */
struct tport *tport_plain(int fd);

/* Settings of a client-side TLS context (the strings are copied where kept). */
struct tls_client_opts {
    const char *ca_file;     /* trust these (PEM); NULL: the system's store */
    const char *cert_file;   /* a client certificate (PEM chain), with key_file */
    const char *key_file;    /*   its private key (PEM, unencrypted) */
    const char *server_name; /* SNI and the name checked; NULL: the host connected to */
    int verify;              /* check the chain and the name (0: encrypt only) */
};

struct tls_client;

/* Load the files and make the context. NULL with err set ("redis-tls-ca-file FILE: ..."
 * is the caller's to prefix) when a file does not load or the key does not match. */
struct tls_client *tls_client_new(const struct tls_client_opts *o, char *err, size_t errlen);
void tls_client_free(struct tls_client *tc); /* NULL: nothing */

/* A client TLS transport on connected fd to host (a name or an IP literal: SNI is sent
 * for names only; the name or address is what the certificate must show, unless
 * server_name says otherwise). The handshake is tport_handshake's. NULL with err set. */
struct tport *tport_tls_client(const struct tls_client *tc, int fd, const char *host, char *err,
                               size_t errlen);

#endif
