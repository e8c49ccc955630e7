/*
 * problem_style: error templates — what problem_render() writes for each kind (layers,
 * placeholders, escaping, headers, status), every refusal of a template with the
 * position it names, and the shipped conf/error-templates/stripe.json kind by kind.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "core/json.h"
#include "core/problem.h"

static char err[512];

/* What problem_render wrote, as strings. */
struct rendered {
    int status;
    char *body, *hdrs;
};

static char *take(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);

    cr_assert_not_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static struct rendered render(const struct problem_style *st, enum problem_kind kind,
                              const char *detail, const char *instance, const char *rid,
                              const char *extra)
{
    struct evbuffer *body = evbuffer_new(), *hdrs = evbuffer_new();
    struct rendered r;
    size_t hlen;

    cr_assert(body && hdrs);
    r.status = problem_render(st, body, hdrs, kind, detail, instance, rid, extra);
    hlen = evbuffer_get_length(hdrs);
    cr_assert_gt(hlen, 0);
    cr_assert_eq(evbuffer_pullup(hdrs, -1)[hlen - 1], '\0', "hdrs ends in a NUL byte");
    r.body = take(body);
    r.hdrs = take(hdrs);
    cr_assert_eq(strlen(r.hdrs), hlen - 1, "one NUL, at the end");
    evbuffer_free(body);
    evbuffer_free(hdrs);
    return r;
}

static void rendered_free(struct rendered *r)
{
    free(r->body);
    free(r->hdrs);
}

static struct problem_style *style(const char *text)
{
    struct problem_style *st = problem_style_parse(text, strlen(text), "t.json", err, sizeof(err));

    cr_assert_not_null(st, "refused: %s", err);
    return st;
}

static void refused(const char *text, const char *want)
{
    struct problem_style *st = problem_style_parse(text, strlen(text), "t.json", err, sizeof(err));

    cr_assert_null(st, "accepted %s", text);
    cr_assert(strstr(err, want), "for %s:\n got: %s\nwant: %s", text, err, want);
}

Test(problem_render, no_style_is_rfc9457)
{
    struct rendered r =
        render(NULL, PROBLEM_KEY_IN_USE, "busy", "/p", "rid1", "Retry-After: 1\r\n");
    struct evbuffer *b = evbuffer_new();
    char *want;

    problem_body(b, PROBLEM_KEY_IN_USE, "busy", "/p", "rid1");
    want = take(b);
    cr_assert_eq(r.status, 409);
    cr_assert_str_eq(r.body, want);
    cr_assert_str_eq(r.hdrs, "Content-Type: application/problem+json\r\nRetry-After: 1\r\n");
    free(want);
    evbuffer_free(b);
    rendered_free(&r);
}

Test(problem_render, placeholders_in_a_string_body_are_json_escaped)
{
    struct problem_style *st =
        style("{\"body\": \"{\\\"s\\\":{{status}},\\\"slug\\\":\\\"{{slug}}\\\",\\\"t\\\":"
              "\\\"{{type}}\\\",\\\"ti\\\":\\\"{{title}}\\\",\\\"d\\\":\\\"{{detail}}\\\","
              "\\\"i\\\":\\\"{{instance}}\\\",\\\"r\\\":\\\"{{request_id}}\\\"}\"}");
    struct rendered r = render(st, PROBLEM_BODY_TOO_LARGE, "over \"1m\"\n", "/a\\b", "r-1", NULL);

    cr_assert_eq(r.status, 413);
    cr_assert_str_eq(r.body, "{\"s\":413,\"slug\":\"body-too-large\",\"t\":\"" PROBLEM_TYPE_BASE
                             "body-too-large\",\"ti\":\"Request body too large\",\"d\":\"over "
                             "\\\"1m\\\"\\n\",\"i\":\"/a\\\\b\",\"r\":\"r-1\"}");
    cr_assert_str_eq(r.hdrs, "Content-Type: application/json\r\n", "the default content type");
    rendered_free(&r);
    /* absent values are empty */
    r = render(st, PROBLEM_BODY_TOO_LARGE, NULL, NULL, NULL, NULL);
    cr_assert(strstr(r.body, "\"d\":\"\",\"i\":\"\",\"r\":\"\"}"), "%s", r.body);
    rendered_free(&r);
    problem_style_free(st);
}

