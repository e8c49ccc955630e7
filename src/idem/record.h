/*
 * record — the stored answer: a versioned, binary-safe encoding of status, end-to-end
 * headers and body, byte-exact on replay.
 *
 * Layout (all integers big-endian):
 *   "IDRC"            magic, 4 bytes
 *   u8  version       1, or 2 when the reason phrase is kept
 *   u8  flags         RECORD_F_TOO_LARGE: the answer was not kept (too large to replay)
 *   u16 status
 *   u64 created       unix time in ms
 *   u32 nheaders
 *   version 2 only: u32 reason_len, reason bytes (field-content, at most 512)
 *   nheaders × { u32 name_len, name bytes, u32 value_len, value bytes }
 *   u64 body_len, body bytes
 * Nothing may follow. Decoding checks every length against what is left, so a truncated
 * or corrupt record is rejected, never over-read.
 *
 * Version 2 is written only when the upstream's reason phrase differs from the standard
 * one (http1_reason), so that replicas of the previous release — which read only
 * version 1 — can replay nearly every record during a rolling upgrade.
 */
#ifndef IDEMPROXY_IDEM_RECORD_H
#define IDEMPROXY_IDEM_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "http/http1.h"

struct evbuffer;

#define RECORD_VERSION        1 /* without a reason phrase */
#define RECORD_VERSION_REASON 2 /* with one */
#define RECORD_REASON_MAX     512
#define RECORD_F_TOO_LARGE    0x01

/*
 * Append the encoding of an upstream answer to out: status, head's reason phrase (when
 * it is not the standard one), the end-to-end headers of head (hop-by-hop ones and
 * Content-Length are left out, as headers.h defines them), and body (not drained).
 * Returns 0 or -1.
 */
int record_encode(struct evbuffer *out, int status, const struct http1_head *head,
                  struct evbuffer *body, uint64_t created_ms);

/* The length record_encode would write, or -1 when the answer cannot be encoded. */
long long record_encoded_len(int status, const struct http1_head *head, struct evbuffer *body);

/* Encode into dst, which holds exactly len = record_encoded_len(...) bytes; *body_off
 * (may be NULL) gets where the body starts in dst. 0 or -1. */
int record_encode_flat(uint8_t *dst, size_t len, int status, const struct http1_head *head,
                       struct evbuffer *body, uint64_t created_ms, size_t *body_off);

/* Append a record that says "status was answered but is too large to replay". */
int record_encode_too_large(struct evbuffer *out, int status, uint64_t created_ms);

/* A decoded record. head.headers (and head.reason: NULL unless the record kept one)
 * point into head.buf (owned); head.status = status. */
struct record {
    int flags;
    int status;
    uint64_t created_ms;
    struct http1_head head; /* only status, reason and headers are meaningful */
    const uint8_t *body;    /* points into the input given to record_decode */
    size_t body_len;
};

/*
 * Decode data/len. On success 0 and rec filled (release with record_clear; rec->body
 * borrows data, which must outlive its use). On corrupt input, -1 and *why says what
 * was wrong; rec holds nothing.
 */
int record_decode(struct record *rec, const void *data, size_t len, const char **why);
void record_clear(struct record *rec);

#endif
