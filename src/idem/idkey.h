/*
 * idkey — the Idempotency-Key itself: parsing, the record id and the request fingerprint.
 *
 * Key syntax (draft-ietf-httpapi-idempotency-key-header: an sf-string), accepted leniently:
 *   "abc"   a Structured Field string: printable ASCII (0x20-0x7E) between DQUOTEs, where
 *           only \" and \\ are escapes (any other backslash, a missing closing quote or
 *           anything after it is invalid);
 *   abc     a bare value: printable ASCII without SP, DQUOTE, ',' or '\' (so a list or a
 *           half-quoted value is never taken for a key).
 * After unquoting the key must be 1..max_len bytes. Invalid → 400, and Redis is never asked.
 *
 * Hashing: OpenSSL EVP SHA-256. Every field is length-prefixed (8-byte big-endian length),
 * and an absent header hashes differently from an empty one, so no two different inputs
 * can be concatenated into the same byte stream (exact layout at the top of idkey.c):
 *   record id   = SHA-256("idem-id/1", #scope, scope values..., key)
 *   fingerprint = SHA-256("idem-fp/1", method, target, body, #fp, fingerprint headers...)
 *   host fp     = SHA-256("idem-fp/2", fingerprint, lower-case Host name)  (claims store it)
 */
#ifndef IDEMPROXY_IDEM_IDKEY_H
#define IDEMPROXY_IDEM_IDKEY_H

#include <stddef.h>
#include <stdint.h>

struct http1_head;
struct evbuffer;

#define IDKEY_HASH_LEN 32
#define IDKEY_HEX_LEN  64

/*
 * Parse a key header value into out (NUL-terminated, unquoted; outlen >= max_len + 1).
 * Returns the key length, or -1 with a short reason in *why (static string).
 */
int idkey_parse(const char *value, size_t max_len, char *out, size_t outlen, const char **why);

/* The scope entry that stands for the client's TLS certificate (not a header: no header
 * name has a colon). */
#define IDKEY_SCOPE_CLIENT_CERT ":client-cert"

/* Record id from the scope headers' values (first occurrence of each; absent is marked;
 * IDKEY_SCOPE_CLIENT_CERT takes client_cert, NULL or "" when there is none) and the
 * unquoted key. 0 or -1 (OpenSSL failure). */
int idkey_record_id(const struct http1_head *req, char *const *scope_headers, size_t nscope,
                    const char *client_cert, const char *key, size_t keylen,
                    uint8_t out[IDKEY_HASH_LEN]);

/* Fingerprint of method, target, body and the named headers (first occurrence each). */
int idkey_fingerprint(const struct http1_head *req, struct evbuffer *body, char *const *fp_headers,
                      size_t nfp, uint8_t out[IDKEY_HASH_LEN]);

/* The fingerprint bound to the request's virtual host: its Host name in lower case and
 * without the port (replicas reached on different ports serve one host; absent is
 * marked): what claims store. 0 or -1. */
int idkey_fingerprint_host(const uint8_t fp[IDKEY_HASH_LEN], const struct http1_head *req,
                           uint8_t out[IDKEY_HASH_LEN]);

/* Lower-case hex of a hash; out must hold IDKEY_HEX_LEN + 1 bytes. Returns out. */
char *idkey_hex(const uint8_t hash[IDKEY_HASH_LEN], char *out);

#endif
