#!/usr/bin/env bash
# Start or stop a local Redis topology on loopback, from the one redis-server binary,
# with short failure-detection times (1 s), for the demo, the storm and by hand.
#
# Usage: scripts/redis-topology.sh [--tls] sentinel|cluster up|down|restart [DIR] [PORT]
#   sentinel up   1 primary + 2 replicas + 3 Sentinels (master name "idemproxy", quorum 2,
#                 down-after-milliseconds 1000)
#   cluster up    3 primaries + 3 replicas (cluster-node-timeout 1000)
#   down          stop every process that "up" started in DIR (by the PIDs it recorded)
#   restart PORT  start the node on PORT again as "up" started it (after a crash: a
#                 cluster node rejoins from its nodes.conf, as a replica if it was failed over)
#   --tls         every node (and Sentinel) also listens with TLS (tls-auth-clients yes,
#                 throwaway certificates from make-certs.sh in DIR/certs), replication and
#                 the cluster bus over TLS; the directives printed reach the TLS ports
# DIR holds the nodes' data, logs and PIDs [/tmp/idemproxy-topology-KIND]. Every node
# binds 127.0.0.1 on a free port. "up" prints the idemproxy directives that reach it
# (redis-sentinel + redis-sentinel-master, or redis-cluster with every node as a seed) and
# writes them to DIR/idemproxy.conf; it fails (and stops what it
# started) when the topology is not healthy within 20 s.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { sed -n '5,14p' "$0" | sed 's/^# \{0,1\}//' >&2; }
TLS=0
if [ "${1:-}" = --tls ]; then
    TLS=1
    shift
fi
[ $# -ge 2 ] || {
    usage
    die "expected KIND and ACTION"
}
KIND=$1 ACTION=$2
DIR=${3:-/tmp/idemproxy-topology-$KIND}
case $KIND in sentinel | cluster) ;; *)
    usage
    die "unknown topology '$KIND' (sentinel or cluster)"
    ;;
esac
case $ACTION in up | down | restart) ;; *)
    usage
    die "unknown action '$ACTION' (up, down or restart)"
    ;;
esac
command -v redis-server >/dev/null || need_packages redis-server
command -v redis-cli >/dev/null || need_packages redis-tools

