/*
 * tls — plain and TLS transports (see tls.h).
 */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define TLS_WRITE_MAX 16384 /* one TLS record per SSL_write */

/* ---- plain ---- */

static int tport_plain_handshake(struct tport *t)
{
    (void)t;
    return 1;
}

static ssize_t tport_plain_read(struct tport *t, void *buf, size_t len)
{
    ssize_t n = read(t->fd, buf, len);

    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        t->want = EV_READ;
        return -1;
    }
    snprintf(t->err, sizeof(t->err), "%s", strerror(errno));
    return -2;
}

static int tport_plain_flush(struct tport *t, struct evbuffer *out)
{
    while (evbuffer_get_length(out) > 0) {
        int n = evbuffer_write(out, t->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            t->want = EV_WRITE;
            return 0;
        }
        snprintf(t->err, sizeof(t->err), "%s", n < 0 ? strerror(errno) : "closed");
        return -1;
    }
    return 1;
}

static size_t tport_plain_pending(const struct tport *t)
{
    (void)t;
    return 0;
}

static void tport_plain_free(struct tport *t)
{
    free(t);
}

static const struct tport_ops tport_plain_ops = {
    "tcp",
    tport_plain_handshake,
    tport_plain_read,
    tport_plain_flush,
    tport_plain_pending,
    tport_plain_free,
};

struct tport *tport_plain(int fd)
{
    struct tport *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    t->ops = &tport_plain_ops;
    t->fd = fd;
    return t;
}

/* ---- TLS ---- */

struct tls_client {
    SSL_CTX *ctx;
    char *server_name; /* NULL: the host connected to */
    int verify;
};

struct tport_tls {
    struct tport t; /* first */
    SSL *ssl;
    int fatal; /* a fatal error happened: no close_notify */
};

/* The last OpenSSL error, or what fallback says. */
static void tls_errstr(char *out, size_t len, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();

    if (e) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(out, len, "%s", buf);
    } else {
        snprintf(out, len, "%s", fallback);
    }
    ERR_clear_error();
}

/* A call on ssl returned rc: what it means. -1 again (t->want set), -2 failed (t->err),
 * 0 the peer closed (reads only). */
static int tport_tls_result(struct tport_tls *s, int rc, const char *what)
{
    int e = SSL_get_error(s->ssl, rc);
    long v;

    switch (e) {
    case SSL_ERROR_WANT_READ:
        s->t.want = EV_READ;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        s->t.want = EV_WRITE;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        s->fatal = 1;
        if (ERR_peek_last_error() == 0) {
            if (errno == 0 || rc == 0)
                return 0; /* EOF without close_notify */
            snprintf(s->t.err, sizeof(s->t.err), "%s: %s", what, strerror(errno));
            return -2;
        }
        break;
    default:
        s->fatal = 1;
        break;
    }
    if ((v = SSL_get_verify_result(s->ssl)) != X509_V_OK) {
        snprintf(s->t.err, sizeof(s->t.err), "%s: certificate verify failed: %s", what,
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
        return -2;
    }
    {
        char buf[200];
        tls_errstr(buf, sizeof(buf), "error");
        snprintf(s->t.err, sizeof(s->t.err), "%s: %s", what, buf);
    }
    return -2;
}

static int tport_tls_handshake(struct tport *t)
{
    struct tport_tls *s = (struct tport_tls *)t;
    int rc;

    ERR_clear_error();
    errno = 0;
    if ((rc = SSL_do_handshake(s->ssl)) == 1)
        return 1;
    switch (tport_tls_result(s, rc, "TLS handshake")) {
    case -1:
        return 0;
    case 0:
        snprintf(t->err, sizeof(t->err), "TLS handshake: the server closed the connection");
        return -1;
    default:
        return -1;
    }
}

static ssize_t tport_tls_read(struct tport *t, void *buf, size_t len)
{
    struct tport_tls *s = (struct tport_tls *)t;
    int rc;

    if (len > 0x7fffffff)
        len = 0x7fffffff;
    ERR_clear_error();
    errno = 0;
    if ((rc = SSL_read(s->ssl, buf, (int)len)) > 0)
        return rc;
    return tport_tls_result(s, rc, "TLS read");
}

static int tport_tls_flush(struct tport *t, struct evbuffer *out)
{
    struct tport_tls *s = (struct tport_tls *)t;
    size_t len;

    while ((len = evbuffer_get_length(out)) > 0) {
        size_t n = len < TLS_WRITE_MAX ? len : TLS_WRITE_MAX;
        unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)n);
        int rc;
        if (!p) {
            snprintf(t->err, sizeof(t->err), "out of memory");
            return -1;
        }
        ERR_clear_error();
        errno = 0;
        if ((rc = SSL_write(s->ssl, p, (int)n)) > 0) {
            evbuffer_drain(out, (size_t)rc);
            continue;
        }
        switch (tport_tls_result(s, rc, "TLS write")) {
        case -1:
            return 0;
        case 0:
            snprintf(t->err, sizeof(t->err), "TLS write: closed by the peer");
            return -1;
        default:
            return -1;
        }
    }
    return 1;
}

