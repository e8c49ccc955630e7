#!/usr/bin/env bash
# Fault injection under a retry storm: does at-most-once hold while things break?
#
#   scripts/chaos.sh [--keys N] [--seed S] [--quick] [--proxy-arg ARG]... [--report FILE]
#                    [--bin BUILD_DIR]
#
#   --keys N         keys of the chaos storm [2000]: each sent 4 times, shuffled, at
#                    400 requests/s (so 2000 keys take 20 s, with about 10 faults)
#   --seed S         seed of the fault schedule, the banks' fault draws and the storm
#                    [random; printed, so a run can be repeated]
#   --quick          a small run for the test suite: 150 keys at 120/s (5 s, 3 faults)
#   --proxy-arg ARG  extra idemproxy flags for both replicas (split on spaces; repeatable),
#                    e.g. --proxy-arg "--on-redis-error pass" to see the checker fail
#   --report FILE    the HTML report [run/chaos-report.html]; the SIGKILL phase's goes
#                    beside it (FILE without .html, plus -kill.html)
#   --bin DIR        use the binaries already built in DIR (default: build/, built now)
#
# Starts Redis (conf/redis.conf: AOF on), three demo-bank replicas that fail on purpose
# (503 before executing, 500 after executing, connection reset after executing) and two
# idemproxy replicas (lease 3 s, drain-timeout 250 ms), all on free loopback ports, then:
#
#  1. The SIGKILL phase (a documented limit, run apart so it can be accounted exactly):
#     keys sent through replica A only, each held at a bank for 2 s; once every one of
#     them has executed, A is killed with SIGKILL (and started again at once) and the
#     banks' ledgers are snapshotted. Each of those keys must execute exactly once more
#     after its lease expires - no more, no less - and keys sent through replica B at the
#     same time exactly once.
#  2. The chaos storm: retrystorm sends every key 4 times at a steady rate to both
#     replicas, abandoning 10 % of the copies, while an injector follows a seeded
#     schedule, printed first: Redis frozen (SIGSTOP/SIGCONT) for 0.2-1.5 s (< lease),
#     Redis restarted cleanly (SIGTERM, AOF, same port and data), a rolling restart of
#     the replicas (each: SIGTERM, drain; started again at once on the same port). Then
#     patient retries until every key has a final answer, and the ledger check.
#
# FAIL (exit 1) on any key executed twice (beyond the SIGKILL phase's expected
# re-executions), any key answered differently (every final answer compared, 5xx
# included), any key without a final answer, any replica that did not exit 0 after
# SIGTERM, or a sanitizer report in any log. The verdict has a table per fault; the HTML
# report too.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KEYS=2000 DUPES=4 RATE=400 KILL_KEYS=40 SEED="" QUICK=0 REPORT="" BIN=""
PROXY_ARGS=()
while [ $# -gt 0 ]; do
    case $1 in
    --keys) KEYS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --proxy-arg) read -ra _words <<<"$2"; PROXY_ARGS+=("${_words[@]}"); shift 2 ;;
    --report) REPORT=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    -h | --help) sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
if [ $QUICK -eq 1 ]; then
    KEYS=150 RATE=120 KILL_KEYS=12
fi
[[ $KEYS =~ ^[1-9][0-9]*$ ]] || die "--keys: '$KEYS' is not a positive number"
[ -n "$SEED" ] || SEED=$(( (RANDOM << 15 | RANDOM) ))
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed: '$SEED' is not a number"

LEASE_MS=3000
DRAIN_MS=250
CONC=200
RETRY_STATUSES=409,429,502,503 # the answers idemproxy does not record (release-statuses, 502
#                                upstream-unavailable, 503 store-unavailable): not final
BANK_FAULTS=(--fail-rate 0.03 --fail-after-rate 0.02 --reset-after-rate 0.02)

need_packages "${BUILD_PACKAGES[@]}"
if [ -z "$BIN" ]; then
    BIN="$ROOT/build"
    build "$BIN" -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
