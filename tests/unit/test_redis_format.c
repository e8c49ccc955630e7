/*
 * redis_format writes commands in Redis's wire format itself (hiredis's formatter was a
 * large share of a keyed request's instructions): it must write exactly what hiredis
 * would, for empty, binary and long arguments.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "redis/redis.h"

static void same_as_hiredis(int argc, const char *const *argv, const size_t *lens)
{
    char *want = NULL, *got;
    int wlen = redisFormatCommandArgv(&want, argc, (const char **)argv, lens);
    size_t len = redis_format(NULL, argc, argv, lens);

    cr_assert_gt(wlen, 0);
    cr_assert_eq(len, (size_t)wlen, "length %zu, hiredis %d", len, wlen);
    got = malloc(len);
    cr_assert_eq(redis_format(got, argc, argv, lens), len);
    cr_assert_eq(memcmp(got, want, len), 0, "%.*s\nvs hiredis\n%.*s", (int)len, got, wlen, want);
    free(got);
    redisFreeCommand(want);
}

Test(redis_format, matches_hiredis)
{
    const char *set[] = {"SET", "idem:abc", "P0123", "NX", "GET", "PX", "10000"};
    size_t setl[] = {3, 8, 5, 2, 3, 2, 5};
    const char *bin[] = {"SET", "k", "a\0b\r\nc", ""};
    size_t binl[] = {3, 1, 7, 0};
    size_t big = 123457;
    char *long_arg = malloc(big);
    const char *lng[] = {"SET", "k", long_arg};
    size_t lngl[] = {3, 1, big};
    const char *one[] = {"PING"};
    size_t onel[] = {4};

    memset(long_arg, 'x', big);
    same_as_hiredis(7, set, setl);
    same_as_hiredis(4, bin, binl);
    same_as_hiredis(3, lng, lngl);
    same_as_hiredis(1, one, onel);
    free(long_arg);
}
