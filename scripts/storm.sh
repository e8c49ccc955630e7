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
#
#   scripts/storm.sh --topology sentinel|cluster --failover crash|freeze|manual|migrate
#                    [--redis-wait N,TIMEOUT|0] [--rate RPS] [--duration D] [options above]
#
#   --topology T      run on a local Sentinel group (1+2, 3 Sentinels) or Cluster (3+3)
#                     from scripts/redis-topology.sh instead of one redis-server
#   --failover F      2 s into the storm: crash (SIGKILL the primary; it is started
#                     again 6 s later and becomes the new primary's replica), freeze
#                     (SIGSTOP it, SIGCONT 6 s later: the stale primary), manual (SENTINEL
#                     FAILOVER / CLUSTER FAILOVER), migrate (cluster: reshard all its slots
#                     to another primary, live)
#   --redis-wait W    the proxies' redis-wait [every replica: 2,200ms for sentinel,
#                     1,200ms for cluster; 0 = off, or fewer, to see what happens then]
#   --rate/--duration open-loop storm (default with --failover: 400/s for 10 s), so the
#                     failover lands in the middle of it
#   Prints retrystorm's verdict (duplicates, answers by status) and how long after the
#   failover keyed requests (fresh keys, every 100 ms) were answered 200 again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KEYS=2000 DUPES=6 CONC=64 ABORT=0.2 FAIL=0 PAUSE=0 PROXY_ARGS="" REPORT="" BIN=""
TOPOLOGY=single FAILOVER=none WAIT="" RATE="" DURATION=""
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
    --topology) TOPOLOGY=$2; shift 2 ;;
    --failover) FAILOVER=$2; shift 2 ;;
    --redis-wait) WAIT=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    -h | --help) sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case $TOPOLOGY in single | sentinel | cluster) ;; *) die "--topology: sentinel or cluster" ;; esac
case $FAILOVER in none | crash | freeze | manual) ;; migrate)
    [ "$TOPOLOGY" = cluster ] || die "--failover migrate needs --topology cluster" ;;
*) die "--failover: crash, freeze, manual or migrate" ;;
esac
[ "$FAILOVER" = none ] || [ "$TOPOLOGY" != single ] || die "--failover needs --topology"
[ "$TOPOLOGY" = single ] || [ $PAUSE -eq 0 ] || die "--pause-redis is for the single redis"
# WAIT for every replica that can be promoted: 2 in the Sentinel group, 1 per shard
[ "$TOPOLOGY" != sentinel ] || WAIT=${WAIT:-2,200ms}
[ "$TOPOLOGY" != cluster ] || WAIT=${WAIT:-1,200ms}
if [ "$FAILOVER" != none ]; then
    RATE=${RATE:-400} DURATION=${DURATION:-10s}
fi

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
REDIS_PID="" FROZEN="" TOPO_UP=0
cleanup() {
    [ -n "$REDIS_PID" ] && kill -CONT "$REDIS_PID" 2>/dev/null || true # may be frozen
    [ -n "$FROZEN" ] && kill -CONT "$FROZEN" 2>/dev/null || true
    stop_started
    [ $TOPO_UP -eq 0 ] || "$ROOT/scripts/redis-topology.sh" "$TOPOLOGY" down "$RUN/topo" >/dev/null 2>&1 || true
}
trap cleanup INT TERM EXIT

if [ "$TOPOLOGY" = single ]; then
    REDIS_PORT=$(free_port)
    mkdir -p "$RUN/redis"
    start redis "$REDIS_PORT" redis-server "$ROOT/conf/redis.conf" --port "$REDIS_PORT" --dir "$RUN/redis"
    REDIS_PID=${PIDS[-1]}
    REDIS_FLAGS=(--redis "127.0.0.1:$REDIS_PORT")
else
    TOPO_UP=1
    "$ROOT/scripts/redis-topology.sh" "$TOPOLOGY" up "$RUN/topo" >"$RUN/topology.log" 2>&1 ||
        die "the $TOPOLOGY topology did not come up; see $RUN/topology.log"
    topology_flags "$RUN/topo"
    REDIS_FLAGS=("${TOPO_FLAGS[@]}")
fi
[ -z "$WAIT" ] || REDIS_FLAGS+=(--redis-wait "$WAIT")

UPS=() LEDGERS=()
for i in 1 2 3; do
    p=$(free_port)
    start "bank$i" "$p" "$BIN/tools/demo-bank/demo-bank" --listen "127.0.0.1:$p" --id "bank$i" \
        --delay 5ms --jitter 20ms --fail-rate "$FAIL"
    UPS+=(--upstream "127.0.0.1:$p")
    LEDGERS+=(--ledger "http://127.0.0.1:$p/ledger")
done

TARGETS=() PROXY_PORTS=()
for name in proxyA proxyB; do
    p=$(free_port)
    # shellcheck disable=SC2086
    start "$name" "$p" "$BIN/idemproxy" --listen "127.0.0.1:$p" --workers 2 \
        "${REDIS_FLAGS[@]}" "${UPS[@]}" $PROXY_ARGS
    TARGETS+=(--target "http://127.0.0.1:$p/payments")
    PROXY_PORTS+=("$p")
done
# with a topology, wait until the proxies have found the primaries
for p in "${PROXY_PORTS[@]}"; do
    for ((i = 0; i < 100; i++)); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Idempotency-Key: ready-$p-$i" \
            -d '{}' "http://127.0.0.1:$p/payments")" = 201 ] && break
        sleep 0.1
    done