PROXY="$BIN/idemproxy" BANK="$BIN/tools/demo-bank/demo-bank" STORM="$BIN/tools/retrystorm/retrystorm"
for b in "$PROXY" "$BANK" "$STORM"; do
    [ -x "$b" ] || die "missing $b after the build"
done
"$PROXY" -t --upstream 127.0.0.1:1 "${PROXY_ARGS[@]}" >/dev/null 2>&1 ||
    die "idemproxy does not accept --proxy-arg ${PROXY_ARGS[*]}"

RUN=$(mktemp -d "${TMPDIR:-/tmp}/idemchaos.XXXXXX")
[ -n "$REPORT" ] || REPORT="$ROOT/run/chaos-report.html"
KILL_REPORT="${REPORT%.html}-kill.html"
mkdir -p "$(dirname "$REPORT")"
T_START=${EPOCHREALTIME/./}

REDIS_PID=""
cleanup() {
    [ -n "$REDIS_PID" ] && kill -CONT "$REDIS_PID" 2>/dev/null || true # may be frozen
    stop_started
}
trap cleanup INT TERM EXIT

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
ms_str() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); } # 1234 -> 1.234

# ---- the stack ----

REDIS_PORT=$(free_port)
REDIS_N=0
start_redis() {
    REDIS_N=$((REDIS_N + 1))
    start "redis.$REDIS_N" "$REDIS_PORT" redis-server "$ROOT/conf/redis.conf" \
        --port "$REDIS_PORT" --dir "$RUN/redis"
    REDIS_PID=$STARTED
}
mkdir -p "$RUN/redis"
start_redis

BANK_PORTS=() BANK_PIDS=() UPS=() LEDGERS=()
for i in 1 2 3; do
    p=$(free_port)
    start "bank$i" "$p" "$BANK" --listen "127.0.0.1:$p" --id "bank$i" --seed $((SEED + i)) \
        --delay 5ms --jitter 400ms "${BANK_FAULTS[@]}"
    BANK_PORTS+=("$p")
    BANK_PIDS+=("$STARTED")
    UPS+=(--upstream "127.0.0.1:$p")
    LEDGERS+=(--ledger "http://127.0.0.1:$p/ledger")
done

# Replica NAME runs as PROXY_PID[NAME] on PROXY_PORT[NAME]; incarnation n logs to
# NAME.n.log, and every one of them must end with exit status 0 (but a SIGKILLed one).
declare -A PROXY_PID PROXY_PORT PROXY_N
RETIRED=() # "PID NAME.n": replicas sent SIGTERM, to be reaped and checked
start_proxy() {
    local name=$1 log i
    PROXY_N[$name]=$((${PROXY_N[$name]:-0} + 1))
    log="$name.${PROXY_N[$name]}"
    spawn "$log" "$PROXY" --listen "127.0.0.1:${PROXY_PORT[$name]}" --workers 2 \
        --redis "127.0.0.1:$REDIS_PORT" "${UPS[@]}" --lease "${LEASE_MS}ms" \
        --drain-timeout "${DRAIN_MS}ms" "${PROXY_ARGS[@]}"
    PROXY_PID[$name]=$STARTED
    # not wait_port: a replica still draining may hold the port too (SO_REUSEPORT)
    for ((i = 0; i < 200; i++)); do
        grep -q ' listening on ' "$RUN/$log.log" 2>/dev/null && return 0
        kill -0 "$STARTED" 2>/dev/null || break
        sleep 0.05
    done
    cat "$RUN/$log.log" >&2
    die "$log did not start"
}
for name in A B; do
    PROXY_PORT[$name]=$(free_port)
    start_proxy "$name"
done
TARGET_A="http://127.0.0.1:${PROXY_PORT[A]}/payments"
TARGET_B="http://127.0.0.1:${PROXY_PORT[B]}/payments"

# ---- helpers over the banks ----

