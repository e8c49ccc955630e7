#!/usr/bin/env bash
# Count idemproxy's instructions per request, with valgrind's callgrind: a measure of the
# proxy's own cost that does not move with what else the machine is doing (bench.sh's
# wall-clock numbers do, on a shared machine).
#
#   scripts/instructions.sh [--bin DIR] [--requests N] [--scenario keyless|fresh|replay|all]
#                           [--nginx] [--redis]
#
# For each scenario, idemproxy (1 worker, release build) runs under callgrind twice, once
# serving N requests and once 2N, on one keep-alive connection after the same warm-up; the
# difference of the two totals divided by N is the cost of one request: user space,
# libc, libevent, hiredis and OpenSSL included, start-up and shutdown cancelled out.
# The upstream is nginx ("return 200"), Redis a local redis-server on a unix socket.
# Prints one line per scenario: "SCENARIO INSTRUCTIONS-PER-REQUEST". --nginx also counts
# nginx as the proxy (one worker, proxy_pass with keepalive, keyless only), for scale.
# --redis also counts Redis's side of a fresh key and of a replay: redis-server
# (conf/redis.conf, its append-only file on) under callgrind, idemproxy outside it, the
# counters zeroed before N and before 2N requests and dumped after each (every thread of
# Redis: the event loop, the append-only file's fsync). One request at a time, so each
# command is one read and one write for Redis: more than under load, where a read
# carries several. Prints "redis-fresh ..." and "redis-replay ...".
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN="" N=2000 SCEN=all NGINX_TOO=0 REDIS_TOO=0
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --scenario) SCEN=$2; shift 2 ;;
    --nginx) NGINX_TOO=1; shift ;;
    --redis) REDIS_TOO=1; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
case $SCEN in keyless | fresh | replay | all) ;; *) die "unknown scenario: $SCEN" ;; esac

need_packages "${BUILD_PACKAGES[@]}" valgrind perl
need_packages_nostart nginx
if [ -z "$BIN" ]; then
    BIN="$ROOT/build-bench"
    build "$BIN" -DCMAKE_BUILD_TYPE=Release -DIDEMPROXY_TESTS=OFF
fi
PROXY="$BIN/idemproxy"
[ -x "$PROXY" ] || die "no idemproxy in $BIN"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

W=$(mktemp -d "${TMPDIR:-/tmp}/idemcount.XXXXXX")
trap stop_started INT TERM EXIT

UP=$(free_port)
nginx_conf "$W/up" 1 on "    server { listen 127.0.0.1:$UP; location / { return 200 \"ok\\n\"; } }"
"$NGINX" -p "$W/up" -c "$W/up/nginx.conf" -e "$W/up/error.log" >"$W/up.log" 2>&1 &
PIDS+=($!)
wait_port "$UP" 10 || die "upstream nginx did not start"

REDIS=$(free_port)
mkdir -p "$W/redis"
redis-server "$ROOT/conf/redis.conf" --port "$REDIS" --dir "$W/redis" --appendonly no \
    --unixsocket "$W/redis/redis.sock" --unixsocketperm 700 >"$W/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS" 10 || die "redis did not start"

# client PORT SCENARIO RUN COUNT: COUNT requests on one keep-alive connection, each answer
# read whole before the next request goes out. Keys are unique per run (fresh) or taken
# from a set recorded beforehand (replay).
client() {
    perl -MIO::Socket::INET -e '
        my ($port, $scen, $run, $n) = @ARGV;
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or die "connect: $!";
        for my $i (1 .. $n) {
            my $req;
            if ($scen eq "keyless") {
                $req = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
            } else {
                my $key = $scen eq "fresh" ? "fresh-$run-$i" : "replay-" . ($i % 100);
                $req = "POST /pay HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" .
                       "Idempotency-Key: $key\r\nContent-Length: 14\r\n\r\n{\"amount\": 10}";
            }
            print $s $req;
            my ($head, $len) = ("", 0);
            while ($head !~ /\r\n\r\n/) { sysread($s, $head, 4096, length $head) or die "closed" }
            my ($h, $rest) = split /\r\n\r\n/, $head, 2;
            die "answer: $h" unless $h =~ m{^HTTP/1\.1 200 };
            $len = $1 if $h =~ /\r\ncontent-length: *(\d+)/i;
            while (length $rest < $len) { sysread($s, $rest, 4096, length $rest) or die "closed" }
        }' "$1" "$2" "$3" "$4"
}

