#include "redis/cluster.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>

/* CRC16/XMODEM (poly 0x1021, init 0), the cluster spec's, bit by bit into a table made
 * once at first use. */
static uint16_t cluster_crc_table[256];
static int cluster_crc_ready;

static void cluster_crc_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint16_t crc = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
        cluster_crc_table[i] = crc;
    }
    __atomic_store_n(&cluster_crc_ready, 1, __ATOMIC_RELEASE);
}

static uint16_t cluster_crc16(const unsigned char *p, size_t len)
{
    uint16_t crc = 0;

    if (!__atomic_load_n(&cluster_crc_ready, __ATOMIC_ACQUIRE))
        cluster_crc_init(); /* idempotent: every thread writes the same table */
    while (len--)
        crc = (uint16_t)((crc << 8) ^ cluster_crc_table[((crc >> 8) ^ *p++) & 0xff]);
    return crc;
}

unsigned cluster_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len), *close;

    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    return cluster_crc16((const unsigned char *)key, len) & (CLUSTER_NSLOTS - 1);
}

/* Commands of ours (and the usual keyless ones) that carry no key. */
static int cluster_keyless(const char *name, size_t len)
{
    static const char *const keyless[] = {"PING",   "INFO",   "CONFIG", "SCRIPT", "CLUSTER",
                                          "WAIT",   "AUTH",   "ROLE",   "ECHO",   "TIME",
                                          "DBSIZE", "CLIENT", "HELLO",  "ASKING"};
    for (size_t i = 0; i < sizeof(keyless) / sizeof(keyless[0]); i++)
        if (strlen(keyless[i]) == len && strncasecmp(keyless[i], name, len) == 0)
            return 1;
    return 0;
}

static int cluster_is_eval(const char *name, size_t len)
{
    return (len == 4 && strncasecmp(name, "EVAL", 4) == 0) ||
           (len == 7 && strncasecmp(name, "EVALSHA", 7) == 0);
}

int cluster_command_key(int argc, const char *const *argv, const size_t *lens, const char **key,
                        size_t *len)
{
    int at = 1;

    if (argc < 2 || cluster_keyless(argv[0], lens[0]))
        return 0;
    if (cluster_is_eval(argv[0], lens[0])) {
        if (argc < 4 || lens[2] != 1 || argv[2][0] == '0')
            return 0;
        at = 3;
    }
    *key = argv[at];
    *len = lens[at];
    return 1;
}

/* The bulk string at p ("$len\r\nbytes\r\n"), within end. Returns the position past it,
 * or NULL when malformed. */
static const char *cluster_wire_bulk(const char *p, const char *end, const char **s, size_t *n)
{
    size_t v = 0;

    if (p >= end || *p++ != '$')
        return NULL;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (size_t)(*p++ - '0');
    if (end - p < 2 || p[0] != '\r' || (size_t)(end - p - 2) < v + 2)
        return NULL;
    *s = p + 2;
    *n = v;
    return p + 2 + v + 2;
}

int cluster_wire_key(const char *wire, size_t wirelen, const char **key, size_t *len)
{
    const char *end = wire + wirelen, *p = memchr(wire, '\n', wirelen);
    const char *argv[4];
    size_t lens[4];
    int argc = 0;

    if (!p || wire[0] != '*')
        return 0;
    argc = atoi(wire + 1);
    p++;
    for (int i = 0; i < argc && i < 4; i++)
        if (!(p = cluster_wire_bulk(p, end, &argv[i], &lens[i])))
            return 0;
    return cluster_command_key(argc < 4 ? argc : 4, argv, lens, key, len);
}

