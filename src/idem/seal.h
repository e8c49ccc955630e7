/*
 * seal — records encrypted at rest: AES-256-GCM envelopes around the record bytes
 * (record.h), keyed from a key file, so that the answers Redis holds (bodies with card
 * data, addresses, tokens) are not readable there, and a record copied under another key
 * or paired with another fingerprint does not open.
 *
 * Envelope (all integers big-endian), SEAL_OVERHEAD = 38 bytes more than the record:
 *   "IDRE"        magic, 4 bytes (a plain record starts "IDRC")
 *   u8  version   1
 *   u8  algorithm 1 = AES-256-GCM
 *   u32 key id    which key of the file sealed it
 *   12 bytes      nonce, unique per record: 64 random bits per thread and a count
 *   ...           the record, encrypted
 *   16 bytes      GCM tag
 * Additional data (authenticated, not stored): "idemproxy/record/v1", the Redis key's
 * length (u32) and bytes, the fingerprint (64 hex: the value's clear prefix, which the
 * claim compares) and the envelope's first 10 bytes. What the claim must compare stays
 * readable: the "D" and the fingerprint before the envelope.
 *
 * Key file (record-keys): one key per line, "ID BASE64" — ID a decimal number
 * 1..4294967295, BASE64 32 random bytes (openssl rand -base64 32); '#' starts a comment.
 * The first key seals, every key opens; ids are unique. Rotation: add the new key as a
 * second line everywhere and reload, move it first and reload, and drop the old one once
 * the records it sealed have expired (retention).
 *
 * A keyring is immutable once loaded and shared read-only by every worker of a
 * configuration generation; sealing and opening use no state of their own beyond the
 * cipher, fetched once per process (EVP_CIPHER_fetch, never per record).
 */
#ifndef IDEMPROXY_IDEM_SEAL_H
#define IDEMPROXY_IDEM_SEAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/conf.h"

#define SEAL_KEY_LEN  32
#define SEAL_HEAD_LEN 22 /* magic, version, algorithm, key id, nonce: before the record */
#define SEAL_TAG_LEN  16
#define SEAL_OVERHEAD (SEAL_HEAD_LEN + SEAL_TAG_LEN)
#define SEAL_MAX_KEYS 64
#define SEAL_FILE_MAX (64 * 1024)

enum seal_mode { SEAL_OFF = 0, SEAL_AES_256_GCM };

struct seal_key {
    uint32_t id;
    unsigned char key[SEAL_KEY_LEN];
};

struct seal_keyring {
    struct seal_key keys[SEAL_MAX_KEYS]; /* keys[0] seals */
    size_t n;
};

/* Directives record-encryption, record-keys, record-plaintext-read. */
struct seal_conf {
    int mode;                  /* record-encryption [off] (enum seal_mode) */
    char *keys_file;           /* record-keys [none]; owned */
    int plaintext_read;        /* record-plaintext-read [no]: plain records replayed while
                                  records are sealed (a migration) */
    struct seal_keyring *ring; /* keys_file, loaded by seal_conf_load; owned */
};
extern const struct conf_directive seal_conf_rows[]; /* ended by CONF_END */

/* Read keys_file (once the whole configuration is read: -t checks it too): record-
 * encryption needs it; without encryption a key file only opens (to turn sealing off
 * while sealed records live). 0, or -1 with err set ("FILE:LINE: ..." for the file's
 * errors). */
int seal_conf_load(struct seal_conf *conf, char *err, size_t errlen);
void seal_conf_release(struct seal_conf *conf);
/* Likely mistakes, one "idemproxy: warning: ..." line each to out (a key file others
 * may read). Returns how many. */
int seal_conf_warnings(const struct seal_conf *conf, FILE *out);

/* Parse a key file. NULL with err set on any error (nothing is half-loaded). */
struct seal_keyring *seal_keyring_load(const char *path, char *err, size_t errlen);
void seal_keyring_free(struct seal_keyring *kr); /* NULL: nothing */

/* Does data start like an envelope (magic and length)? Its key id when it does. */
int seal_is_sealed(const void *data, size_t len, uint32_t *key_id);

/* Seal in place: buf holds SEAL_HEAD_LEN bytes of room, the record (plain_len bytes),
 * then SEAL_TAG_LEN bytes of room; the whole is the envelope afterwards. rkey is the
 * Redis key, fp_hex the fingerprint stored before it (IDKEY_HEX_LEN bytes, no NUL
 * needed). 0, or -1 (OpenSSL failed). */
int seal_record(const struct seal_keyring *kr, void *buf, size_t plain_len, const char *rkey,
                const char *fp_hex);

enum seal_status {
    SEAL_OPENED = 0,
    SEAL_UNKNOWN_KEY, /* sealed with a key id the file does not have (any more) */
    SEAL_BAD,         /* does not open: altered, truncated, or another key's record */
    SEAL_NO_MEMORY,
};
const char *seal_status_str(enum seal_status st);

/* Open an envelope: the record into *out (malloc'd, *out_len bytes; free it). */
enum seal_status seal_open(const struct seal_keyring *kr, const void *data, size_t len,
                           const char *rkey, const char *fp_hex, unsigned char **out,
                           size_t *out_len);

#endif
