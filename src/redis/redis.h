/*
 * redis — a generic asynchronous Redis client for one worker's event loop. It knows
 * nothing of idempotency: the callers bring their scripts and read the replies.
 *
 * Connections are our own (redis/rconn.h: socket, output buffer, hiredis's redisReader
 * as the RESP parser); hiredis's async API is not used. Two connections: one for
 * commands (pipelined), one for pub/sub (made only while something is watched). The
 * caller's Lua scripts are loaded with SCRIPT LOAD on every (re)connect and run with
 * EVALSHA, falling back to EVAL on NOSCRIPT (a promoted replica has no scripts: SCRIPT
 * LOAD is not replicated). AUTH [redis-user] redis-password goes first on every new
 * connection. Reconnects back off 50 ms -> 1 s.
 *
 * Deadlines: every command carries its own (redis-timeout), watched by one timer for
 * the oldest pending command (they are pipelined, so replies come in send order). When
 * it fires, that command fails with REDIS_CMD_TIMEOUT and the whole connection is
 * dropped — every other pending command then fails at once (REDIS_CMD_DOWN, or TIMEOUT
 * if it was due too) — and a new one is made with back-off. A command that timed out may
 * still run in Redis when it resumes: callers treat a failure after sending as "maybe
 * applied". An idle connection is PINGed every second under the same deadline, so a
 * frozen Redis (process stopped, socket open) is seen within 1 s + redis-timeout and
 * redis_ready() turns 0.
 *
 * Sentinel (redis-sentinel + redis-sentinel-master): before each connection the primary
 * is asked of the Sentinels (redis/sentinel.h), and the node it names must answer ROLE
 * "master" before any caller's command is sent to it (they wait, with their deadlines).
 * Every lost connection, missed deadline or READONLY reply asks the Sentinels again, and
 * in this mode the idle check is ROLE rather than PING: a primary demoted under us (a
 * failover) is left within a second. One Sentinel's +switch-master is also subscribed
 * to (the next one's when it is lost): an announcement leaves the old primary at once.
 *
 * Cluster (redis-cluster SEED...): the slot map is read with CLUSTER SLOTS from a seed
 * (then from any node of it), every primary in it gets a connection of its own, and each
 * command goes to the primary of its key's slot (redis/cluster.h: CRC16, hash tags;
 * keyless commands to any ready node). MOVED updates the map at once and sends the command
 * on; ASK sends it once to the node named, after ASKING; at most redis-max-redirects per
 * command. TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN and READONLY (not executed) are
 * waited out (20 ms doubling to 200 ms) within the command's deadline — in every mode,
 * where they can occur. The map is read again after MOVED, a lost connection or
 * CLUSTERDOWN (at most every 200 ms), every 250 ms while a primary of it cannot be
 * reached (its replica may be taking over), and every redis-refresh. A command whose slot
 * no node serves waits for the next map, within its deadline. Ready: a map serving every
 * slot, and each of its primaries connected with its scripts. Pub/sub (redis-pubsub):
 * classic is one connection to any node (a cluster broadcasts PUBLISH to every node);
 * sharded is SSUBSCRIBE on a connection to the node that serves the channel's slot (the
 * callers' scripts SPUBLISH there), moved when the map moves the slot or the node
 * pushes an unasked sunsubscribe (its watchers are woken to look again).
 *
 * WAIT (redis-wait REPLICAS TIMEOUT): a command issued with REDIS_F_WAIT is confirmed by
 * a "WAIT REPLICAS TIMEOUT" on the same connection (WAIT is refused inside scripts, and
 * one WAIT covers every earlier write of the connection). One WAIT is out at a time per
 * connection (it blocks the connection for up to its timeout when replicas are short):
 * commands sent meanwhile are covered by the next, sent when it returns — a group
 * commit. The callback runs once the covering WAIT's reply is in: REDIS_CMD_OK when
 * enough replicas acknowledged, REDIS_CMD_UNCONFIRMED (the command's reply is still
 * given) when fewer did, WAIT failed or the connection was lost first. The command's
 * deadline covers its own reply; the WAIT has its own.
 *
 * Lost replies: a command sent on a connection that is lost before its reply fails with
 * REDIS_CMD_DOWN ("maybe applied"), unless its caller said it may run twice
 * (REDIS_F_RESEND): then it is sent again on the next connection within its deadline.
 *
 * Queueing: a command issued while there is no connection (between a lost one and the
 * next attempt) waits in order, with its deadline, and is sent first on the next
 * connection; one whose deadline passes first fails with REDIS_CMD_TIMEOUT and was never
 * sent. At most 65536 wait; past that a command fails at once.
 *
 * Calling convention: a command function returns a handle, or NULL when it could not
 * even be queued (out of memory, queue full; the callback will NOT be called).
 * Otherwise the callback is called exactly once, later, from the event loop.
 * redis_cancel() forgets the callback (the command itself is still sent and may run).
 */
#ifndef IDEMPROXY_REDIS_REDIS_H
#define IDEMPROXY_REDIS_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"

