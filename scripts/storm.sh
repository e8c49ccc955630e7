#!/usr/bin/env bash
# Prove exactly-once under a retry storm, locally: starts redis-server, three demo-bank
# replicas and two idemproxy replicas on free loopback ports, runs retrystorm against
# both proxies with the ledger check, writes the HTML report, prints the verdict, stops
# everything. Exit status: retrystorm's (0 = the verdict holds, 1 = it does not).
#
#   scripts/storm.sh [--keys N] [--dupes D] [--concurrency C] [--abort-rate R]
#                    [--fail-rate R] [--report FILE] [--proxy-args "ARGS"] [--pause-redis]
#                    [--bin BUILD_DIR]
#
#   --fail-rate R     demo-bank answers 503 before executing for a fraction R
#   --proxy-args      extra idemproxy flags, e.g. "--in-flight wait"
#   --pause-redis     freeze Redis (SIGSTOP) during the storm: with the default
#                     on-redis-error reject the proxies answer 503 and retries wait it out;
#                     with --proxy-args "--on-redis-error pass" they forward unprotected
#                     and retrystorm must catch the duplicate executions.
#   --bin DIR         use the binaries already built in DIR (default: build/, built now)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KEYS=2000 DUPES=6 CONC=64 ABORT=0.2 FAIL=0 PAUSE=0 PROXY_ARGS="" REPORT="" BIN=""
while [ $# -gt 0 ]; do
    case $1 in
    --keys) KEYS=$2; shift 2 ;;
    --dupes) DUPES=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --abort-rate) ABORT=$2; shift 2 ;;
    --fail-rate) FAIL=$2; shift 2 ;;
    --report) REPORT=$2; shift 2 ;;
    --proxy-args) PROXY_ARGS=$2; shift 2 ;;
    --pause-redis) PAUSE=1; shift ;;
    --bin) BIN=$2; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

need_packages "${BUILD_PACKAGES[@]}"
if [ -z "$BIN" ]; then
    BIN="$ROOT/build"
    build "$BIN" -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
for b in "$BIN/idemproxy" "$BIN/tools/demo-bank/demo-bank" "$BIN/tools/retrystorm/retrystorm"; do
    [ -x "$b" ] || die "missing $b after the build"
done

RUN=$(mktemp -d "${TMPDIR:-/tmp}/idemstorm.XXXXXX")
[ -n "$REPORT" ] || REPORT="$ROOT/run/storm-report.html"
mkdir -p "$(dirname "$REPORT")"
REDIS_PID=""
cleanup() {
    [ -n "$REDIS_PID" ] && kill -CONT "$REDIS_PID" 2>/dev/null || true # may be frozen
    stop_started
}
trap cleanup INT TERM EXIT

REDIS_PORT=$(free_port)
mkdir -p "$RUN/redis"
start redis "$REDIS_PORT" redis-server "$ROOT/conf/redis.conf" --port "$REDIS_PORT" --dir "$RUN/redis"
REDIS_PID=${PIDS[-1]}

UPS=() LEDGERS=()
for i in 1 2 3; do
    p=$(free_port)
    start "bank$i" "$p" "$BIN/tools/demo-bank/demo-bank" --listen "127.0.0.1:$p" --id "bank$i" \
        --delay 5ms --jitter 20ms --fail-rate "$FAIL"
    UPS+=(--upstream "127.0.0.1:$p")
    LEDGERS+=(--ledger "http://127.0.0.1:$p/ledger")
done

TARGETS=()
for name in proxyA proxyB; do
    p=$(free_port)
    # shellcheck disable=SC2086
    start "$name" "$p" "$BIN/idemproxy" --listen "127.0.0.1:$p" --workers 2 \
        --redis "127.0.0.1:$REDIS_PORT" "${UPS[@]}" $PROXY_ARGS
    TARGETS+=(--target "http://127.0.0.1:$p/payments")
done

if [ $PAUSE -eq 1 ]; then
    # freeze Redis from the first request on, for 3 seconds
    kill -STOP "$REDIS_PID"
    (sleep 3; kill -CONT "$REDIS_PID") &
fi

say "storm: $KEYS keys × $DUPES copies, concurrency $CONC, abort rate $ABORT, 2 proxies, 3 banks"
rc=0
"$BIN/tools/retrystorm/retrystorm" "${TARGETS[@]}" --keys "$KEYS" --dupes "$DUPES" \
    --concurrency "$CONC" --abort-rate "$ABORT" "${LEDGERS[@]}" \
    --report "$REPORT" --json "$RUN/verdict.json" || rc=$?
cp "$RUN/verdict.json" "${REPORT%.html}.json" 2>/dev/null || true
say ""
say "report:  $REPORT"
say "logs:    $RUN"
exit $rc
