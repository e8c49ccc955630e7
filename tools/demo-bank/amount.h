/*
 * amount — the one thing demo-bank reads from a payment body: the top-level "amount".
 *
 * The body must be one JSON object (RFC 8259: any members, any whitespace, nested values
 * are checked and skipped) whose "amount" member, present exactly once, is a positive
 * integer written without fraction or exponent, at most BANK_AMOUNT_MAX. Member names are
 * compared after unescaping, so "\u0061mount" is "amount"; "amount" inside nested objects
 * does not count.
 */
#ifndef DEMO_BANK_AMOUNT_H
#define DEMO_BANK_AMOUNT_H

#include <stddef.h>

/* One payment is at most the starting balance (main.c still guards the balance itself). */
#define BANK_AMOUNT_MAX 1000000000LL

/* JSON nesting deeper than this is rejected (the parser recurses). */
#define BANK_JSON_MAX_DEPTH 64

/*
 * Parse json (len bytes, need not be NUL-terminated). On success returns 0 and sets *out.
 * On failure returns -1, leaves *out alone and points *why at a static, human-readable
 * reason (e.g. "amount must be positive", "malformed JSON: expected ':'").
 */
int bank_parse_amount(const char *json, size_t len, long long *out, const char **why);

#endif