#define REDIS_NODE_NAME_MAX (CONF_HOST_MAX + 16)
#define REDIS_MAX_NODES     64 /* nodes one client knows (a cluster's primaries and seeds) */
#define REDIS_RETRY_REASONS 6  /* enum cluster_retry's count */

struct event_base;
struct redisReply;
struct redis_client;
struct redis_cmd;
struct redis_watch;
struct tls_client;

enum redis_pubsub {
    REDIS_PUBSUB_CLASSIC = 0, /* SUBSCRIBE on one node (a cluster broadcasts PUBLISH) */
    REDIS_PUBSUB_SHARDED,     /* SSUBSCRIBE on the node serving the channel's slot */
};

enum redis_wait_policy {
    REDIS_WAIT_FAIL = 0, /* a claim not confirmed is released and answered 503 */
    REDIS_WAIT_DEGRADE,  /* it is forwarded anyway, and counted */
};

/* The client's settings (directives redis, redis-user, redis-password, redis-timeout,
 * redis-wait, redis-wait-policy, redis-sentinel, redis-sentinel-master/-user/-password,
 * redis-cluster, redis-max-redirects, redis-refresh, redis-failover-time). */
struct redis_conf {
    struct conf_addr addr;    /* redis [127.0.0.1:6379] or unix:/path */
    char *user;               /* redis-user [none: AUTH password only]; owned */
    char *password;           /* redis-password [none]; owned */
    uint64_t timeout_ms;      /* redis-timeout [500ms]: deadline of every command */
    int wait_replicas;        /* redis-wait REPLICAS TIMEOUT [0: off] */
    uint64_t wait_timeout_ms; /*   its TIMEOUT, under half of redis-timeout */
    int wait_policy;          /* redis-wait-policy [fail] (enum redis_wait_policy) */
    /* Sentinel mode: the primary is whatever these Sentinels name for sentinel_master
     * (checked with ROLE before anything is written to it); redis is then unused */
    struct conf_addr *sentinels; /* redis-sentinel HOST:PORT... ; owned */
    size_t nsentinels;
    char *sentinel_master;   /* redis-sentinel-master NAME */
    char *sentinel_user;     /* redis-sentinel-user / -password: AUTH to the Sentinels */
    char *sentinel_password; /*   themselves (the primary takes redis-user/-password) */
    /* Cluster mode: the slot map is read from these seeds; redis is then unused */
    struct conf_addr *cluster; /* redis-cluster HOST:PORT... ; owned */
    size_t ncluster;
    int max_redirects;    /* redis-max-redirects [5]: MOVED/ASK followed per command */
    uint64_t refresh_ms;  /* redis-refresh [30s]: slot map / Sentinel re-check (0: off) */
    uint64_t failover_ms; /* redis-failover-time [0: not said]: only checked against lease */
    int pubsub;           /* redis-pubsub [classic] (enum redis_pubsub) */
    /* TLS to every node, replica and Sentinel (redis-tls, redis-tls-*) */
    int tls;
    char *tls_ca_file, *tls_server_name, *tls_cert_file, *tls_key_file; /* owned */
    int tls_verify;
    struct tls_client *tls_ctx; /* made by redis_conf_load; owned */
};
extern const struct conf_directive redis_conf_rows[]; /* ended by CONF_END */
/* Once the configuration is read (-t too): load the TLS files (redis-tls). 0, or -1 with
 * err set ("redis-tls: CA file F: ..."). redis_conf_release frees what it made. */
int redis_conf_load(struct redis_conf *conf, char *err, size_t errlen);
void redis_conf_release(struct redis_conf *conf);
/* Cross-field checks (WAIT's timeout under half of redis-timeout, one of redis / redis-sentinel /
 * redis-cluster). 0, or -1 with err set. */
int redis_conf_validate(const struct redis_conf *conf, char *err, size_t errlen);

enum redis_status {
    REDIS_CMD_OK = 0,
    REDIS_CMD_TIMEOUT,     /* no answer within redis-timeout */
    REDIS_CMD_DOWN,        /* connection lost before the answer */
    REDIS_CMD_ERROR,       /* Redis answered with an error (e.g. OOM under noeviction) */
    REDIS_CMD_UNCONFIRMED, /* REDIS_F_WAIT: the command ran (reply given) but fewer
                              replicas than redis-wait asks acknowledged it in time */
};

#define REDIS_F_WAIT 0x1 /* follow the command with WAIT (when redis-wait is on) */
/* Running it twice does no harm (the claim: a second SET NX GET finds its own token):
 * when its connection is lost before the reply — whether or not Redis ran it — it is sent
 * again, to whichever node serves it then, within its deadline, instead of failing with
 * REDIS_CMD_DOWN. One that missed its own deadline still fails (REDIS_CMD_TIMEOUT). */
#define REDIS_F_RESEND 0x2

/* st == REDIS_CMD_OK or UNCONFIRMED: reply is the (non-error) reply, valid only during the
 * callback (UNCONFIRMED: errstr says what WAIT saw). Otherwise reply is NULL and errstr
 * says why. */
typedef void (*redis_reply_cb)(enum redis_status st, const struct redisReply *reply,
                               const char *errstr, void *arg);
/* A watched channel got a message (or the subscription became active: check again). */
typedef void (*redis_wake_cb)(void *arg);

