/*
 * storm: the helpers that classify an attempt (status + problem type slug), the outcome
 * kinds table, and the retry-status text. storm.c is included to reach them.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "storm.c"

static char slug[48];

static const char *slug_of(const char *body)
{
    storm_problem_slug(body, strlen(body), slug, sizeof(slug));
    return slug;
}

Test(storm, the_slug_of_a_problem_type)
{
    /* idemproxy's and demo-bank's problem documents, with and without spaces */
    cr_assert_str_eq(slug_of("{\"type\": \"tag:idemproxy.dev,2026:problem:outcome-unknown\", "
                             "\"title\": \"x\"}"),
                     "outcome-unknown");
    cr_assert_str_eq(slug_of("{\"type\":\"tag:idemproxy.dev,2026:demo-bank:unavailable\"}"),
                     "unavailable");
    cr_assert_str_eq(slug_of("{\"type\" :\t\"https://example.com/probs/out-of-credit\"}"),
                     "out-of-credit");
    cr_assert_str_eq(slug_of("{\"type\": \"plain\"}"), "plain");
}

Test(storm, no_slug_without_a_type_string)
{
    cr_assert_str_eq(slug_of("{\"id\":\"pay_1\",\"amount\":3}"), "");
    cr_assert_str_eq(slug_of("{\"type\": 3}"), "");
    cr_assert_str_eq(slug_of("{\"type\": \"unterminated"), "");
    cr_assert_str_eq(slug_of("{\"type\": \"ends-in-colon:\"}"), "");
    cr_assert_str_eq(slug_of("{\"type\": \"esc\\\"aped\"}"), "");
    cr_assert_str_eq(slug_of("\"type"), "");
    cr_assert_str_eq(slug_of(""), "");
}

Test(storm, a_long_slug_is_cut_to_the_buffer)
{
    char small[8];

    storm_problem_slug("{\"type\": \"a:0123456789\"}", 24, small, sizeof(small));
    cr_assert_str_eq(small, "0123456");
}

Test(storm, outcome_kinds_are_kept_apart_and_bounded)
{
    static struct storm s;
    char name[32];

    cr_assert_eq(storm_class(&s, 201, "201"), 0);
    cr_assert_eq(storm_class(&s, 504, "504 outcome-unknown"), 1);
    cr_assert_eq(storm_class(&s, 201, "201"), 0);
    cr_assert_eq(storm_class(&s, 0, "aborted"), 2);
    for (int i = 3; i < STORM_MAX_CLASSES + 10; i++) {
        snprintf(name, sizeof(name), "error: %d", i);
        cr_assert_eq(storm_class(&s, 0, name),
                     i < STORM_MAX_CLASSES - 1 ? i : STORM_MAX_CLASSES - 1);
    }
    cr_assert_str_eq(s.classes[STORM_MAX_CLASSES - 1].name, "other kinds");
    cr_assert_eq(s.nclasses, STORM_MAX_CLASSES - 1);
}

Test(storm, retry_statuses_as_text)
{
    uint8_t bits[STORM_STATUS_MAX] = {0};
    char buf[64];

    storm_status_text(bits, buf, sizeof(buf));
    cr_assert_str_eq(buf, "none");
    bits[409] = bits[429] = 1;
    memset(bits + 500, 1, 100);
    storm_status_text(bits, buf, sizeof(buf));
    cr_assert_str_eq(buf, "409,429,500-599");
}

Test(storm, final_answers_follow_the_retry_statuses)
{
    static struct storm s;

    s.retry_status[409] = s.retry_status[503] = 1;
    cr_assert(storm_is_final(&s, 201));
    cr_assert(storm_is_final(&s, 500));
    cr_assert(storm_is_final(&s, 504));
    cr_assert_not(storm_is_final(&s, 409));
    cr_assert_not(storm_is_final(&s, 503));
    cr_assert_not(storm_is_final(&s, 100));
    cr_assert_not(storm_is_final(&s, 1000));
}