# Stop what DIR/pids names: TERM, up to 5 s, then KILL. Only those PIDs, and only while
# they are still a redis-server (a node killed by hand left its PID behind, and the number
# may belong to another process by now).
down() {
    local p i
    [ -f "$DIR/pids" ] || return 0
    local mine=()
    while read -r p; do
        grep -q redis-server "/proc/$p/cmdline" 2>/dev/null && mine+=("$p")
    done <"$DIR/pids"
    printf '%s\n' "${mine[@]}" >"$DIR/pids"
    [ ${#mine[@]} -gt 0 ] || {
        rm -f "$DIR/pids"
        return 0
    }
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$DIR/pids"
    for ((i = 0; i < 50; i++)); do
        local alive=0
        while read -r p; do kill -0 "$p" 2>/dev/null && alive=1; done <"$DIR/pids"
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$DIR/pids"
    rm -f "$DIR/pids"
}

if [ "$ACTION" = down ]; then
    down
    say "$KIND topology in $DIR stopped"
    exit 0
fi

# --tls: the arguments that make a node listen with TLS on port TLS_PORT too (and
# replicate over TLS); the directives that reach it
tls_args() { # TLS_PORT
    printf '%s\n' --tls-port "$1" --tls-cert-file "$DIR/certs/server.crt" \
        --tls-key-file "$DIR/certs/server.key" --tls-ca-cert-file "$DIR/certs/ca.crt" \
        --tls-auth-clients yes --tls-replication yes
}
tls_directives() {
    [ $TLS = 1 ] || return 0
    echo "redis-tls yes"
    echo "redis-tls-ca-file $DIR/certs/ca.crt"
    echo "redis-tls-cert-file $DIR/certs/client.crt"
    echo "redis-tls-key-file $DIR/certs/client.key"
}

# node PORT [ARGS...]: one redis-server daemon, its PID recorded
node() {
    local port=$1
    shift
    mkdir -p "$DIR/$port"
    if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi >"$DIR/$port/args" # for "restart"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$DIR/$port" --save '' --appendonly no \
        --daemonize yes --pidfile "$DIR/$port/pid" --logfile "$DIR/$port/log" "$@"
    local i
    for ((i = 0; i < 200; i++)); do
        [ -s "$DIR/$port/pid" ] && break
        sleep 0.05
    done
    if [ ! -s "$DIR/$port/pid" ]; then
        say "redis-server on port $port did not start:"
        tail -5 "$DIR/$port/log" >&2 || true
        return 1
    fi
    cat "$DIR/$port/pid" >>"$DIR/pids"
    wait_port "$port" 10
}

if [ "$ACTION" = restart ]; then
    PORT=${4:-}
    [ -n "$PORT" ] && [ -f "$DIR/$PORT/args" ] || die "no node on port '${PORT}' in $DIR"
    old=$(cat "$DIR/$PORT/pid" 2>/dev/null || true)
    if [ -n "$old" ] && grep -q redis-server "/proc/$old/cmdline" 2>/dev/null; then
        die "the node on port $PORT still runs (pid $old)"
    fi
    grep -vx "${old:-none}" "$DIR/pids" >"$DIR/pids.new" || true
    mv "$DIR/pids.new" "$DIR/pids"
    rm -f "$DIR/$PORT/pid"
    mapfile -t args <"$DIR/$PORT/args"
    node "$PORT" "${args[@]}"
    say "node 127.0.0.1:$PORT started again"
    exit 0
fi

[ ! -f "$DIR/pids" ] || die "$DIR already holds a running topology (run: $0 $KIND down $DIR)"
rm -rf "$DIR"
mkdir -p "$DIR"
if [ $TLS = 1 ]; then
    command -v openssl >/dev/null || need_packages openssl
    bash "$ROOT/scripts/make-certs.sh" "$DIR/certs"
fi
# On any failure (set -e also fires inside functions, where an ERR trap would not without
# errtrace) stop what was started: the nodes daemonize, nothing else would reap them.
UP_OK=0
trap '[ $UP_OK -eq 1 ] || { down; say "error: the $KIND topology did not come up (logs in $DIR)"; }; release_ports' EXIT

# until CMD... succeeds, at most 20 s
until_ok() {
    local i
    for ((i = 0; i < 200; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

if [ "$KIND" = sentinel ]; then
    primary=$(free_port)
    # with --tls, what the Sentinels monitor and name (the nodes' TLS ports)
    ptls=() primary_seen=$primary
    if [ $TLS = 1 ]; then
        primary_seen=$(free_port)
        mapfile -t ptls < <(tls_args "$primary_seen")
    fi
    node "$primary" --repl-diskless-sync-delay 0 "${ptls[@]}"
    replicas=()
    for i in 1 2; do
        p=$(free_port)
        rtls=()
        [ $TLS = 0 ] || mapfile -t rtls < <(tls_args "$(free_port)")
        # (a replica promoted later serves the others' full syncs: no diskless delay)
        node "$p" --replicaof 127.0.0.1 "$primary_seen" --repl-diskless-sync-delay 0 "${rtls[@]}"
        replicas+=("$p")
    done
    # both replicas in sync (state=online), so WAIT can be answered from the start
    until_ok sh -c "[ \$(redis-cli -p $primary info replication | grep -c 'state=online') = 2 ]"
    sentinels=() seen_sentinels=()
    for i in 1 2 3; do
        p=$(free_port)
        mkdir -p "$DIR/$p"
        cat >"$DIR/$p/sentinel.conf" <<EOF
port $p
bind 127.0.0.1
dir $DIR/$p
sentinel monitor idemproxy 127.0.0.1 $primary_seen 2
sentinel down-after-milliseconds idemproxy 1000
sentinel failover-timeout idemproxy 5000
EOF
        seen=$p
        if [ $TLS = 1 ]; then
            seen=$(free_port)
            tls_args "$seen" | paste -d' ' - - | sed 's/^--//' >>"$DIR/$p/sentinel.conf"
        fi
        redis-server "$DIR/$p/sentinel.conf" --sentinel --daemonize yes \
            --pidfile "$DIR/$p/pid" --logfile "$DIR/$p/log"
        until_ok test -s "$DIR/$p/pid"
        cat "$DIR/$p/pid" >>"$DIR/pids"
        wait_port "$p" 10
        sentinels+=("127.0.0.1:$p")
        seen_sentinels+=("127.0.0.1:$seen")
    done
    # every Sentinel knows the other two
    for s in "${sentinels[@]}"; do
        until_ok sh -c "redis-cli -p ${s#*:} sentinel master idemproxy | grep -A1 '^num-other-sentinels$' | grep -qx 2"
    done
    {
        echo "# $KIND topology in $DIR: primary 127.0.0.1:$primary, replicas ${replicas[*]/#/127.0.0.1:}"
        echo "redis-sentinel ${seen_sentinels[*]}"
        echo "redis-sentinel-master idemproxy"
        tls_directives
    } >"$DIR/idemproxy.conf"
else
    # a cluster node also listens on its port + 10000 (the cluster bus): both must exist
    # and be free
    cluster_port() {
        local p j
        for ((j = 0; j < 200; j++)); do
            p=$(free_port)
            if [ "$p" -le 55535 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then
                echo "$p"
                return 0
            fi
        done
        die "no free port pair (PORT, PORT+10000) found"
    }
    seeds=() seen_seeds=()
    for i in 1 2 3 4 5 6; do
        # a port (or its bus port) may be taken between the check and the bind by another
        # topology starting beside this one: try another
        for attempt in 1 2 3 4 5; do
            p=$(cluster_port)
            ctls=() seen=$p
            if [ $TLS = 1 ]; then # the bus too (at the TLS port + 10000); CLUSTER SLOTS
                seen=$(cluster_port) # then names the TLS ports
                p=$(free_port)
                mapfile -t ctls < <(tls_args "$seen")
                ctls+=(--tls-cluster yes)
            fi
            if node "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
                --cluster-node-timeout 1000 --repl-diskless-sync-delay 0 "${ctls[@]}"; then
                break
            fi
            [ "$attempt" -lt 5 ] || die "no cluster node could start"
        done
        seeds+=("127.0.0.1:$p")
        seen_seeds+=("127.0.0.1:$seen")
    done
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes \
        >"$DIR/create.log" 2>&1
    for s in "${seeds[@]}"; do
        until_ok sh -c "redis-cli -p ${s#*:} cluster info | grep -q '^cluster_state:ok'"
    done
    # every primary's replica in sync (state=online), so WAIT can be answered from the start
    for s in "${seeds[@]}"; do
        until_ok sh -c "redis-cli -p ${s#*:} info replication | grep -q '^role:slave' ||
            redis-cli -p ${s#*:} info replication | grep -q 'state=online'"
    done
    {
        echo "# $KIND topology in $DIR: 3 primaries + 3 replicas"
        echo "redis-cluster ${seen_seeds[*]}"
        tls_directives
    } >"$DIR/idemproxy.conf"
fi
UP_OK=1
cat "$DIR/idemproxy.conf"
say "$KIND topology up; stop it with: $0 $KIND down $DIR"
