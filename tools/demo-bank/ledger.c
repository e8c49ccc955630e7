/*
 * ledger — entries in an array, per-key counts in an open-addressing index.
 *
 * keys[] holds each distinct key once, in first-seen order; slots[] maps a hash to
 * (index into keys[] + 1), 0 meaning empty. Nothing is ever deleted, so linear probing
 * needs no tombstones, and growing slots[] only re-places indices using the stored
 * hashes (the key strings never move, which is what lets entries point at them).
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "ledger.h"
#include "core/problem.h"

#define LEDGER_MIN_SLOTS   64
#define LEDGER_MIN_ENTRIES 64

struct ledger_key {
    char *key; /* owned, NUL-terminated for convenience (len is authoritative) */
    size_t len;
    uint64_t hash;
    uint64_t count;
};

struct ledger {
    char *replica;

    struct ledger_entry *entries; /* [0, nentries) */
    size_t nentries, entries_cap;

    struct ledger_key *keys; /* [0, nkeys), first-seen order */
    size_t nkeys, keys_cap;

    size_t *slots; /* nslots (a power of two) indices + 1; 0 = empty */
    size_t nslots;
};

/* FNV-1a, then a 64-bit finalizer so the low bits (the slot) depend on every byte. */
static uint64_t ledger_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

struct ledger *ledger_new(const char *replica)
{
    struct ledger *l = calloc(1, sizeof(*l));

    if (!l)
        goto err;
    l->replica = strdup(replica);
    l->slots = calloc(LEDGER_MIN_SLOTS, sizeof(*l->slots));
    if (!l->replica || !l->slots)
        goto err;
    l->nslots = LEDGER_MIN_SLOTS;
    return l;
err:
    ledger_free(l);
    return NULL;
}

void ledger_free(struct ledger *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nkeys; i++)
        free(l->keys[i].key);
    free(l->keys);
    free(l->slots);
    free(l->entries);
    free(l->replica);
    free(l);
}

/* The slot holding key, or the empty slot where it would go. */
static size_t ledger_probe(const struct ledger *l, const char *key, size_t len, uint64_t hash)
{
    size_t mask = l->nslots - 1;
    size_t i = (size_t)hash & mask;

    for (;;) {
        size_t s = l->slots[i];
        if (s == 0)
            return i;
        const struct ledger_key *k = &l->keys[s - 1];
        if (k->hash == hash && k->len == len && memcmp(k->key, key, len) == 0)
            return i;
        i = (i + 1) & mask;
    }
}

/* Double slots[]; -1 (and nothing changed) if memory is short. */
static int ledger_grow_slots(struct ledger *l)
{
    size_t n = l->nslots * 2;
    size_t *slots = calloc(n, sizeof(*slots));

    if (!slots)
        return -1;
    for (size_t k = 0; k < l->nkeys; k++) {
        size_t i = (size_t)l->keys[k].hash & (n - 1);
        while (slots[i] != 0)
            i = (i + 1) & (n - 1);
        slots[i] = k + 1;
    }
    free(l->slots);
    l->slots = slots;
    l->nslots = n;
    return 0;
}

/* Make room for one more element in an array of cap elements of size sz. */
static int ledger_reserve(void **arr, size_t *cap, size_t used, size_t sz, size_t min)
{
    size_t n;
    void *p;

    if (used < *cap)
        return 0;
    n = *cap ? *cap * 2 : min;
    if (n > SIZE_MAX / sz)
        return -1;
    p = realloc(*arr, n * sz);
    if (!p)
        return -1;
    *arr = p;
    *cap = n;
    return 0;
}

/*
 * The interned record for key, created (count 0) if new. NULL on allocation failure,
 * with the ledger unchanged.
 */
static struct ledger_key *ledger_intern(struct ledger *l, const char *key, size_t len)
{
    uint64_t hash = ledger_hash(key, len);
    size_t slot;
    struct ledger_key *k;

    slot = ledger_probe(l, key, len, hash);
    if (l->slots[slot] != 0)
        return &l->keys[l->slots[slot] - 1];

    /* Keep the load factor under 1/2 so probes stay short. */
    if ((l->nkeys + 1) * 2 > l->nslots) {
        if (ledger_grow_slots(l) < 0)
            return NULL;
        slot = ledger_probe(l, key, len, hash);
    }
    if (ledger_reserve((void **)&l->keys, &l->keys_cap, l->nkeys, sizeof(*l->keys),
                       LEDGER_MIN_SLOTS) < 0)
        return NULL;
    k = &l->keys[l->nkeys];
    k->key = malloc(len + 1);
    if (!k->key)
        return NULL;
    memcpy(k->key, key, len);
    k->key[len] = '\0';
    k->len = len;
    k->hash = hash;
    k->count = 0;
    l->slots[slot] = ++l->nkeys;
    return k;
}

