#!/usr/bin/env bash
# Start idemproxy for a quick try: builds if needed, starts a private redis-server and
# idemproxy on 127.0.0.1:8080 in front of the given upstreams. Ctrl-C stops everything.
#
#   scripts/run.sh --upstream HOST:PORT [--upstream HOST:PORT ...] [--port N] [-- idemproxy flags]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

PORT=8080
UPSTREAMS=()
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --upstream) [ $# -ge 2 ] || die "--upstream needs HOST:PORT"; UPSTREAMS+=("$2"); shift 2 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; PORT=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) say "unknown argument: $1"; usage 1 ;;
    esac
done
[ ${#UPSTREAMS[@]} -gt 0 ] || die "give at least one --upstream HOST:PORT (the service to protect)"

need_packages "${BUILD_PACKAGES[@]}"
build "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo

RUN="$ROOT/run"
mkdir -p "$RUN/redis"
PIDS=()
cleanup() {
    trap - INT TERM EXIT
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    say "stopped."
}
trap cleanup INT TERM EXIT

REDIS_PORT=$(free_port)
redis-server "$ROOT/conf/redis.conf" --port "$REDIS_PORT" --dir "$RUN/redis" \
    >"$RUN/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" 10 || die "redis-server did not start; see $RUN/redis.log"

ARGS=(--listen "127.0.0.1:$PORT" --redis "127.0.0.1:$REDIS_PORT")
for u in "${UPSTREAMS[@]}"; do ARGS+=(--upstream "$u"); done
"$ROOT/build/idemproxy" "${ARGS[@]}" "${EXTRA[@]}" 2> >(tee "$RUN/idemproxy.log" >&2) &
PIDS+=($!)
wait_port "$PORT" 10 || die "idemproxy did not start; see $RUN/idemproxy.log"

cat >&2 <<INFO

  redis-server   127.0.0.1:$REDIS_PORT   (data in ${RUN#$ROOT/}/redis, log ${RUN#$ROOT/}/redis.log)
  idemproxy      127.0.0.1:$PORT   → ${UPSTREAMS[*]}

  try:  curl -i http://127.0.0.1:$PORT/
        curl -i -X POST -H 'Idempotency-Key: order-42' -d '{"amount": 10}' http://127.0.0.1:$PORT/

  Ctrl-C stops everything.
INFO
wait "${PIDS[1]}"