ledger_sum() { # executions over all banks
    local p n sum=0
    for p in "${BANK_PORTS[@]}"; do
        n=$(curl -sf --max-time 5 "http://127.0.0.1:$p/ledger" |
            sed -n 's/^{"total": \([0-9]*\).*/\1/p') || true
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}
bank_faults() { # "FAIL_BEFORE FAIL_AFTER RESET_AFTER" summed over the banks
    local p doc fb=0 fa=0 ra=0 v
    for p in "${BANK_PORTS[@]}"; do
        doc=$(curl -sf --max-time 5 "http://127.0.0.1:$p/faults") || return 1
        v=$(sed -n 's/.*"fail_before": \([0-9]*\).*/\1/p' <<<"$doc"); fb=$((fb + v))
        v=$(sed -n 's/.*"fail_after": \([0-9]*\).*/\1/p' <<<"$doc"); fa=$((fa + v))
        v=$(sed -n 's/.*"reset_after": \([0-9]*\).*/\1/p' <<<"$doc"); ra=$((ra + v))
    done
    echo "$fb $fa $ra"
}
json_num() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" "$2" 2>/dev/null | head -1 || true; } # FIELD FILE
# wait_log FILE TEXT SECONDS [PID]: until FILE holds TEXT (fails early once PID is gone)
wait_log() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        [ -z "${4:-}" ] || kill -0 "$4" 2>/dev/null || break
        sleep 0.05
    done
    grep -qF -- "$2" "$1" 2>/dev/null
}

say "chaos: seed $SEED; logs in $RUN"

# ---- 1. the SIGKILL phase ----

say ""
say "== phase 1 of 2: a replica killed (SIGKILL) while its requests are at the upstream"
say "   (a documented limit: each such key may execute once more after its lease; the"
say "   checker expects exactly that, from the ledgers as they were at the kill)"
KILL_FLAGS=(--keys "$KILL_KEYS" --dupes 1 --concurrency "$KILL_KEYS" --header "Demo-Delay: 5s"
    --header "Demo-Fault: none" --retry-statuses "$RETRY_STATUSES" --client-timeout 30s
    "${LEDGERS[@]}" --give-up 60s)
SNAPSHOTS=()
for i in 1 2 3; do SNAPSHOTS+=(--expect-reexec "$RUN/kill-snapshot-bank$i.json"); done
before=$(ledger_sum)
spawn kill-a "$STORM" --target "$TARGET_A" "${KILL_FLAGS[@]}" --seed $((SEED + 11)) \
    "${SNAPSHOTS[@]}" --faults "$RUN/kill-faults.tsv" --label "SIGKILL phase: the killed replica's keys" \
    --json "$RUN/kill-a.json" --report "$KILL_REPORT"
KILL_A=$STARTED
spawn kill-b "$STORM" --target "$TARGET_B" "${KILL_FLAGS[@]}" --seed $((SEED + 12)) \
    --label "SIGKILL phase: the keys of the replica that stayed up" --json "$RUN/kill-b.json"
KILL_B=$STARTED
# every key of both runs at a bank (executed, answer held for 5 s: time to see them all
# there and kill A before any answer leaves, on a loaded machine), then the kill
for ((i = 0; i < 200; i++)); do
    [ "$(ledger_sum)" -ge $((before + 2 * KILL_KEYS)) ] && break
    sleep 0.05
done
[ "$(ledger_sum)" -eq $((before + 2 * KILL_KEYS)) ] ||
    die "SIGKILL phase: expected $((2 * KILL_KEYS)) executions at the banks, saw $(($(ledger_sum) - before))"
kill -KILL "${PROXY_PID[A]}"
wait_exit "${PROXY_PID[A]}" 5 || true
KILLED_STATUS=$EXIT_STATUS
for i in 1 2 3; do
    curl -sf --max-time 5 "http://127.0.0.1:${BANK_PORTS[i - 1]}/ledger" \
        >"$RUN/kill-snapshot-bank$i.json.tmp" || die "SIGKILL phase: bank$i ledger unreadable"
    mv "$RUN/kill-snapshot-bank$i.json.tmp" "$RUN/kill-snapshot-bank$i.json"
