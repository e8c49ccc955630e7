#!/usr/bin/env bash
# Build idemproxy and run the whole test suite twice: a normal build, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build. Installs missing Debian packages
# when run as root.
#
# Usage: scripts/test.sh [--fast] [--repeat N] [--load]
#   --fast       skip the sanitizer pass
#   --repeat N   run each suite N times (1..100) on one build, going on after a failure;
#                every failed run is reported at the end with its log
#   --load       a busy-loop CPU hog on every core beside the tests (bounded: it stops
#                with the script, or after 2 hours): a loaded machine, on purpose
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { sed -n '6,11p' "$0" | sed 's/^# \{0,1\}//' >&2; }
FAST=0
REPEAT=1
LOAD=0
while [ $# -gt 0 ]; do
    case $1 in
    --fast) FAST=1 ;;
    --repeat)
        [ $# -ge 2 ] || { usage; die "--repeat needs a number"; }
        REPEAT=$2
        shift
        ;;
    --repeat=*) REPEAT=${1#--repeat=} ;;
    --load) LOAD=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage
        die "unknown option '$1'"
        ;;
    esac
    shift
done
[[ $REPEAT =~ ^[0-9]+$ ]] && [ "$REPEAT" -ge 1 ] && [ "$REPEAT" -le 100 ] ||
    die "--repeat: '$REPEAT' is not a number from 1 to 100"

need_packages "${BUILD_PACKAGES[@]}"
# the storm, compose and benchmark tests need these too
need_packages docker-compose perl clang-format openssl
need_packages_nostart nginx wrk haproxy
# promtool (package prometheus) checks the admin endpoint's /metrics in the tests
need_packages_nostart prometheus
# tests/node: stripe-node against the replicas (test_error_template); npm ci fetches it
need_node

# One ctest run of an already built suite in $1, labelled $2 (run $3 of $REPEAT). 0 when
# it passed and its log is clean; else the log is kept as $1/failed-runs/run-$3.log.
run_once() {
    local dir=$1 label=$2 k=$3
    local rc=0
    local of=""
    [ "$REPEAT" -gt 1 ] && of=" (run $k of $REPEAT)"
    say "== $label: running tests$of"
    (cd "$dir" && ctest --output-on-failure -j 2 --timeout 600) 2>&1 | tee "$dir/ctest-out.txt" ||
        rc=$?
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
    if [ $rc -ne 0 ]; then
        mkdir -p "$dir/failed-runs"
        cp "$log" "$dir/failed-runs/run-$k.log"
        cp "$dir/ctest-out.txt" "$dir/failed-runs/run-$k.ctest.txt"
        local names
        names=$(grep -E '\*\*\*(Failed|Timeout|Exception)' "$dir/ctest-out.txt" |
            sed -E 's/.*Test +#[0-9]+: ([^ ]+).*/\1/' | sort -u | tr '\n' ' ' || true)
        FAILED_RUNS+=("$label run $k: ${names:-checks above} (log: ${dir#$ROOT/}/failed-runs/run-$k.log)")
    fi
    return $rc
}

FAILED_RUNS=()
run_suite() {
    local dir=$1 label=$2
    shift 2
    say "== $label: building in ${dir#$ROOT/}"
    build "$dir" "$@"
    rm -rf "$dir/failed-runs"
    for ((k = 1; k <= REPEAT; k++)); do
        run_once "$dir" "$label" "$k" || true
    done
}

# --load: one busy loop per core, stopped (by PID) when this script exits
LOAD_PIDS=()
stop_load() { [ ${#LOAD_PIDS[@]} -eq 0 ] || kill "${LOAD_PIDS[@]}" 2>/dev/null || true; }
if [ $LOAD -eq 1 ]; then
    trap stop_load EXIT
    for ((i = 0; i < $(nproc); i++)); do
        timeout 7200 sh -c 'while :; do :; done' &
        LOAD_PIDS+=($!)
    done
    say "== load: ${#LOAD_PIDS[@]} busy loop(s) beside the tests"
fi

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
if [ ${#FAILED_RUNS[@]} -gt 0 ]; then
    say "== ${#FAILED_RUNS[@]} failed run(s):"
    printf '  %s\n' "${FAILED_RUNS[@]}" >&2
    die "tests failed"
fi
[ "$REPEAT" -gt 1 ] && say "all tests passed, $REPEAT runs each" || say "all tests passed"

