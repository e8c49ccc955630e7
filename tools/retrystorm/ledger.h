/*
 * ledger — reading an upstream's execution ledger.
 *
 * The demo upstream answers GET /ledger (the test upstream GET /executions) with
 *   {"total": T, "keys": {"<Idempotency-Key>": count, ...}}
 * where count is how often that replica executed the key. Other members are ignored, in
 * any order; the object must be valid JSON as far as it is read (strings with escapes,
 * numbers, nested values up to LEDGER_MAX_DEPTH) and "keys" must be an object whose
 * values are non-negative integers. Keys are delivered decoded (\uXXXX as UTF-8).
 *
 * Nothing is allocated that outlives a call; the key passed to the callback is valid only
 * during the callback.
 */
#ifndef RETRYSTORM_LEDGER_H
#define RETRYSTORM_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#define LEDGER_MAX_DEPTH 32
#define LEDGER_KEY_MAX   1024 /* longer keys are reported truncated to this many bytes */

typedef void (*ledger_key_fn)(void *arg, const char *key, size_t keylen, uint64_t count);

/*
 * Parse one ledger document. Calls fn once per member of "keys" and sets *total (0 when
 * the document has no "total"). Returns 0, or -1 with err set ("offset 12: expected ':'");
 * fn may have been called for some keys before an error was found.
 */
int ledger_parse(const char *json, size_t len, uint64_t *total, ledger_key_fn fn, void *arg,
                 char *err, size_t errlen);

#endif