done
printf 'replica A SIGKILLed while its requests were at the banks (documented limit)\t1 kill, %s keys at the banks (their ledgers snapshotted at the kill)\terror*,409 idempotency-key-in-use\tthe dead replica'"'"'s claims answer 409 until the %s s lease expires; then each key executes once more, expected and counted apart\n' \
    "$KILL_KEYS" $((LEASE_MS / 1000)) >"$RUN/kill-faults.tsv.tmp"
mv "$RUN/kill-faults.tsv.tmp" "$RUN/kill-faults.tsv"
say "   killed replica A (status $KILLED_STATUS) with $KILL_KEYS keys at the banks; started it again"
start_proxy A
KILL_RC=0 KILL_B_RC=0
wait "$KILL_A" || KILL_RC=$?
forget_pid "$KILL_A"
wait "$KILL_B" || KILL_B_RC=$?
forget_pid "$KILL_B"
sed -n '/^retrystorm verdict/,/^  verdict:/p' "$RUN/kill-a.log" >&2
grep -E '^  (keys executed more than once|keys answered differently|keys with no final answer|  verdict)' \
    "$RUN/kill-b.log" | sed 's/^/   replica B: /' >&2 || true
K_EXPECTED=$(json_num reexec_expected "$RUN/kill-a.json")
K_OBSERVED=$(json_num reexec_observed "$RUN/kill-a.json")
K_DUP=$(json_num keys_duplicated "$RUN/kill-a.json")
K_B_DUP=$(json_num keys_duplicated "$RUN/kill-b.json")
[ "$KILL_RC" -eq 0 ] && [ "$KILL_B_RC" -eq 0 ] && KILL_VERDICT=PASS || KILL_VERDICT=FAIL

# ---- 2. the chaos storm ----

REQUESTS=$((KEYS * DUPES))
STORM_MS=$((REQUESTS * 1000 / RATE))
[ $STORM_MS -ge 5000 ] || STORM_MS=5000 # room for one fault of each kind
RATE=$(( (REQUESTS * 1000 + STORM_MS - 1) / STORM_MS ))
# The schedule: one fault per slot, at least one of each kind, in a seeded order; a
# freeze lasts 0.2-1.5 s (never past its slot, always shorter than the lease).
perl -e '
    my ($seed, $storm_ms, $lease_ms) = @ARGV;
    srand($seed);
    my $n = int(($storm_ms - 1000) / 1800);
    $n = 3 if $n < 3;
    my @kinds = ("freeze", "redis-restart", "rolling-restart");
    while (@kinds < $n) {
        my $r = rand();
        push @kinds, $r < 0.5 ? "freeze" : $r < 0.75 ? "rolling-restart" : "redis-restart";
    }
    for (my $i = $#kinds; $i > 0; $i--) {
        my $j = int(rand($i + 1));
        @kinds[$i, $j] = @kinds[$j, $i];
    }
    my $slot = ($storm_ms - 1000) / $n;
    for my $i (0 .. $#kinds) {
        my $t = int(500 + $i * $slot + rand($slot * 0.3));
        my $k = $kinds[$i];
        my $arg = "-";
        if ($k eq "freeze") {
            my $max = $slot * 0.65;
            $max = 1500 if $max > 1500;
            $max = $lease_ms - 500 if $max > $lease_ms - 500;
            $arg = int(200 + rand($max - 200));
        } elsif ($k eq "rolling-restart") {
            $arg = rand() < 0.5 ? "A,B" : "B,A";
        }
        print "$t $k $arg\n";
    }' "$SEED" "$STORM_MS" "$LEASE_MS" >"$RUN/schedule.txt"

