#!/usr/bin/env bash
# Fuzz the parsers with libFuzzer (clang from Debian): the HTTP/1.1 request/response
# parser and chunked decoder, the record decoder and the key parser.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${1:-60}
need_packages "${BUILD_PACKAGES[@]}" clang libclang-rt-14-dev
DIR="$ROOT/build-fuzz"
mkdir -p "$DIR"
SRC=("$ROOT/src/http1.c" "$ROOT/src/headers.c" "$ROOT/src/record.c" "$ROOT/src/idkey.c")
FLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I"$ROOT/include")
for t in http1 record; do
    clang "${FLAGS[@]}" "$ROOT/tests/fuzz/fuzz_$t.c" "${SRC[@]}" \
        $(pkg-config --cflags --libs libevent_core libcrypto) -o "$DIR/fuzz_$t"
    mkdir -p "$DIR/corpus_$t"
    say "== fuzz_$t for ${SECS}s"
    "$DIR/fuzz_$t" -max_total_time="$SECS" -max_len=4096 "$DIR/corpus_$t" 2>&1 | tail -3
done
say "no crash found"