# total SCENARIO COUNT → callgrind's total instruction count for a run serving COUNT
total() {
    local scen=$1 n=$2 port out pid
    port=$(free_port)
    out="$W/callgrind.$scen.$n"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$PROXY" --listen "127.0.0.1:$port" \
        --workers 1 --redis "unix:$W/redis/redis.sock" --upstream "127.0.0.1:$UP" \
        --log-level warn >"$W/proxy.$scen.$n.log" 2>&1 &
    pid=$!
    PIDS+=($pid)
    wait_port "$port" 60 || die "idemproxy under valgrind did not start: $(tail -5 "$W/proxy.$scen.$n.log")"
    client "$port" "$scen" "warm$n" 200 || die "warm-up failed"
    client "$port" "$scen" "run$n" "$n" || die "the $scen requests failed"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

# total_nginx COUNT → the same for nginx as the proxy (keyless)
total_nginx() {
    local n=$1 port out pid
    port=$(free_port)
    out="$W/callgrind.nginx.$n"
    # one worker and no master: callgrind follows the process that serves
    nginx_conf "$W/px" 1 off "
    upstream up { server 127.0.0.1:$UP; keepalive 16; }
    server {
        listen 127.0.0.1:$port;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$NGINX" -p "$W/px" -c "$W/px/nginx.conf" \
        -e "$W/px/error.log" >"$W/nginx.$n.log" 2>&1 &
    pid=$!
    PIDS+=($pid)
    wait_port "$port" 60 || die "nginx under valgrind did not start: $(tail -5 "$W/nginx.$n.log")"
    client "$port" keyless "warm$n" 200 || die "warm-up failed"
    client "$port" keyless "run$n" "$n" || die "the keyless requests through nginx failed"
    kill -QUIT "$pid"
    wait "$pid" 2>/dev/null || true
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

scenarios=(keyless fresh replay)
[ "$SCEN" = all ] || scenarios=("$SCEN")
for scen in "${scenarios[@]}"; do
    if [ "$scen" = replay ]; then # record the keys once, through a proxy not counted
        total fresh 1 >/dev/null
        port=$(free_port)
        "$PROXY" --listen "127.0.0.1:$port" --workers 1 --redis "unix:$W/redis/redis.sock" \
            --upstream "127.0.0.1:$UP" --log-level warn >"$W/seed.log" 2>&1 &
        PIDS+=($!)
        wait_port "$port" 10 || die "idemproxy did not start"
        client "$port" replay seed 100 || die "seeding the replay keys failed"
    fi
    a=$(total "$scen" "$N")
    b=$(total "$scen" $((2 * N)))
    echo "$scen $(((b - a) / N))"
done
if [ $NGINX_TOO = 1 ]; then
    a=$(total_nginx "$N")
    b=$(total_nginx $((2 * N)))
    echo "nginx-keyless $(((b - a) / N))"
fi
if [ $REDIS_TOO = 1 ]; then
    # Redis under callgrind, a proxy in front of it outside valgrind
    RC=$(free_port)
    mkdir -p "$W/credis"
    valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.redis" \
        redis-server "$ROOT/conf/redis.conf" --port "$RC" --dir "$W/credis" \
        --unixsocket "$W/credis/redis.sock" --unixsocketperm 700 >"$W/credis.log" 2>&1 &
    RC_PID=$!
    PIDS+=($RC_PID)
    wait_port "$RC" 60 || die "redis under valgrind did not start: $(tail -5 "$W/credis.log")"
    port=$(free_port)
    "$PROXY" --listen "127.0.0.1:$port" --workers 1 --redis "unix:$W/credis/redis.sock" \
        --upstream "127.0.0.1:$UP" --log-level warn >"$W/rproxy.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" 10 || die "idemproxy did not start: $(tail -5 "$W/rproxy.log")"
    client "$port" replay seed 100 || die "seeding the replay keys failed"
    # redis_total SCENARIO COUNT → Redis's instructions while the proxy serves COUNT
    redis_total() {
        local before after
        client "$port" "$1" "rwarm$2" 200 || die "warm-up failed"
        callgrind_control -z "$RC_PID" >/dev/null 2>&1
        client "$port" "$1" "rrun$2" "$2" || die "the $1 requests failed"
        before=$(ls "$W"/callgrind.redis.* 2>/dev/null | wc -l)
        callgrind_control -d "$RC_PID" >/dev/null 2>&1
        after=$(ls "$W"/callgrind.redis.* 2>/dev/null | wc -l)
        [ "$after" -gt "$before" ] || die "callgrind wrote no dump for Redis"
        awk '/^(summary|totals):/ {print $2; exit}' "$W/callgrind.redis.$after"
    }
    for scen in fresh replay; do
        a=$(redis_total "$scen" "$N")
        b=$(redis_total "$scen" $((2 * N)))
        echo "redis-$scen $(((b - a) / N))"
    done
fi
