/*
 * redis/cluster.h: slots (the spec's examples), routing keys, redirects, retry classes and
 * CLUSTER SLOTS replies read from RESP text through hiredis's own reader.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "redis/cluster.h"

static unsigned slot(const char *key)
{
    return cluster_key_slot(key, strlen(key));
}

Test(cluster_map, key_slots_follow_the_spec)
{
    /* CRC16/XMODEM("123456789") = 0x31C3 (the spec's check value) */
    cr_assert_eq(slot("123456789"), 0x31C3 & 16383);
    cr_assert_eq(slot("foo"), 12182); /* CLUSTER KEYSLOT foo */
    /* hash tags: the first {...} that is not empty */
    cr_assert_eq(slot("{user1000}.following"), slot("user1000"));
    cr_assert_eq(slot("{user1000}.followers"), slot("{user1000}.following"));
    cr_assert_eq(slot("foo{}{bar}"), cluster_key_slot("foo{}{bar}", 10)); /* whole key */
    cr_assert_neq(slot("foo{}{bar}"), slot("bar"));
    cr_assert_eq(slot("foo{{bar}}zap"), slot("{bar"));
    cr_assert_eq(slot("foo{bar}{zap}"), slot("bar"));
    cr_assert_eq(slot("{"), cluster_key_slot("{", 1));
    cr_assert_lt(slot(""), 16384);
}

Test(cluster_map, commands_route_by_their_key)
{
    const char *set[] = {"SET", "idem:k", "P", "NX"}, *eval[] = {"EVALSHA", "abc", "1", "idem:x"},
               *eval0[] = {"EVAL", "return 1", "0"}, *info[] = {"INFO", "server"},
               *ping[] = {"PING"};
    size_t setl[] = {3, 6, 1, 2}, evall[] = {7, 3, 1, 6}, eval0l[] = {4, 8, 1}, infol[] = {4, 6},
           pingl[] = {4};
    const char *k;
    size_t n;
    const char wire[] =
        "*5\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$6\r\nidem:w\r\n$1\r\na\r\n";

    cr_assert_eq(cluster_command_key(4, set, setl, &k, &n), 1);
    cr_assert_eq(n, 6);
    cr_assert_eq(memcmp(k, "idem:k", 6), 0);
    cr_assert_eq(cluster_command_key(4, eval, evall, &k, &n), 1);
    cr_assert_eq(memcmp(k, "idem:x", 6), 0);
    cr_assert_eq(cluster_command_key(3, eval0, eval0l, &k, &n), 0);
    cr_assert_eq(cluster_command_key(2, info, infol, &k, &n), 0);
    cr_assert_eq(cluster_command_key(1, ping, pingl, &k, &n), 0);
    cr_assert_eq(cluster_wire_key(wire, sizeof(wire) - 1, &k, &n), 1);
    cr_assert_eq(n, 6);
    cr_assert_eq(memcmp(k, "idem:w", 6), 0);
    /* cut short: no key rather than a read past the end */
    cr_assert_eq(cluster_wire_key(wire, 30, &k, &n), 0);
    cr_assert_eq(cluster_wire_key("*2\r\n$99\r\nSET\r\n", 15, &k, &n), 0);
}

Test(cluster_map, redirects_name_slot_and_node)
{
    struct conf_addr from = {.host = "10.0.0.9", .port = 7000}, to;
    unsigned s = 0;

    cr_assert_eq(cluster_parse_redirect("MOVED 3999 127.0.0.1:6381", &from, &s, &to),
                 CLUSTER_MOVED);
    cr_assert_eq(s, 3999);
    cr_assert_str_eq(to.host, "127.0.0.1");
    cr_assert_eq(to.port, 6381);
    cr_assert_eq(cluster_parse_redirect("ASK 15891 :30003", &from, &s, &to), CLUSTER_ASK);
    cr_assert_eq(s, 15891);
    cr_assert_str_eq(to.host, "10.0.0.9"); /* an empty host is the node's own */
    cr_assert_eq(to.port, 30003);
    cr_assert_eq(cluster_parse_redirect("MOVED 16384 1.2.3.4:1", &from, &s, &to),
                 CLUSTER_NO_REDIRECT);
    cr_assert_eq(cluster_parse_redirect("MOVED 1 1.2.3.4:0", &from, &s, &to), CLUSTER_NO_REDIRECT);
    cr_assert_eq(cluster_parse_redirect("MOVED x 1.2.3.4:5", &from, &s, &to), CLUSTER_NO_REDIRECT);
    cr_assert_eq(cluster_parse_redirect("MOVEDX 1 a:5", &from, &s, &to), CLUSTER_NO_REDIRECT);
    cr_assert_eq(cluster_parse_redirect("ERR wrong", &from, &s, &to), CLUSTER_NO_REDIRECT);
}

