#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *default_workers(const struct conf_directive *d, char *buf, size_t len)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < d->min)
        n = d->min;
    if (n > d->max)
        n = d->max;
    snprintf(buf, len, "%ld", n);
    return buf;
}

static const struct conf_directive worker_conf_rows[] = {
    {.name = "listen",
     .type = CONF_T_ADDR,
     .flags = CONF_F_PORT_ZERO,
     .def = "127.0.0.1:8080",
     .off = offsetof(struct worker_conf, listen),
     .arg = "HOST:PORT",
     .help = "clients connect here (port 0: any free port)"},
    {.name = "tls-listen",
     .type = CONF_T_ADDR,
     .flags = CONF_F_PORT_ZERO,
     .off = offsetof(struct worker_conf, tls_listen),
     .arg = "HOST:PORT",
     .help = "clients connect here over TLS (tls-cert-file, tls-key-file)"},
    {.name = "workers",
     .type = CONF_T_INT,
     .min = 1,
     .max = 256,
     .def_fn = default_workers,
     .off = offsetof(struct worker_conf, workers),
     .arg = "N",
     .help = "worker threads (default: online CPUs)"},
    {.name = "drain-timeout",
     .type = CONF_T_DURATION,
     .min = 0,
     .max = 7 * CONF_MS_DAY,
     .def = "30s",
     .off = offsetof(struct worker_conf, drain_timeout_ms),
     .arg = "DURATION",
     .help = "on shutdown, time for in-flight requests (0: none)"},
    CONF_END,
};

static const struct conf_choice log_level_choices[] = {
    {"debug", LOG_LEVEL_DEBUG}, {"info", LOG_LEVEL_INFO},    {"warn", LOG_LEVEL_WARN},
    {"error", LOG_LEVEL_ERROR}, {"warning", LOG_LEVEL_WARN}, {NULL, 0}};

/* ENUM fields are written through an int lvalue. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level must be int-sized");

static const struct conf_directive config_own_rows[] = {
    {.name = "log-level",
     .type = CONF_T_ENUM,
     .def = "info",
     .off = offsetof(struct config, log_level),
     .choices = log_level_choices,
     .arg = "debug|info|warn|error",
     .help = "least severe message logged"},
    CONF_END,
};

/* In --help order. */
static const struct conf_section config_sections[] = {
    {worker_conf_rows, offsetof(struct config, worker)},
    {upstream_conf_rows, offsetof(struct config, upstream)},
    {redis_conf_rows, offsetof(struct config, redis)},
    {frontend_conf_rows, offsetof(struct config, frontend)},
    {config_own_rows, 0},
    {policy_conf_rows, offsetof(struct config, idem)},
    {seal_conf_rows, offsetof(struct config, seal)},
    {admin_conf_rows, offsetof(struct config, admin)},
};

const struct conf_schema config_schema = {config_sections,
                                          sizeof(config_sections) / sizeof(config_sections[0])};

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    conf_defaults(&config_schema, cfg);
}

int config_set(struct config *cfg, const char *where, const char *name, int argc, const char **argv,
               char *err, size_t errlen)
{
    return conf_set(&config_schema, cfg, where, name, argc, argv, err, errlen);
}

int config_load_string(struct config *cfg, const char *origin, const char *text, char *err,
                       size_t errlen)
{
    return conf_load_string(&config_schema, cfg, origin, text, err, errlen);
}

int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    char *copy = strdup(path);

    if (!copy)
        return conf_fail(err, errlen, "%s: out of memory", path);
    free(cfg->file);
    cfg->file = copy;
    return conf_load_file(&config_schema, cfg, path, err, errlen);
}

int config_validate(const struct config *cfg, char *err, size_t errlen)
{
    if (upstream_conf_validate(&cfg->upstream, err, errlen) < 0 ||
        policy_validate(&cfg->idem, err, errlen) < 0 ||
        redis_conf_validate(&cfg->redis, err, errlen) < 0)
        return -1;
    if (cfg->worker.tls_listen.host[0] && !cfg->frontend.ntls_cert_files)
        return conf_fail(err, errlen, "tls-listen needs tls-cert-file and tls-key-file");
    return 0;
}

