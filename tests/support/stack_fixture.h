/*
 * stack_fixture — the idempotency stack (harness_stack_*, harness.h) as a Criterion
 * fixture for the test programs that drive it.
 *
 * Header-only on purpose: Criterion's assertions have to run in the test program, while
 * the support library stays plain C returning error codes. Include it once per test
 * program; it defines that program's stack, `stack` (Criterion runs every test in a
 * process of its own, so each test has its own).
 *
 *   TestSuite(idem, .init = stack_setup, .fini = stack_teardown);  the default stack
 *   TestSuite(idem_policy, .fini = stack_teardown);  each Test calls stack_start(opts...)
 */
#ifndef IDEMPROXY_STACK_FIXTURE_H
#define IDEMPROXY_STACK_FIXTURE_H

#include <criterion/criterion.h>

#include "harness.h"

static struct harness_stack stack;

/* harness_stack_start() or fail the test (stderr says which server did not start). */
static inline void stack_start(const char *const proxy_extra[], const char *const redis_extra[])
{
    cr_assert_eq(harness_stack_start(&stack, proxy_extra, redis_extra), 0,
                 "the stack did not start");
}

/* .init: the stack with default options. */
static inline void stack_setup(void)
{
    stack_start(NULL, NULL);
}

/* .fini: stop the stack; report a replica that did not exit cleanly on SIGTERM (a drain
 * that hangs, a leak under ASan): its log goes to stderr, where scripts/test.sh finds
 * sanitizer reports. Criterion 2.4 prints a failed expectation in .fini but does not
 * count it as a failed test. */
static inline void stack_teardown(void)
{
    int unclean = harness_stack_stop(&stack);

    cr_expect_eq(unclean, 0, "%d idemproxy replica(s) did not exit cleanly", unclean);
}

/* harness_keyed_post() or fail the test. */
static inline void stack_post(uint16_t port, const struct harness_keyed *q, struct harness_resp *r)
{
    cr_assert_eq(harness_keyed_post(port, q, r), 0, "no answer");
}

#endif
