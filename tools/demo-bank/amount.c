/*
 * amount — a validating recursive-descent JSON reader that keeps only the top-level
 * "amount". Everything else is checked against the RFC 8259 grammar and skipped, so a
 * body is accepted only if a real JSON parser would accept it too (UTF-8 validity of
 * string contents aside: those bytes are never used).
 */
#include <string.h>

#include "amount.h"

#include "core/bytes.h"

struct amount_parser {
    const char *p, *end;
    const char *why; /* first error, static */
};

static int amount_fail(struct amount_parser *jp, const char *why)
{
    if (!jp->why)
        jp->why = why;
    return -1;
}

static void amount_skip_ws(struct amount_parser *jp)
{
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

/*
 * A string starting at the opening quote. If is_amount is not NULL, sets it to whether
 * the unescaped contents are exactly "amount".
 */
static int amount_string(struct amount_parser *jp, int *is_amount)
{
    static const char want[] = "amount";
    size_t n = 0;  /* unescaped characters seen */
    int match = 1; /* so far equal to the start of want */

    jp->p++; /* opening quote */
    for (;;) {
        unsigned int c;

        if (jp->p >= jp->end)
            return amount_fail(jp, "malformed JSON: unterminated string");
        c = (unsigned char)*jp->p++;
        if (c == '"')
            break;
        if (c < 0x20)
            return amount_fail(jp, "malformed JSON: control character in string");
        if (c == '\\') {
            if (jp->p >= jp->end)
                return amount_fail(jp, "malformed JSON: unterminated string");
            c = (unsigned char)*jp->p++;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                break;
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                c = 0x01; /* a control character: never part of "amount" */
                break;
            case 'u': {
                unsigned int v = 0;
                if (jp->end - jp->p < 4)
                    return amount_fail(jp, "malformed JSON: invalid \\u escape");
                for (int i = 0; i < 4; i++) {
                    int h = bytes_hexval(jp->p[i]);
                    if (h < 0)
                        return amount_fail(jp, "malformed JSON: invalid \\u escape");
                    v = v * 16 + (unsigned int)h;
                }
                jp->p += 4;
                c = v < 0x80 ? v : 0x80; /* non-ASCII: never part of "amount" */
                break;
            }
            default:
                return amount_fail(jp, "malformed JSON: invalid escape in string");
            }
        }
        if (match && (n >= sizeof(want) - 1 || c != (unsigned char)want[n]))
            match = 0;
        n++;
    }
    if (is_amount)
        *is_amount = match && n == sizeof(want) - 1;
    return 0;
}

struct amount_number {
    int negative;
    int integer;          /* no fraction, no exponent */
    int too_large;        /* integer part above BANK_AMOUNT_MAX */
    unsigned long long v; /* integer part, valid unless too_large */
};

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int amount_number(struct amount_parser *jp, struct amount_number *num)
{
    const char *p = jp->p, *end = jp->end;

    memset(num, 0, sizeof(*num));
    num->integer = 1;
    if (p < end && *p == '-') {
        num->negative = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return amount_fail(jp, "malformed JSON: invalid number");
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return amount_fail(jp, "malformed JSON: number with a leading zero");
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (!num->too_large) {
                num->v = num->v * 10 + (unsigned long long)(*p - '0');
                if (num->v > (unsigned long long)BANK_AMOUNT_MAX)
                    num->too_large = 1;
            }
            p++;
        }
    }
    if (p < end && *p == '.') {
        num->integer = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return amount_fail(jp, "malformed JSON: invalid number");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        num->integer = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return amount_fail(jp, "malformed JSON: invalid number");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    jp->p = p;
    return 0;
}

static int amount_literal(struct amount_parser *jp, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n) != 0)
        return amount_fail(jp, "malformed JSON: invalid value");
    jp->p += n;
    return 0;
}

static int amount_value(struct amount_parser *jp, int depth);

/*
 * An object starting at '{'. At the top level (amount != NULL) the "amount" member is
 * read into *amount and *found counts its occurrences; deeper objects are only checked.
 */