say ""
say "== phase 2 of 2: the chaos storm"
say "   $KEYS keys x $DUPES copies = $REQUESTS requests at $RATE/s over $(ms_str $STORM_MS) s to both"
say "   replicas, 10 % abandoned; banks: ${BANK_FAULTS[*]}"
say "   fault schedule (seed $SEED; t from the start of the storm):"
while read -r t kind arg; do
    case $kind in
    freeze) say "     t=$(ms_str "$t") s  freeze Redis (SIGSTOP) for $(ms_str "$arg") s, then SIGCONT" ;;
    redis-restart) say "     t=$(ms_str "$t") s  restart Redis (SIGTERM: clean shutdown, AOF; same port and data)" ;;
    rolling-restart) say "     t=$(ms_str "$t") s  rolling restart of the replicas, ${arg/,/ then } (each: SIGTERM, drain; started again at once)" ;;
    esac
done <"$RUN/schedule.txt"
say ""

FAULTS_FILE="$RUN/faults.tsv"
FAULTS_BEFORE=$(bank_faults) || die "a bank did not answer GET /faults"
spawn storm "$STORM" --target "$TARGET_A" --target "$TARGET_B" --keys "$KEYS" --dupes "$DUPES" \
    --concurrency "$CONC" --rate "$RATE" --abort-rate 0.1 --seed "$SEED" \
    --retry-statuses "$RETRY_STATUSES" --client-timeout 15s --give-up 120s "${LEDGERS[@]}" \
    --faults "$FAULTS_FILE" --label "chaos storm, seed $SEED" \
    --json "$RUN/verdict.json" --report "$REPORT"
STORM_PID=$STARTED
wait_log "$RUN/storm.log" "retrystorm: run " 10 "$STORM_PID" || die "retrystorm did not start: $(cat "$RUN/storm.log")"
T0=$(now_ms)

FREEZES=0 FROZEN_MS=0 REDIS_RESTARTS=0 REDIS_DOWN_MS=0 PROXY_RESTARTS=0 RESTARTED=""
while read -r t kind arg; do
    wait_ms=$((T0 + t - $(now_ms)))
    [ $wait_ms -gt 0 ] && sleep "$(ms_str $wait_ms)"
    case $kind in
    freeze)
        kill -STOP "$REDIS_PID"
        sleep "$(ms_str "$arg")"
        kill -CONT "$REDIS_PID"
        FREEZES=$((FREEZES + 1)) FROZEN_MS=$((FROZEN_MS + arg))
        ;;
    redis-restart)
        t1=$(now_ms)
        kill -TERM "$REDIS_PID"
        wait_exit "$REDIS_PID" 10 || die "Redis did not shut down on SIGTERM"
        [ "$EXIT_STATUS" -eq 0 ] || die "Redis exited with status $EXIT_STATUS on SIGTERM"
        start_redis
        REDIS_RESTARTS=$((REDIS_RESTARTS + 1)) REDIS_DOWN_MS=$((REDIS_DOWN_MS + $(now_ms) - t1))
        ;;
    rolling-restart)
        for name in ${arg/,/ }; do
            RETIRED+=("${PROXY_PID[$name]} $name.${PROXY_N[$name]}")
            kill -TERM "${PROXY_PID[$name]}"
            start_proxy "$name" # the next one only once this one listens again
            PROXY_RESTARTS=$((PROXY_RESTARTS + 1)) RESTARTED="$RESTARTED $name"
        done
        ;;
    esac
done <"$RUN/schedule.txt"
say "   schedule done at t=$(ms_str $(($(now_ms) - T0))) s"

# Every replica that got SIGTERM must have drained and exited 0.
FAILURES=()
DRAIN_504=0
for entry in "${RETIRED[@]}"; do
    read -r pid log <<<"$entry"
    wait_exit "$pid" $((DRAIN_MS / 1000 + LEASE_MS / 1000 + 10)) ||
        FAILURES+=("replica $log did not exit within the drain (killed)")
    [ "$EXIT_STATUS" -eq 0 ] || FAILURES+=("replica $log exited with status $EXIT_STATUS after SIGTERM")
    grep -q 'received SIGTERM, draining' "$RUN/$log.log" && grep -q ' stopped$' "$RUN/$log.log" ||
        FAILURES+=("replica $log: its log does not show a drain and a stop")
    n=$(grep -c 'outcome unknown (drain-timeout reached' "$RUN/$log.log" || true)
    DRAIN_504=$((DRAIN_504 + n))
