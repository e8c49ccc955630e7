#!/usr/bin/env bash
# Start idemproxy for a try. Builds if needed and starts a private redis-server (data
# under run/). Ctrl-C stops everything it started.
#
#   scripts/run.sh                         demo: 3 demo-bank replicas behind 2 idemproxy
#                                          replicas on 127.0.0.1:8080 and :8081
#   scripts/run.sh --upstream HOST:PORT    idemproxy on 127.0.0.1:8080 in front of your
#                  [--upstream ...]        service (repeat for more replicas)
#   scripts/run.sh --redis-sentinel        the demo on a local Sentinel group (1 primary,
#                                          2 replicas, 3 Sentinels) with redis-wait 2
#   scripts/run.sh --redis-cluster         the demo on a local Redis Cluster (3+3),
#                                          redis-wait 1
#   scripts/run.sh --tls                   clients over TLS too (tls-listen on port
#                                          + 363: 8443, 8444), with a throwaway CA and
#                                          certificates in run/certs (openssl CLI)
#   options: --port N (first proxy port, default 8080)  -- IDEMPROXY_FLAGS...
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

PORT=8080
TOPOLOGY=""
TLS=0
UPSTREAMS=()
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --upstream) [ $# -ge 2 ] || die "--upstream needs HOST:PORT"; UPSTREAMS+=("$2"); shift 2 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; PORT=$2; shift 2 ;;
    --redis-sentinel) TOPOLOGY=sentinel; shift ;;
    --redis-cluster) TOPOLOGY=cluster; shift ;;
    --tls) TLS=1; shift ;;
    -h | --help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) say "unknown argument: $1"; usage 1 ;;
    esac
done

need_packages "${BUILD_PACKAGES[@]}"
build "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo

RUN="$ROOT/run"
mkdir -p "$RUN/redis"
cleanup() {
    stop_started
    [ -z "$TOPOLOGY" ] || "$ROOT/scripts/redis-topology.sh" "$TOPOLOGY" down "$RUN/topology" >&2
    say "stopped."
}
trap cleanup INT TERM EXIT

start() { # start NAME PORT CMD...: background, log to run/NAME.log, wait for PORT
    local name=$1 port=$2
    shift 2
    "$@" 2> >(tee "$RUN/$name.log" >&2) &
    PIDS+=($!)
    wait_port "$port" 10 || die "$name did not start; see ${RUN#$ROOT/}/$name.log"
}

if [ -z "$TOPOLOGY" ]; then
    REDIS_PORT=$(free_port)
    redis-server "$ROOT/conf/redis.conf" --port "$REDIS_PORT" --dir "$RUN/redis" \
        >"$RUN/redis.log" 2>&1 &
    PIDS+=($!)
    wait_port "$REDIS_PORT" 10 || die "redis-server did not start; see run/redis.log"
    REDIS_ARGS=(--redis "127.0.0.1:$REDIS_PORT")
    REDIS_SAY="redis-server   127.0.0.1:$REDIS_PORT   (data in run/redis)"
else
    # a stale one from a run that was killed: stop it first (only its recorded PIDs)
    "$ROOT/scripts/redis-topology.sh" "$TOPOLOGY" down "$RUN/topology" >/dev/null 2>&1 || true
    "$ROOT/scripts/redis-topology.sh" "$TOPOLOGY" up "$RUN/topology" >"$RUN/topology.log" 2>&1 ||
        die "the $TOPOLOGY topology did not come up; see run/topology.log"
    topology_flags "$RUN/topology"
    # WAIT for every replica that can be promoted: 2 in the Sentinel group, 1 per shard
    WAIT=1,200ms
    [ "$TOPOLOGY" = cluster ] || WAIT=2,200ms
    REDIS_ARGS=("${TOPO_FLAGS[@]}" --redis-wait "$WAIT")
    REDIS_SAY="redis          $TOPOLOGY: $(sed -n 1p "$RUN/topology/idemproxy.conf" | sed 's/^# //')
                 redis-wait $WAIT: every claim and record is on every replica before it counts
                 (scripts/redis-topology.sh $TOPOLOGY restart run/topology PORT brings back
                 a node you killed)"
