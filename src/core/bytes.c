#include "core/bytes.h"

#include <event2/buffer.h>

int bytes_each(struct evbuffer *b, size_t len, int (*fn)(const void *piece, size_t n, void *arg),
               void *arg)
{
    size_t done = 0;

    while (done < len) {
        struct evbuffer_iovec vec[16];
        struct evbuffer_ptr pos;
        int n;

        if (evbuffer_ptr_set(b, &pos, done, EVBUFFER_PTR_SET) != 0)
            return -1;
        n = evbuffer_peek(b, (ev_ssize_t)(len - done), &pos, vec, 16);
        if (n <= 0)
            return -1;
        if (n > 16)
            n = 16;
        for (int i = 0; i < n && done < len; i++) {
            size_t piece = vec[i].iov_len;

            if (piece > len - done)
                piece = len - done;
            if (piece && fn(vec[i].iov_base, piece, arg) != 0)
                return -1;
            done += piece;
        }
    }
    return 0;
}