done

# The storm says "run over" when its patient phase is done: the banks' counts are final.
wait_log "$RUN/storm.log" "retrystorm: run over" 180 "$STORM_PID" ||
    FAILURES+=("retrystorm never finished its run: $(tail -3 "$RUN/storm.log")")
read -r fb0 fa0 ra0 <<<"$FAULTS_BEFORE"
FAULTS_AFTER=$(bank_faults) || die "a bank did not answer GET /faults"
read -r fb1 fa1 ra1 <<<"$FAULTS_AFTER"
count_logs() { cat "$RUN"/A.*.log "$RUN"/B.*.log | grep -c -- "$1" || true; }
REC_RETRIED=$(count_logs 'failed (.*); retrying while the lease lasts')
REC_LOST=$(count_logs 'NOT recorded')
CLAIM_503=$(count_logs '503 store unavailable')
UNPROTECTED=$(count_logs 'forwarding UNPROTECTED')
STALE=$(count_logs 'stale owner')
restarts_by=$(tr ' ' '\n' <<<"$RESTARTED" | grep . | sort | uniq -c |
    awk '{printf "%s%s x%s", n++ ? ", " : "", $2, $1}') || true
{
    printf 'redis frozen (SIGSTOP, then SIGCONT)\t%d, %s s in total (each 0.2-1.5 s, shorter than the %s s lease)\t503 store-unavailable,409 idempotency-key-in-use\tproxies: %d records retried after a stall between claim and record, %d given up; %d claims answered 503 (shared with the restarts)%s\n' \
        "$FREEZES" "$(ms_str "$FROZEN_MS")" "$((LEASE_MS / 1000))" "$REC_RETRIED" "$REC_LOST" "$CLAIM_503" \
        "$([ "$UNPROTECTED" -gt 0 ] && echo "; $UNPROTECTED requests forwarded UNPROTECTED (on-redis-error pass)")"
    printf 'redis restarted (SIGTERM: clean shutdown with AOF; same port and data)\t%d, down %s s in total\t503 store-unavailable\trecords survive the restart: replays after it are checked like any other\n' \
        "$REDIS_RESTARTS" "$(ms_str "$REDIS_DOWN_MS")"
    printf 'proxy replicas restarted, rolling (each: SIGTERM, drain; started again at once)\t%d (%s)\terror*,504 outcome-unknown\t%d requests still at a bank at drain-timeout recorded 504 outcome-unknown; every drained replica exited %s\n' \
        "$PROXY_RESTARTS" "${restarts_by:-none}" "$DRAIN_504" \
        "$([ ${#FAILURES[@]} -eq 0 ] && echo 0 || echo "0? NO, see the verdict")"
    printf 'demo-bank: 503 before executing\t%d\t503 unavailable\tnot executed: released, retried, executed later (once)\n' $((fb1 - fb0))
    printf 'demo-bank: 500 after executing\t%d\t500 failed-after-executing\texecuted: the 500 is recorded and every retry gets it\n' $((fa1 - fa0))
    printf 'demo-bank: connection reset after executing\t%d\t504 outcome-unknown\texecuted, answer lost: recorded as 504 outcome-unknown (the kind is shared with the drains)\n' $((ra1 - ra0))
    printf 'client aborts (connection closed right after sending)\tabort rate 0.1, seeded\taborted\tthe answer is recorded all the same; the key is retried later\n'
    printf 'replica SIGKILLed with its requests at the upstream (phase 1, documented limit)\t1 kill, %s keys at the banks\t-\t%s of %s expected re-executions observed, %s unexpected duplicates; keys of the replica that stayed up: %s duplicates (phase verdict %s; report %s)\n' \
        "$KILL_KEYS" "${K_OBSERVED:-?}" "${K_EXPECTED:-?}" "${K_DUP:-?}" "${K_B_DUP:-?}" "$KILL_VERDICT" "$(basename "$KILL_REPORT")"
} >"$FAULTS_FILE.tmp"
mv "$FAULTS_FILE.tmp" "$FAULTS_FILE"

