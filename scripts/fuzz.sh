#!/usr/bin/env bash
# Fuzz the parsers with libFuzzer (clang from Debian): every tests/fuzz/fuzz_*.c — the
# HTTP/1.1 request/response parser and chunked decoder (fuzz_http1), the record decoder
# (fuzz_record), the Idempotency-Key parser (fuzz_idkey), the canonical JSON form
# (fuzz_jsoncanon) and the error templates (fuzz_problem_style).
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${1:-60}
need_packages "${BUILD_PACKAGES[@]}" clang libclang-rt-14-dev
DIR="$ROOT/build-fuzz"
mkdir -p "$DIR"
SRC=("$ROOT/src/http/http1.c" "$ROOT/src/http/headers.c" "$ROOT/src/idem/record.c"
    "$ROOT/src/idem/idkey.c" "$ROOT/src/idem/jsoncanon.c" "$ROOT/src/core/problem.c" "$ROOT/src/core/problem_style.c"
    "$ROOT/src/core/json.c" "$ROOT/src/core/conf.c" "$ROOT/src/core/bytes.c")
FLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I"$ROOT/src")
# The targets are the files that exist, so this can never offer one that does not.
shopt -s nullglob
TARGETS=("$ROOT"/tests/fuzz/fuzz_*.c)
[ ${#TARGETS[@]} -gt 0 ] || die "no fuzz targets in tests/fuzz/"
for f in "${TARGETS[@]}"; do
    t=$(basename "$f" .c)
    t=${t#fuzz_}
    clang "${FLAGS[@]}" "$f" "${SRC[@]}" \
        $(pkg-config --cflags --libs libevent_core libcrypto) -o "$DIR/fuzz_$t"
    mkdir -p "$DIR/corpus_$t"
    say "== fuzz_$t for ${SECS}s"
    "$DIR/fuzz_$t" -max_total_time="$SECS" -max_len=4096 "$DIR/corpus_$t" 2>&1 | tail -3
done
say "no crash found"
