#!/usr/bin/env bash
# Build idemproxy and run the whole test suite twice: a normal build, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build. Installs missing Debian packages
# when run as root. Usage: scripts/test.sh [--fast]   (--fast: skip the sanitizer pass)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FAST=0
[ "${1:-}" = "--fast" ] && FAST=1

need_packages "${BUILD_PACKAGES[@]}"
# the storm, compose and benchmark tests need these too
need_packages docker-compose perl clang-format
need_packages_nostart nginx wrk haproxy
# promtool (package prometheus) checks the admin endpoint's /metrics in the tests
need_packages_nostart prometheus
# tests/node: stripe-node against the replicas (test_error_template); npm ci fetches it
need_node

run_suite() {
    local dir=$1 label=$2
    shift 2
    say "== $label: building in ${dir#$ROOT/}"
    build "$dir" "$@"
    say "== $label: running tests"
    local rc=0
    (cd "$dir" && ctest --output-on-failure -j 2 --timeout 600) || rc=$?
    # Criterion's own summary per test program, so a run that executed nothing shows.
    local log="$dir/Testing/Temporary/LastTest.log"
    if ! grep -h 'Synthesis:' "$log" | sed "s|^|[$label] |"; then
        say "no Criterion summary found in $log"
        rc=1
    fi
    if grep -h 'Synthesis:' "$log" | grep -q 'Tested: 0 '; then
        say "a test program ran no test"
        rc=1
    fi
    # A replica that did not exit 0 on SIGTERM (a drain that hung, a leak) is reported by
    # the harness; from a test's .fini Criterion would still count the test as passed.
    if grep -q '^harness: .* did not exit cleanly' "$log"; then
        say "processes that did not exit cleanly in $log:"
        grep '^harness: .* did not exit cleanly' "$log" | sort | uniq -c | head -20 >&2
        rc=1
    fi
    # A sanitizer report anywhere (a test process, or a server it started and whose log
    # a test printed) fails the run even if the test itself passed.
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
        say "sanitizer reports in $log:"
        grep -E -A3 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log" | head -40 >&2
        rc=1
    fi
    return $rc
}

# The code follows .clang-format (checked, not rewritten).
say "== style: clang-format"
mapfile -t SOURCES < <(cd "$ROOT" && git ls-files -- '*.c' '*.h' 2>/dev/null ||
    find src include tests tools -name '*.[ch]')
(cd "$ROOT" && clang-format --dry-run --Werror "${SOURCES[@]}") ||
    die "some files do not follow .clang-format (run: clang-format -i FILE)"

# Lower layers never include higher ones, and no two modules include each other.
say "== layering: src/"
bash "$ROOT/scripts/check-layers.sh" "$ROOT/src" || die "src/ breaks the layering (see above)"

run_suite "$ROOT/build" "release" -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ $FAST -eq 0 ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    run_suite "$ROOT/build-asan" "asan+ubsan" -DCMAKE_BUILD_TYPE=Debug -DIDEMPROXY_SANITIZE=ON
fi
say "all tests passed"
