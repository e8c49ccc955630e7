/*
 * log — level names (what log-level and --log-level accept) and the line format.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

static const struct {
    const char *name;
    enum log_level level;
} levels[] = {
    {"debug", LOG_LEVEL_DEBUG},
    {"info", LOG_LEVEL_INFO},
    {"warn", LOG_LEVEL_WARN},
    {"error", LOG_LEVEL_ERROR},
};

#define NLEVELS (sizeof(levels) / sizeof(levels[0]))

Test(log_level, names_round_trip)
{
    for (size_t i = 0; i < NLEVELS; i++) {
        enum log_level got = (enum log_level) - 1;

        cr_assert_str_eq(log_level_name(levels[i].level), levels[i].name);
        cr_assert_eq(log_level_parse(levels[i].name, &got), 0, "%s", levels[i].name);
        cr_assert_eq(got, levels[i].level, "%s", levels[i].name);
        cr_assert_eq(log_level_parse(log_level_name(got), &got), 0);
        cr_assert_eq(got, levels[i].level);
    }
}

Test(log_level, parse_ignores_case)
{
    const char *names[] = {"DEBUG", "Info", "wArN", "ERROR", "Warning"};
    enum log_level want[] = {LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR,
                             LOG_LEVEL_WARN};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        enum log_level got;

        cr_assert_eq(log_level_parse(names[i], &got), 0, "%s", names[i]);
        cr_assert_eq(got, want[i], "%s", names[i]);
    }
}

Test(log_level, warning_is_an_alias_of_warn)
{
    enum log_level got = LOG_LEVEL_DEBUG;

    cr_assert_eq(log_level_parse("warning", &got), 0);
    cr_assert_eq(got, LOG_LEVEL_WARN);
    /* the alias is accepted, the canonical name is what gets printed */
    cr_assert_str_eq(log_level_name(got), "warn");
}

Test(log_level, unknown_names_are_rejected_and_leave_out_alone)
{
    const char *bad[] = {"",       "loud", "inf",   "infos", "debug2", " info",   "info ",
                         "warn\n", "err",  "fatal", "trace", "0",      "warnings"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum log_level got = LOG_LEVEL_ERROR;

        cr_assert_eq(log_level_parse(bad[i], &got), -1, "'%s' was accepted", bad[i]);
        cr_assert_eq(got, LOG_LEVEL_ERROR, "'%s' changed the output", bad[i]);
    }
}

Test(log_level, name_of_an_out_of_range_level)
{
    cr_assert_str_eq(log_level_name((enum log_level)4), "?");
    cr_assert_str_eq(log_level_name((enum log_level) - 1), "?");
}

Test(log_level, threshold_is_set_and_read_back)
{
    cr_assert_eq(log_get_level(), LOG_LEVEL_INFO, "the default threshold is info");
    for (size_t i = 0; i < NLEVELS; i++) {
        log_set_level(levels[i].level);
        cr_assert_eq(log_get_level(), levels[i].level);
    }
}

/* ---- the line format, read back from stderr ---- */

/* Run fn with stderr redirected to a temp file; returns what it wrote (caller frees). */
static char *capture_stderr(void (*fn)(void))
{
    FILE *f = tmpfile();
    int saved = dup(STDERR_FILENO);
    char *out;
    long n;

    cr_assert_not_null(f);
    cr_assert_geq(saved, 0);
    fflush(stderr);
    cr_assert_geq(dup2(fileno(f), STDERR_FILENO), 0);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    n = ftell(f) >= 0 ? (fseek(f, 0, SEEK_END), ftell(f)) : -1;
    cr_assert_geq(n, 0);
    rewind(f);
    out = calloc(1, (size_t)n + 1);
    cr_assert_not_null(out);
    cr_assert_eq(fread(out, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return out;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ " */
static int is_timestamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ ";

    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    }
    return 1;
}

static void log_some(void)
{
    log_set_level(LOG_LEVEL_WARN);
    log_info("dropped %d", 1);
    log_debug("dropped too");
    log_warn("kept %s", "warn");
    log_set_worker(3);
    log_error("from a worker");
}

Test(log_msg, one_line_per_message_with_level_and_worker)
{
    char *out = capture_stderr(log_some), *second;

    cr_assert_null(strstr(out, "dropped"), "%s", out);
    cr_assert(is_timestamp(out), "%s", out);
    cr_assert_eq(strncmp(out + 25, "warn  main kept warn\n", 21), 0, "%s", out);
    second = strchr(out, '\n') + 1;
    cr_assert(is_timestamp(second), "%s", out);
    cr_assert_str_eq(second + 25, "error w3 from a worker\n");
    free(out);
}

static void log_long(void)
{
    char big[5000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_info("%s", big);
}

Test(log_msg, long_lines_are_cut_and_say_so)
{
    char *out = capture_stderr(log_long);
    size_t len = strlen(out);

    /* the message part is cut to 4095 bytes, the last three being "..." */
    cr_assert_eq(len, 25 + strlen("info  main ") + 4095 + 1, "%zu", len);
    cr_assert_eq(strcmp(out + len - 5, "x...\n"), 0, "%s", out + len - 10);
    free(out);
}