done

if [ $PAUSE -eq 1 ]; then
    # freeze Redis from the first request on, for 3 seconds
    kill -STOP "$REDIS_PID"
    (sleep 3; kill -CONT "$REDIS_PID") &
fi

# primary_port: the node to fail (Sentinel: the primary; Cluster: the first primary)
primary_port() {
    local line
    if [ "$TOPOLOGY" = sentinel ]; then
        line=$(sed -n 's/^redis-sentinel \([^ ]*\).*/\1/p' "$RUN/topo/idemproxy.conf")
        redis-cli -p "${line#*:}" sentinel get-master-addr-by-name idemproxy | sed -n 2p
    else
        line=$(sed -n 's/^redis-cluster \([^ ]*\).*/\1/p' "$RUN/topo/idemproxy.conf")
        redis-cli -p "${line#*:}" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 {
            split($2, a, "[:@]"); print a[2]; exit }'
    fi
}
node_pid() { redis-cli -p "$1" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p'; }

# the failover, 2 s into the storm; its time (epoch seconds) into $RUN/failover.at
inject() {
    local port pid sentinel replica id dst
    sleep 2
    port=$(primary_port)
    pid=$(node_pid "$port")
    date +%s.%N >"$RUN/failover.at"
    say "failover: $FAILOVER of the primary 127.0.0.1:$port (pid $pid)"
    case $FAILOVER in
    crash)
        kill -9 "$pid"
        sleep 6 # failed over by then; it comes back (and is made a replica) as after a reboot
        "$ROOT/scripts/redis-topology.sh" "$TOPOLOGY" restart "$RUN/topo" "$port" >/dev/null ;;
    freeze)
        kill -STOP "$pid"
        sleep 6
        kill -CONT "$pid" ;;
    manual)
        if [ "$TOPOLOGY" = sentinel ]; then
            sentinel=$(sed -n 's/^redis-sentinel \([^ ]*\).*/\1/p' "$RUN/topo/idemproxy.conf")
            redis-cli -p "${sentinel#*:}" sentinel failover idemproxy >/dev/null
        else
            id=$(redis-cli -p "$port" cluster myid)
            replica=$(redis-cli -p "$port" cluster nodes | awk -v id="$id" '$4 == id {
                split($2, a, "[:@]"); print a[2]; exit }')
            redis-cli -p "$replica" cluster failover >/dev/null
        fi ;;
    migrate)
        id=$(redis-cli -p "$port" cluster myid)
        dst=$(redis-cli -p "$port" cluster nodes | awk -v id="$id" '$3 ~ /master/ && $1 != id {
            print $1; exit }')
        redis-cli --cluster reshard "127.0.0.1:$port" --cluster-from "$id" --cluster-to "$dst" \
            --cluster-slots 16384 --cluster-yes >"$RUN/reshard.log" 2>&1 ;;
    esac
}

# fresh keys every 100 ms for 14 s, "epoch-seconds status" per line, to $RUN/probe.log
probe() {
    local i code
    for ((i = 0; i < 140; i++)); do
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -X POST \
            -H "Idempotency-Key: probe-$$-$i" -d '{"amount": 1}' \
            "http://127.0.0.1:${PROXY_PORTS[0]}/payments" || true)
        echo "$(date +%s.%N) $code"
        sleep 0.1
    done >"$RUN/probe.log"
}

OPEN=()
[ -z "$RATE" ] || OPEN+=(--rate "$RATE")
[ -z "$DURATION" ] || OPEN+=(--duration "$DURATION")
if [ -n "$RATE" ]; then LOAD="open loop, $RATE requests/s for $DURATION"; else LOAD="$KEYS keys"; fi
FAIL_SAY=""
[ "$FAILOVER" = none ] || FAIL_SAY=", failover: $FAILOVER"
say "storm: $LOAD, $DUPES copies per key, concurrency $CONC, abort rate $ABORT, 2 proxies," \
    "3 banks, redis: $TOPOLOGY${WAIT:+ (redis-wait $WAIT)}$FAIL_SAY"
if [ "$FAILOVER" != none ]; then
    spawn inject inject
    spawn probe probe
fi
rc=0
[ -n "$RATE" ] || OPEN+=(--keys "$KEYS")
"$BIN/tools/retrystorm/retrystorm" "${TARGETS[@]}" --dupes "$DUPES" \
    --concurrency "$CONC" --abort-rate "$ABORT" "${LEDGERS[@]}" "${OPEN[@]}" \
    --report "$REPORT" --json "$RUN/verdict.json" || rc=$?
if [ "$FAILOVER" != none ]; then
    for p in "${PIDS[@]: -2}"; do wait "$p" 2>/dev/null || true; forget_pid "$p"; done
    # served again: the first 200 after which no probe failed
    awk -v at="$(cat "$RUN/failover.at" 2>/dev/null || echo 0)" '
        $1 >= at { n++; if ($2 != "201" && $2 != "200") { bad++; last = $1; by[$2]++ } }
        END {
            printf "failover probes: %d after the failover, %d not served", n, bad
            for (s in by) printf " (%s: %d)", s, by[s]
            if (bad) printf "; served again %.2f s after it\n", last - at + 0.1
            else printf "; none failed\n"
        }' "$RUN/probe.log" >&2
fi
cp "$RUN/verdict.json" "${REPORT%.html}.json" 2>/dev/null || true
say ""
say "report:  $REPORT"
say "logs:    $RUN"
exit $rc
