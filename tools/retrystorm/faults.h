/*
 * faults — the table of injected faults that a fault injector hands to retrystorm
 * (--faults FILE), so that the verdict can say, per kind of fault, how many were injected
 * and what they led to.
 *
 * One fault kind per line, fields separated by TABs:
 *   LABEL <TAB> INJECTED <TAB> EFFECTS [<TAB> NOTE]
 * LABEL and INJECTED are free text ("redis frozen (SIGSTOP/SIGCONT)", "4, 3.1 s in
 * total"); EFFECTS is a comma-separated list of outcome kinds (report_class names such as
 * "503 store-unavailable"; a trailing '*' matches by prefix, so "error*" is every attempt
 * that got no answer), or "-" for none; NOTE is free text. Empty lines and lines starting
 * with '#' are skipped. At most FAULTS_MAX kinds of FAULTS_MAX_EFFECTS effects each.
 *
 * The injector writes the file when it is done (write elsewhere, then rename, so it never
 * shows half a table); retrystorm waits for it before its verdict (faults_read_file).
 */
#ifndef RETRYSTORM_FAULTS_H
#define RETRYSTORM_FAULTS_H

#include <stddef.h>
#include <stdint.h>

#include "report.h"

#define FAULTS_MAX         32
#define FAULTS_MAX_EFFECTS 16

struct faults;

/*
 * Parse len bytes of text (need not be NUL-terminated; copied). Returns the table, or
 * NULL with err set ("line 3: expected LABEL, INJECTED and EFFECTS separated by tabs").
 * Free with faults_free.
 */
struct faults *faults_parse(const char *text, size_t len, char *err, size_t errlen);

/* The parsed rows (borrowed; valid until faults_free). *n gets their number. */
const struct report_fault *faults_table(const struct faults *f, size_t *n);

/* NULL is a no-op. */
void faults_free(struct faults *f);

/*
 * Read the whole file at path into *text (malloc'd, NUL-terminated, caller frees) and
 * *len, waiting up to wait_ms for it to appear (polled every 100 ms). Returns 0, or -1
 * with err set ("'x': not written within 60 s", "'x': Permission denied").
 */
int faults_read_file(const char *path, uint64_t wait_ms, char **text, size_t *len, char *err,
                     size_t errlen);

#endif