STORM_RC=0
wait "$STORM_PID" || STORM_RC=$?
forget_pid "$STORM_PID"
sed -n '/^retrystorm verdict/,$p' "$RUN/storm.log" | sed '/^  verdict:/q' >&2

# ---- the end: every process stops cleanly, no sanitizer report anywhere ----

for name in A B; do
    kill -TERM "${PROXY_PID[$name]}"
done
for name in A B; do
    log="$name.${PROXY_N[$name]}"
    wait_exit "${PROXY_PID[$name]}" $((LEASE_MS / 1000 + 10)) || FAILURES+=("replica $log did not stop (killed)")
    [ "$EXIT_STATUS" -eq 0 ] || FAILURES+=("replica $log exited with status $EXIT_STATUS after SIGTERM")
done
for i in 1 2 3; do
    kill -TERM "${BANK_PIDS[i - 1]}"
    wait_exit "${BANK_PIDS[i - 1]}" 10 || FAILURES+=("bank$i did not stop (killed)")
    [ "$EXIT_STATUS" -eq 0 ] || FAILURES+=("bank$i exited with status $EXIT_STATUS after SIGTERM")
done
kill -TERM "$REDIS_PID"
wait_exit "$REDIS_PID" 10 || FAILURES+=("Redis did not stop (killed)")
REDIS_PID=""
[ "$KILLED_STATUS" -eq 137 ] || FAILURES+=("replica A.1 was SIGKILLed but exited with status $KILLED_STATUS")
if grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$RUN"/*.log >/dev/null 2>&1; then
    FAILURES+=("sanitizer reports in: $(grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$RUN"/*.log | xargs -n1 basename | tr '\n' ' ')")
fi
[ "$STORM_RC" -eq 0 ] || FAILURES+=("the chaos storm's verdict is FAIL (retrystorm exit $STORM_RC)")
[ "$KILL_VERDICT" = PASS ] || FAILURES+=("the SIGKILL phase's verdict is FAIL (retrystorm exit $KILL_RC / $KILL_B_RC)")
[ "$REC_LOST" -eq 0 ] || FAILURES+=("$REC_LOST records given up by the proxies (Redis away longer than the lease?)")

ELAPSED_MS=$(( (${EPOCHREALTIME/./} - T_START) / 1000 ))
say ""
if [ ${#FAILURES[@]} -eq 0 ]; then
    say "chaos verdict: PASS   (seed $SEED, $(ms_str $ELAPSED_MS) s)"
else
    say "chaos verdict: FAIL   (seed $SEED, $(ms_str $ELAPSED_MS) s)"
    for f in "${FAILURES[@]}"; do say "  - $f"; done
fi
say "  chaos storm: $KEYS keys, $(json_num requests "$RUN/verdict.json") requests;" \
    "duplicates $(json_num keys_duplicated "$RUN/verdict.json")," \
    "answered differently $(json_num keys_mismatched "$RUN/verdict.json")," \
    "without a final answer $(json_num keys_unanswered "$RUN/verdict.json")"
say "  faults: Redis frozen $FREEZES x ($(ms_str "$FROZEN_MS") s), Redis restarted $REDIS_RESTARTS x," \
    "replicas restarted $PROXY_RESTARTS x, bank 503-before $((fb1 - fb0)), 500-after $((fa1 - fa0))," \
    "reset-after $((ra1 - ra0)), client aborts $(json_num aborted "$RUN/verdict.json")"
say "  SIGKILL phase: ${K_OBSERVED:-?} of ${K_EXPECTED:-?} expected re-executions, ${K_DUP:-?} other duplicates"
say "  report:  $REPORT  (SIGKILL phase: $KILL_REPORT)"
say "  logs:    $RUN"
cp "$RUN/verdict.json" "${REPORT%.html}.json" 2>/dev/null || true
cp "$RUN/kill-a.json" "${REPORT%.html}-kill.json" 2>/dev/null || true
[ ${#FAILURES[@]} -eq 0 ]
