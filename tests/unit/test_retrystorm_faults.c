/* faults: the injected-faults table retrystorm reads from an injector (--faults). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faults.h"

static char err[256];

static struct faults *parse(const char *text)
{
    err[0] = '\0';
    return faults_parse(text, strlen(text), err, sizeof(err));
}

Test(faults, the_documented_shape)
{
    struct faults *f =
        parse("# a comment\n"
              "\n"
              "redis frozen\t4, 3.1 s\t503 store-unavailable, 409 in-use\tnote here\n"
              "  client aborts \t rate 0.1 \t aborted\r\n"
              "killed\t1\t-\t12 of 12\n");
    const struct report_fault *t;
    size_t n;

    cr_assert_not_null(f, "%s", err);
    t = faults_table(f, &n);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(t[0].label, "redis frozen");
    cr_assert_str_eq(t[0].injected, "4, 3.1 s");
    cr_assert_eq(t[0].neffects, 2);
    cr_assert_str_eq(t[0].effects[0], "503 store-unavailable");
    cr_assert_str_eq(t[0].effects[1], "409 in-use");
    cr_assert_str_eq(t[0].note, "note here");
    /* spaces around fields and a CR at the end are trimmed; no note is NULL */
    cr_assert_str_eq(t[1].label, "client aborts");
    cr_assert_str_eq(t[1].injected, "rate 0.1");
    cr_assert_eq(t[1].neffects, 1);
    cr_assert_str_eq(t[1].effects[0], "aborted");
    cr_assert_null(t[1].note);
    /* "-": no effects */
    cr_assert_eq(t[2].neffects, 0);
    cr_assert_str_eq(t[2].note, "12 of 12");
    faults_free(f);
}

Test(faults, a_note_may_hold_tabs_and_the_text_need_not_end_in_a_newline)
{
    struct faults *f = parse("a\tb\tc\tnote\twith\ttabs");
    const struct report_fault *t;
    size_t n;

    cr_assert_not_null(f, "%s", err);
    t = faults_table(f, &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(t[0].note, "note\twith\ttabs");
    faults_free(f);
}

Test(faults, malformed_tables)
{
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"only a label\n", "line 1: expected LABEL, INJECTED and EFFECTS"},
        {"ok\t1\t-\nlabel\tinjected\n", "line 2: expected LABEL, INJECTED and EFFECTS"},
        {" \t1\t-\n", "line 1: empty label"},
        {"a\t1\te,e,e,e,e,e,e,e,e,e,e,e,e,e,e,e,e\n", "line 1: more than 16 effects"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_null(parse(bad[i].text), "accepted: %s", bad[i].text);
        cr_assert(strstr(err, bad[i].why), "[%s]: %s", bad[i].text, err);
    }
    cr_assert_null(faults_parse("a\t1\0\t-\n", 7, err, sizeof(err)));
    cr_assert(strstr(err, "NUL"), "%s", err);
}

Test(faults, at_most_32_kinds)
{
    char text[33 * 16] = "";

    for (int i = 0; i < 33; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "f%d\t1\t-\n", i);
    cr_assert_null(parse(text));
    cr_assert(strstr(err, "line 33: more than 32 kinds"), "%s", err);
}

Test(faults, read_file_waits_for_the_injector)
{
    char path[] = "/tmp/faults-test-XXXXXX", file[64], tmp[64], *text = NULL;
    size_t len = 0;
    pid_t pid;
    int st;

    cr_assert_not_null(mkdtemp(path));
    snprintf(file, sizeof(file), "%s/faults.tsv", path);
    snprintf(tmp, sizeof(tmp), "%s/faults.tmp", path);
    /* not there, no patience: an error naming the file */
    cr_assert_eq(faults_read_file(file, 0, &text, &len, err, sizeof(err)), -1);
    cr_assert(strstr(err, "not written within 0.0 s"), "%s", err);
    cr_assert_null(text);
    /* written 300 ms from now by another process, as documented: elsewhere, then renamed */
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        FILE *f;
        usleep(300 * 1000);
        f = fopen(tmp, "w");
        fputs("x\t1\t-\n", f);
        fclose(f);
        _exit(rename(tmp, file) == 0 ? 0 : 1);
    }
    cr_assert_eq(faults_read_file(file, 5000, &text, &len, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(text, "x\t1\t-\n");
    cr_assert_eq(len, 6);
    free(text);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    unlink(file);
    rmdir(path);
}
