/*
 * faults — the injected-faults table (contract in faults.h).
 *
 * The text is copied once; the rows point into that copy, whose TABs, commas and line
 * ends are overwritten with NULs.
 */
#include "faults.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wire.h"

#define FAULTS_FILE_MAX (1024 * 1024)

struct faults {
    char *text;
    struct report_fault rows[FAULTS_MAX];
    const char *effects[FAULTS_MAX][FAULTS_MAX_EFFECTS];
    size_t nrows;
};

/* Trim spaces at both ends, in place. */
static char *faults_trim(char *s)
{
    char *e = s + strlen(s);

    while (*s == ' ')
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/* Split effects (comma-separated, "-" for none) into row r. -1 if there are too many. */
static int faults_effects(struct faults *f, size_t r, char *list)
{
    struct report_fault *row = &f->rows[r];
    char *p = faults_trim(list);

    row->effects = f->effects[r];
    row->neffects = 0;
    if (strcmp(p, "-") == 0 || *p == '\0')
        return 0;
    while (p) {
        char *comma = strchr(p, ',');

        if (comma)
            *comma = '\0';
        p = faults_trim(p);
        if (*p) {
            if (row->neffects == FAULTS_MAX_EFFECTS)
                return -1;
            f->effects[r][row->neffects++] = p;
        }
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

struct faults *faults_parse(const char *text, size_t len, char *err, size_t errlen)
{
    struct faults *f = calloc(1, sizeof(*f));
    char *line, *next;
    unsigned lineno = 0;

    if (!f || !(f->text = malloc(len + 1))) {
        wire_errf(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(f->text, text, len);
    f->text[len] = '\0';
    if (memchr(f->text, '\0', len)) {
        wire_errf(err, errlen, "a NUL byte in the file");
        goto fail;
    }
    for (line = f->text; line; line = next) {
        char *field[4] = {NULL};
        size_t nf = 0;
        struct report_fault *row;

        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (*faults_trim(line) == '\0' || *faults_trim(line) == '#')
            continue;
        for (char *p = line; p && nf < 4; nf++) {
            char *tab = nf < 3 ? strchr(p, '\t') : NULL;

            if (tab)
                *tab = '\0';
            field[nf] = p;
            p = tab ? tab + 1 : NULL;
        }
        if (nf < 3) {
            wire_errf(err, errlen,
                      "line %u: expected LABEL, INJECTED and EFFECTS separated by tabs", lineno);
            goto fail;
        }
        if (f->nrows == FAULTS_MAX) {
            wire_errf(err, errlen, "line %u: more than %d kinds of fault", lineno, FAULTS_MAX);
            goto fail;
        }
        row = &f->rows[f->nrows];
        row->label = faults_trim(field[0]);
        row->injected = faults_trim(field[1]);
        row->note = field[3] && *faults_trim(field[3]) ? faults_trim(field[3]) : NULL;
        if (*row->label == '\0') {
            wire_errf(err, errlen, "line %u: empty label", lineno);
            goto fail;
        }
        if (faults_effects(f, f->nrows, field[2]) < 0) {
            wire_errf(err, errlen, "line %u: more than %d effects", lineno, FAULTS_MAX_EFFECTS);
            goto fail;
        }
        f->nrows++;
    }
    return f;
fail:
    faults_free(f);
    return NULL;
}

const struct report_fault *faults_table(const struct faults *f, size_t *n)
{
    *n = f ? f->nrows : 0;
    return f ? f->rows : NULL;
}

void faults_free(struct faults *f)
{
    if (!f)
        return;
    free(f->text);
    free(f);
}

int faults_read_file(const char *path, uint64_t wait_ms, char **text, size_t *len, char *err,
                     size_t errlen)
{
    struct timespec pause = {0, 100 * 1000 * 1000};
    uint64_t waited = 0;
    FILE *fp;
    char *buf = NULL;
    size_t n = 0, cap = 0;

    *text = NULL;
    *len = 0;
    while ((fp = fopen(path, "rb")) == NULL) {
        if (errno != ENOENT) {
            wire_errf(err, errlen, "'%s': %s", path, strerror(errno));
            return -1;
        }
        if (waited >= wait_ms) {
            wire_errf(err, errlen, "'%s': not written within %.1f s", path,
                      (double)wait_ms / 1000.0);
            return -1;
        }
        nanosleep(&pause, NULL);
        waited += 100;
    }
    for (;;) {
        size_t got;

        if (n + 4096 + 1 > cap) {
            char *nb;

            cap = cap ? cap * 2 : 8192;
            if (cap > FAULTS_FILE_MAX + 8192 || !(nb = realloc(buf, cap))) {
                wire_errf(err, errlen, "'%s': too large or out of memory", path);
                goto fail;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, 4096, fp);
        n += got;
        if (got < 4096)
            break;
    }
    if (ferror(fp)) {
        wire_errf(err, errlen, "'%s': read error", path);
        goto fail;
    }
    fclose(fp);
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
fail:
    fclose(fp);
    free(buf);
    return -1;
}
