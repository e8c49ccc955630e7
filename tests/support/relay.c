/*
 * A TCP relay for fault tests: 127.0.0.1:<port> forwards each connection to a target
 * port, byte for byte, in a thread of its own (poll over every pair). Armed with
 * harness_relay_cut(), the next chunk a client sends that contains a pattern is
 * forwarded, the target's answer to it is read and thrown away, and both sides are
 * closed: the command ran, its reply never arrived — the ambiguous failure a lost
 * connection makes. Bounded: at most H_RELAY_PAIRS connections at once (more are
 * refused by closing them).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define H_RELAY_PAIRS 32

struct h_relay_pair {
    int client, target; /* -1: free slot */
};

struct harness_relay {
    int lfd;
    uint16_t port, target_port;
    pthread_t thread;
    pthread_mutex_t lock;
    int stop;
    char pattern[64]; /* armed cut ("" : none) */
    unsigned cuts;
    struct h_relay_pair pairs[H_RELAY_PAIRS];
};

static void h_relay_close(struct h_relay_pair *p)
{
    if (p->client >= 0)
        close(p->client);
    if (p->target >= 0)
        close(p->target);
    p->client = p->target = -1;
}

static int h_relay_send_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void h_relay_accept(struct harness_relay *r)
{
    int fd = accept(r->lfd, NULL, NULL), t;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(r->target_port)};

    if (fd < 0)
        return;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t = socket(AF_INET, SOCK_STREAM, 0);
    if (t < 0 || connect(t, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto refuse;
    for (int i = 0; i < H_RELAY_PAIRS; i++) {
        if (r->pairs[i].client < 0) {
            r->pairs[i] = (struct h_relay_pair){fd, t};
            return;
        }
    }
refuse:
    if (t >= 0)
        close(t);
    close(fd);
}

/* The client of p sent buf: forward it; when it holds the armed pattern, drop the reply
 * and the connection instead of relaying it. */
static void h_relay_upward(struct harness_relay *r, struct h_relay_pair *p, const char *buf,
                           size_t len)
{
    char junk[4096];
    struct pollfd pf = {.fd = p->target, .events = POLLIN};
    int cut;

    pthread_mutex_lock(&r->lock);
    cut = r->pattern[0] && memmem(buf, len, r->pattern, strlen(r->pattern));
    if (cut) {
        r->pattern[0] = '\0';
        r->cuts++;
    }
    pthread_mutex_unlock(&r->lock);
    if (h_relay_send_all(p->target, buf, len) < 0) {
        h_relay_close(p);
        return;
    }
    if (!cut)
        return;
    if (poll(&pf, 1, 2000) == 1) /* its reply: read, never relayed */
        (void)!recv(p->target, junk, sizeof(junk), 0);
    h_relay_close(p);
}

static void *h_relay_main(void *arg)
{
    struct harness_relay *r = arg;
    struct pollfd pf[1 + 2 * H_RELAY_PAIRS];
    char buf[65536];

    for (;;) {
        int n = 0;
        pthread_mutex_lock(&r->lock);
        if (r->stop) {
            pthread_mutex_unlock(&r->lock);
            break;
        }
        pthread_mutex_unlock(&r->lock);
        pf[n++] = (struct pollfd){.fd = r->lfd, .events = POLLIN};
        for (int i = 0; i < H_RELAY_PAIRS; i++) {
            pf[n++] = (struct pollfd){.fd = r->pairs[i].client, .events = POLLIN};
            pf[n++] = (struct pollfd){.fd = r->pairs[i].target, .events = POLLIN};
        }
        if (poll(pf, (nfds_t)n, 100) <= 0)
            continue;
        if (pf[0].revents & POLLIN)
            h_relay_accept(r);
        for (int i = 0; i < H_RELAY_PAIRS; i++) {
            struct h_relay_pair *p = &r->pairs[i];
            struct pollfd *c = &pf[1 + 2 * i], *t = c + 1;
            ssize_t got;
            if (p->client >= 0 && c->fd == p->client && c->revents) {
                if ((got = recv(p->client, buf, sizeof(buf), 0)) <= 0)
                    h_relay_close(p);
                else
                    h_relay_upward(r, p, buf, (size_t)got);
            }
            if (p->target >= 0 && t->fd == p->target && t->revents) {
                if ((got = recv(p->target, buf, sizeof(buf), 0)) <= 0 ||
                    h_relay_send_all(p->client, buf, (size_t)got) < 0)
                    h_relay_close(p);
            }
        }
    }
    return NULL;
}

struct harness_relay *harness_relay_start(uint16_t target_port)
{
    struct harness_relay *r = calloc(1, sizeof(*r));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int one = 1;

    if (!r)
        return NULL;
    r->target_port = target_port;
    for (int i = 0; i < H_RELAY_PAIRS; i++)
        r->pairs[i].client = r->pairs[i].target = -1;
    pthread_mutex_init(&r->lock, NULL);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((r->lfd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
        goto fail;
    setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(r->lfd, 64) < 0 ||
        getsockname(r->lfd, (struct sockaddr *)&sa, &sl) < 0)
        goto fail;
    r->port = ntohs(sa.sin_port);
    if (pthread_create(&r->thread, NULL, h_relay_main, r) != 0)
        goto fail;
    return r;
fail:
    fprintf(stderr, "harness: the relay did not start\n");
    if (r->lfd >= 0)
        close(r->lfd);
    pthread_mutex_destroy(&r->lock);
    free(r);
    return NULL;
}

uint16_t harness_relay_port(const struct harness_relay *r)
{
    return r->port;
}

void harness_relay_cut(struct harness_relay *r, const char *pattern)
{
    pthread_mutex_lock(&r->lock);
    snprintf(r->pattern, sizeof(r->pattern), "%s", pattern);
    pthread_mutex_unlock(&r->lock);
}

unsigned harness_relay_cuts(struct harness_relay *r)
{
    unsigned n;

    pthread_mutex_lock(&r->lock);
    n = r->cuts;
    pthread_mutex_unlock(&r->lock);
    return n;
}

void harness_relay_stop(struct harness_relay *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    for (int i = 0; i < H_RELAY_PAIRS; i++)
        h_relay_close(&r->pairs[i]);
    close(r->lfd);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