fi

DEMO=0
if [ ${#UPSTREAMS[@]} -eq 0 ]; then
    DEMO=1
    BANK="$ROOT/build/tools/demo-bank/demo-bank"
    [ -x "$BANK" ] || die "demo-bank was not built"
    for i in 1 2 3; do
        p=$(free_port)
        start "bank$i" "$p" "$BANK" --listen "127.0.0.1:$p" --id "bank$i" --delay 300ms \
            --jitter 200ms
        UPSTREAMS+=("127.0.0.1:$p")
    done
fi

ARGS=("${REDIS_ARGS[@]}")
for u in "${UPSTREAMS[@]}"; do ARGS+=(--upstream "$u"); done
TLS1=() TLS2=() CURL="curl"
if [ $TLS -eq 1 ]; then
    need_packages openssl
    bash "$ROOT/scripts/make-certs.sh" "$RUN/certs"
    ARGS+=(--tls-cert-file "$RUN/certs/server.crt" --tls-key-file "$RUN/certs/server.key")
    TLS1=(--tls-listen "127.0.0.1:$((PORT + 363))")
    TLS2=(--tls-listen "127.0.0.1:$((PORT + 364))")
    CURL="curl --cacert run/certs/ca.crt"
fi
ADMIN=$(free_port)
start idemproxy "$PORT" "$ROOT/build/idemproxy" --listen "127.0.0.1:$PORT" "${TLS1[@]}" \
    "${ARGS[@]}" --admin-listen "127.0.0.1:$ADMIN" "${EXTRA[@]}"
PROXY_PID=${PIDS[-1]}
if [ $DEMO -eq 1 ]; then
    PORT2=$((PORT + 1))
    ADMIN2=$(free_port)
    start idemproxy2 "$PORT2" "$ROOT/build/idemproxy" --listen "127.0.0.1:$PORT2" "${TLS2[@]}" \
        "${ARGS[@]}" --admin-listen "127.0.0.1:$ADMIN2" "${EXTRA[@]}"
fi

A="http://127.0.0.1:$PORT"
[ $TLS -eq 0 ] || A="https://localhost:$((PORT + 363))"
if [ $DEMO -eq 1 ]; then
    B="http://127.0.0.1:$PORT2"
    [ $TLS -eq 0 ] || B="https://localhost:$((PORT + 364))"
    cat >&2 <<INFO

  $REDIS_SAY
  demo-bank ×3   ${UPSTREAMS[*]}   (answers after 300-500 ms; executing twice double-charges)
  idemproxy ×2   $A  and  $B
  admin          http://127.0.0.1:$ADMIN/metrics  /healthz  /readyz  (and :$ADMIN2 for the second)

  first execution (201 and a payment id):
    $CURL -i -X POST -H 'Idempotency-Key: order-1' -d '{"amount": 10}' $A/payments
  a retry on the OTHER replica: the same answer, Idempotent-Replayed: true, no second charge:
    $CURL -i -X POST -H 'Idempotency-Key: order-1' -d '{"amount": 10}' $B/payments
  the same key with a different amount: 422
    $CURL -i -X POST -H 'Idempotency-Key: order-1' -d '{"amount": 99}' $A/payments
  a retry while the first is still running: 409 with Retry-After
    $CURL -s -o /dev/null -X POST -H 'Idempotency-Key: order-2' -d '{"amount": 5}' $A/payments &
    sleep 0.1; $CURL -i -X POST -H 'Idempotency-Key: order-2' -d '{"amount": 5}' $B/payments
  what the banks executed (one entry per key):
    curl -s http://${UPSTREAMS[0]}/ledger

  Ctrl-C stops everything.
INFO
else
    cat >&2 <<INFO

  $REDIS_SAY
  idemproxy      $A   → ${UPSTREAMS[*]}
  admin          http://127.0.0.1:$ADMIN/metrics  /healthz  /readyz

  try:  $CURL -i $A/
        $CURL -i -X POST -H 'Idempotency-Key: order-42' -d '{"amount": 10}' $A/

  Ctrl-C stops everything.
INFO
fi
wait "$PROXY_PID"