/* A Lua script the caller runs by index (its position in the array given to new). */
struct redis_script {
    const char *name; /* for logs */
    const char *text;
};

/* Connect (asynchronously; failures are retried with back-off). scripts (borrowed, must
 * outlive the client) are loaded on every connection. NULL on allocation failure. */
struct redis_client *redis_client_new(struct event_base *base, const struct redis_conf *conf,
                                      const struct redis_script *scripts, size_t nscripts);

/* Drop both connections; pending callbacks are NOT called (cancel them first or accept
 * that their args are never seen again). */
void redis_client_free(struct redis_client *c);

/* EVALSHA script 1 key args... (the bytes are copied). */
struct redis_cmd *redis_eval(struct redis_client *c, int script, const char *key, int nargs,
                             const char *const *args, const size_t *lens, unsigned flags,
                             redis_reply_cb cb, void *arg);
/* EVALSHA of script as the caller formatted it already, in Redis's wire format
 * ("*N\r\n$7\r\nEVALSHA\r\n$40\r\n<redis_script_sha>\r\n..."): no copy is made
 * beyond hiredis's own. cmd is borrowed: it must stay valid until the callback has run
 * or the command was cancelled (a cancelled one not yet handed to hiredis is dropped). */
struct redis_cmd *redis_eval_formatted(struct redis_client *c, int script, const char *cmd,
                                       size_t len, unsigned flags, redis_reply_cb cb, void *arg);
const char *redis_script_sha(const struct redis_client *c, int script);

/* argv in Redis's wire format ("*N\r\n$len\r\narg\r\n"...) at dst; returns its length
 * (dst NULL: only counts). An argv entry NULL leaves its lens bytes to be written. */
size_t redis_format(char *dst, int argc, const char *const *argv, const size_t *lens);
/* Its two pieces, for a command built by hand: "*n\r\n", and "$len\r\n<bytes>\r\n"
 * (bytes NULL: left to be written, at the returned pointer - 2 - len). Each returns the
 * position past what it wrote. */
char *redis_put_array(char *p, size_t n);
char *redis_put_bulk(char *p, const void *bytes, size_t len);

/* Any other command, argv copied. */
struct redis_cmd *redis_command(struct redis_client *c, int argc, const char *const *argv,
                                const size_t *lens, unsigned flags, redis_reply_cb cb, void *arg);
void redis_cancel(struct redis_cmd *cmd);

/*
 * Call cb(arg) when a message arrives on channel. The subscription is made on first use
 * per channel; cb is also called once the subscription is active (so a message sent
 * before it is not missed: check again then). Returns a handle or NULL (no pub/sub
 * connection: rely on timers). redis_unwatch may be called from inside cb.
 */
struct redis_watch *redis_watch(struct redis_client *c, const char *channel, redis_wake_cb cb,
                                void *arg);
void redis_unwatch(struct redis_watch *w);

/* Counters for logs and tests. */
struct redis_stats {
    uint64_t commands;   /* issued */
    uint64_t timeouts;   /* failed for their deadline, sent or not */
    uint64_t errors;     /* failed otherwise: an error reply, or the connection lost */
    uint64_t reconnects; /* connections dropped for a deadline */
    uint64_t queued;     /* issued while there was no connection */
    uint64_t wait_ok;    /* WAITs that saw enough replicas */
    uint64_t wait_short; /* ... that saw fewer */
    uint64_t wait_error; /* ... that Redis refused (e.g. not a primary) */
    uint64_t pings;      /* health checks of an idle connection */
    /* Cluster mode (all 0 otherwise, but retries: LOADING, READONLY... in every mode) */
    uint64_t moved;                        /* MOVED redirects followed */
    uint64_t ask;                          /* ASK redirects followed */
    uint64_t retries[REDIS_RETRY_REASONS]; /* by enum cluster_retry (index 0 unused) */
    uint64_t refreshes;                    /* CLUSTER SLOTS sent */
    uint64_t switches;                     /* Sentinel: +switch-master announcements heard */
    uint64_t resends;                      /* REDIS_F_RESEND commands sent again */
    uint64_t tls_handshakes;               /* TLS connections made to nodes ... */
    uint64_t tls_resumed;                  /* ... of which resumed a session */
    int cluster;                           /* the client runs in Cluster mode */
    uint64_t map_age_ms;                   /* since the map was read (UINT64_MAX: never) */
};
/* Both may be called from any thread (the admin thread reads them). */
void redis_get_stats(const struct redis_client *c, struct redis_stats *out);
/* Connected, with every script loaded. */
int redis_ready(const struct redis_client *c);
/* The nodes its commands go to, "host:port" each, into out (at most max; returns how
 * many): the one node (Sentinel mode: the primary they named, or "(primary of 'NAME')"
 * before they named one), or the primaries of the slot map (the seeds before it is
 * read). Any thread. */
size_t redis_nodes(const struct redis_client *c, char (*out)[REDIS_NODE_NAME_MAX], size_t max);
/* The settings it runs with (borrowed from its creator). */
const struct redis_conf *redis_client_conf(const struct redis_client *c);

#endif
