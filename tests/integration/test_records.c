/*
 * Records encrypted at rest (issue 17, part 5), on a real Redis and real replicas: what
 * Redis holds is not readable, a record altered or moved under another key does not
 * open (502, never a second execution), keys rotate with live records, and plain records
 * are refused where records are sealed unless record-plaintext-read says otherwise.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "stack_fixture.h"

TestSuite(records, .fini = stack_teardown, .timeout = 90);

#define K1 "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMTI="
#define K2 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static char keys_path[512];

static void write_keys(const char *text)
{
    char tmp[600];
    FILE *f;

    if (!keys_path[0])
        snprintf(keys_path, sizeof(keys_path), "%s/record.keys", harness_tmpdir());
    snprintf(tmp, sizeof(tmp), "%s.new", keys_path);
    cr_assert_not_null(f = fopen(tmp, "w"));
    fputs(text, f);
    fclose(f);
    chmod(tmp, 0600);
    cr_assert_eq(rename(tmp, keys_path), 0); /* as an operator swaps a secret in */
}

/* The stack with both replicas sealing records with the key file, plus extra. */
static void start_sealed(const char *keys, const char *const more[])
{
    const char *extra[16] = {"--record-encryption", "aes-256-gcm", "--record-keys", NULL};
    int n = 3;

    write_keys(keys);
    extra[n++] = keys_path;
    for (; more && *more && n < 15; more++)
        extra[n++] = *more;
    extra[n] = NULL;
    stack_start(extra, NULL);
}

static void pay(uint16_t port, const char *key, const char *body, struct harness_resp *r)
{
    struct harness_keyed q = {.path = "/pay", .key = key, .body = body};

    stack_post(port, &q, r);
}

/* The Redis key of the only record there is, into rkey. */
static void only_key(char *rkey, size_t len)
{
    cr_assert_eq(harness_redis(stack.redis_port, NULL, 0, "DBSIZE"), 1);
    cr_assert_gt(harness_redis(stack.redis_port, rkey, len, "RANDOMKEY"), 0);
}

static long long value_of(const char *rkey, char *buf, size_t len)
{
    return harness_redis(stack.redis_port, buf, len, "GET %s", rkey);
}

static int log_has(const char *logname, const char *needle)
{
    char *log = harness_read_log(logname);
    int yes = log && strstr(log, needle);

    free(log);
    return yes;
}

