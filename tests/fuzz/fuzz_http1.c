/* libFuzzer target: request heads, framing and chunked bodies (scripts/fuzz.sh). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>

#include "http/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *in = evbuffer_new(), *body = evbuffer_new();
    struct http1_head h;
    struct http1_error err;
    size_t scan = 0;
    long n;

    evbuffer_add(in, data, size);
    n = http1_head_end(in, &scan, 64 * 1024, 1);
    if (n > 0) {
        const char *p = (const char *)evbuffer_pullup(in, n);
        if (http1_parse_request(&h, p, (size_t)n, &err) == 0) {
            enum http1_body kind;
            uint64_t len;
            http1_keepalive(&h);
            http1_header_has_token(&h, "Connection", "close");
            if (http1_request_framing(&h, &kind, &len, &err) == 0 && kind == HTTP1_BODY_CHUNKED) {
                struct http1_chunked c;
                uint64_t total = 0;
                memset(&c, 0, sizeof(c));
                evbuffer_drain(in, (size_t)n);
                http1_chunked_decode(&c, in, body, 1 << 20, &total, 4096, &err);
            }
            http1_head_clear(&h);
        }
        if (http1_parse_response(&h, p, (size_t)n, &err) == 0) {
            enum http1_body kind;
            uint64_t len;
            http1_response_framing(&h, 0, &kind, &len, &err);
            http1_head_clear(&h);
        }
    }
    evbuffer_free(in);
    evbuffer_free(body);
    return 0;
}
