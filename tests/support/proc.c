/*
 * proc — the temp dir, free ports and the processes a test starts.
 *
 * Each spawned process leads its own process group, so stopping it also reaches whatever
 * it forked (a worker, a shell's child) instead of leaving orphans behind.
 *
 * State (temp dir, tracked pids) is per process: Criterion runs each test in its own
 * process, and a process that inherited state through fork() starts afresh, so it never
 * signals or waits for its parent's children.
 */
#include "harness.h"
#include "harness-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#ifndef IDEMPROXY_BIN
#error "IDEMPROXY_BIN must be defined by the build"
#endif
#ifndef TEST_UPSTREAM_BIN
#error "TEST_UPSTREAM_BIN must be defined by the build"
#endif

#define H_MAX_PIDS       64
#define H_PROXY_WAIT_MS  10000
#define H_START_ATTEMPTS 3

static struct {
    pid_t owner; /* the process this state belongs to */
    char tmpdir[PATH_MAX];
    int tmpdir_made; /* by mkdtemp: ours to remove at exit (never the shared fallback) */
    pid_t pids[H_MAX_PIDS];
    int npids;
    int atexit_done;
} h;

static int h_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

/* At exit, after harness_cleanup stopped every process that could still write there: the
 * temp dir goes (IDEMTEST_KEEP=1 keeps it to read the logs afterwards). A failing test
 * prints the logs it needs on its own. */
static void h_remove_tmpdir(void)
{
    const char *keep = getenv("IDEMTEST_KEEP");

    if (h.owner != getpid() || !h.tmpdir_made || (keep && *keep && strcmp(keep, "0") != 0))
        return;
    nftw(h.tmpdir, h_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    h.tmpdir_made = 0;
}

/* Forget whatever a parent process left us through fork(). */
static void h_state(void)
{
    if (h.owner == getpid())
        return;
    h.owner = getpid();
    h.tmpdir[0] = '\0';
    h.tmpdir_made = 0;
    h.npids = 0;
    if (!h.atexit_done) {
        /* run in reverse: the processes are stopped first, then their files removed */
        atexit(h_remove_tmpdir);
        atexit(harness_cleanup);
        h.atexit_done = 1;
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
    } else {
        h.tmpdir_made = 1;
    }
    return h.tmpdir;
}

const char *harness_make_certs(void)
{
    static char dir[PATH_MAX + 16];
    char cmd[2 * PATH_MAX + 64];

    snprintf(dir, sizeof(dir), "%s/certs", harness_tmpdir());
    snprintf(cmd, sizeof(cmd), "bash %s/scripts/make-certs.sh %s", SOURCE_DIR, dir);
    return system(cmd) == 0 ? dir : NULL;
}

const char *harness_cert(const char *file)
{
    static char buf[8][PATH_MAX + 300];
    static int k;
    char *p = buf[k++ % 8];

    snprintf(p, sizeof(buf[0]), "%s/certs/%s", harness_tmpdir(), file);
    return p;
}

/* Ports handed out are reserved across the test processes of this machine (a file per
 * port holding the owner's pid, removed at exit): two tests that asked at the same moment
 * could otherwise be given the same free port, and two idemproxys bind it together
 * (their workers use SO_REUSEPORT), each answering the other's requests. */
#define H_PORT_DIR "/tmp/idemproxy-test-ports"

static uint16_t h_ports[256];
static size_t h_nports;

static void h_release_ports(void)
{
    char path[64];

    for (size_t i = 0; i < h_nports; i++) {
        snprintf(path, sizeof(path), H_PORT_DIR "/%u", (unsigned)h_ports[i]);
        unlink(path);
    }
    h_nports = 0;
}

/* 1 when port is ours now (or cannot be reserved: no worse than before), 0 when another
 * live test process holds it. */
static int h_reserve_port(uint16_t port)
{
    char path[64], buf[16];
    int fd;
    long owner;
    ssize_t n;

    mkdir(H_PORT_DIR, 0777);
    snprintf(path, sizeof(path), H_PORT_DIR "/%u", (unsigned)port);
    for (int tries = 0; tries < 2; tries++) {
        if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) >= 0) {
            n = snprintf(buf, sizeof(buf), "%d", (int)getpid());
            if (write(fd, buf, (size_t)n) != n) { /* best effort */
            }
            close(fd);
            if (h_nports == 0)
                atexit(h_release_ports);
            if (h_nports < sizeof(h_ports) / sizeof(h_ports[0]))
                h_ports[h_nports++] = port;
            return 1;
        }
        if (errno != EEXIST)
            return 1;
        /* held: by a live process, or left by one that died */
        owner = 0;
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
            n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            buf[n > 0 ? n : 0] = '\0';
            owner = atol(buf);
        }
        if (owner > 0 && (owner == getpid() || kill((pid_t)owner, 0) == 0))
            return 0;
        unlink(path);
    }
    return 1;
}