uint64_t ledger_append(struct ledger *l, const struct ledger_entry *e)
{
    struct ledger_key *k = NULL;
    struct ledger_entry *n;

    /* Reserve the entry first: interning cannot be undone, an unused reservation can. */
    if (ledger_reserve((void **)&l->entries, &l->entries_cap, l->nentries, sizeof(*l->entries),
                       LEDGER_MIN_ENTRIES) < 0)
        return 0;
    if (e->key) {
        k = ledger_intern(l, e->key, e->keylen);
        if (!k)
            return 0;
        k->count++;
    }
    n = &l->entries[l->nentries];
    *n = *e;
    n->id[LEDGER_ID_MAX - 1] = '\0';
    n->key = k ? k->key : NULL;
    n->keylen = k ? k->len : 0;
    n->seq = ++l->nentries;
    return n->seq;
}

uint64_t ledger_count(const struct ledger *l, const char *key, size_t keylen)
{
    size_t slot;

    if (!key)
        return 0;
    slot = ledger_probe(l, key, keylen, ledger_hash(key, keylen));
    return l->slots[slot] ? l->keys[l->slots[slot] - 1].count : 0;
}

uint64_t ledger_total(const struct ledger *l)
{
    return l->nentries;
}

size_t ledger_nkeys(const struct ledger *l)
{
    return l->nkeys;
}

const struct ledger_entry *ledger_entry_at(const struct ledger *l, uint64_t seq)
{
    if (seq == 0 || seq > l->nentries)
        return NULL;
    return &l->entries[seq - 1];
}

const char *ledger_replica(const struct ledger *l)
{
    return l->replica;
}

/* Append "s" (JSON-escaped, quoted). problem_json_escape cannot report failure, so the
 * caller's final length check does. */
static int ledger_add_string(struct evbuffer *out, const char *s, size_t len)
{
    if (evbuffer_add(out, "\"", 1) < 0)
        return -1;
    problem_json_escape(out, s, len);
    return evbuffer_add(out, "\"", 1);
}

int ledger_write_counts(const struct ledger *l, struct evbuffer *out)
{
    int rc = 0;

    if (evbuffer_add_printf(out, "{\"total\": %llu, \"keys\": {", (unsigned long long)l->nentries) <
        0)
        return -1;
    for (size_t i = 0; i < l->nkeys && rc == 0; i++) {
        const struct ledger_key *k = &l->keys[i];
        if (i > 0)
            rc |= evbuffer_add(out, ", ", 2);
        rc |= ledger_add_string(out, k->key, k->len);
        rc |= evbuffer_add_printf(out, ": %llu", (unsigned long long)k->count) < 0;
    }
    rc |= evbuffer_add(out, "}}", 2);
    return rc ? -1 : 0;
}

int ledger_write_entry(const struct ledger *l, const struct ledger_entry *e, struct evbuffer *out)
{
    int rc = 0;

    rc |= evbuffer_add_printf(out, "{\"seq\":%llu,\"id\":", (unsigned long long)e->seq) < 0;
    rc |= ledger_add_string(out, e->id, strnlen(e->id, sizeof(e->id)));
    rc |= evbuffer_add_printf(out, ",\"amount\":%lld,\"key\":", e->amount) < 0;
    if (e->key)
        rc |= ledger_add_string(out, e->key, e->keylen);
    else
        rc |= evbuffer_add(out, "null", 4);
    rc |= evbuffer_add(out, ",\"replica\":", 11);
    rc |= ledger_add_string(out, l->replica, strlen(l->replica));
    rc |= evbuffer_add_printf(out, ",\"unix_ms\":%lld}", (long long)e->unix_ms) < 0;
    return rc ? -1 : 0;
}

int ledger_write_entries(const struct ledger *l, struct evbuffer *out)
{
    int rc = 0;

    if (l->nentries == 0)
        return evbuffer_add(out, "[]", 2);
    rc |= evbuffer_add(out, "[\n", 2);
    for (size_t i = 0; i < l->nentries && rc == 0; i++) {
        if (i > 0)
            rc |= evbuffer_add(out, ",\n", 2);
        rc |= ledger_write_entry(l, &l->entries[i], out);
    }
    rc |= evbuffer_add(out, "\n]", 2);
    return rc ? -1 : 0;
}
