/*
 * sentinel — find the primary of a Sentinel-managed group, as the Sentinel client
 * guidelines say: ask each Sentinel in turn "SENTINEL get-master-addr-by-name NAME"
 * (AUTH [user] password first when redis-sentinel-password is set), each under its own
 * deadline; a Sentinel that is unreachable, slow, refuses or knows no such master is
 * skipped, and the one that answered is asked first next time. The address is only a
 * candidate: the caller checks ROLE on the node itself before writing to it.
 *
 * One query at a time per object; the callback runs once per sentinel_query_start, from
 * the event loop (never from inside start). The object belongs to its creator
 * (redis.c's client); sentinel_free may be called from inside the callback.
 */
#ifndef IDEMPROXY_REDIS_SENTINEL_H
#define IDEMPROXY_REDIS_SENTINEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"

struct event_base;
struct evdns_base;
struct sentinel;
struct tls_client;

/* primary: the address found (valid during the callback), or NULL with why saying what
 * every Sentinel answered. */
typedef void (*sentinel_cb)(const struct conf_addr *primary, const char *why, void *arg);

/* sentinels: borrowed, must outlive s. query: what to send each one (copied), in Redis's
 * wire format: "SENTINEL get-master-addr-by-name NAME", after "AUTH ..." when auth_len
 * (the AUTH command's length at its start: its reply is checked first). Each Sentinel
 * gets timeout_ms to answer. master: the name (copied), for sentinel_watch. dns: names
 * are looked up with it; tls: the Sentinels are spoken to over it (NULL: plain). Both
 * borrowed; they must outlive s. */
struct sentinel *sentinel_new(struct event_base *base, struct evdns_base *dns,
                              const struct tls_client *tls, const struct conf_addr *sentinels,
                              size_t n, const char *query, size_t query_len, size_t auth_len,
                              const char *master, uint64_t timeout_ms);
/* Ask (a query in progress is left to finish: its callback is the one). 0 or -1. */
int sentinel_query(struct sentinel *s, sentinel_cb cb, void *arg);

/* The master moved: a Sentinel announced "+switch-master NAME old-ip old-port new-ip
 * new-port" for our name. primary: the new address (valid during the callback); from:
 * the Sentinel that said so. Only a hint (the caller asks again and checks ROLE). */
typedef void (*sentinel_switch_cb)(const struct conf_addr *primary, const char *from, void *arg);
/* Keep a subscription to +switch-master on one Sentinel (the next one when it is lost,
 * with back-off) and call cb for each announcement about our master. 0 or -1. */
int sentinel_watch(struct sentinel *s, sentinel_switch_cb cb, void *arg);
void sentinel_free(struct sentinel *s);

#endif