static int amount_object(struct amount_parser *jp, int depth, long long *amount, int *found)
{
    jp->p++; /* '{' */
    amount_skip_ws(jp);
    if (jp->p < jp->end && *jp->p == '}') {
        jp->p++;
        return 0;
    }
    for (;;) {
        int is_amount = 0;

        if (jp->p >= jp->end || *jp->p != '"')
            return amount_fail(jp, "malformed JSON: expected a member name");
        if (amount_string(jp, &is_amount) < 0)
            return -1;
        amount_skip_ws(jp);
        if (jp->p >= jp->end || *jp->p != ':')
            return amount_fail(jp, "malformed JSON: expected ':'");
        jp->p++;
        amount_skip_ws(jp);
        if (amount && is_amount) {
            struct amount_number num;
            if (++*found > 1)
                return amount_fail(jp, "duplicate \"amount\" member");
            if (jp->p >= jp->end || (*jp->p != '-' && (*jp->p < '0' || *jp->p > '9'))) {
                /* Validate whatever it is first: malformed JSON is the better report. */
                if (amount_value(jp, depth + 1) < 0)
                    return -1;
                return amount_fail(jp, "amount must be an integer");
            }
            if (amount_number(jp, &num) < 0)
                return -1;
            /* "0x10" is malformed JSON, not an amount of 0. */
            amount_skip_ws(jp);
            if (jp->p >= jp->end || (*jp->p != ',' && *jp->p != '}'))
                return amount_fail(jp, "malformed JSON: expected ',' or '}'");
            if (!num.integer)
                return amount_fail(jp, "amount must be an integer (no fraction or exponent)");
            if (num.negative || num.v == 0)
                return amount_fail(jp, "amount must be positive");
            if (num.too_large)
                return amount_fail(jp, "amount too large (at most 1000000000)");
            *amount = (long long)num.v;
        } else if (amount_value(jp, depth + 1) < 0) {
            return -1;
        }
        amount_skip_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            amount_skip_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == '}') {
            jp->p++;
            return 0;
        }
        return amount_fail(jp, "malformed JSON: expected ',' or '}'");
    }
}

static int amount_array(struct amount_parser *jp, int depth)
{
    jp->p++; /* '[' */
    amount_skip_ws(jp);
    if (jp->p < jp->end && *jp->p == ']') {
        jp->p++;
        return 0;
    }
    for (;;) {
        if (amount_value(jp, depth + 1) < 0)
            return -1;
        amount_skip_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            amount_skip_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == ']') {
            jp->p++;
            return 0;
        }
        return amount_fail(jp, "malformed JSON: expected ',' or ']'");
    }
}

/* Any value (no leading whitespace), checked and skipped. */
static int amount_value(struct amount_parser *jp, int depth)
{
    struct amount_number num;

    if (depth > BANK_JSON_MAX_DEPTH)
        return amount_fail(jp, "malformed JSON: nested too deeply");
    if (jp->p >= jp->end)
        return amount_fail(jp, "malformed JSON: unexpected end");
    switch (*jp->p) {
    case '{':
        return amount_object(jp, depth, NULL, NULL);
    case '[':
        return amount_array(jp, depth);
    case '"':
        return amount_string(jp, NULL);
    case 't':
        return amount_literal(jp, "true");
    case 'f':
        return amount_literal(jp, "false");
    case 'n':
        return amount_literal(jp, "null");
    default:
        if (*jp->p == '-' || (*jp->p >= '0' && *jp->p <= '9'))
            return amount_number(jp, &num);
        return amount_fail(jp, "malformed JSON: invalid value");
    }
}

int bank_parse_amount(const char *json, size_t len, long long *out, const char **why)
{
    struct amount_parser jp = {json, json + len, NULL};
    long long amount = 0;
    int found = 0;

    amount_skip_ws(&jp);
    if (jp.p >= jp.end) {
        amount_fail(&jp, "empty body (expected a JSON object with \"amount\")");
        goto err;
    }
    if (*jp.p != '{') {
        /* Still tell malformed JSON from a well-formed non-object. */
        if (amount_value(&jp, 1) == 0)
            amount_fail(&jp, "body must be a JSON object");
        goto err;
    }
    if (amount_object(&jp, 1, &amount, &found) < 0)
        goto err;
    amount_skip_ws(&jp);
    if (jp.p < jp.end) {
        amount_fail(&jp, "malformed JSON: data after the object");
        goto err;
    }
    if (!found) {
        amount_fail(&jp, "missing \"amount\" member");
        goto err;
    }
    *out = amount;
    return 0;
err:
    *why = jp.why;
    return -1;
}