Test(cluster_map, not_executed_errors_are_retried)
{
    cr_assert_eq(cluster_retry_reason("TRYAGAIN Multiple keys request during rehashing of slot"),
                 CLUSTER_RETRY_TRYAGAIN);
    cr_assert_eq(cluster_retry_reason("CLUSTERDOWN The cluster is down"),
                 CLUSTER_RETRY_CLUSTERDOWN);
    cr_assert_eq(cluster_retry_reason("LOADING Redis is loading the dataset in memory"),
                 CLUSTER_RETRY_LOADING);
    cr_assert_eq(cluster_retry_reason("READONLY You can't write against a read only replica."),
                 CLUSTER_RETRY_READONLY);
    cr_assert_eq(cluster_retry_reason("MASTERDOWN Link with MASTER is down"),
                 CLUSTER_RETRY_MASTERDOWN);
    cr_assert_eq(cluster_retry_reason("OOM command not allowed"), CLUSTER_RETRY_NONE);
    cr_assert_eq(cluster_retry_reason("LOADINGX"), CLUSTER_RETRY_NONE);
    cr_assert_str_eq(cluster_retry_name(CLUSTER_RETRY_CLUSTERDOWN), "clusterdown");
}

/* A reply as hiredis reads it from RESP text. */
static redisReply *resp(const char *text)
{
    redisReader *r = redisReaderCreate();
    void *reply = NULL;

    cr_assert_eq(redisReaderFeed(r, text, strlen(text)), REDIS_OK);
    cr_assert_eq(redisReaderGetReply(r, &reply), REDIS_OK);
    cr_assert_not_null(reply);
    redisReaderFree(r);
    return reply;
}

Test(cluster_map, slot_ranges_come_from_cluster_slots)
{
    struct conf_addr asked = {.host = "10.1.1.1", .port = 7000};
    struct cluster_range *r;
    size_t n;
    char err[128];
    redisReply *reply = resp("*2\r\n"
                             "*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:30001\r\n$2\r\nid\r\n"
                             "*3\r\n$9\r\n127.0.0.1\r\n:30004\r\n$2\r\nir\r\n"
                             "*3\r\n:5461\r\n:16383\r\n*3\r\n$0\r\n\r\n:30002\r\n$2\r\nid\r\n");

    cr_assert_eq(cluster_parse_slots(reply, &asked, &r, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_eq(r[0].from, 0);
    cr_assert_eq(r[0].to, 5460);
    cr_assert_str_eq(r[0].primary.host, "127.0.0.1");
    cr_assert_eq(r[0].primary.port, 30001); /* the primary, not its replica */
    cr_assert_str_eq(r[1].primary.host, "10.1.1.1");
    cr_assert_eq(r[1].to, 16383);
    free(r);
    freeReplyObject(reply);

    reply = resp("*1\r\n*3\r\n:5\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n");
    cr_assert_eq(cluster_parse_slots(reply, &asked, &r, &n, err, sizeof(err)), -1);
    cr_assert(strstr(err, "CLUSTER SLOTS"), "%s", err);
    freeReplyObject(reply);
    reply = resp("-ERR This instance has cluster support disabled\r\n");
    cr_assert_eq(cluster_parse_slots(reply, &asked, &r, &n, err, sizeof(err)), -1);
    cr_assert(strstr(err, "cluster support disabled"), "%s", err);
    freeReplyObject(reply);
}
