/*
 * harness — processes, ports and a small HTTP/1.1 client for the integration tests.
 *
 * Each spawned process leads its own process group, so stopping it also reaches whatever
 * it forked (a worker, a shell's child) instead of leaving orphans behind.
 *
 * State (temp dir, tracked pids) is per process: Criterion runs each test in its own
 * process, and a process that inherited state through fork() starts afresh, so it never
 * signals or waits for its parent's children.
 *
 * The HTTP client never reads past the response it is parsing (heads and chunk lines
 * are found with MSG_PEEK and only their own bytes consumed), so a test can read
 * several pipelined responses from one fd without the harness holding hidden buffers.
 */
#include "harness.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#ifndef IDEMPROXY_BIN
#error "IDEMPROXY_BIN must be defined by the build"
#endif
#ifndef TEST_UPSTREAM_BIN
#error "TEST_UPSTREAM_BIN must be defined by the build"
#endif

#define H_MAX_PIDS         64
#define H_MAX_HEAD         (1024 * 1024)
#define H_MAX_LINE         8192
#define H_MAX_BODY         (512UL * 1024 * 1024)
#define H_SEND_TIMEOUT_MS  30000
#define H_CLOSE_PROBE_MS   500
#define H_UPSTREAM_WAIT_MS 5000
#define H_PROXY_WAIT_MS    10000
#define H_START_ATTEMPTS   3

static struct {
    pid_t owner; /* the process this state belongs to */
    char tmpdir[PATH_MAX];
    pid_t pids[H_MAX_PIDS];
    int npids;
    int atexit_done;
} h;

/* Forget whatever a parent process left us through fork(). */
static void h_state(void)
{
    if (h.owner == getpid())
        return;
    h.owner = getpid();
    h.tmpdir[0] = '\0';
    h.npids = 0;
    if (!h.atexit_done) {
        atexit(harness_cleanup);
        h.atexit_done = 1;
    }
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Wait for events on fd until deadline (a now_ms() value): 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    struct pollfd p = {.fd = fd, .events = events};

    for (;;) {
        long long left = deadline - now_ms();
        int n;

        if (left < 0)
            left = 0;
        n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* ---- processes ---- */

const char *harness_tmpdir(void)
{
    const char *base;

    h_state();
    if (h.tmpdir[0] != '\0')
        return h.tmpdir;
    base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(h.tmpdir, sizeof(h.tmpdir), "%s/idemtest.XXXXXX", base);
    if (mkdtemp(h.tmpdir) == NULL) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", h.tmpdir, strerror(errno));
        /* a shared fallback is better than NULL paths in every caller */
        snprintf(h.tmpdir, sizeof(h.tmpdir), "%s", base);
    }
    return h.tmpdir;
}

uint16_t harness_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    uint16_t port = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void track(pid_t pid)
{
    h.pids[h.npids++] = pid;
}

static void untrack(pid_t pid)
{
    int i;

    for (i = 0; i < h.npids; i++) {
        if (h.pids[i] == pid) {
            h.pids[i] = h.pids[--h.npids];
            return;
        }
    }
}

static void log_path(const char *logname, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s.log", harness_tmpdir(), logname);
}

/* The child side of harness_spawn(): only async-signal-safe calls from here on. */
static void __attribute__((noreturn))
exec_child(const char *logpath, char *const argv[], pid_t parent)
{
    static const char msg[] = "harness: exec failed: ";
    sigset_t none;
    int fd;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setpgid(0, 0);
    /* If the test process dies without cleaning up, take the server with it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);

    fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0)
        _exit(127);
    if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
        _exit(127);
    fd = open("/dev/null", O_RDONLY);
    if (fd >= 0 && fd != STDIN_FILENO)
        dup2(fd, STDIN_FILENO);
    if (close_range(3, ~0U, 0) < 0) {
        struct rlimit rl;
        int i, max = 4096;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            rl.rlim_cur < 65536)
            max = (int)rl.rlim_cur;
        for (i = 3; i < max; i++)
            close(i);
    }
    execv(argv[0], argv);
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) > 0 &&
        write(STDERR_FILENO, argv[0], strlen(argv[0])) > 0)
        (void)!write(STDERR_FILENO, "\n", 1);
    _exit(127);
}

pid_t harness_spawn(const char *logname, char *const argv[])
{
    char path[PATH_MAX + 64];
    pid_t parent, pid;

    h_state();
    if (h.npids == H_MAX_PIDS) {
        fprintf(stderr, "harness: more than %d processes\n", H_MAX_PIDS);
        return -1;
    }
    log_path(logname, path, sizeof(path));
    parent = getpid();
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0)
        exec_child(path, argv, parent);
    setpgid(pid, pid); /* also here, or a kill right after fork could miss the group */
    track(pid);
    return pid;
}

int harness_wait_port(uint16_t port, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    for (;;) {
        int fd = harness_connect(port);

        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(10);
    }
}

/* Kill what is left of pid's process group once pid itself is gone. */
static void sweep_group(pid_t pid)
{
    if (kill(-pid, 0) == 0) {
        fprintf(stderr, "harness: processes of group %d outlived it; killing them\n", (int)pid);
        kill(-pid, SIGKILL);
    }
}

int harness_stop(pid_t pid, int sig, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    int status;

    h_state();
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid) {
            untrack(pid);
            sweep_group(pid);
            return status;
        }
        if (r < 0 && errno != EINTR) {
            untrack(pid);
            return -1;
        }
        if (now_ms() >= deadline)
            break;
        sleep_ms(5);
    }
    fprintf(stderr, "harness: pid %d did not exit within %d ms of signal %d; killing\n", (int)pid,
            timeout_ms, sig);
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    untrack(pid);
    return -1;
}