enum cluster_redirect cluster_parse_redirect(const char *err, const struct conf_addr *from,
                                             unsigned *slot, struct conf_addr *to)
{
    enum cluster_redirect kind;
    const char *p, *colon;
    char *end;
    unsigned long v;
    size_t hlen;

    if (strncmp(err, "MOVED ", 6) == 0) {
        kind = CLUSTER_MOVED;
        p = err + 6;
    } else if (strncmp(err, "ASK ", 4) == 0) {
        kind = CLUSTER_ASK;
        p = err + 4;
    } else {
        return CLUSTER_NO_REDIRECT;
    }
    v = strtoul(p, &end, 10);
    if (end == p || *end != ' ' || v >= CLUSTER_NSLOTS)
        return CLUSTER_NO_REDIRECT;
    p = end + 1;
    if (!(colon = strrchr(p, ':')))
        return CLUSTER_NO_REDIRECT;
    memset(to, 0, sizeof(*to));
    hlen = (size_t)(colon - p);
    if (hlen >= sizeof(to->host))
        return CLUSTER_NO_REDIRECT;
    if (hlen == 0)
        memcpy(to->host, from->host, sizeof(to->host));
    else
        memcpy(to->host, p, hlen);
    v = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || *end || v == 0 || v > 65535)
        return CLUSTER_NO_REDIRECT;
    to->port = (uint16_t)v;
    *slot = (unsigned)strtoul(err + (kind == CLUSTER_MOVED ? 6 : 4), NULL, 10);
    return kind;
}

enum cluster_retry cluster_retry_reason(const char *err)
{
    static const struct {
        const char *prefix;
        enum cluster_retry r;
    } rows[] = {
        {"TRYAGAIN", CLUSTER_RETRY_TRYAGAIN}, {"CLUSTERDOWN", CLUSTER_RETRY_CLUSTERDOWN},
        {"LOADING", CLUSTER_RETRY_LOADING},   {"MASTERDOWN", CLUSTER_RETRY_MASTERDOWN},
        {"READONLY", CLUSTER_RETRY_READONLY},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t n = strlen(rows[i].prefix);
        if (strncmp(err, rows[i].prefix, n) == 0 && (err[n] == ' ' || err[n] == '\0'))
            return rows[i].r;
    }
    return CLUSTER_RETRY_NONE;
}

const char *cluster_retry_name(enum cluster_retry r)
{
    static const char *const names[CLUSTER_RETRY_COUNT] = {"none",    "tryagain",   "clusterdown",
                                                           "loading", "masterdown", "readonly"};
    return (unsigned)r < CLUSTER_RETRY_COUNT ? names[r] : "none";
}

int cluster_parse_slots(const struct redisReply *reply, const struct conf_addr *asked,
                        struct cluster_range **out, size_t *n, char *err, size_t errlen)
{
    struct cluster_range *r = NULL;
    size_t k = 0;

    *out = NULL;
    *n = 0;
    if (reply->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "CLUSTER SLOTS: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "not an array");
        return -1;
    }
    if (reply->elements && !(r = calloc(reply->elements, sizeof(*r)))) {
        snprintf(err, errlen, "CLUSTER SLOTS: out of memory");
        return -1;
    }
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i], *node;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            goto bad;
        node = e->element[2];
        if (node->element[0]->type != REDIS_REPLY_STRING ||
            node->element[1]->type != REDIS_REPLY_INTEGER || e->element[0]->integer < 0 ||
            e->element[1]->integer >= CLUSTER_NSLOTS ||
            e->element[0]->integer > e->element[1]->integer || node->element[1]->integer <= 0 ||
            node->element[1]->integer > 65535 || node->element[0]->len >= sizeof(r[k].primary.host))
            goto bad;
        r[k].from = (unsigned)e->element[0]->integer;
        r[k].to = (unsigned)e->element[1]->integer;
        if (node->element[0]->len == 0 || strcmp(node->element[0]->str, "?") == 0)
            memcpy(r[k].primary.host, asked->host, sizeof(r[k].primary.host));
        else
            memcpy(r[k].primary.host, node->element[0]->str, node->element[0]->len);
        r[k].primary.port = (uint16_t)node->element[1]->integer;
        k++;
    }
    *out = r;
    *n = k;
    return 0;
bad:
    free(r);
    snprintf(err, errlen, "CLUSTER SLOTS: unexpected reply shape");
    return -1;
}
