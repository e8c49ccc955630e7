/*
 * jsoncanon — a canonical form of a JSON text, for fingerprints that survive a client
 * re-serialising the same JSON (fingerprint-body json).
 *
 * The canonical form: no insignificant whitespace; object members sorted by their
 * (unescaped) names, byte-wise; strings written with the fewest escapes (\" \\ and the
 * control characters, \uXXXX for those without a short form); numbers, true, false and
 * null as they were written (1.0 and 1 stay different). Two texts that differ only in
 * member order or whitespace get the same form; anything else is kept apart.
 *
 * Strict RFC 8259 parsing with core/json's lexical pieces: one value, UTF-8 input (not
 * validated beyond escapes), nesting at most JSONCANON_MAX_DEPTH. Duplicate member names,
 * or input that is not JSON, is refused (-1): the caller then falls back to the raw bytes.
 */
#ifndef IDEMPROXY_IDEM_JSONCANON_H
#define IDEMPROXY_IDEM_JSONCANON_H

#include <stddef.h>

struct evbuffer;

#define JSONCANON_MAX_DEPTH 64

/* Append the canonical form of in (len bytes) to out. 0, or -1 (out unchanged) when in is
 * not a JSON text this accepts. */
int jsoncanon(struct evbuffer *out, const char *in, size_t len);

/*
 * Read a JSON object: cb(name, nlen, value, vlen, arg) once per member, in order, with
 * the name unescaped and the value as canonical JSON text (both NUL-terminated, valid
 * during the call). 0, or -1 when in is not one object or cb returned non-zero.
 */
int jsoncanon_members(const char *in, size_t len,
                      int (*cb)(const char *name, size_t nlen, const char *value, size_t vlen,
                                void *arg),
                      void *arg);

/* The bytes of a JSON string text ("a\u0062" → ab), appended to out. 0 or -1. */
int jsoncanon_string(const char *in, size_t len, struct evbuffer *out);

#endif