void harness_cleanup(void)
{
    h_state();
    while (h.npids > 0) {
        pid_t pid = h.pids[h.npids - 1];

        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        h.npids--;
    }
}

char *harness_read_log(const char *logname)
{
    char path[PATH_MAX + 64];
    char *buf = NULL, *nbuf;
    size_t len = 0, cap = 0;
    FILE *f;

    log_path(logname, path, sizeof(path));
    f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    for (;;) {
        size_t n;

        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            nbuf = realloc(buf, cap);
            if (nbuf == NULL)
                goto err;
            buf = nbuf;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f))
        goto err;
    fclose(f);
    buf[len] = '\0';
    return buf;
err:
    fclose(f);
    free(buf);
    return NULL;
}

static void dump_log(const char *logname)
{
    char *log = harness_read_log(logname);

    fprintf(stderr, "---- %s/%s.log ----\n%s\n---- end of %s.log ----\n", harness_tmpdir(), logname,
            log ? log : "(no log)", logname);
    free(log);
}

/* Does the log, past its first from bytes, say the address was taken? */
static int log_says_port_taken(const char *logname, size_t from)
{
    char *log = harness_read_log(logname);
    int taken = log != NULL && strlen(log) > from && strstr(log + from, "in use") != NULL;

    free(log);
    return taken;
}

/*
 * Spawn argv (whose listen_slot entry gets "127.0.0.1:<port>") and wait for the port.
 * A child that exits before listening because the port was taken in between (its log
 * says "Address already in use") is retried on a new port. Returns the pid, or 0 after
 * printing the log.
 */
static pid_t start_server_at(char **argv, int listen_slot, int port_only, uint16_t fixed,
                             uint16_t *port, const char *logname, int timeout_ms)
{
    char addr[32];
    int attempt;

    *port = 0;
    argv[listen_slot] = addr;
    for (attempt = 0; attempt < H_START_ATTEMPTS; attempt++) {
        long long deadline = now_ms() + timeout_ms;
        uint16_t p = fixed ? fixed : harness_free_port();
        char *log = harness_read_log(logname);
        size_t log_len = log ? strlen(log) : 0;
        pid_t pid;

        free(log);
        if (p == 0)
            continue;
        if (port_only)
            snprintf(addr, sizeof(addr), "%u", (unsigned)p);
        else
            snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)p);
        pid = harness_spawn(logname, argv);
        if (pid < 0)
            break;
        for (;;) {
            int fd = harness_connect(p);

            if (fd >= 0) {
                close(fd);
                *port = p;
                return pid;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                untrack(pid);
                sweep_group(pid);
                fprintf(stderr, "harness: %s exited before listening on %s\n", argv[0], addr);
                if (fixed || !log_says_port_taken(logname, log_len))
                    goto fail;
                break;
            }
            if (now_ms() >= deadline) {
                fprintf(stderr, "harness: %s not listening on %s after %d ms\n", argv[0], addr,
                        timeout_ms);
                harness_stop(pid, SIGKILL, 1000);
                goto fail;
            }
            sleep_ms(10);
        }
    }