static size_t tport_tls_pending(const struct tport *t)
{
    int n = SSL_pending(((const struct tport_tls *)t)->ssl);

    return n > 0 ? (size_t)n : 0;
}

static void tport_tls_free(struct tport *t)
{
    struct tport_tls *s = (struct tport_tls *)t;

    if (!s->fatal && SSL_is_init_finished(s->ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(s->ssl); /* close_notify, if the socket takes it now */
    }
    ERR_clear_error();
    SSL_free(s->ssl);
    free(s);
}

static const struct tport_ops tport_tls_ops = {
    "tls", tport_tls_handshake, tport_tls_read, tport_tls_flush, tport_tls_pending, tport_tls_free,
};

static int tls_is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

struct tport *tport_tls_client(const struct tls_client *tc, int fd, const char *host, char *err,
                               size_t errlen)
{
    struct tport_tls *s = calloc(1, sizeof(*s));
    const char *name = tc->server_name ? tc->server_name : host;
    int ip = tls_is_ip(name);

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->t.ops = &tport_tls_ops;
    s->t.fd = fd;
    ERR_clear_error();
    if (!(s->ssl = SSL_new(tc->ctx)) || SSL_set_fd(s->ssl, fd) != 1)
        goto fail;
    SSL_set_connect_state(s->ssl);
    /* SNI for names only (RFC 6066: not for addresses) */
    if (!ip && name[0] && SSL_set_tlsext_host_name(s->ssl, name) != 1)
        goto fail;
    if (tc->verify && name[0]) {
        if (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), name) != 1
               : SSL_set1_host(s->ssl, name) != 1)
            goto fail;
    }
    return &s->t;
fail:
    tls_errstr(err, errlen, "cannot make a TLS connection");
    if (s->ssl)
        SSL_free(s->ssl);
    free(s);
    return NULL;
}

struct tls_client *tls_client_new(const struct tls_client_opts *o, char *err, size_t errlen)
{
    struct tls_client *tc = calloc(1, sizeof(*tc));
    char why[200];

    if (!tc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ERR_clear_error();
    if (!(tc->ctx = SSL_CTX_new(TLS_client_method()))) {
        tls_errstr(why, sizeof(why), "?");
        snprintf(err, errlen, "cannot make a TLS context: %s", why);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(tc->ctx, TLS1_2_VERSION);
    /* (no SSL_MODE_RELEASE_BUFFERS: a client connection — to Redis — is busy, and
     * releasing its buffers would allocate and free 16 KiB around every read and write) */
    SSL_CTX_set_mode(tc->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(tc->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    tc->verify = o->verify;
    if (o->verify) {
        SSL_CTX_set_verify(tc->ctx, SSL_VERIFY_PEER, NULL);
        if (o->ca_file ? SSL_CTX_load_verify_locations(tc->ctx, o->ca_file, NULL) != 1
                       : SSL_CTX_set_default_verify_paths(tc->ctx) != 1) {
            tls_errstr(why, sizeof(why), "cannot be read");
            snprintf(err, errlen, "CA file %s: %s", o->ca_file ? o->ca_file : "(system)", why);
            goto fail;
        }
    }
    if ((o->cert_file != NULL) != (o->key_file != NULL)) {
        snprintf(err, errlen, "a client certificate needs both its file and its key file");
        goto fail;
    }
    if (o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(tc->ctx, o->cert_file) != 1) {
            tls_errstr(why, sizeof(why), "cannot be read");
            snprintf(err, errlen, "certificate file %s: %s", o->cert_file, why);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(tc->ctx, o->key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(tc->ctx) != 1) {
            tls_errstr(why, sizeof(why), "cannot be read");
            snprintf(err, errlen, "key file %s: %s", o->key_file, why);
            goto fail;
        }
    }
    if (o->server_name && !(tc->server_name = strdup(o->server_name))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return tc;
fail:
    tls_client_free(tc);
    return NULL;
}

void tls_client_free(struct tls_client *tc)
{
    if (!tc)
        return;
    SSL_CTX_free(tc->ctx);
    free(tc->server_name);
    free(tc);
}