static int log_count(const char *logname, const char *needle)
{
    char *log = harness_read_log(logname);
    int n = 0;

    for (const char *p = log; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(log);
    return n;
}

/* SIGHUP to each of n proxies, then wait until each has logged one more reload (a count:
 * the log already names the earlier ones). */
static void reload(const pid_t pids[], const char *const names[], int n)
{
    int before[4];

    for (int i = 0; i < n; i++) {
        before[i] = log_count(names[i], "reloaded ");
        cr_assert_eq(kill(pids[i], SIGHUP), 0);
    }
    for (int i = 0; i < n; i++)
        for (double t0 = harness_now_s(); log_count(names[i], "reloaded ") <= before[i];
             usleep(20 * 1000))
            cr_assert_lt(harness_now_s() - t0, 5.0, "%s did not reload", names[i]);
}

static void reload_both(void)
{
    const pid_t pids[] = {stack.a_pid, stack.b_pid};
    const char *const names[] = {"proxyA", "proxyB"};

    reload(pids, names, 2);
}

Test(records, redis_holds_no_readable_answer_and_every_replica_replays_it)
{
    static const char secret[] = "{\"card\":\"4242424242424242\",\"name\":\"Ada Lovelace\"}";
    struct harness_resp first, again;
    char rkey[256], value[8192];
    long long n;

    start_sealed("1 " K1 "\n", NULL);
    pay(stack.a_port, "sealed-1", secret, &first);
    cr_assert_eq(first.status, 200, "%d %s", first.status, first.body);
    cr_assert(strstr(first.body, "4242424242424242"), "the upstream echoes the body");
    only_key(rkey, sizeof(rkey));
    n = value_of(rkey, value, sizeof(value));
    cr_assert_gt(n, 1 + 64 + 38);
    cr_assert_eq(value[0], 'D');
    cr_assert_eq(memcmp(value + 65, "IDRE", 4), 0, "a sealed envelope after the fingerprint");
    cr_assert_null(memmem(value, (size_t)n, "IDRC", 4), "no plain record");
    cr_assert_null(memmem(value, (size_t)n, "4242424242424242", 16), "the card number is readable");
    cr_assert_null(memmem(value, (size_t)n, "Lovelace", 8), "the name is readable");
    /* the other replica opens it: the same bytes, replayed */
    pay(stack.b_port, "sealed-1", secret, &again);
    cr_assert(harness_replayed(&again), "%d %s", again.status, again.body);
    cr_assert_eq(again.body_len, first.body_len);
    cr_assert_eq(memcmp(again.body, first.body, first.body_len), 0);
    harness_resp_free(&first);
    harness_resp_free(&again);
    cr_assert_eq(harness_executions(stack.up_port, "sealed-1"), 1);
}

/* One byte of the ciphertext changed in Redis: the replay is 502 record-unreadable and
 * the request is not executed again (an unreadable record is never a miss). */
Test(records, an_altered_record_is_502_and_not_executed_again)
{
    struct harness_resp r;
    char rkey[256], value[8192];
    long long n;

    start_sealed("1 " K1 "\n", NULL);
    pay(stack.a_port, "alter-1", "{\"amount\":5}", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    only_key(rkey, sizeof(rkey));
    n = value_of(rkey, value, sizeof(value));
    value[n - 20] ^= 0x01; /* in the ciphertext, before the tag */
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "SETRANGE %s %lld %b", rkey, n - 20,
                                value + n - 20, (size_t)1),
                  0);
    pay(stack.a_port, "alter-1", "{\"amount\":5}", &r);
    cr_assert_eq(r.status, 502, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "record-unreadable"), "%s", r.body);
    harness_resp_free(&r);
    cr_assert_eq(harness_executions(stack.up_port, "alter-1"), 1, "executed again");
    cr_assert(log_has("proxyA", "stored record (key id 1) does not open"));
}

/* Someone with write access to Redis copies one key's record onto another key whose
 * request has the same fingerprint (same method, path and body): it must not replay
 * there — the Redis key is part of what the tag covers. */