fail:
    dump_log(logname);
    return 0;
}

static pid_t start_server(char **argv, int listen_slot, uint16_t *port, const char *logname,
                          int timeout_ms)
{
    return start_server_at(argv, listen_slot, 0, 0, port, logname, timeout_ms);
}

pid_t harness_start_upstream(uint16_t *port, const char *logname)
{
    /* --id is the log name, so a test tells its upstreams apart by X-Upstream-Id */
    char *argv[] = {TEST_UPSTREAM_BIN, "--listen", NULL, "--id", (char *)logname, NULL};

    return start_server(argv, 2, port, logname, H_UPSTREAM_WAIT_MS);
}

pid_t harness_start_proxy(uint16_t *port, const char *logname, const char *const extra[])
{
    char **argv;
    size_t n = 0, i;
    pid_t pid;

    while (extra != NULL && extra[n] != NULL)
        n++;
    argv = calloc(n + 6, sizeof(*argv));
    if (argv == NULL) {
        *port = 0;
        return 0;
    }
    argv[0] = IDEMPROXY_BIN;
    argv[1] = "--listen";
    argv[3] = "--workers";
    argv[4] = "2";
    for (i = 0; i < n; i++)
        argv[5 + i] = (char *)extra[i];
    pid = start_server(argv, 2, port, logname, H_PROXY_WAIT_MS);
    free(argv);
    return pid;
}

/* ---- HTTP client ---- */

struct buf {
    char *data;
    size_t len, cap;
};

