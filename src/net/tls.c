/*
 * tls — plain and TLS transports (see tls.h).
 */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
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

static void tport_plain_shutdown(struct tport *t)
{
    (void)t;
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
    tport_plain_shutdown,
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
    int fatal;                     /* a fatal error happened: no close_notify */
    int shut;                      /* close_notify sent (or not to be sent) */
    struct tls_session_slot *slot; /* client: where new sessions go (NULL: nowhere) */
    struct tls_server *ts;         /* server: the context's reference we hold */
    int peeked;                    /* server: the first byte was seen to be TLS */
};

static void tls_server_unref(struct tls_server *ts);

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

    if (s->ts && !s->peeked) {
        /* A TLS client speaks first with a handshake record (22); anything else is most
         * likely plain HTTP sent to the TLS port, which deserves a plain answer. */
        unsigned char b;
        ssize_t n = recv(t->fd, &b, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            t->want = EV_READ;
            return 0;
        }
        if (n <= 0) {
            s->fatal = 1;
            snprintf(t->err, sizeof(t->err), "TLS handshake: %s",
                     n == 0 ? "the client closed the connection" : strerror(errno));
            return -1;
        }
        if (b != 22) {
            s->fatal = 1;
            t->not_tls = 1;
            snprintf(t->err, sizeof(t->err), "TLS handshake: the client sent plain text");
            return -1;
        }
        s->peeked = 1;
    }
    ERR_clear_error();
    errno = 0;
    if ((rc = SSL_do_handshake(s->ssl)) == 1)
        return 1;
    switch (tport_tls_result(s, rc, "TLS handshake")) {
    case -1:
        return 0;
    case 0:
        snprintf(t->err, sizeof(t->err), "TLS handshake: the %s closed the connection",
                 s->ts ? "client" : "server");
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

static void tport_tls_shutdown(struct tport *t)
{
    struct tport_tls *s = (struct tport_tls *)t;

    if (!s->fatal && !s->shut && SSL_is_init_finished(s->ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(s->ssl); /* close_notify, if the socket takes it now */
    }
    s->shut = 1;
    ERR_clear_error();
}

static void tport_tls_free(struct tport *t)
{
    struct tport_tls *s = (struct tport_tls *)t;

    tport_tls_shutdown(t);
    SSL_free(s->ssl);
    if (s->ts)
        tls_server_unref(s->ts); /* after SSL_free: the SSL held the context too */
    free(s);
}

static const struct tport_ops tport_tls_ops = {
    "tls",           tport_tls_handshake, tport_tls_read,
    tport_tls_flush, tport_tls_pending,   tport_tls_shutdown,
    tport_tls_free,
};

static int tls_is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

void tls_session_clear(struct tls_session_slot *slot)
{
    if (slot && slot->session) {
        SSL_SESSION_free(slot->session);
        slot->session = NULL;
    }
}

/* A peer gave us a session (a TLS 1.3 ticket may come any time after the handshake):
 * keep it in the transport's slot for the next connection. 1: we keep the reference. */
static int tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tport_tls *s = SSL_get_app_data(ssl);

    if (!s || !s->slot || !SSL_SESSION_is_resumable(sess))
        return 0;
    if (s->slot->session)
        SSL_SESSION_free(s->slot->session);
    s->slot->session = sess;
    return 1;
}

int tport_tls_reused(const struct tport *t)
{
    return t->ops == &tport_tls_ops && SSL_session_reused(((const struct tport_tls *)t)->ssl);
}

const char *tport_tls_version(const struct tport *t)
{
    return t->ops == &tport_tls_ops ? SSL_get_version(((const struct tport_tls *)t)->ssl) : "";
}

struct tport *tport_tls_client(const struct tls_client *tc, int fd, const char *host,
                               struct tls_session_slot *slot, char *err, size_t errlen)
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
    SSL_set_app_data(s->ssl, s);
    s->slot = slot;
    if (slot && slot->session && SSL_set_session(s->ssl, slot->session) != 1)
        goto fail;
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
    if (!o->strict_eof)
        SSL_CTX_set_options(tc->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* sessions are kept by whoever gives a slot (tport_tls_client), not in a cache */
    SSL_CTX_set_session_cache_mode(tc->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(tc->ctx, tls_new_session_cb);
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

/* ---- server side ---- */

/* 0 when path can be opened for reading; else -1 with why ("No such file or directory"),
 * which says more than OpenSSL's "system lib". */
static int tls_readable(const char *path, char *why, size_t len)
{
    FILE *f = fopen(path, "r");

    if (!f) {
        snprintf(why, len, "%s", strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

#define TLS_TICKET_KEYS_MAX 8

struct tls_ticket_key {
    unsigned char name[16];
    unsigned char hmac[32];
    unsigned char aes[32];
    int size; /* 80: AES-256-CBC + a 32-byte HMAC key; 48: AES-128-CBC + 16 (nginx's) */
};

struct tls_server {
    SSL_CTX *ctx;
    int refs; /* atomic: the maker's, plus one per transport */
    struct tls_ticket_key keys[TLS_TICKET_KEYS_MAX];
    size_t nkeys;
    EVP_CIPHER *aes128, *aes256; /* fetched once (OpenSSL 3's fetch takes locks) */
    EVP_MD *sha256;
};

/* The key used when no tls-ticket-key-file is given: random, made once per process, so
 * that tickets stay good across reloads (every context made gets the same one). */
static struct tls_ticket_key tls_process_key;
static int tls_process_key_ok;
static pthread_once_t tls_process_key_once = PTHREAD_ONCE_INIT;

static void tls_process_key_make(void)
{
    tls_process_key.size = 80;
    tls_process_key_ok = RAND_bytes(tls_process_key.name, 16) == 1 &&
                         RAND_bytes(tls_process_key.hmac, 32) == 1 &&
                         RAND_bytes(tls_process_key.aes, 32) == 1;
}

static void tls_server_unref(struct tls_server *ts)
{
    if (__atomic_sub_fetch(&ts->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    SSL_CTX_free(ts->ctx);
    EVP_CIPHER_free(ts->aes128);
    EVP_CIPHER_free(ts->aes256);
    EVP_MD_free(ts->sha256);
    OPENSSL_cleanse(ts->keys, sizeof(ts->keys));
    free(ts);
}

struct tls_server *tls_server_ref(struct tls_server *ts)
{
    if (ts)
        __atomic_add_fetch(&ts->refs, 1, __ATOMIC_RELAXED);
    return ts;
}

void tls_server_release(struct tls_server *ts)
{
    if (ts)
        tls_server_unref(ts);
}

/* Encrypt a new ticket with the first key, or find the key an old one names. 2 (the
 * client gets a new ticket) when that is not the first key, and always in TLS 1.3: its
 * tickets are for one use (RFC 8446 C.4), and without a new one a client that resumes
 * has nothing to resume with next time — wrk, reusing its SSL, resumed every other
 * connection to us and every one to nginx (OpenSSL's own tickets renew). As OpenSSL 3's
 * SSL_CTX_set_tlsext_ticket_key_evp_cb wants it: 1 ok, 2 ok and renew, 0 unknown, -1 error. */
static int tls_ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    struct tls_server *ts = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const struct tls_ticket_key *k = NULL;
    OSSL_PARAM params[3];
    size_t i = 0;

    if (!ts || ts->nkeys == 0)
        return -1;
    if (enc) {
        k = &ts->keys[0];
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(name, k->name, 16);
        if (EVP_EncryptInit_ex(cctx, k->size == 48 ? ts->aes128 : ts->aes256, NULL, k->aes, iv) !=
            1)
            return -1;
    } else {
        for (i = 0; i < ts->nkeys; i++)
            if (memcmp(name, ts->keys[i].name, 16) == 0)
                break;
        if (i == ts->nkeys)
            return 0; /* a key rotated out: a full handshake */
        k = &ts->keys[i];
        if (EVP_DecryptInit_ex(cctx, k->size == 48 ? ts->aes128 : ts->aes256, NULL, k->aes, iv) !=
            1)
            return -1;
    }
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac,
                                                  k->size == 48 ? 16 : 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    return enc || (i == 0 && SSL_version(ssl) != TLS1_3_VERSION) ? 1 : 2;
}

/* A ticket key file: 80 bytes (name, HMAC key, AES-256 key) or 48 (AES-128), as nginx's
 * ssl_session_ticket_key; `openssl rand 80 > FILE` makes one. */
static int tls_ticket_key_load(const char *path, struct tls_ticket_key *k, char *err, size_t errlen)
{
    unsigned char buf[81];
    size_t n;
    FILE *f = fopen(path, "rb");

    if (!f) {
        snprintf(err, errlen, "tls-ticket-key-file %s: %s", path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n != 80 && n != 48) {
        snprintf(err, errlen,
                 "tls-ticket-key-file %s: holds %zu bytes; a key is 80 (or 48) random bytes "
                 "(openssl rand 80 > FILE)",
                 path, n);
        OPENSSL_cleanse(buf, sizeof(buf));
        return -1;
    }
    k->size = (int)n;
    memcpy(k->name, buf, 16);
    if (n == 80) {
        memcpy(k->hmac, buf + 16, 32);
        memcpy(k->aes, buf + 48, 32);
    } else {
        memcpy(k->hmac, buf + 16, 16);
        memcpy(k->aes, buf + 32, 16);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/* "TLSv1.2 TLSv1.3" → the lowest and highest version named. */
static int tls_protocols_parse(const char *list, int *min, int *max, char *err, size_t errlen)
{
    const char *p = list;

    *min = 0;
    *max = 0;
    while (*p) {
        size_t n;
        int v;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        n = strcspn(p, " \t,");
        if (n == 7 && strncasecmp(p, "TLSv1.2", 7) == 0) {
            v = TLS1_2_VERSION;
        } else if (n == 7 && strncasecmp(p, "TLSv1.3", 7) == 0) {
            v = TLS1_3_VERSION;
        } else {
            snprintf(err, errlen, "tls-protocols: \"%.*s\" is not one of TLSv1.2 TLSv1.3", (int)n,
                     p);
            return -1;
        }
        if (!*min || v < *min)
            *min = v;
        if (v > *max)
            *max = v;
        p += n;
    }
    if (!*min) {
        snprintf(err, errlen, "tls-protocols: names no protocol (TLSv1.2 TLSv1.3)");
        return -1;
    }
    return 0;
}

struct tls_server *tls_server_new(const struct tls_server_opts *o, char *err, size_t errlen)
{
    struct tls_server *ts = calloc(1, sizeof(*ts));
    int min, max;
    char why[200];

    if (!ts) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ts->refs = 1;
    ERR_clear_error();
    if (o->ncerts == 0 || o->ncerts != o->nkeys) {
        snprintf(err, errlen,
                 o->ncerts == 0 ? "tls-listen needs a certificate (tls-cert-file, tls-key-file)"
                                : "every tls-cert-file needs its tls-key-file (%zu certificates, "
                                  "%zu keys)",
                 o->ncerts, o->nkeys);
        goto fail;
    }
    if (tls_protocols_parse(o->protocols ? o->protocols : "TLSv1.2 TLSv1.3", &min, &max, err,
                            errlen) < 0)
        goto fail;
    if (!(ts->ctx = SSL_CTX_new(TLS_server_method())) ||
        !(ts->aes128 = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL)) ||
        !(ts->aes256 = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) ||
        !(ts->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL))) {
        tls_errstr(why, sizeof(why), "?");
        snprintf(err, errlen, "cannot make a TLS context: %s", why);
        goto fail;
    }
    SSL_CTX_set_app_data(ts->ctx, ts);
    SSL_CTX_set_min_proto_version(ts->ctx, min);
    SSL_CTX_set_max_proto_version(ts->ctx, max);
    /* idle keep-alive connections give their 2 × 16 KiB buffers back (nginx, HAProxy) */
    SSL_CTX_set_mode(ts->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ts->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                                     SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (o->ciphers && SSL_CTX_set_cipher_list(ts->ctx, o->ciphers) != 1) {
        snprintf(err, errlen, "tls-ciphers: \"%s\" names no cipher OpenSSL knows", o->ciphers);
        goto fail;
    }
    if (o->ciphersuites && SSL_CTX_set_ciphersuites(ts->ctx, o->ciphersuites) != 1) {
        snprintf(err, errlen, "tls-ciphersuites: \"%s\" names no TLS 1.3 suite OpenSSL knows",
                 o->ciphersuites);
        goto fail;
    }
    for (size_t i = 0; i < o->ncerts; i++) {
        if (tls_readable(o->cert_files[i], why, sizeof(why)) < 0) {
            snprintf(err, errlen, "tls-cert-file %s: %s", o->cert_files[i], why);
            goto fail;
        }
        if (tls_readable(o->key_files[i], why, sizeof(why)) < 0) {
            snprintf(err, errlen, "tls-key-file %s: %s", o->key_files[i], why);
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ts->ctx, o->cert_files[i]) != 1) {
            tls_errstr(why, sizeof(why), "cannot be read");
            snprintf(err, errlen, "tls-cert-file %s: %s", o->cert_files[i], why);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ts->ctx, o->key_files[i], SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ts->ctx) != 1) {
            tls_errstr(why, sizeof(why), "cannot be read");
            snprintf(err, errlen, "tls-key-file %s (for %s): %s", o->key_files[i], o->cert_files[i],
                     why);
            goto fail;
        }
    }
    if (o->client_ca_file && tls_readable(o->client_ca_file, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "tls-client-ca-file %s: %s", o->client_ca_file, why);
        goto fail;
    }
    if (o->client_ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca_file);
        if (!names || SSL_CTX_load_verify_locations(ts->ctx, o->client_ca_file, NULL) != 1) {
            if (names)
                sk_X509_NAME_pop_free(names, X509_NAME_free);
            tls_errstr(why, sizeof(why), "holds no certificate");
            snprintf(err, errlen, "tls-client-ca-file %s: %s", o->client_ca_file, why);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ts->ctx, names); /* the names asked for */
    } else if (o->auth != TLS_AUTH_NO) {
        snprintf(err, errlen, "tls-auth-clients needs tls-client-ca-file");
        goto fail;
    }
    if (o->auth != TLS_AUTH_NO)
        SSL_CTX_set_verify(ts->ctx,
                           SSL_VERIFY_PEER |
                               (o->auth == TLS_AUTH_YES ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           NULL);
    /* resumed sessions must carry the same client-verification context */
    SSL_CTX_set_session_id_context(ts->ctx, (const unsigned char *)"idemproxy", 9);
    /* no server-side session cache: stateless tickets, the same in every worker */
    SSL_CTX_set_session_cache_mode(ts->ctx, SSL_SESS_CACHE_OFF);
    if (o->tickets) {
        for (size_t i = 0; i < o->nticket_keys; i++) {
            if (i == TLS_TICKET_KEYS_MAX) {
                snprintf(err, errlen, "tls-ticket-key-file: at most %d", TLS_TICKET_KEYS_MAX);
                goto fail;
            }
            if (tls_ticket_key_load(o->ticket_key_files[i], &ts->keys[i], err, errlen) < 0)
                goto fail;
            ts->nkeys++;
        }
        if (ts->nkeys == 0) {
            pthread_once(&tls_process_key_once, tls_process_key_make);
            if (!tls_process_key_ok) {
                snprintf(err, errlen, "cannot make a session ticket key (RAND_bytes)");
                goto fail;
            }
            ts->keys[0] = tls_process_key;
            ts->nkeys = 1;
        }
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ts->ctx, tls_ticket_cb);
        SSL_CTX_set_num_tickets(ts->ctx, 1); /* OpenSSL sends 2 by default: one is enough */
    } else {
        SSL_CTX_set_options(ts->ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ts->ctx, 0);
    }
    return ts;
fail:
    tls_server_unref(ts);
    return NULL;
}

struct tport *tport_tls_server(struct tls_server *ts, int fd)
{
    struct tport_tls *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->t.ops = &tport_tls_ops;
    s->t.fd = fd;
    ERR_clear_error();
    if (!(s->ssl = SSL_new(ts->ctx)) || SSL_set_fd(s->ssl, fd) != 1) {
        ERR_clear_error();
        if (s->ssl)
            SSL_free(s->ssl);
        free(s);
        return NULL;
    }
    SSL_set_accept_state(s->ssl);
    SSL_set_app_data(s->ssl, s);
    __atomic_add_fetch(&ts->refs, 1, __ATOMIC_RELAXED);
    s->ts = ts;
    return &s->t;
}

int tport_peer_fingerprint(const struct tport *t, char out[65])
{
    const struct tport_tls *s = (const struct tport_tls *)t;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    X509 *cert;

    if (t->ops != &tport_tls_ops || !(cert = SSL_get0_peer_certificate(s->ssl)) ||
        SSL_get_verify_result(s->ssl) != X509_V_OK)
        return 0;
    if (X509_digest(cert, s->ts ? s->ts->sha256 : EVP_sha256(), md, &len) != 1 || len != 32) {
        ERR_clear_error();
        return 0;
    }
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 1;
}
