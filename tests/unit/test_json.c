/*
 * json: the tree of json_parse() (values, positions, unescaping) and its refusals, each
 * with the line:column where reading stopped.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

static char err[256];

static struct json_value *parse(const char *text)
{
    struct json_value *v = json_parse(text, strlen(text), 8, err, sizeof(err));

    cr_assert_not_null(v, "refused %s: %s", text, err);
    return v;
}

/* json_parse refuses text with exactly the message want ("LINE:COL: reason"). */
static void refused(const char *text, size_t len, const char *want)
{
    struct json_value *v = json_parse(text, len, 8, err, sizeof(err));

    cr_assert_null(v, "accepted %s", text);
    cr_assert_str_eq(err, want, "for %s", text);
}

Test(json, scalars)
{
    struct json_value *v;

    v = parse(" true ");
    cr_assert_eq(v->type, JSON_TRUE);
    json_free(v);
    v = parse("null");
    cr_assert_eq(v->type, JSON_NULL);
    json_free(v);
    v = parse("-12.5e+3");
    cr_assert_eq(v->type, JSON_NUMBER);
    cr_assert_str_eq(v->str, "-12.5e+3", "a number is kept as written");
    json_free(v);
    v = parse("\"a\\\"b\\\\c\\/\\n\\u00e9\\ud83d\\ude00\"");
    cr_assert_eq(v->type, JSON_STRING);
    cr_assert_str_eq(v->str, "a\"b\\c/\n\xc3\xa9\xf0\x9f\x98\x80");
    cr_assert_eq(v->len, strlen(v->str));
    json_free(v);
    v = parse("\"a\\u0000b\"");
    cr_assert_eq(v->len, 3, "an escaped NUL is kept, len says so");
    json_free(v);
}

Test(json, objects_and_arrays_keep_order_and_positions)
{
    struct json_value *v = parse("{\n  \"b\": [1, {\"x\": null}],\n  \"a\": \"s\"\n}");
    const struct json_value *b, *a;

    cr_assert_eq(v->type, JSON_OBJECT);
    cr_assert_eq(v->n, 2);
    cr_assert_str_eq(v->members[0].name, "b", "document order");
    cr_assert_eq(v->members[0].line, 2);
    cr_assert_eq(v->members[0].col, 3);
    b = json_get(v, "b");
    cr_assert_eq(b->type, JSON_ARRAY);
    cr_assert_eq(b->n, 2);
    cr_assert_eq(b->line, 2);
    cr_assert_eq(b->col, 8);
    cr_assert_eq(b->items[1].type, JSON_OBJECT);
    cr_assert_not_null(json_get(&b->items[1], "x"));
    a = json_get(v, "a");
    cr_assert_str_eq(a->str, "s");
    cr_assert_eq(a->line, 3);
    cr_assert_eq(a->col, 8);
    cr_assert_null(json_get(v, "c"));
    cr_assert_null(json_get(a, "a"), "not an object");
    json_free(v);
    v = parse("[]");
    cr_assert_eq(v->n, 0);
    json_free(v);
    v = parse("{}");
    cr_assert_eq(v->n, 0);
    json_free(v);
}

Test(json, refusals_say_where)
{
    refused("", 0, "1:1: expected a value, found the end");
    refused("{\"a\": 1,\n \"b\" 2}", 16, "2:6: expected ':' after the member name");
    refused("{\"a\": 1,}", 9, "1:9: expected a member name (a string)");
    refused("[1 2]", 5, "1:4: expected ',' or ']' in an array");
    refused("{\"a\": 1 \"b\"}", 12, "1:9: expected ',' or '}' in an object");
    refused("{\"a\": 1,\n\n   \"a\": 2}", 20, "3:4: duplicate member \"a\" (first at 1:2)");
    refused("\"abc", 4, "1:5: unterminated string");
    refused("\"a\nb\"", 5, "1:3: control character in a string (write it as an escape)");
    refused("\"a\\qb\"", 6, "1:3: invalid escape in a string");
    refused("\"\\udc00\"", 8, "1:2: invalid escape in a string");
    refused("\"\\u12\"", 6, "1:2: invalid escape in a string");
    refused("01", 2, "1:2: unexpected text after the end of the document");
    refused("1.", 2, "1:3: invalid number");
    refused("-", 1, "1:2: invalid number");
    refused("tru", 3, "1:1: unexpected word (true, false or null?)");
    refused("{} x", 4, "1:4: unexpected text after the end of the document");
    refused("'a'", 3, "1:1: unexpected character '''");
    refused("[[[[[[[[[1]]]]]]]]]", 19, "1:9: nested deeper than 8");
    refused("// c\n1", 6, "1:1: unexpected character '/'");
    refused("\"a\0\"", 4, "1:3: control character in a string (write it as an escape)");
}
