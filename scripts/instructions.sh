#!/usr/bin/env bash
# Count idemproxy's instructions per request, with valgrind's callgrind: a measure of the
# proxy's own cost that does not move with what else the machine is doing (bench.sh's
# wall-clock numbers do, on a shared machine).
#
#   scripts/instructions.sh [--bin DIR] [--requests N] [--scenario keyless|fresh|replay|all]
#                           [--nginx]
#
# For each scenario, idemproxy (1 worker, release build) runs under callgrind twice, once
# serving N requests and once 2N, on one keep-alive connection after the same warm-up; the
# difference of the two totals divided by N is the cost of one request: user space,
# libc, libevent, hiredis and OpenSSL included, start-up and shutdown cancelled out.
# The upstream is nginx ("return 200"), Redis a local redis-server on a unix socket.
# Prints one line per scenario: "SCENARIO INSTRUCTIONS-PER-REQUEST". --nginx also counts
# nginx as the proxy (one worker, proxy_pass with keepalive, keyless only), for scale.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN="" N=2000 SCEN=all NGINX_TOO=0
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --scenario) SCEN=$2; shift 2 ;;
    --nginx) NGINX_TOO=1; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