Test(problem_render, a_json_body_is_written_compactly)
{
    struct problem_style *st = style("{\"body\": {\"e\": {\"m\": \"say \\\"{{detail}}\\\"\", "
                                     "\"n\": [1, -2.5e3, true, false, null], \"o\": {}},"
                                     " \"q\\\"k\": \"\\u00e9\"}}");
    struct rendered r = render(st, PROBLEM_DRAINING, "a\tb", NULL, NULL, NULL);

    cr_assert_str_eq(r.body, "{\"e\":{\"m\":\"say \\\"a\\tb\\\"\",\"n\":[1,-2.5e3,true,false,"
                             "null],\"o\":{}},\"q\\\"k\":\"\xc3\xa9\"}");
    rendered_free(&r);
    problem_style_free(st);
}

Test(problem_render, layers_top_then_class_then_status_then_slug)
{
    struct problem_style *st =
        style("{\"body\": \"{{v}}|{{w}}\", \"vars\": {\"v\": \"top\", \"w\": "
              "\"top\"}, \"headers\": {\"X-A\": \"top\", \"X-B\": \"top\"},"
              " \"kinds\": {"
              "  \"idempotency-key-reused\": {\"vars\": {\"v\": \"slug\"}, "
              "\"status\": 400, \"headers\": {\"x-a\": \"slug\"}},"
              "  \"4xx\": {\"vars\": {\"v\": \"class\", \"w\": \"class\"}},"
              "  \"422\": {\"vars\": {\"v\": \"status\"}, \"headers\": "
              "{\"X-C\": \"{{status}}\"}}}}");
    struct rendered r = render(st, PROBLEM_KEY_REUSED, NULL, NULL, NULL, NULL);

    cr_assert_eq(r.status, 400, "the slug's status");
    cr_assert_str_eq(r.body, "slug|class");
    /* a header keeps its first place and takes the later value (names match without case) */
    cr_assert_str_eq(r.hdrs, "Content-Type: application/json\r\nX-A: slug\r\nX-B: top\r\n"
                             "X-C: 400\r\n");
    rendered_free(&r);
    r = render(st, PROBLEM_BAD_REQUEST, NULL, NULL, NULL, NULL);
    cr_assert_eq(r.status, 400);
    cr_assert_str_eq(r.body, "class|class");
    cr_assert_str_eq(r.hdrs, "Content-Type: application/json\r\nX-A: top\r\nX-B: top\r\n");
    rendered_free(&r);
    r = render(st, PROBLEM_OUTCOME_UNKNOWN, NULL, NULL, NULL, NULL);
    cr_assert_eq(r.status, 504);
    cr_assert_str_eq(r.body, "top|top");
    rendered_free(&r);
    /* a kind outside the table renders as internal-error, as problem_type() says */
    r = render(st, (enum problem_kind)PROBLEM_KIND_COUNT, NULL, NULL, NULL, NULL);
    cr_assert_eq(r.status, 500);
    rendered_free(&r);
    problem_style_free(st);
}

Test(problem_render, variables_may_use_built_ins_and_are_escaped_too)
{
    struct problem_style *st = style(
        "{\"body\": {\"c\": \"{{code}}\"}, \"vars\": {\"code\": \"x\\\"{{slug}}:{{detail}}\"}}");
    struct rendered r = render(st, PROBLEM_DRAINING, "d\"", NULL, NULL, NULL);

    cr_assert_str_eq(r.body, "{\"c\":\"x\\\"draining:d\\\"\"}");
    rendered_free(&r);
    problem_style_free(st);
}

