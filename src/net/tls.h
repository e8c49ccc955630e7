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
    /* we send no more: TLS close_notify (once, if the socket takes it now) */
    void (*shutdown)(struct tport *t);
    void (*free)(struct tport *t);
};

struct tport {
    const struct tport_ops *ops;
    int fd;
    short want;    /* EV_READ or EV_WRITE: what the last call that could not finish needs */
    int not_tls;   /* a server handshake failed because the client sent plain text */
    char err[256]; /* why the last call failed */
};

#define tport_handshake(t)  ((t)->ops->handshake(t))
#define tport_read(t, b, n) ((t)->ops->read((t), (b), (n)))
#define tport_flush(t, out) ((t)->ops->flush((t), (out)))
#define tport_pending(t)    ((t)->ops->pending(t))
#define tport_shutdown(t)   ((t)->ops->shutdown(t))
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
    int strict_eof;          /* an EOF without close_notify is an error (read -2), not a
                                close: for answers whose end is the close (HTTP/1.0) */
};

struct tls_client;

/* Load the files and make the context. NULL with err set ("redis-tls-ca-file FILE: ..."
 * is the caller's to prefix) when a file does not load or the key does not match. */
struct tls_client *tls_client_new(const struct tls_client_opts *o, char *err, size_t errlen);
void tls_client_free(struct tls_client *tc); /* NULL: nothing */

/*
 * Where a client keeps the last session a peer gave it, to resume the next connection
 * to that peer with (TLS 1.3 tickets arrive after the handshake: the slot is filled
 * whenever one does). Owned by the caller, zeroed to start; used by one thread only;
 * it must outlive the transports given it. tls_session_clear frees what it holds.
 */
struct tls_session_slot {
    void *session; /* SSL_SESSION *, or NULL */
};
void tls_session_clear(struct tls_session_slot *slot);

/* A client TLS transport on connected fd to host (a name or an IP literal: SNI is sent
 * for names only; the name or address is what the certificate must show, unless
 * server_name says otherwise), resuming from slot's session if it has one and keeping
 * new ones there (slot NULL: none). The handshake is tport_handshake's. NULL with err. */
struct tport *tport_tls_client(const struct tls_client *tc, int fd, const char *host,
                               struct tls_session_slot *slot, char *err, size_t errlen);

/* 1 when t (a TLS transport, after its handshake) resumed a session, else 0. */
int tport_tls_reused(const struct tport *t);

/* The protocol t negotiated ("TLSv1.3"), or "" for a plain transport. */
const char *tport_tls_version(const struct tport *t);

/* ---- server side ---- */

enum tls_auth { TLS_AUTH_NO, TLS_AUTH_OPTIONAL, TLS_AUTH_YES };

/* Settings of a server-side TLS context (files are read by tls_server_new only). */
struct tls_server_opts {
    char **cert_files; /* PEM chains, one per key type (ECDSA, RSA), ... */
    char **key_files;  /* ... each with its key (PEM, unencrypted) */
    size_t ncerts, nkeys;
    const char *protocols;    /* "TLSv1.2 TLSv1.3" (any of the two) */
    const char *ciphers;      /* TLS 1.2 cipher list (NULL: OpenSSL's) */
    const char *ciphersuites; /* TLS 1.3 suites (NULL: OpenSSL's) */
    const char *client_ca_file;
    enum tls_auth auth;
    int tickets;             /* session tickets (stateless resumption) */
    char **ticket_key_files; /* 80 (or 48) bytes each, as nginx's; the first encrypts */
    size_t nticket_keys;     /* 0: a random key made once per process (kept on reloads) */
};

/*
 * A server context, shared by every worker thread. Reference-counted: each transport
 * made from it holds one, so a reload can drop its own (tls_server_release) while
 * connections accepted under it go on. NULL with err set ("FILE: why") on a bad file,
 * a key that does not match its certificate, an unknown protocol or cipher.
 */
struct tls_server *tls_server_new(const struct tls_server_opts *o, char *err, size_t errlen);
void tls_server_release(struct tls_server *ts); /* NULL: nothing */
/* Take one more reference (returns ts; NULL: NULL). */
struct tls_server *tls_server_ref(struct tls_server *ts);

/* A server transport on accepted fd (it holds a reference to ts). NULL: out of memory. A
 * client that speaks plain text to it fails the handshake with t->not_tls set. */
struct tport *tport_tls_server(struct tls_server *ts, int fd);

/* The verified client certificate's SHA-256 fingerprint in hex into out (65 bytes);
 * 0 when there is none (a plain transport, or no certificate). */
int tport_peer_fingerprint(const struct tport *t, char out[65]);

#endif