void config_free(struct config *cfg)
{
    frontend_conf_release(&cfg->frontend);
    upstream_conf_release(&cfg->upstream);
    redis_conf_release(&cfg->redis);
    seal_conf_release(&cfg->seal);
    conf_free(&config_schema, cfg);
    free(cfg->file);
    cfg->file = NULL;
}

int config_from_argv(struct config *cfg, struct conf_cli *cli, int argc, char **argv, char *err,
                     size_t errlen)
{
    const char *pw = getenv("IDEMPROXY_REDIS_PASSWORD");

    config_defaults(cfg);
    if (conf_parse_argv(&config_schema, cfg, cli, &cfg->file, argc, argv, err, errlen) < 0)
        return -1;
    if (cli->show_help || cli->show_version)
        return 0;
    policy_finalize(&cfg->idem); /* routes take the base policy's final values */
    /* a secret is better kept out of argv (ps shows it) and out of config files */
    if (!cfg->redis.password && pw && !(cfg->redis.password = strdup(pw)))
        return conf_fail(err, errlen, "out of memory");
    if (!cfg->admin.token && getenv("IDEMPROXY_ADMIN_TOKEN") &&
        !(cfg->admin.token = strdup(getenv("IDEMPROXY_ADMIN_TOKEN"))))
        return conf_fail(err, errlen, "out of memory");
    if (config_validate(cfg, err, errlen) < 0)
        return -1;
    /* files the directives name, read once here so that -t checks them too */
    if (frontend_conf_load(&cfg->frontend, err, errlen) < 0 ||
        upstream_conf_load(&cfg->upstream, err, errlen) < 0 ||
        redis_conf_load(&cfg->redis, err, errlen) < 0)
        return -1;
    return seal_conf_load(&cfg->seal, err, errlen);
}

static int config_lease_warning(const struct config *cfg, const char *where, uint64_t lease,
                                FILE *out)
{
    uint64_t fo = cfg->redis.failover_ms;

    if (!fo || lease >= 3 * fo)
        return 0;
    fprintf(out,
            "idemproxy: warning: %s lease %llu ms is shorter than 3 x redis-failover-time "
            "(%llu ms): a claim renewed every lease/3 can expire during such a failover and "
            "its key execute again; use lease %llus or more\n",
            where, (unsigned long long)lease, (unsigned long long)fo,
            (unsigned long long)((3 * fo + 999) / 1000));
    return 1;
}

int config_warnings(const struct config *cfg, FILE *out)
{
    char where[300];
    int n = config_lease_warning(cfg, "the", cfg->idem.lease_ms, out);

    for (size_t i = 0; i < cfg->idem.nroutes; i++) {
        const struct idem_route *r = &cfg->idem.routes[i];
        if (r->off)
            continue;
        snprintf(where, sizeof(where), "route %.256s:", r->prefix);
        n += config_lease_warning(cfg, where, r->pol.lease_ms, out);
    }
    if (!cfg->worker.tls_listen.host[0] && cfg->frontend.ntls_cert_files) {
        fprintf(out, "warning: tls-cert-file is set but tls-listen is not: nothing speaks TLS "
                     "to clients\n");
        n++;
    }
    return n + seal_conf_warnings(&cfg->seal, out);
}

void config_print_help(FILE *out)
{
    fputs("usage: idemproxy [-t] [CONFIG_FILE] [--directive VALUE ...]\n"
          "       idemproxy -h|--help\n"
          "       idemproxy -v|--version\n"
          "\n"
          "  -t             check the configuration and exit\n"
          "  -h, --help     show this help and exit\n"
          "  -v, --version  show the version and exit\n"
          "\n"
          "Every directive is a line \"name value\" in CONFIG_FILE or a flag --name VALUE\n"
          "(or --name=VALUE); flags override the file, upstream accumulates. Sizes take\n"
          "k, m or g (1024-based); durations take ms, s, m, h or d (bare number: seconds).\n"
          "\n",
          out);
    conf_print_directives(&config_schema, out);
}
