/*
 * A DNS server for tests: UDP on 127.0.0.1, every A question answered 127.0.0.1 (other
 * types: no data; names under "nx." NXDOMAIN). While held, questions are kept unanswered
 * (a slow or dead server); releasing answers them all. Its own thread; bounded: at most
 * H_DNS_HELD questions kept, the rest dropped (as a dead server would).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define H_DNS_HELD 64
#define H_DNS_MAX  512

struct h_dns_query {
    unsigned char buf[H_DNS_MAX];
    size_t len;
    struct sockaddr_in from;
};

struct harness_dns {
    int fd;
    uint16_t port;
    pthread_t thread;
    pthread_mutex_t lock;
    int hold, stop;
    unsigned queries, answered;
    struct h_dns_query held[H_DNS_HELD];
    size_t nheld;
};

/* The answer to q, into out; its length (0: malformed, not answered). */
static size_t h_dns_answer(const struct h_dns_query *q, unsigned char *out)
{
    size_t p = 12, qend;
    unsigned qtype;
    int nx;

    if (q->len < 12 + 5)
        return 0;
    while (p < q->len && q->buf[p] != 0) /* the question's name */
        p += 1 + q->buf[p];
    if (p + 5 > q->len)
        return 0;
    qend = p + 5;
    qtype = (unsigned)q->buf[p + 1] << 8 | q->buf[p + 2];
    /* (evdns randomizes the case of the names it asks for) */
    nx = q->buf[12] == 2 && strncasecmp((const char *)q->buf + 13, "nx", 2) == 0;
    memcpy(out, q->buf, qend);
    out[2] = 0x81;             /* response, recursion desired */
    out[3] = nx ? 0x83 : 0x80; /* recursion available; NXDOMAIN or NOERROR */
    out[6] = 0;
    out[7] = !nx && qtype == 1; /* one answer for A */
    memset(out + 8, 0, 4);
    if (!out[7])
        return qend;
    {
        static const unsigned char a[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1};
        memcpy(out + qend, a, sizeof(a));
        return qend + sizeof(a);
    }
}

static void h_dns_reply(struct harness_dns *d, const struct h_dns_query *q)
{
    unsigned char out[H_DNS_MAX + 32];
    size_t n = h_dns_answer(q, out);

    if (n && sendto(d->fd, out, n, 0, (const struct sockaddr *)&q->from, sizeof(q->from)) > 0)
        d->answered++;
}

static void *h_dns_main(void *arg)
{
    struct harness_dns *d = arg;

    for (;;) {
        struct pollfd pfd = {.fd = d->fd, .events = POLLIN};
        struct h_dns_query q;
        socklen_t flen = sizeof(q.from);
        ssize_t n;

        pthread_mutex_lock(&d->lock);
        if (d->stop) {
            pthread_mutex_unlock(&d->lock);
            return NULL;
        }
        if (!d->hold)
            for (size_t i = 0; i < d->nheld; i++)
                h_dns_reply(d, &d->held[i]);
        if (!d->hold)
            d->nheld = 0;
        pthread_mutex_unlock(&d->lock);
        if (poll(&pfd, 1, 20) <= 0)
            continue;
        n = recvfrom(d->fd, q.buf, sizeof(q.buf), 0, (struct sockaddr *)&q.from, &flen);
        if (n <= 0)
            continue;
        q.len = (size_t)n;
        pthread_mutex_lock(&d->lock);
        d->queries++;
        if (!d->hold)
            h_dns_reply(d, &q);
        else if (d->nheld < H_DNS_HELD)
            d->held[d->nheld++] = q;
        pthread_mutex_unlock(&d->lock);
    }
}

struct harness_dns *harness_dns_start(int hold)
{
    struct harness_dns *d = calloc(1, sizeof(*d));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);

    if (!d)
        return NULL;
    d->hold = hold;
    pthread_mutex_init(&d->lock, NULL);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if ((d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
        bind(d->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(d->fd, (struct sockaddr *)&sa, &len) < 0 ||
        pthread_create(&d->thread, NULL, h_dns_main, d) != 0) {
        if (d->fd >= 0)
            close(d->fd);
        free(d);
        return NULL;
    }
    d->port = ntohs(sa.sin_port);
    return d;
}

uint16_t harness_dns_port(const struct harness_dns *d)
{
    return d->port;
}

void harness_dns_hold(struct harness_dns *d, int hold)
{
    pthread_mutex_lock(&d->lock);
    d->hold = hold;
    pthread_mutex_unlock(&d->lock);
}

unsigned harness_dns_queries(struct harness_dns *d, unsigned *held)
{
    unsigned n;

    pthread_mutex_lock(&d->lock);
    n = d->queries;
    if (held)
        *held = (unsigned)d->nheld;
    pthread_mutex_unlock(&d->lock);
    return n;
}

void harness_dns_stop(struct harness_dns *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->stop = 1;
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->thread, NULL);
    close(d->fd);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
