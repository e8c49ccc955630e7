/*
 * cluster — the pure parts of speaking to a Redis Cluster, kept apart from the client's
 * connections so they can be tested alone: which slot a key hashes to (CRC16/XMODEM mod
 * 16384, with {hash tags} as the cluster spec defines them), which key a command routes
 * by, what a MOVED / ASK error points to, which errors mean "not executed, try again",
 * and the slot ranges a CLUSTER SLOTS reply assigns to primaries.
 *
 * No state, no allocation except cluster_parse_slots' result (the caller frees it).
 */
#ifndef IDEMPROXY_REDIS_CLUSTER_H
#define IDEMPROXY_REDIS_CLUSTER_H

#include <stddef.h>

#include "core/conf.h"

struct redisReply;

#define CLUSTER_NSLOTS 16384

/* HASH_SLOT(key): CRC16 of the key, or of the part between the first '{' and the next
 * '}' when that part is not empty. */
unsigned cluster_key_slot(const char *key, size_t len);

/* The key a command routes by, from its arguments: EVAL/EVALSHA's first key (none when
 * numkeys is 0), nothing for commands that take no key (PING, INFO, CONFIG, SCRIPT,
 * CLUSTER, WAIT...), else the first argument. 1 with *key and *len set, or 0. */
int cluster_command_key(int argc, const char *const *argv, const size_t *lens, const char **key,
                        size_t *len);
/* The same for a command already in Redis's wire format ("*N\r\n$l\r\narg\r\n..."). */
int cluster_wire_key(const char *wire, size_t wirelen, const char **key, size_t *len);

enum cluster_redirect {
    CLUSTER_NO_REDIRECT = 0,
    CLUSTER_MOVED, /* the slot lives at *to now: remember it */
    CLUSTER_ASK,   /* this one command goes to *to, after ASKING (the map stays) */
};
/* Read "MOVED 3999 127.0.0.1:6381" / "ASK 3999 :6381" (an empty host is from's host). */
enum cluster_redirect cluster_parse_redirect(const char *err, const struct conf_addr *from,
                                             unsigned *slot, struct conf_addr *to);

/* Errors that say the command was not executed and may be sent again shortly. */
enum cluster_retry {
    CLUSTER_RETRY_NONE = 0,
    CLUSTER_RETRY_TRYAGAIN,    /* multi-key command during a slot migration */
    CLUSTER_RETRY_CLUSTERDOWN, /* the cluster is down / the slot is not served */
    CLUSTER_RETRY_LOADING,     /* the node is loading its data */
    CLUSTER_RETRY_MASTERDOWN,  /* a replica lost its primary */
    CLUSTER_RETRY_READONLY,    /* a write reached a replica */
    CLUSTER_RETRY_COUNT
};
enum cluster_retry cluster_retry_reason(const char *err);
const char *cluster_retry_name(enum cluster_retry r); /* "tryagain", ... for metrics */

/* One range of slots and the primary serving it. */
struct cluster_range {
    unsigned from, to; /* inclusive */
    struct conf_addr primary;
};
/* The ranges of a CLUSTER SLOTS reply; a node given without a host (or "?") is on
 * asked's host. 0 with *out (malloc'd, may be NULL when *n is 0), or -1 with err set. */
int cluster_parse_slots(const struct redisReply *reply, const struct conf_addr *asked,
                        struct cluster_range **out, size_t *n, char *err, size_t errlen);

#endif
