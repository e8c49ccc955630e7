/*
 * log — levelled logging to stderr.
 *
 * One line per message: "2026-11-28T22:51:12.123Z info  w1 message". The worker id
 * is thread-local (0 = main thread, printed as "main"), so no lock is taken beyond
 * the one stdio holds for a single fprintf. Messages are never truncated silently:
 * lines longer than 4 KiB are cut and end in "...".
 */
#ifndef IDEMPROXY_CORE_LOG_H
#define IDEMPROXY_CORE_LOG_H

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Set the global threshold; messages below it are dropped. Call before threads start. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Name of the calling thread in log lines: 0 = "main", N = "wN". */
void log_set_worker(int worker_id);

/* Parse "debug", "info", "warn"/"warning", "error". Returns 0, or -1 if unknown. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() <= LOG_LEVEL_DEBUG)                                                    \
            log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                                 \
    } while (0)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