static uint16_t h_free_port_once(void);

uint16_t harness_free_port(void)
{
    for (int i = 0; i < 64; i++) {
        uint16_t p = h_free_port_once();
        if (p == 0 || h_reserve_port(p))
            return p;
    }
    return h_free_port_once();
}

static uint16_t h_free_port_once(void)
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

int h_is_tracked(pid_t pid)
{
    int i;

    h_state();
    for (i = 0; i < h.npids; i++)
        if (h.pids[i] == pid)
            return 1;
    return 0;
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

/* pid is in the stopped state ('T' in /proc/PID/stat: SIGSTOP, not a tracer's 't'). */
static int proc_stopped(pid_t pid)
{
    char path[64], buf[512], *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "r")))
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    return p && p[1] == ' ' && p[2] == 'T';
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
        /* a process a test froze (SIGSTOP) and left frozen when an assertion ended it
         * early would sit on the signal until the deadline: let it handle it. Checked
         * while waiting (a SIGSTOP just sent may not have taken effect yet), and only
         * when it is stopped: a SIGCONT that lands while an exiting ASan process has
         * LeakSanitizer suspending its threads (ptrace) can leave it hanging there. */
        if (sig != 0 && sig != SIGKILL && sig != SIGSTOP && proc_stopped(pid))
            kill(pid, SIGCONT);
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

long harness_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

int harness_exited(pid_t pid, int *status)
{
    pid_t r;

    if (pid <= 0 || !h_is_tracked(pid))
        return -1;
    while ((r = waitpid(pid, status, WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return 0;
    untrack(pid);
    if (r == pid)
        sweep_group(pid);
    return r == pid ? 1 : -1;
}

int harness_topology(const char *kind, const char *action, const char *dir, const char *arg,
                     char **out)
{
    int tls = strncmp(kind, "tls-", 4) == 0;
    const char *argv[] = {"/bin/bash",          SOURCE_DIR "/scripts/redis-topology.sh",
                          tls ? "--tls" : kind, tls ? kind + 4 : action,
                          tls ? action : dir,   tls ? dir : arg,
                          tls ? arg : NULL,     NULL};
    char logname[64];
    pid_t pid;
    int st;

    snprintf(logname, sizeof(logname), "topology-%s-%s", kind, action);
    pid = harness_spawn(logname, (char *const *)argv);
    st = pid > 0 ? harness_stop(pid, 0, 60000) : -1;
    *out = harness_read_log(logname);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
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

/* Documented in harness-internal.h (redis.c starts redis-server with it too). */
/* Does pid hold a socket listening on 127.0.0.1:port? (A connect that succeeds may reach
 * another test's server that took the port first: what answers must be ours.) */
static int h_pid_listens(pid_t pid, uint16_t port)
{
    char line[512], path[64], link[64], want[32];
    unsigned long inodes[16];
    size_t n = 0;
    FILE *f = fopen("/proc/net/tcp", "r");
    DIR *d;
    struct dirent *e;
    int found = 0;

    if (!f)
        return 1; /* cannot tell: trust the connect */
    while (fgets(line, sizeof(line), f) && n < 16) {
        unsigned lport, st;
        unsigned long ino;
        if (sscanf(line, " %*d: %*8s:%x %*8s:%*x %x %*s %*s %*s %*s %*s %lu", &lport, &st, &ino) ==
                3 &&
            lport == port && st == 0x0A)
            inodes[n++] = ino;
    }
    fclose(f);
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    if (!(d = opendir(path)))
        return 0;
    while (!found && (e = readdir(d))) {
        char fdpath[400];
        ssize_t len;
        snprintf(fdpath, sizeof(fdpath), "%s/%s", path, e->d_name);
        if ((len = readlink(fdpath, link, sizeof(link) - 1)) <= 0)
            continue;
        link[len] = '\0';
        for (size_t i = 0; i < n && !found; i++) {
            snprintf(want, sizeof(want), "socket:[%lu]", inodes[i]);
            found = strcmp(link, want) == 0;
        }
    }
    closedir(d);
    return found;
}

pid_t h_start_server_at(char **argv, int listen_slot, int port_only, uint16_t fixed, uint16_t *port,
                        const char *logname, int timeout_ms)
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

            if (fd >= 0)
                close(fd);
            if (fd >= 0 && h_pid_listens(pid, p)) {
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
    return h_start_server_at(argv, listen_slot, 0, 0, port, logname, timeout_ms);
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