Test(problem_render, the_call_sites_headers_win_and_come_first)
{
    struct problem_style *st = style(
        "{\"body\": \"x\", \"headers\": {\"retry-after\": \"9\", \"X-Id\": \"{{request_id}}\","
        " \"X-D\": \"{{detail}}\"}}");
    struct rendered r = render(st, PROBLEM_STORE_UNAVAILABLE, "line\r\nInjected: 1", NULL, "id\x01",
                               "Retry-After: 1\r\n");

    cr_assert_str_eq(r.hdrs,
                     "Content-Type: application/json\r\nRetry-After: 1\r\nX-Id: id \r\n"
                     "X-D: line  Injected: 1\r\n",
                     "control characters in values become spaces: %s", r.hdrs);
    rendered_free(&r);
    problem_style_free(st);
}

Test(problem_render, escaping_follows_the_content_type)
{
    struct problem_style *st =
        style("{\"body\": \"<p>{{detail}}</p>\", \"content_type\": \"text/html; charset=utf-8\","
              " \"kinds\": {\"internal-error\": {\"content_type\": \"text/plain\"},"
              "             \"4xx\": {\"content_type\": \"application/vnd.api+json\"}}}");
    struct rendered r = render(st, PROBLEM_REQUEST_TIMEOUT, "<a href='x'>&\"", NULL, NULL, NULL);

    cr_assert_str_eq(r.body, "<p><a href='x'>&\\\"</p>", "+json is JSON: %s", r.body);
    cr_assert_str_eq(r.hdrs, "Content-Type: application/vnd.api+json\r\n");
    rendered_free(&r);
    r = render(st, PROBLEM_INTERNAL_ERROR, "<a href='x'>&\"", NULL, NULL, NULL);
    cr_assert_str_eq(r.body, "<p><a href='x'>&\"</p>", "text/plain: as it is");
    rendered_free(&r);
    r = render(st, PROBLEM_DRAINING, "<a href='x'>&\"", NULL, NULL, NULL);
    cr_assert_str_eq(r.body, "<p>&lt;a href=&#39;x&#39;&gt;&amp;&quot;</p>");
    rendered_free(&r);
    r = render(st, PROBLEM_VERSION_NOT_SUPPORTED, NULL, NULL, NULL, NULL);
    cr_assert_str_eq(r.hdrs, "Content-Type: text/html; charset=utf-8\r\n", "the top level's");
    rendered_free(&r);
    problem_style_free(st);
}

