/* libFuzzer target: stored records (must never over-read) and key parsing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "idem/idkey.h"
#include "idem/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct record rec;
    const char *why;
    char *copy, key[300];

    if (record_decode(&rec, data, size, &why) == 0)
        record_clear(&rec);
    copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    idkey_parse(copy, 255, key, sizeof(key), &why);
    free(copy);
    return 0;
}