/* Room for extra more bytes plus a NUL. */
static int buf_reserve(struct buf *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 4096;
    char *d;

    while (cap - b->len < extra + 1)
        cap *= 2;
    if (cap == b->cap)
        return 0;
    d = realloc(b->data, cap);
    if (d == NULL)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Outcome of a read step. */
enum rd { RD_OK, RD_EOF, RD_TIMEOUT, RD_ERROR };

/* recv() bounded by deadline; ECONNRESET counts as EOF. Sets *n to the bytes read. */
static enum rd recv_some(int fd, void *dst, size_t len, int flags, long long deadline, size_t *n)
{
    for (;;) {
        ssize_t r;
        int w = wait_fd(fd, POLLIN, deadline);

        if (w == 0)
            return RD_TIMEOUT;
        if (w < 0)
            return RD_ERROR;
        r = recv(fd, dst, len, flags | MSG_DONTWAIT);
        if (r > 0) {
            *n = (size_t)r;
            return RD_OK;
        }
        if (r == 0 || errno == ECONNRESET)
            return RD_EOF;
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return RD_ERROR;
    }
}

/*
 * Append bytes from fd to b up to and including the first delim (searched from
 * b->data + from). Consumes nothing past delim. RD_ERROR also when b would exceed max.
 */
static enum rd read_until(int fd, struct buf *b, size_t from, const char *delim, size_t max,
                          long long deadline)
{
    size_t dlen = strlen(delim);

    for (;;) {
        size_t n, old = b->len, start, take;
        const char *hit;
        enum rd st;

        if (b->len >= max || buf_reserve(b, 4096) < 0)
            return RD_ERROR;
        st = recv_some(fd, b->data + old, 4096, MSG_PEEK, deadline, &n);
        if (st != RD_OK)
            return st;
        start = old >= from + dlen - 1 ? old - (dlen - 1) : from;
        hit = memmem(b->data + start, old + n - start, delim, dlen);
        take = hit ? (size_t)(hit - b->data) + dlen - old : n;
        /* consume exactly what was peeked and belongs to us; it is already in place */
        while (take > 0) {
            ssize_t r = recv(fd, b->data + b->len, take, MSG_DONTWAIT);

            if (r <= 0)
                return RD_ERROR; /* peeked bytes vanished: cannot happen */
            b->len += (size_t)r;
            take -= (size_t)r;
        }
        b->data[b->len] = '\0';
        if (hit != NULL)
            return RD_OK;
    }
}

/* Append exactly n bytes to b. */
static enum rd read_n(int fd, struct buf *b, size_t n, long long deadline)
{
    while (n > 0) {
        size_t want = n < 65536 ? n : 65536, got;
        enum rd st;

        if (buf_reserve(b, want) < 0)
            return RD_ERROR;
        st = recv_some(fd, b->data + b->len, want, 0, deadline, &got);
        if (st != RD_OK)
            return st;
        b->len += got;
        b->data[b->len] = '\0';
        n -= got;
    }
    return RD_OK;
}

/* Append to b until the peer closes (RD_EOF). */
static enum rd read_to_eof(int fd, struct buf *b, long long deadline)
{
    for (;;) {
        size_t got;
        enum rd st;

        if (b->len >= H_MAX_BODY || buf_reserve(b, 65536) < 0)
            return RD_ERROR;
        st = recv_some(fd, b->data + b->len, 65536, 0, deadline, &got);
        if (st != RD_OK)
            return st;
        b->len += got;
        b->data[b->len] = '\0';
    }
}

/* Find the nth header called name in head (after the status line); value trimmed. */
static int find_header(const char *head, const char *name, int nth, const char **val, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *line;

    if (head == NULL)
        return -1;
    line = strstr(head, "\r\n");
    while (line != NULL) {
        const char *end, *v, *e;

        line += 2;
        end = strstr(line, "\r\n");
        if (end == NULL)
            end = line + strlen(line);
        if (end == line)
            break; /* the empty line ending the head */
        if ((size_t)(end - line) > nlen && line[nlen] == ':' &&
            strncasecmp(line, name, nlen) == 0 && nth-- == 0) {
            v = line + nlen + 1;
            e = end;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *val = v;
            *vlen = (size_t)(e - v);
            return 0;
        }
        line = *end ? end : NULL;
    }
    return -1;
}

/* Does any header called name list token (comma-separated, case-insensitive)? */
static int header_has_token(const char *head, const char *name, const char *token)
{
    size_t tlen = strlen(token), vlen;
    const char *v;
    int i;

    for (i = 0; find_header(head, name, i, &v, &vlen) == 0; i++) {
        const char *end = v + vlen;

        while (v < end) {
            const char *c = memchr(v, ',', (size_t)(end - v)), *e;

            e = c ? c : end;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if ((size_t)(e - v) == tlen && strncasecmp(v, token, tlen) == 0)
                return 1;
            v = c ? c + 1 : end;
        }
    }
    return 0;
}

/* "HTTP/x.y NNN ..." -> NNN, or 0. */
static int parse_status(const char *head)
{
    if (strncmp(head, "HTTP/", 5) != 0 || head[5] < '0' || head[5] > '9' || head[6] != '.' ||
        head[7] < '0' || head[7] > '9' || head[8] != ' ')
        return 0;
    if (head[9] < '1' || head[9] > '9' || head[10] < '0' || head[10] > '9' || head[11] < '0' ||
        head[11] > '9' || (head[12] != ' ' && head[12] != '\r'))
        return 0;
    return (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
}

/* Decode a chunked body into body. RD_OK when the last chunk and trailers were read;
 * RD_ERROR also for malformed framing. */
static enum rd read_chunked(int fd, struct buf *body, long long deadline)
{
    struct buf line = {0};
    enum rd st;

    for (;;) {
        unsigned long long size = 0;
        const char *p;
        int digits = 0;

        line.len = 0;
        st = read_until(fd, &line, 0, "\r\n", H_MAX_LINE, deadline);
        if (st != RD_OK)
            goto out;
        for (p = line.data; *p != '\0'; p++) {
            int d;

            if (*p >= '0' && *p <= '9')
                d = *p - '0';
            else if (*p >= 'a' && *p <= 'f')
                d = *p - 'a' + 10;
            else if (*p >= 'A' && *p <= 'F')
                d = *p - 'A' + 10;
            else
                break;
            if (size > (H_MAX_BODY >> 4)) {
                st = RD_ERROR;
                goto out;
            }
            size = size * 16 + (unsigned)d;
            digits++;
        }
        /* after the size: optional whitespace, then ";ext" or the end of the line */
        while (*p == ' ' || *p == '\t')
            p++;
        if (digits == 0 || (*p != ';' && *p != '\r') || body->len + size > H_MAX_BODY) {
            st = RD_ERROR;
            goto out;
        }
        if (size == 0)
            break;
        st = read_n(fd, body, (size_t)size, deadline);
        if (st != RD_OK)
            goto out;
        line.len = 0;
        st = read_n(fd, &line, 2, deadline);
        if (st != RD_OK)
            goto out;
        if (memcmp(line.data, "\r\n", 2) != 0) {
            st = RD_ERROR;
            goto out;
        }
    }
    /* trailer fields, up to the empty line */
    for (;;) {
        line.len = 0;
        st = read_until(fd, &line, 0, "\r\n", H_MAX_LINE, deadline);
        if (st != RD_OK || line.len == 2)
            break;
    }
out:
    free(line.data);
    return st;
}

/* After a self-delimited response that said "Connection: close": does the peer close? */
static int probe_closed(int fd)
{
    char c;
    ssize_t r;

    if (wait_fd(fd, POLLIN, now_ms() + H_CLOSE_PROBE_MS) != 1)
        return 0;
    r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

int harness_read_response(int fd, struct harness_resp *r, int is_head_request, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    struct buf head = {0}, body = {0};
    const char *v;
    size_t vlen;
    enum rd st;
    int rc = -1;

    memset(r, 0, sizeof(*r));
    if (buf_reserve(&head, 0) < 0 || buf_reserve(&body, 0) < 0)
        goto out;
    head.data[0] = body.data[0] = '\0';

    /* the head; interim 1xx responses (but 101) are skipped */
    for (;;) {
        head.len = 0;
        head.data[0] = '\0';
        st = read_until(fd, &head, 0, "\r\n\r\n", H_MAX_HEAD, deadline);
        r->status = strstr(head.data, "\r\n") ? parse_status(head.data) : 0;
        if (st != RD_OK) {
            r->closed = st == RD_EOF;
            goto out;
        }
        if (r->status == 0)
            goto out;
        if (r->status >= 200 || r->status == 101)
            break;
    }

    if (is_head_request || r->status == 204 || r->status == 304 || r->status == 101) {
        r->complete = 1;
    } else if (header_has_token(head.data, "Transfer-Encoding", "chunked")) {
        st = read_chunked(fd, &body, deadline);
        if (st == RD_TIMEOUT)
            goto out;
        r->closed = st == RD_EOF;
        r->complete = st == RD_OK;
    } else if (find_header(head.data, "Transfer-Encoding", 0, &v, &vlen) < 0 &&
               find_header(head.data, "Content-Length", 0, &v, &vlen) == 0) {
        unsigned long long n = 0;
        size_t i;

        if (vlen == 0)
            goto out;
        for (i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9' || n > H_MAX_BODY)
                goto out;
            n = n * 10 + (unsigned)(v[i] - '0');
        }
        if (n > H_MAX_BODY)
            goto out;
        st = read_n(fd, &body, (size_t)n, deadline);
        if (st == RD_TIMEOUT)
            goto out;
        r->closed = st == RD_EOF;
        r->complete = st == RD_OK;
    } else {
        st = read_to_eof(fd, &body, deadline);
        if (st == RD_TIMEOUT)
            goto out;
        r->closed = 1;
        r->complete = st == RD_EOF;
    }
    if (r->complete && !r->closed && header_has_token(head.data, "Connection", "close"))
        r->closed = probe_closed(fd);
    rc = 0;
out:
    r->head = head.data;
    r->body = body.data;
    r->body_len = body.len;
    return rc;
}

int harness_connect(uint16_t port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

int harness_send(int fd, const void *buf, size_t len)
{
    long long deadline = now_ms() + H_SEND_TIMEOUT_MS;
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) != 1)
                return -1;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

int harness_request(uint16_t port, const char *raw, size_t raw_len, struct harness_resp *r,
                    int timeout_ms)
{
    int is_head = raw_len >= 5 && memcmp(raw, "HEAD ", 5) == 0;
    int fd, rc;

    memset(r, 0, sizeof(*r));
    fd = harness_connect(port);
    if (fd < 0)
        return -1;
    /* a failed send still leaves an early answer (say, 413) to read */
    harness_send(fd, raw, raw_len);
    rc = harness_read_response(fd, r, is_head, timeout_ms);
    close(fd);
    return rc;
}

const char *harness_header(const struct harness_resp *r, const char *name, int nth, char *buf,
                           size_t len)
{
    const char *v;
    size_t vlen;

    if (len == 0 || find_header(r->head, name, nth, &v, &vlen) < 0)
        return NULL;
    if (vlen >= len)
        vlen = len - 1;
    memcpy(buf, v, vlen);
    buf[vlen] = '\0';
    return buf;
}

int harness_wait_closed(int fd, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    char sink[4096];

    for (;;) {
        size_t n;

        switch (recv_some(fd, sink, sizeof(sink), 0, deadline, &n)) {
        case RD_OK:
            continue;
        case RD_EOF:
            return 1;
        case RD_TIMEOUT:
        case RD_ERROR:
            return 0;
        }
    }
}

void harness_resp_free(struct harness_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* ---- Redis ---- */

static pid_t redis_start(uint16_t fixed, uint16_t *port, const char *logname,
                         const char *const extra[])
{
    char dir[4200], *argv[32];
    int n = 0;
    pid_t pid;

    snprintf(dir, sizeof(dir), "%s/%s.data", harness_tmpdir(), logname);
    mkdir(dir, 0700);
    argv[n++] = "/usr/bin/redis-server";
    argv[n++] = SOURCE_DIR "/conf/redis.conf";
    argv[n++] = "--port";
    argv[n++] = NULL; /* the port */
    argv[n++] = "--dir";
    argv[n++] = dir;
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    pid = start_server_at(argv, 3, 1, fixed, port, logname, H_UPSTREAM_WAIT_MS);
    return pid;
}

pid_t harness_start_redis(uint16_t *port, const char *logname, const char *const extra[])
{
    return redis_start(0, port, logname, extra);
}

pid_t harness_restart_redis(uint16_t port, const char *logname)
{
    uint16_t got;
    long long deadline = now_ms() + 5000;
    pid_t pid;

    /* the old process's socket may linger a moment */
    while ((pid = redis_start(port, &got, logname, NULL)) == 0 && now_ms() < deadline)
        sleep_ms(100);
    return pid;
}

long long harness_redis(uint16_t port, char *buf, size_t len, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r;
    long long v = -1;
    va_list ap;

    if (buf && len)
        buf[0] = '\0';
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r) {
        if (r->type == REDIS_REPLY_INTEGER)
            v = r->integer;
        else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
            if (buf)
                snprintf(buf, len, "%.*s", (int)r->len, r->str);
            v = (long long)r->len;
        } else if (r->type == REDIS_REPLY_ARRAY)
            v = (long long)r->elements;
        else if (r->type == REDIS_REPLY_NIL)
            v = 0;
        freeReplyObject(r);
    }
    redisFree(c);
    return v;
}

long harness_executions(uint16_t up_port, const char *key)
{
    struct harness_resp r;
    const char *raw = "GET /executions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    char want[512];
    const char *p;
    long v = -1;

    if (harness_request(up_port, raw, strlen(raw), &r, 5000) < 0)
        return -1;
    if (key == NULL) {
        p = strstr(r.body, "\"total\":");
        if (p)
            v = strtol(p + 8, NULL, 10);
    } else {
        snprintf(want, sizeof(want), "\"%s\":", key);
        p = strstr(r.body, want);
        v = p ? strtol(p + strlen(want), NULL, 10) : 0;
    }
    harness_resp_free(&r);
    return v;
}

int harness_stop_clean(pid_t pid, const char *logname, int timeout_ms)
{
    int st;

    if (pid <= 0)
        return 1;
    st = harness_stop(pid, SIGTERM, timeout_ms);
    if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 1;
    fprintf(stderr, "harness: %s did not exit cleanly (status %d)\n", logname, st);
    dump_log(logname);
    return 0;
}

long harness_upstream_stat(uint16_t up_port, const char *field)
{
    struct harness_resp r;
    const char *raw = "GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    char want[128];
    const char *p;
    long v = -1;

    if (harness_request(up_port, raw, strlen(raw), &r, 5000) < 0)
        return -1;
    snprintf(want, sizeof(want), "\"%s\":", field);
    p = strstr(r.body, want);
    if (p)
        v = strtol(p + strlen(want), NULL, 10);
    harness_resp_free(&r);
    return v;
}