Test(problem_style, refusals_name_the_position)
{
    refused("", "t.json:1:1: expected a value, found the end");
    refused("{\"body\": \"x\",\n \"bdy\": 1}", "t.json:2:9: unknown member \"bdy\"");
    refused("[1]", "t.json:1:1: the template must be an object");
    refused("{\"body\": \"x\", \"status\": 400}", "t.json:1:25: unknown member \"status\"");
    refused("{\"body\": \"x\", \"kinds\": {\"teapot\": {}}}",
            "t.json:1:35: \"teapot\" is no kind of error");
    refused("{\"body\": \"x\", \"kinds\": {\"418\": {}}}", "\"418\" is no kind of error");
    refused("{\"body\": \"x\", \"kinds\": {\"3xx\": {}}}", "\"3xx\" is no kind of error");
    refused("{\"body\": \"x\", \"kinds\": {\"draining\": {\"status\": 200}}}",
            "t.json:1:48: \"status\" must be a number from 400 to 599");
    refused("{\"body\": \"x\", \"kinds\": {\"draining\": {\"status\": \"503\"}}}",
            "\"status\" must be a number from 400 to 599");
    refused("{\"body\": \"x\", \"kinds\": {\"draining\": {\"kinds\": {}}}}",
            "unknown member \"kinds\" (status, content_type, body, headers, vars or comment)");
    refused("{\"body\": \"x\", \"headers\": {\"Content-Length\": \"1\"}}",
            "t.json:1:27: header Content-Length is the proxy's own");
    refused("{\"body\": \"x\", \"headers\": {\"content-type\": \"a/b\"}}",
            "t.json:1:27: header content-type: give it as \"content_type\"");
    refused("{\"body\": \"x\", \"headers\": {\"Bad Name\": \"1\"}}",
            "header name \"Bad Name\" is not a valid field name");
    refused("{\"body\": \"x\", \"headers\": {\"X-A\": \"1\", \"x-a\": \"2\"}}",
            "header x-a given twice");
    refused("{\"body\": \"x\", \"headers\": {\"X-A\": \"a\\r\\nB: c\"}}",
            "header X-A: control character in the value");
    refused("{\"body\": \"x\", \"headers\": {\"X-A\": 1}}",
            "headers \"X-A\": the value must be a string, not a number");
    refused("{\"body\": \"x\", \"headers\": []}", "\"headers\" must be an object of strings");
    refused("{\"body\": \"x\", \"vars\": {\"detail\": \"1\"}}",
            "variable name \"detail\" is a built-in placeholder");
    refused("{\"body\": \"x\", \"vars\": {\"a-b\": \"1\"}}",
            "variable name \"a-b\": use letters, digits and _");
    refused("{\"body\": \"x\", \"content_type\": \"json\"}",
            "\"content_type\" must be a media type such as \"application/json\"");
    refused("{\"body\": \"{{ status }}\"}",
            "t.json:1:10: malformed placeholder near \"{{ status }}\"");
    refused("{\"body\": \"a {{status\"}", "malformed placeholder near \"{{status\"");
    refused("{\"body\": {\"a\":\n  [\"{{typo}}\"]}}",
            "t.json:2:4: unknown placeholder {{typo}} for kind bad-request");
    refused("{\"body\": \"{{v}}\", \"kinds\": {\"4xx\": {\"vars\": {\"v\": \"1\"}}}}",
            "unknown placeholder {{v}} for kind unsupported-transfer-encoding");
    refused("{\"body\": \"{{v}}\", \"vars\": {\"v\": \"{{w}}\", \"w\": \"1\"}}",
            "{{w}}: a variable's value may use only the built-in placeholders");
    refused("{\"content_type\": \"text/plain\", \"body\": {\"a\": 1}}",
            "t.json:1:40: a body written as JSON needs a JSON content type, not text/plain");
    refused("{\"headers\": {}}", "t.json:1:1: no \"body\" for kind bad-request");
    refused("{\"kinds\": {\"4xx\": {\"body\": \"x\"}}}",
            "no \"body\" for kind unsupported-transfer-encoding");
}

Test(problem_style, load_reads_a_file_and_names_it)
{
    char path[256];
    FILE *f;
    struct problem_style *st;

    cr_assert_null(problem_style_load("/nonexistent/t.json", err, sizeof(err)));
    cr_assert_str_eq(err, "/nonexistent/t.json: No such file or directory");
    snprintf(path, sizeof(path), "/tmp/idemproxy-style-%d.json", (int)getpid());
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\n  \"body\": \"{{nope}}\"\n}\n", f);
    fclose(f);
    cr_assert_null(problem_style_load(path, err, sizeof(err)));
    cr_assert(strstr(err, path) == err && strstr(err, ":2:11: unknown placeholder {{nope}}"), "%s",
              err);
    f = fopen(path, "w");
    fputs("{\"body\": \"ok\"}", f);
    fclose(f);
    st = problem_style_load(path, err, sizeof(err));
    cr_assert_not_null(st, "%s", err);
    problem_style_free(st);
    unlink(path);
}

/* ---- the shipped Stripe template ---- */

static struct problem_style *stripe(void)
{
    struct problem_style *st =
        problem_style_load(SOURCE_DIR "/conf/error-templates/stripe.json", err, sizeof(err));

    cr_assert_not_null(st, "%s", err);
    return st;
}

/* The value of header name in r (a copy), or NULL. */
static char *header(const struct rendered *r, const char *name)
{
    char *line = strcasestr(r->hdrs, name);
    size_t n;

    if (!line || line[strlen(name)] != ':')
        return NULL;
    line += strlen(name) + 2;
    n = strcspn(line, "\r");
    return strndup(line, n);
}