Test(records, a_record_copied_under_another_key_does_not_open)
{
    struct harness_resp r;
    char k1[256], k2[256], value[8192];
    long long n;

    start_sealed("1 " K1 "\n", NULL);
    pay(stack.a_port, "copy-1", "{\"amount\":7}", &r);
    harness_resp_free(&r);
    only_key(k1, sizeof(k1));
    n = value_of(k1, value, sizeof(value));
    pay(stack.a_port, "copy-2", "{\"amount\":7}", &r);
    harness_resp_free(&r);
    for (int i = 0; i < 10; i++) { /* the other of the two keys */
        cr_assert_gt(harness_redis(stack.redis_port, k2, sizeof(k2), "RANDOMKEY"), 0);
        if (strcmp(k1, k2) != 0)
            break;
    }
    cr_assert_str_neq(k1, k2);
    cr_assert_geq(harness_redis(stack.redis_port, NULL, 0, "SET %s %b", k2, value, (size_t)n), 0);
    pay(stack.a_port, "copy-2", "{\"amount\":7}", &r);
    cr_assert_eq(r.status, 502, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    pay(stack.a_port, "copy-1", "{\"amount\":7}", &r);
    cr_assert(harness_replayed(&r), "the original still replays: %d %s", r.status, r.body);
    harness_resp_free(&r);
}

/* Rotation with live records, each step a SIGHUP: (1) the new key second, (2) first —
 * new records are sealed with it, old ones still open — (3) the old key dropped: its
 * records answer 502, and the log names the key id. */
Test(records, keys_rotate_with_live_records)
{
    struct harness_resp r;
    char rkey[256], value[8192];

    start_sealed("1 " K1 "\n", NULL);
    pay(stack.a_port, "rot-old", "{\"n\":1}", &r);
    harness_resp_free(&r);
    write_keys("1 " K1 "\n2 " K2 "\n");
    reload_both();
    write_keys("2 " K2 "\n1 " K1 "\n");
    reload_both();
    pay(stack.b_port, "rot-old", "{\"n\":1}", &r);
    cr_assert(harness_replayed(&r), "%d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert_gt(harness_redis(stack.redis_port, NULL, 0, "FLUSHALL"), 0); /* to find the next */
    pay(stack.a_port, "rot-new", "{\"n\":2}", &r);
    harness_resp_free(&r);
    only_key(rkey, sizeof(rkey));
    cr_assert_gt(value_of(rkey, value, sizeof(value)), 75);
    cr_assert_eq(memcmp(value + 65 + 6, "\0\0\0\2", 4), 0, "sealed with key 2, the first");
    pay(stack.a_port, "rot-old", "{\"n\":1}", &r); /* executed again: FLUSHALL lost it */
    harness_resp_free(&r);
    write_keys("2 " K2 "\n");
    reload_both();
    pay(stack.b_port, "rot-new", "{\"n\":2}", &r);
    cr_assert(harness_replayed(&r), "%d %s", r.status, r.body);
    harness_resp_free(&r);
    pay(stack.b_port, "rot-old", "{\"n\":1}", &r);
    cr_assert(harness_replayed(&r), "sealed with key 2 after the flush: %d %s", r.status, r.body);
    harness_resp_free(&r);
}

/* A record sealed with key 1, key 1 then dropped: 502, key id in the log. */
Test(records, a_record_whose_key_was_dropped_is_502_with_its_key_id)
{
    struct harness_resp r;

    start_sealed("1 " K1 "\n", NULL);
    pay(stack.a_port, "drop-1", "{\"n\":1}", &r);
    harness_resp_free(&r);
    write_keys("2 " K2 "\n");
    reload_both();
    pay(stack.a_port, "drop-1", "{\"n\":1}", &r);
    cr_assert_eq(r.status, 502, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "record-unreadable"), "%s", r.body);
    harness_resp_free(&r);
    cr_assert(log_has("proxyA", "stored record (key id 1) sealed with a key record-keys does "
                                "not have"));
    cr_assert_eq(harness_executions(stack.up_port, "drop-1"), 1);
}

/* Turning encryption on: records written plain before are refused (502: it could be a
 * forgery written straight into Redis) unless record-plaintext-read yes; a replica
 * without keys cannot read sealed ones. */
Test(records, plain_records_where_records_are_sealed)
{
    const char *plain_read[] = {"--record-encryption",
                                "aes-256-gcm",
                                "--record-keys",
                                keys_path,
                                "--record-plaintext-read",
                                "yes",
                                NULL};
    struct harness_resp r;
    uint16_t cport, dport;
    pid_t c, d;

    start_sealed("1 " K1 "\n", NULL);
    cr_assert_gt(c = harness_stack_proxy(&stack, &cport, "proxyC", NULL), 0); /* plain */
    cr_assert_gt(d = harness_stack_proxy(&stack, &dport, "proxyD", plain_read), 0);
    pay(cport, "plain-1", "{\"n\":1}", &r);
    cr_assert_eq(r.status, 200);
    harness_resp_free(&r);
    pay(stack.a_port, "plain-1", "{\"n\":1}", &r);
    cr_assert_eq(r.status, 502, "%d %s", r.status, r.body);
    harness_resp_free(&r);
    pay(dport, "plain-1", "{\"n\":1}", &r);
    cr_assert(harness_replayed(&r), "record-plaintext-read yes: %d %s", r.status, r.body);
    harness_resp_free(&r);
    pay(stack.a_port, "sealed-2", "{\"n\":2}", &r);
    harness_resp_free(&r);
    pay(cport, "sealed-2", "{\"n\":2}", &r);
    cr_assert_eq(r.status, 502, "no keys: %d %s", r.status, r.body);
    harness_resp_free(&r);
    cr_assert(log_has("proxyC", "sealed, and no record-keys are configured"));
    cr_assert_eq(harness_executions(stack.up_port, "plain-1"), 1);
    cr_assert_eq(harness_executions(stack.up_port, "sealed-2"), 1);
    cr_assert(harness_stop_clean(c, "proxyC", 10000));
    cr_assert(harness_stop_clean(d, "proxyD", 10000));
}

/* POST /keys/inspect with ask; the answer must be 200. */
static void inspect(uint16_t admin, const char *ask, struct harness_resp *r)
{
    char raw[1024];

    snprintf(raw, sizeof(raw),
             "POST /keys/inspect HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer tok-123\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(ask), ask);
    cr_assert_eq(harness_request(admin, raw, strlen(raw), r, 5000), 0);
    cr_assert_eq(r->status, 200, "%s", r->body);
}

/* A proxy of the stack with the admin endpoint (token tok-123) on *admin, reading
 * keys_path as record-keys when keys, else with none; its admin port is listening. */
static pid_t admin_proxy(const char *name, int keys, uint16_t *admin)
{
    const char *args[] = {"--admin-listen", NULL, "--admin-token", "tok-123", "--record-keys",
                          keys_path,        NULL};
    char admin_arg[32];
    uint16_t port;
    pid_t pid;

    *admin = harness_free_port();
    snprintf(admin_arg, sizeof(admin_arg), "127.0.0.1:%u", *admin);
    args[1] = admin_arg;
    if (!keys)
        args[4] = NULL;
    cr_assert_gt(pid = harness_stack_proxy(&stack, &port, name, args), 0);
    cr_assert_eq(harness_wait_port(*admin, 5000), 0);
    return pid;
}

/* The inspected record's body is shown (opened), or it is "unreadable" with no body. */
static int opened(const struct harness_resp *r)
{
    int body = strstr(r->body, "\"body_base64\":\"") != NULL;

    cr_assert_neq(body, strstr(r->body, "\"unreadable\":") != NULL, "%s", r->body);
    return body;
}

/* /keys/inspect on a sealed record: its key id, and what it holds when the keys open it;
 * "unreadable" (and no body) when they do not. */
Test(records, inspect_shows_the_key_id_and_opens_what_it_can)
{
    static const char ask[] = "{\"key\":\"insp-1\",\"scope\":{},\"body\":true}";
    struct harness_resp r;
    uint16_t admin;
    pid_t c;

    start_sealed("1 " K1 "\n", NULL);
    pay(stack.a_port, "insp-1", "{\"card\":\"4111111111111111\"}", &r);
    harness_resp_free(&r);
    for (int round = 0; round < 2; round++) {
        const char *name = round ? "proxyE" : "proxyD";

        c = admin_proxy(name, round == 0, &admin); /* round 1: no record-keys */
        inspect(admin, ask, &r);
        cr_assert(strstr(r.body, "\"sealed\":true,\"key_id\":1,"), "%s", r.body);
        if (round == 0)
            cr_assert(opened(&r) && strstr(r.body, "\"status\":200"), "%s", r.body);
        else
            cr_assert(!opened(&r), "no keys: %s", r.body);
        harness_resp_free(&r);
        cr_assert(harness_stop_clean(c, name, 10000));
    }
}

/* /keys/inspect follows the record-keys of a SIGHUP: the key added opens the record it
 * could not, the key dropped leaves it unreadable again. */
Test(records, inspect_follows_the_reloaded_record_keys)
{
    static const char ask[] = "{\"key\":\"insp-2\",\"scope\":{},\"body\":true}";
    const char *const name[] = {"proxyD"};
    struct harness_resp r;
    uint16_t admin;
    pid_t d[1];

    start_sealed("1 " K1 "\n", NULL);
    pay(stack.a_port, "insp-2", "{\"card\":\"4111111111111111\"}", &r);
    harness_resp_free(&r);
    write_keys("2 " K2 "\n"); /* proxyD starts without key 1 */
    d[0] = admin_proxy(name[0], 1, &admin);
    inspect(admin, ask, &r);
    cr_assert(!opened(&r), "key 1 not there: %s", r.body);
    harness_resp_free(&r);
    for (int round = 0; round < 2; round++) {
        write_keys(round == 0 ? "2 " K2 "\n1 " K1 "\n" : "2 " K2 "\n");
        reload(d, name, 1);
        inspect(admin, ask, &r);
        cr_assert(strstr(r.body, "\"sealed\":true,\"key_id\":1,"), "%s", r.body);
        if (round == 0)
            cr_assert(opened(&r), "key 1 added: %s", r.body);
        else
            cr_assert(!opened(&r), "key 1 dropped: %s", r.body);
        harness_resp_free(&r);
    }
    cr_assert(harness_stop_clean(d[0], name[0], 10000));
}
