/*
 * ledger — what demo-bank executed: one entry per executed payment, in order, plus a count
 * of executions per Idempotency-Key value.
 *
 * The per-key counts are what the demo is about: with idemproxy in front, every key has
 * count 1; without it, a client that retries after a timeout shows count 2 or more.
 *
 * Keys are byte strings (a header value, used as sent). Each distinct key is copied once
 * into the ledger (interned) and every entry with that key points at the same copy. The
 * key table is open addressing with linear probing over indices into an insertion-ordered
 * array, so lookups stay O(1) at any size and the JSON lists keys in first-seen order.
 *
 * JSON produced (keys JSON-escaped; the replica name too):
 *   counts:  {"total": 3, "keys": {"k1": 1, "k2": 1}}          (keyless entries: total only)
 *   entry:   {"seq":1,"id":"pay_…","amount":100,"key":"k1","replica":"r1","unix_ms":1764370000000}
 *            ("key":null when the payment had no key)
 *   entries: "[]" or "[\n" ENTRY ",\n" ENTRY … "\n]"
 * Tools parse the counts document by looking for `"total": ` and `"<key>": `: keep the
 * spacing.
 *
 * Not thread-safe: one ledger belongs to one event loop.
 */
#ifndef DEMO_BANK_LEDGER_H
#define DEMO_BANK_LEDGER_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct ledger;

/* "pay_" + 16 hex digits + NUL */
#define LEDGER_ID_MAX 21

struct ledger_entry {
    uint64_t seq;           /* 1, 2, …: assigned by ledger_append (ignored on input) */
    char id[LEDGER_ID_MAX]; /* payment id, NUL-terminated */
    long long amount;       /* > 0 */
    const char *key;        /* NULL = no key. In the ledger: the interned copy, owned by it */
    size_t keylen;          /* bytes of key (a key may contain any byte, even NUL) */
    int64_t unix_ms;        /* wall clock at execution */
};

/*
 * A new, empty ledger for the replica named replica (copied; appears in every entry).
 * Returns NULL on allocation failure. Free with ledger_free.
 */
struct ledger *ledger_new(const char *replica);

/* Release the ledger, its entries and its interned keys. NULL is a no-op. */
void ledger_free(struct ledger *l);

/*
 * Record one executed payment. e is read, not kept: e->key (if not NULL) is copied
 * unless the ledger already holds that key. e->seq is ignored.
 * Returns the new entry's seq (>= 1), or 0 on allocation failure, in which case the
 * ledger is unchanged.
 */
uint64_t ledger_append(struct ledger *l, const struct ledger_entry *e);

/* How many appended entries carried exactly this key (0 if never seen or key is NULL). */
uint64_t ledger_count(const struct ledger *l, const char *key, size_t keylen);

/* All appended entries, with or without a key. */
uint64_t ledger_total(const struct ledger *l);

/* Number of distinct keys seen. */
size_t ledger_nkeys(const struct ledger *l);

/*
 * The entry with this seq (1 .. ledger_total), or NULL. The pointer is borrowed and only
 * valid until the next ledger_append.
 */
const struct ledger_entry *ledger_entry_at(const struct ledger *l, uint64_t seq);

/* The replica name given to ledger_new (borrowed). */
const char *ledger_replica(const struct ledger *l);

/*
 * Append JSON to out: the counts document / one entry / the entries array (formats
 * above, no trailing newline). Return 0, or -1 if out could not grow (out then holds a
 * truncated document; the ledger is never changed).
 */
int ledger_write_counts(const struct ledger *l, struct evbuffer *out);
int ledger_write_entry(const struct ledger *l, const struct ledger_entry *e, struct evbuffer *out);
int ledger_write_entries(const struct ledger *l, struct evbuffer *out);

#endif