Test(problem_style, stripe_every_kind_is_a_stripe_error_object)
{
    struct problem_style *st = stripe();

    for (int k = 0; k < PROBLEM_KIND_COUNT; k++) {
        const struct problem_type *t = problem_type((enum problem_kind)k);
        struct rendered r =
            render(st, (enum problem_kind)k, "what \"happened\"\n", "/v1/charges", "abc123", NULL);
        struct json_value *doc = json_parse(r.body, strlen(r.body), 8, err, sizeof(err));
        const struct json_value *e, *type, *code, *msg;
        const char *want_type;
        char *rid, want[128];

        cr_assert_not_null(doc, "%s: not JSON (%s): %s", t->slug, err, r.body);
        e = json_get(doc, "error");
        type = json_get(e, "type");
        code = json_get(e, "code");
        msg = json_get(e, "message");
        cr_assert(type && type->type == JSON_STRING, "%s: %s", t->slug, r.body);
        cr_assert(code && code->type == JSON_STRING, "%s: %s", t->slug, r.body);
        cr_assert(msg && msg->type == JSON_STRING, "%s: %s", t->slug, r.body);
        cr_assert_str_eq(msg->str, "what \"happened\"\n");
        if (k == PROBLEM_KEY_IN_USE || k == PROBLEM_KEY_REUSED)
            want_type = "idempotency_error";
        else if (t->status < 500)
            want_type = "invalid_request_error";
        else
            want_type = "api_error";
        cr_assert_str_eq(type->str, want_type, "%s", t->slug);
        snprintf(want, sizeof(want), PROBLEM_TYPE_BASE "%s", t->slug);
        cr_assert_str_eq(json_get(json_get(e, "idemproxy"), "type")->str, want);
        cr_assert(strstr(r.hdrs, "Content-Type: application/json\r\n") == r.hdrs, "%s", r.hdrs);
        rid = header(&r, "Request-Id");
        cr_assert_str_eq(rid, "abc123", "stripe-node reads Request-Id as err.requestId");
        free(rid);
        /* the status the client sees: 422 becomes Stripe's 400, the rest is kept */
        cr_assert_eq(r.status, k == PROBLEM_KEY_REUSED ? 400 : t->status, "%s", t->slug);
        json_free(doc);
        rendered_free(&r);
    }
    problem_style_free(st);
}

Test(problem_style, stripe_should_retry_says_what_can_change)
{
    struct problem_style *st = stripe();
    static const struct {
        enum problem_kind kind;
        const char *should_retry; /* NULL: no header, the client's own rule */
    } rows[] = {
        {PROBLEM_OUTCOME_UNKNOWN, "false"}, /* recorded: every retry gets it again */
        {PROBLEM_NOT_REPLAYABLE, "false"},  /* recorded too */
        {PROBLEM_STORE_UNAVAILABLE, "true"}, {PROBLEM_DRAINING, "true"},
        {PROBLEM_KEY_IN_USE, NULL}, /* 409: stripe-node retries it; a retry may replay */
        {PROBLEM_KEY_REUSED, NULL},          {PROBLEM_UPSTREAM_TIMEOUT, NULL},
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct rendered r = render(st, rows[i].kind, "d", "/", "id", "Retry-After: 1\r\n");
        char *v = header(&r, "Stripe-Should-Retry");

        if (rows[i].should_retry)
            cr_assert(v && strcmp(v, rows[i].should_retry) == 0, "%s: %s",
                      problem_type(rows[i].kind)->slug, r.hdrs);
        else
            cr_assert_null(v, "%s: %s", problem_type(rows[i].kind)->slug, r.hdrs);
        cr_assert(strstr(r.hdrs, "\r\nRetry-After: 1\r\n"), "%s", r.hdrs);
        free(v);
        rendered_free(&r);
    }
    problem_style_free(st);
}
