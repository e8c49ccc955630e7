#!/usr/bin/env bash
# Benchmark idemproxy against nginx and HAProxy, side by side, in one run, on loopback.
#
#   scripts/bench.sh [--rounds N] [--duration SECS] [--connections C] [--idle N]
#                    [--out FILE] [--bin DIR] [--quick]
#
# Starts (free ports only): two fixed-answer upstreams (nginx "return 200"), redis-server,
# idemproxy, and nginx and HAProxy as the plain proxies to compare with (keep-alive to the
# same upstreams, as many workers/threads as idemproxy), then measures, alternating them
# within each round:
#   1 keyless GET                      idemproxy vs nginx vs HAProxy (wrk -t2, and -t1)
#   2 keyed POST, a fresh key each     idemproxy, ratio to nginx keyless; and on a
#                                      second Redis with a replica, without and with
#                                      redis-wait 1 (ratio: with WAIT to without)
#                                      with records sealed (ratio to unsealed); with Redis
#                                      over TLS (ratio to the same Redis over TCP)
#   3 keyed POST replays               idemproxy, ratio to nginx keyless (wrk -t2, and -t1);
#                                      of sealed records (ratio to unsealed)
#   4 concurrent duplicates (409 path) idemproxy, ratio to nginx keyless
#   5 keyless GET over TLS             idemproxy tls-listen vs nginx listen ssl vs HAProxy
#                                      bind ssl (same ECDSA P-256 certificate, TLS 1.3):
#                                      keep-alive, and Connection: close (a new
#                                      connection per request: wrk keeps its TLS
#                                      session, so each one resumes with the last
#                                      ticket, an abbreviated handshake with ECDHE);
#                                      and with tickets off on all three (no session
#                                      cache either): a full handshake per request
# plus latency at a constant rate (50 % of idemproxy's fresh-key peak, coordinated
# omission corrected), CPU per 10k requests of every process (proxy, Redis, upstreams,
# wrk), Redis commands per request (and Redis's own INFO commandstats: µs per request in
# each command), upstream connections opened, and RSS with N idle
# client connections (and with a tenth as many idle TLS connections, handshake done).
# Writes docs/BENCHMARKS.md (or --out). It reports; it never asserts
# a threshold.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=3 DUR=5 CONN=64 IDLE=10000 OUT="$ROOT/docs/BENCHMARKS.md" BIN="" QUICK=0
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --connections) CONN=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --quick) QUICK=1; ROUNDS=1; DUR=1; CONN=16; IDLE=200; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

need_packages "${BUILD_PACKAGES[@]}"
need_packages_nostart nginx wrk haproxy
need_packages openssl libio-socket-ssl-perl
if [ -z "$BIN" ]; then
    BIN="$ROOT/build-bench"
    build "$BIN" -DCMAKE_BUILD_TYPE=Release -DIDEMPROXY_TESTS=OFF
fi
PROXY="$BIN/idemproxy"
STORM="$BIN/tools/retrystorm/retrystorm"
[ -x "$PROXY" ] || die "no idemproxy in $BIN"
[ -x "$STORM" ] || die "no retrystorm in $BIN"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# 10k idle connections need file descriptors on both ends
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE + 512)) ]; then
    say "open-file limit $(ulimit -n) is too low for $IDLE idle connections; using $(($(ulimit -n) - 512))"
    IDLE=$(($(ulimit -n) - 512))
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/idembench.XXXXXX")
trap stop_started INT TERM EXIT
bg() { # bg NAME CMD...: start in the background, log to $W/NAME.log
    local name=$1
    shift
    "$@" >"$W/$name.log" 2>&1 &
    PIDS+=($!)
}

# ---- the processes ----

UP1=$(free_port) UP2=$(free_port)
for n in 1 2; do
    port=$([ $n = 1 ] && echo "$UP1" || echo "$UP2")
    nginx_conf "$W/up$n" 1 on "
    server {
        listen 127.0.0.1:$port;
        location = /nginx_status { stub_status; }
        location / { return 200 \"ok\n\"; }
    }"
    bg "up$n" "$NGINX" -p "$W/up$n" -c "$W/up$n/nginx.conf" -e "$W/up$n/error.log"
    wait_port "$port" 10 || die "upstream nginx $n did not start: $(cat "$W/up$n/error.log")"
done
UP_PIDS=("${PIDS[@]}")

# one throwaway CA and ECDSA P-256 certificate for every TLS row
bash "$ROOT/scripts/make-certs.sh" "$W/certs"
cat "$W/certs/server.crt" "$W/certs/server.key" >"$W/certs/server.pem" # HAProxy's crt

NG=$(free_port) NGT=$(free_port) NGF=$(free_port)
# NGF: the same TLS without session tickets (and no session cache): every connection
# is a full handshake, for the full-handshake rows
nginx_conf "$W/proxy" 2 on "
    upstream up { server 127.0.0.1:$UP1; server 127.0.0.1:$UP2; keepalive 64; }
    server {
        listen 127.0.0.1:$NG reuseport;
        listen 127.0.0.1:$NGT ssl reuseport;
        ssl_certificate $W/certs/server.crt;
        ssl_certificate_key $W/certs/server.key;
        ssl_protocols TLSv1.3;
        ssl_session_tickets on;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }
    server {
        listen 127.0.0.1:$NGF ssl reuseport;
        ssl_certificate $W/certs/server.crt;
        ssl_certificate_key $W/certs/server.key;
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
bg nginx-proxy "$NGINX" -p "$W/proxy" -c "$W/proxy/nginx.conf" -e "$W/proxy/error.log"
NG_PID=${PIDS[-1]}
wait_port "$NG" 10 || die "nginx proxy did not start: $(cat "$W/proxy/error.log")"

HA=$(free_port) HAT=$(free_port) HAF=$(free_port)
mkdir -p "$W/haproxy"
# HAProxy reserves about two descriptors per connection up front and refuses to start
# when the open-file limit is below that
HA_FDS=$(ulimit -n)
[ "$HA_FDS" = unlimited ] && HA_FDS=80000
HA_MAXCONN=$(((HA_FDS - 200) / 2))
cat >"$W/haproxy/haproxy.cfg" <<CONF
global
    nbthread 2
    maxconn $HA_MAXCONN
    # no session cache: HAF (no-tls-tickets) then resumes nothing; HAT's tickets need none
    tune.ssl.cachesize 0
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$HA
    bind 127.0.0.1:$HAT ssl crt $W/certs/server.pem ssl-min-ver TLSv1.3
    bind 127.0.0.1:$HAF ssl crt $W/certs/server.pem ssl-min-ver TLSv1.3 no-tls-tickets
    default_backend up
backend up
    balance roundrobin
    server up1 127.0.0.1:$UP1
    server up2 127.0.0.1:$UP2
CONF
"$HAPROXY" -c -q -f "$W/haproxy/haproxy.cfg" || die "haproxy refused its configuration"
bg haproxy "$HAPROXY" -db -f "$W/haproxy/haproxy.cfg"
HA_PID=${PIDS[-1]}
wait_port "$HA" 10 || die "haproxy did not start: $(cat "$W/haproxy.log")"

REDIS=$(free_port)
mkdir -p "$W/redis"
# Redis on the same host: idemproxy talks to it over a unix socket (TCP port for redis-cli)
bg redis redis-server "$ROOT/conf/redis.conf" --port "$REDIS" --dir "$W/redis" \
    --unixsocket "$W/redis/redis.sock" --unixsocketperm 700
REDIS_PID=${PIDS[-1]}
wait_port "$REDIS" 10 || die "redis did not start"

PX=$(free_port) PXADM=$(free_port) PXTLS=$(free_port)
bg idemproxy "$PROXY" --listen "127.0.0.1:$PX" --workers 2 --redis "unix:$W/redis/redis.sock" \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --admin-listen "127.0.0.1:$PXADM" --tls-listen "127.0.0.1:$PXTLS" \
    --tls-cert-file "$W/certs/server.crt" --tls-key-file "$W/certs/server.key" \
    --tls-protocols TLSv1.3
PX_PID=${PIDS[-1]}
wait_port "$PX" 10 || die "idemproxy did not start: $(cat "$W/idemproxy.log")"
# the same TLS without session tickets (tickets are per process): full handshakes only
PXF=$(free_port) PXFTLS=$(free_port)
bg idemproxy-full "$PROXY" --listen "127.0.0.1:$PXF" --workers 2 --redis "unix:$W/redis/redis.sock" \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --tls-listen "127.0.0.1:$PXFTLS" --tls-session-tickets off \
    --tls-cert-file "$W/certs/server.crt" --tls-key-file "$W/certs/server.key" \
    --tls-protocols TLSv1.3
PXF_PID=${PIDS[-1]}
wait_port "$PXFTLS" 10 || die "idemproxy (no tickets) did not start: $(cat "$W/idemproxy-full.log")"

# A second Redis with a replica, and two idemproxys on it: one that WAITs for the replica
# after every claim and record (redis-wait 1), one that does not — what confirming each
# key costs, apart from what replicating it costs (the first Redis has no replica, so
# the other rows compare with earlier runs).
REDIS2=$(free_port) REPLICA=$(free_port)
mkdir -p "$W/redis2" "$W/replica"
bg redis2 redis-server "$ROOT/conf/redis.conf" --port "$REDIS2" --dir "$W/redis2" \
    --unixsocket "$W/redis2/redis.sock" --unixsocketperm 700 --repl-diskless-sync-delay 0
REDIS2_PID=${PIDS[-1]}
wait_port "$REDIS2" 10 || die "the second redis did not start"
bg replica redis-server "$ROOT/conf/redis.conf" --port "$REPLICA" --dir "$W/replica" \
    --replicaof 127.0.0.1 "$REDIS2"
wait_port "$REPLICA" 10 || die "the replica did not start"
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS2" info replication | grep -q 'state=online' && break
    sleep 0.1
done
PXR=$(free_port) PXRADM=$(free_port) PXW=$(free_port) PXWADM=$(free_port)
bg idemproxy-repl "$PROXY" --listen "127.0.0.1:$PXR" --workers 2 \
    --redis "unix:$W/redis2/redis.sock" \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --admin-listen "127.0.0.1:$PXRADM"
PXR_PID=${PIDS[-1]}
bg idemproxy-wait "$PROXY" --listen "127.0.0.1:$PXW" --workers 2 \
    --redis "unix:$W/redis2/redis.sock" --redis-wait 1,100ms \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --admin-listen "127.0.0.1:$PXWADM"
PXW_PID=${PIDS[-1]}
wait_port "$PXR" 10 || die "idemproxy (replica) did not start: $(cat "$W/idemproxy-repl.log")"
wait_port "$PXW" 10 || die "idemproxy (redis-wait) did not start: $(cat "$W/idemproxy-wait.log")"

# Records sealed at rest: two idemproxys like the first (same Redis, a key prefix each),
# one with record-encryption aes-256-gcm, one without — what sealing and opening each
# record costs, between two processes measured the same way (the first idemproxy also
# serves the keyless rows: its pools are warm, theirs are not).
printf '1 %s\n' "$(openssl rand -base64 32)" >"$W/record.keys"
chmod 600 "$W/record.keys"
PXU=$(free_port) PXUADM=$(free_port)
bg idemproxy-unsealed "$PROXY" --listen "127.0.0.1:$PXU" --workers 2 \
    --redis "unix:$W/redis/redis.sock" --key-prefix unsealed: \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --admin-listen "127.0.0.1:$PXUADM"
PXU_PID=${PIDS[-1]}
wait_port "$PXU" 10 || die "idemproxy (unsealed) did not start: $(cat "$W/idemproxy-unsealed.log")"
PXS=$(free_port) PXSADM=$(free_port)
bg idemproxy-sealed "$PROXY" --listen "127.0.0.1:$PXS" --workers 2 \
    --redis "unix:$W/redis/redis.sock" --key-prefix sealed: \
    --record-encryption aes-256-gcm --record-keys "$W/record.keys" \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --admin-listen "127.0.0.1:$PXSADM"
PXS_PID=${PIDS[-1]}
wait_port "$PXS" 10 || die "idemproxy (sealed) did not start: $(cat "$W/idemproxy-sealed.log")"

# Redis over TLS: a third Redis listening on a TCP port and a TLS port (tls-auth-clients
# yes; throwaway certificates), an idemproxy on each — what TLS to Redis costs, against
# the same Redis over plain TCP (not the unix socket of the first rows).
REDIS3=$(free_port) REDIS3T=$(free_port)
mkdir -p "$W/redis3"
bg redis3 redis-server "$ROOT/conf/redis.conf" --port "$REDIS3" --dir "$W/redis3" \
    --tls-port "$REDIS3T" --tls-cert-file "$W/certs/server.crt" \
    --tls-key-file "$W/certs/server.key" --tls-ca-cert-file "$W/certs/ca.crt" \
    --tls-auth-clients yes
REDIS3_PID=${PIDS[-1]}
wait_port "$REDIS3T" 10 || die "the TLS redis did not start"
PXT=$(free_port) PXTADM=$(free_port) PXP=$(free_port) PXPADM=$(free_port)
bg idemproxy-tcp "$PROXY" --listen "127.0.0.1:$PXP" --workers 2 --redis "127.0.0.1:$REDIS3" \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --admin-listen "127.0.0.1:$PXPADM"
PXP_PID=${PIDS[-1]}
bg idemproxy-tls "$PROXY" --listen "127.0.0.1:$PXT" --workers 2 --redis "127.0.0.1:$REDIS3T" \
    --redis-tls yes --redis-tls-ca-file "$W/certs/ca.crt" \
    --redis-tls-cert-file "$W/certs/client.crt" --redis-tls-key-file "$W/certs/client.key" \
    --upstream "127.0.0.1:$UP1" --upstream "127.0.0.1:$UP2" --log-level warn \
    --admin-listen "127.0.0.1:$PXTADM"
PXT_PID=${PIDS[-1]}
wait_port "$PXP" 10 || die "idemproxy (tcp) did not start: $(cat "$W/idemproxy-tcp.log")"
wait_port "$PXT" 10 || die "idemproxy (tls) did not start: $(cat "$W/idemproxy-tls.log")"

# A second idemproxy whose upstream accepts and never answers: it holds claims on a few
# keys for the duplicates scenario (its lease is renewed while it waits).
HOLE=$(free_port) HOLD=$(free_port)
bg blackhole perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(Listen => 128, LocalAddr => "127.0.0.1:'"$HOLE"'", ReuseAddr => 1)
        or die "blackhole: $!";
    my @c; while (my $c = $s->accept) { push @c, $c }'
wait_port "$HOLE" 10 || die "blackhole did not start"
bg holder "$PROXY" --listen "127.0.0.1:$HOLD" --workers 1 --redis "unix:$W/redis/redis.sock" \
    --upstream "127.0.0.1:$HOLE" --upstream-timeout 1h --log-level warn
wait_port "$HOLD" 10 || die "holder idemproxy did not start"

# ---- measuring helpers ----
cpu_ticks() { # sum of utime+stime of PIDs and their children processes
    local t=0 p c
    for p in "$@"; do
        for c in "$p" $(pgrep -P "$p" || true); do
            [ -r "/proc/$c/stat" ] || continue
            t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat")))
        done
    done
    echo "$t"
}
rss_kb() { # VmRSS of PIDs and their children, in kB
    local t=0 p c
    for p in "$@"; do
        for c in "$p" $(pgrep -P "$p" || true); do
            [ -r "/proc/$c/status" ] || continue
            t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$c/status")))
        done
    done
    echo "$t"
}
redis_calls() { # commands the measured idemproxys sent so far, by their own count (Redis's
    # commandstats would also count what the scripts run inside Redis); one runs at a time
    local a
    for a in "$PXADM" "$PXRADM" "$PXWADM" "$PXUADM" "$PXSADM" "$PXPADM" "$PXTADM"; do curl -s "http://127.0.0.1:$a/metrics"; done |
        awk '$1 == "idemproxy_redis_commands_total" {n += $2} END {print n + 0}'
}
upstream_accepts() {
    local a=0 p
    for p in "$UP1" "$UP2"; do
        a=$((a + $(curl -s "http://127.0.0.1:$p/nginx_status" | awk 'NR == 3 {print $1}')))
    done
    echo "$a"
}
CLK=$(getconf CLK_TCK)
mkfifo "$W/nap"
exec {NAP}<>"$W/nap" # read -t on it sleeps without a fork: nothing is ever written

# Keyed requests are formatted in init, which wrk runs before its clock starts: building
# each one in request() (a header table turned into a string per request) made wrk use
# 2.5x the CPU per fresh request that it uses keyless, on the cores the proxy shares.
cat >"$W/fresh.lua" <<'LUA'
-- a fresh Idempotency-Key per request, every request pre-formatted per thread
local reqs, n, i = {}, 0, 0
function setup(thread) thread:set("tid", tostring(math.random(1, 2^30))) end
function init(args)
    n = tonumber(args[1]) or 200000
    local run = os.time() .. "-" .. tid
    wrk.method = "POST"
    wrk.body = '{"amount": 10}'
    wrk.headers["Content-Type"] = "application/json"
    for k = 1, n do
        wrk.headers["Idempotency-Key"] = "fresh-" .. run .. "-" .. k
        reqs[k] = wrk.format()
    end
end
function request()
    i = i + 1
    if i > n then i = 1 end -- wraps only if the run outlives its keys (then: replays)
    return reqs[i]
end
LUA
cat >"$W/cycle.lua" <<'LUA'
-- cycle over a fixed set of keys: args[1] = prefix, args[2] = how many
local reqs, n, i = {}, 1, 0
function init(args)
    local prefix = args[1]
    n = tonumber(args[2])
    i = math.random(0, n - 1)
    wrk.method = "POST"
    wrk.body = '{"amount": 10}'
    wrk.headers["Content-Type"] = "application/json"
    for k = 1, n do
        wrk.headers["Idempotency-Key"] = prefix .. k
        reqs[k] = wrk.format()
    end
end
function request()
    i = i % n + 1
    return reqs[i]
end
LUA

# run_wrk LABEL THREADS PROXY_PID -- wrk args... → appends to $W/results:
#   label req/s requests proxy-CPU-ms/10k redis-CPU-ms/10k upstreams-CPU-ms/10k
#   redis-cmds/req upstream-conns-opened non-2xx wrk-CPU-ms/10k
per10k() { awk -v c="$1" -v r="$2" -v k="$CLK" 'BEGIN {printf "%.0f", (r ? c * 1000 / k / r * 10000 : 0)}'; }
run_wrk() {
    local label=$1 threads=$2 ppid=$3
    shift 4
    local p0 s0 u0 r0 a0 out rps reqs p1 s1 u1 r1 a1 non2xx wrk_ms
    local rpid=${RPID:-$REDIS_PID} rport=${RPORT:-$REDIS} # the Redis the measured proxy uses
    redis-cli -p "$rport" config resetstat >/dev/null # its INFO commandstats count from here
    p0=$(cpu_ticks "$ppid") s0=$(cpu_ticks "$rpid") u0=$(cpu_ticks "${UP_PIDS[@]}")
    r0=$(redis_calls) a0=$(upstream_accepts)
    wrk -t"$threads" -c"$CONN" -d"${DUR}s" "$@" >"$W/wrk.out" 2>&1 &
    local wp=$! st w0=-1 w1=0
    # wrk runs the scripts' init (formatting every keyed request) before it starts its
    # threads and its clock: count its CPU from when all its threads run until they end,
    # sampling /proc with builtins only (no fork stealing CPU from what is measured)
    while read -r -a st 2>/dev/null <"/proc/$wp/stat" && [ "${st[2]}" != Z ]; do
        if [ "${st[19]}" -gt "$threads" ]; then
            [ "$w0" -lt 0 ] && w0=$((st[13] + st[14]))
            w1=$((st[13] + st[14]))
        elif [ "$w0" -ge 0 ]; then
            break
        fi
        read -r -t 0.01 -u "$NAP" || true
    done
    wait "$wp" || { cat "$W/wrk.out" >&2; die "wrk failed"; }
    out=$(cat "$W/wrk.out")
    [ "$w0" -ge 0 ] || w0=$w1
    wrk_ms=$(((w1 - w0) * 1000 / CLK))
    p1=$(cpu_ticks "$ppid") s1=$(cpu_ticks "$rpid") u1=$(cpu_ticks "${UP_PIDS[@]}")
    r1=$(redis_calls) a1=$(upstream_accepts)
    rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    # per command: calls and µs per request (not the INFO and CONFIG of this script)
    redis-cli -p "$rport" info commandstats | tr -d '\r' | awk -F '[:,=]' -v l="$label" -v r="$reqs" '
        /^cmdstat_/ && r > 0 {
            c = substr($1, 9)
            if (c !~ /^(info|config)/) printf "%s %s %.2f %.3f\n", l, c, $3 / r, $5 / r
        }' >>"$W/cmdstats"
    echo "$label $rps $reqs $(per10k $((p1 - p0)) "$reqs") $(per10k $((s1 - s0)) "$reqs") \
$(per10k $((u1 - u0)) "$reqs") $(awk -v d=$((r1 - r0)) -v r="$reqs" 'BEGIN {printf "%.2f", (r ? d / r : 0)}') \
$((a1 - a0)) ${non2xx:-0} $(awk -v m="$wrk_ms" -v r="$reqs" 'BEGIN {printf "%.0f", (r ? m / r * 10000 : 0)}')" >>"$W/results"
    say "  $label: $rps req/s"
}

say "== throughput: $ROUNDS round(s) of ${DUR}s per scenario, $CONN connections, wrk -t2 (and -t1)"
# seed the replay keys (wrk cycles over them, so each is claimed and recorded by its first
# request: one process, where a curl per key took most of a --quick run) and hold the
# in-flight ones
NREPLAY=1000
for port in "$PX" "$PXS" "$PXU"; do
    wrk -t1 -c8 -d2s -s "$W/cycle.lua" "http://127.0.0.1:$port/pay" -- replay- $NREPLAY >"$W/seed.out" 2>&1 ||
        { cat "$W/seed.out" >&2; die "seeding the replay keys failed"; }
done
NHELD=16
for i in $(seq 1 $NHELD); do
    curl -s -o /dev/null -m 3600 -X POST -H "Idempotency-Key: held-$i" \
        -H 'Content-Type: application/json' -d '{"amount": 10}' "http://127.0.0.1:$HOLD/pay" &
    PIDS+=($!)
done
sleep 0.5

: >"$W/results"
: >"$W/cmdstats"
for round in $(seq 1 "$ROUNDS"); do
    say "round $round"
    run_wrk keyless-idemproxy 2 "$PX_PID" -- "http://127.0.0.1:$PX/"
    run_wrk keyless-nginx 2 "$NG_PID" -- "http://127.0.0.1:$NG/"
    run_wrk keyless-haproxy 2 "$HA_PID" -- "http://127.0.0.1:$HA/"
    run_wrk fresh-idemproxy 2 "$PX_PID" -- -s "$W/fresh.lua" "http://127.0.0.1:$PX/pay" -- $((40000 * DUR))
    RPID=$REDIS2_PID RPORT=$REDIS2 run_wrk fresh-repl-idemproxy 2 "$PXR_PID" -- -s "$W/fresh.lua" "http://127.0.0.1:$PXR/pay" -- $((40000 * DUR))
    RPID=$REDIS2_PID RPORT=$REDIS2 run_wrk fresh-wait-idemproxy 2 "$PXW_PID" -- -s "$W/fresh.lua" "http://127.0.0.1:$PXW/pay" -- $((40000 * DUR))
    run_wrk fresh-unsealed-idemproxy 2 "$PXU_PID" -- -s "$W/fresh.lua" "http://127.0.0.1:$PXU/pay" -- $((40000 * DUR))
    run_wrk fresh-sealed-idemproxy 2 "$PXS_PID" -- -s "$W/fresh.lua" "http://127.0.0.1:$PXS/pay" -- $((40000 * DUR))
    RPID=$REDIS3_PID RPORT=$REDIS3 run_wrk fresh-tcp-idemproxy 2 "$PXP_PID" -- -s "$W/fresh.lua" "http://127.0.0.1:$PXP/pay" -- $((40000 * DUR))
    RPID=$REDIS3_PID RPORT=$REDIS3 run_wrk fresh-tls-idemproxy 2 "$PXT_PID" -- -s "$W/fresh.lua" "http://127.0.0.1:$PXT/pay" -- $((40000 * DUR))
    run_wrk replay-idemproxy 2 "$PX_PID" -- -s "$W/cycle.lua" "http://127.0.0.1:$PX/pay" -- replay- $NREPLAY
    run_wrk replay-unsealed-idemproxy 2 "$PXU_PID" -- -s "$W/cycle.lua" "http://127.0.0.1:$PXU/pay" -- replay- $NREPLAY
    run_wrk replay-sealed-idemproxy 2 "$PXS_PID" -- -s "$W/cycle.lua" "http://127.0.0.1:$PXS/pay" -- replay- $NREPLAY
    run_wrk dupes409-idemproxy 2 "$PX_PID" -- -s "$W/cycle.lua" "http://127.0.0.1:$PX/pay" -- held- $NHELD
    run_wrk t1-keyless-nginx 1 "$NG_PID" -- "http://127.0.0.1:$NG/"
    run_wrk t1-keyless-idemproxy 1 "$PX_PID" -- "http://127.0.0.1:$PX/"
    run_wrk t1-replay-idemproxy 1 "$PX_PID" -- -s "$W/cycle.lua" "http://127.0.0.1:$PX/pay" -- replay- $NREPLAY
    run_wrk tls-keyless-nginx 2 "$NG_PID" -- "https://127.0.0.1:$NGT/"
    run_wrk tls-keyless-haproxy 2 "$HA_PID" -- "https://127.0.0.1:$HAT/"
    run_wrk tls-keyless-idemproxy 2 "$PX_PID" -- "https://127.0.0.1:$PXTLS/"
    run_wrk tls-close-nginx 2 "$NG_PID" -- -H "Connection: close" "https://127.0.0.1:$NGT/"
    run_wrk tls-close-haproxy 2 "$HA_PID" -- -H "Connection: close" "https://127.0.0.1:$HAT/"
    run_wrk tls-close-idemproxy 2 "$PX_PID" -- -H "Connection: close" "https://127.0.0.1:$PXTLS/"
    run_wrk tls-full-nginx 2 "$NG_PID" -- -H "Connection: close" "https://127.0.0.1:$NGF/"
    run_wrk tls-full-haproxy 2 "$HA_PID" -- -H "Connection: close" "https://127.0.0.1:$HAF/"
    run_wrk tls-full-idemproxy 2 "$PXF_PID" -- -H "Connection: close" "https://127.0.0.1:$PXFTLS/"
done

median() { # median of column $2 for label $1
    awk -v l="$1" -v c="$2" '$1 == l {print $c}' "$W/results" | sort -n |
        awk '{v[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# ---- latency at a constant rate ----
PEAK=$(median fresh-idemproxy 2)
RATE=$(awk -v p="$PEAK" 'BEGIN {r = int(p / 2); if (r < 50) r = 50; print r}')
LDUR=$((DUR * 2))
say "== latency at $RATE req/s (50 % of idemproxy's fresh-key peak), ${LDUR}s each"
latency() { # latency LABEL retrystorm-args...
    local label=$1
    shift
    "$STORM" --rate "$RATE" --duration "${LDUR}s" --concurrency "$CONN" --quiet \
        --json "$W/lat-$label.json" "$@" >"$W/lat-$label.log" 2>&1 || true
    local j="$W/lat-$label.json"
    [ -s "$j" ] || { say "latency run $label failed: $(tail -3 "$W/lat-$label.log")"; echo "$label - - - -" >>"$W/latency"; return; }
    get() { grep -o "\"$1\": *[0-9.]*" "$j" | head -1 | sed 's/.*: *//'; }
    echo "$label $(get p50) $(get p99) $(get p999) $(get max)" >>"$W/latency"
}
: >"$W/latency"
latency keyless-nginx --no-key --method GET --target "http://127.0.0.1:$NG/"
latency keyless-idemproxy --no-key --method GET --target "http://127.0.0.1:$PX/"
latency fresh-idemproxy --dupes 1 --target "http://127.0.0.1:$PX/pay"

# ---- memory with idle connections ----
say "== RSS with $IDLE idle client connections"
idle_rss() { # idle_rss PORT PIDS → kB before and with the idle connections
    local port=$1 pids=$2 before with
    before=$(rss_kb $pids)
    perl -MIO::Socket::INET -e '
        my ($port, $n, $ready) = @ARGV; my @s;
        for (1 .. $n) { my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or last; push @s, $s }
        open(my $f, ">", $ready); print $f scalar(@s); close $f; sleep 2' "$port" "$IDLE" "$W/idle.$port" &
    local hp=$!
    for _ in $(seq 1 200); do [ -s "$W/idle.$port" ] && break; sleep 0.1; done
    sleep 1
    with=$(rss_kb $pids)
    wait $hp 2>/dev/null || true
    echo "$before $with $(cat "$W/idle.$port" 2>/dev/null || echo 0)"
}
read -r PX_RSS0 PX_RSS1 PX_IDLE_OK <<<"$(idle_rss "$PX" "$PX_PID")"
read -r NG_RSS0 NG_RSS1 NG_IDLE_OK <<<"$(idle_rss "$NG" "$NG_PID")"
read -r HA_RSS0 HA_RSS1 HA_IDLE_OK <<<"$(idle_rss "$HA" "$HA_PID")"
# idle TLS connections, each with its handshake done (a tenth as many: the handshakes
# are made by perl, one at a time)
IDLE_TLS=$((IDLE / 10))
idle_tls_rss() { # idle_tls_rss PORT PIDS → kB before and with the idle TLS connections
    local port=$1 pids=$2 before with
    before=$(rss_kb $pids)
    perl -MIO::Socket::SSL -e '
        my ($port, $n, $ready) = @ARGV; my @s;
        for (1 .. $n) {
            my $s = IO::Socket::SSL->new(PeerAddr => "127.0.0.1:$port",
                SSL_verify_mode => SSL_VERIFY_NONE, SSL_version => "TLSv1_3") or last;
            push @s, $s;
        }
        open(my $f, ">", $ready); print $f scalar(@s); close $f; sleep 2' "$port" "$IDLE_TLS" \
        "$W/idle-tls.$port" &
    local hp=$!
    for _ in $(seq 1 600); do [ -s "$W/idle-tls.$port" ] && break; sleep 0.1; done
    sleep 1
    with=$(rss_kb $pids)
    wait $hp 2>/dev/null || true
    echo "$before $with $(cat "$W/idle-tls.$port" 2>/dev/null || echo 0)"
}
read -r PXT_RSS0 PXT_RSS1 PXT_IDLE_OK <<<"$(idle_tls_rss "$PXTLS" "$PX_PID")"
read -r NGT_RSS0 NGT_RSS1 NGT_IDLE_OK <<<"$(idle_tls_rss "$NGT" "$NG_PID")"
read -r HAT_RSS0 HAT_RSS1 HAT_IDLE_OK <<<"$(idle_tls_rss "$HAT" "$HA_PID")"

# ---- the report ----
mkdir -p "$(dirname "$OUT")"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
NGK=$(median keyless-nginx 2) NGK1=$(median t1-keyless-nginx 2)
NGT_K=$(median tls-keyless-nginx 2) NGT_C=$(median tls-close-nginx 2) NGT_F=$(median tls-full-nginx 2)
per_conn() { # per_conn BEFORE_KB WITH_KB CONNECTIONS → bytes per connection
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0)}'
}
row() { # row LABEL description [NGINX-KEYLESS-REQ/S]
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$(median "$1" 2)" \
        "$(ratio "$(median "$1" 2)" "${3:-$NGK}")" "$(median "$1" 4)" "$(median "$1" 5)" \
        "$(median "$1" 6)" "$(median "$1" 10)" "$(median "$1" 7)" "$(median "$1" 8)" "$(median "$1" 9)"
}
cmed() { # cmed LABEL COMMAND COLUMN: median over rounds of $W/cmdstats (3 calls, 4 µs per request)
    awk -v l="$1" -v c="$2" -v k="$3" '$1 == l && $2 == c {print $k}' "$W/cmdstats" | sort -n |
        awk '{v[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
crow() { # crow LABEL description: Redis's CPU and its commands per request of one scenario
    local c list=""
    for c in $(awk -v l="$1" '$1 == l {print $2}' "$W/cmdstats" | sort -u); do
        list="$list, $c $(cmed "$1" "$c" 3) ($(cmed "$1" "$c" 4) µs)"
    done
    printf '| %s | %s | %.2f | %.2f | %s |\n' "$2" \
        "$(awk -v m="$(median "$1" 5)" 'BEGIN {printf "%.1f", m / 10}')" \
        "$(cmed "$1" evalsha 4)" "$(cmed "$1" set 4)" "${list#, }"
}
lrow() {
    awk -v l="$1" -v d="$2" '$1 == l {printf "| %s | %s | %s | %s | %s |\n", d, $2, $3, $4, $5}' "$W/latency"
}
{
    echo "# Benchmarks"
    echo
    echo "Produced by \`scripts/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')$([ $QUICK = 1 ] && echo ' (--quick: too short to mean anything)')."
    echo "Everything ran on one machine over loopback, so the load generator, both proxies,"
    echo "Redis and the upstreams share the same cores: compare the ratios, which come from one"
    echo "run with the proxies measured alternately, not the absolute numbers."
    echo
    echo "## Machine and versions"
    echo
    echo "- CPU: $(nproc) × $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, Linux $(uname -r)"
    echo "- idemproxy $("$PROXY" --version | awk '{print $2}') (\`--workers 2\`, release build), $("$NGINX" -v 2>&1 | sed 's|nginx version: ||') (\`worker_processes 2\`, \`reuseport\`), HAProxy $("$HAPROXY" -v | awk 'NR == 1 {print $3}') (\`nbthread 2\`), redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-), $(wrk --version 2>&1 | head -1 | awk '{print "wrk " $2}')"
    echo "- Redis: \`conf/redis.conf\` (appendonly yes, everysec), reached over a unix socket, and for the two replica rows a second one with a replica (TCP, loopback)"
    echo "- upstreams: two nginx processes, \`return 200\`, 1 worker each; nginx proxy: \`proxy_pass\` with \`keepalive 64\`, \`proxy_http_version 1.1\`, \`Connection \"\"\`, \`access_log off\`; HAProxy: \`mode http\`, \`option http-keep-alive\`, \`http-reuse always\`, no log"
    echo "- load: \`wrk -t2 -c$CONN -d${DUR}s\` (and \`-t1\` where the row says so), $ROUNDS round(s), median reported; keys pre-generated in wrk's Lua script"
    echo "- CPU: utime + stime from \`/proc\` of every process (and its children) over each run, per 10k requests; wrk's from when its threads start (after its scripts' init, which formats every keyed request before wrk's clock starts); Redis commands are the ones idemproxy sent, by its own \`idemproxy_redis_commands_total\`"
    echo
    echo "## Throughput"
    echo
    echo "| scenario | req/s | × nginx keyless | proxy CPU ms / 10k req | Redis CPU ms / 10k | upstreams CPU ms / 10k | wrk CPU ms / 10k | Redis cmds / req | upstream conns opened | non-2xx |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    row keyless-nginx "nginx proxy_pass, keyless GET"
    row keyless-haproxy "HAProxy, keyless GET"
    row keyless-idemproxy "idemproxy, keyless GET"
    row fresh-idemproxy "idemproxy, keyed POST, fresh key (claim + upstream + record)"
    row fresh-repl-idemproxy "idemproxy, keyed POST, fresh key, Redis with a replica, no WAIT"
    row fresh-wait-idemproxy "idemproxy, keyed POST, fresh key, Redis with a replica, \`redis-wait 1\` (× the same without WAIT)" "$(median fresh-repl-idemproxy 2)"
    row fresh-unsealed-idemproxy "idemproxy, keyed POST, fresh key, a second process (the baseline of the next row)"
    row fresh-sealed-idemproxy "idemproxy, keyed POST, fresh key, records sealed (\`record-encryption aes-256-gcm\`; × the same unsealed)" "$(median fresh-unsealed-idemproxy 2)"
    row fresh-tcp-idemproxy "idemproxy, keyed POST, fresh key, Redis over TCP (loopback)"
    row fresh-tls-idemproxy "idemproxy, keyed POST, fresh key, Redis over TLS (\`redis-tls\`, client certificate; × the same over TCP)" "$(median fresh-tcp-idemproxy 2)"
    row replay-idemproxy "idemproxy, keyed POST, replay ($NREPLAY recorded keys)"
    row replay-unsealed-idemproxy "idemproxy, keyed POST, replay, the second process (the baseline of the next row)"
    row replay-sealed-idemproxy "idemproxy, keyed POST, replay of sealed records (× the same unsealed)" "$(median replay-unsealed-idemproxy 2)"
    row dupes409-idemproxy "idemproxy, keyed POST, duplicates of $NHELD in-flight keys (409)"
    row t1-keyless-nginx "nginx proxy_pass, keyless GET, wrk -t1" "$NGK1"
    row t1-keyless-idemproxy "idemproxy, keyless GET, wrk -t1 (× nginx -t1)" "$NGK1"
    row t1-replay-idemproxy "idemproxy, keyed POST, replay, wrk -t1 (× nginx -t1)" "$NGK1"
    row tls-keyless-nginx "nginx \`listen ssl\` + proxy_pass, keyless GET over TLS 1.3, keep-alive (the base of the TLS rows)" "$NGT_K"
    row tls-keyless-haproxy "HAProxy \`bind ssl\`, keyless GET over TLS 1.3, keep-alive (× nginx TLS)" "$NGT_K"
    row tls-keyless-idemproxy "idemproxy \`tls-listen\`, keyless GET over TLS 1.3, keep-alive (× nginx TLS)" "$NGT_K"
    row tls-close-nginx "nginx, TLS, \`Connection: close\`: a new connection per request, resumed by ticket (the base of the next rows)" "$NGT_C"
    row tls-close-haproxy "HAProxy, TLS, a new connection per request (× nginx)" "$NGT_C"
    row tls-close-idemproxy "idemproxy, TLS, a new connection per request (× nginx)" "$NGT_C"
    row tls-full-nginx "nginx, TLS, a new connection per request, a full handshake each (\`ssl_session_tickets off\`, no session cache; the base of the next rows)" "$NGT_F"
    row tls-full-haproxy "HAProxy, TLS, a full handshake per request (\`no-tls-tickets\`, \`tune.ssl.cachesize 0\`; × nginx)" "$NGT_F"
    row tls-full-idemproxy "idemproxy, TLS, a full handshake per request (\`tls-session-tickets off\`; × nginx)" "$NGT_F"
    echo
    echo "## Redis per request"
    echo
    echo "Redis's CPU from \`/proc\` (as above), and the time it spent executing commands by its"
    echo "own \`INFO commandstats\` (reset before each run). A script's own calls (the record's"
    echo "\`GET\`, \`SET\` and \`PUBLISH\`) are inside \`EVALSHA\`'s time and counted again under"
    echo "their own names: \`SET\` is the claim and the record script's write. The rest of"
    echo "Redis's CPU is reading and writing sockets, the event loop and the append-only file."
    echo
    echo "| scenario | Redis CPU µs / req | \`EVALSHA\` µs / req | \`SET\` µs / req | calls per request (µs per request in them) |"
    echo "|---|---|---|---|---|"
    crow fresh-idemproxy "idemproxy, keyed POST, fresh key"
    crow fresh-wait-idemproxy "idemproxy, fresh key, \`redis-wait 1\`"
    crow fresh-tls-idemproxy "idemproxy, fresh key, Redis over TLS"
    crow replay-idemproxy "idemproxy, keyed POST, replay"
    crow dupes409-idemproxy "idemproxy, duplicates of in-flight keys (409)"
    echo
    echo "## Latency at a constant rate"
    echo
    echo "$RATE req/s for ${LDUR}s (half of idemproxy's fresh-key peak), measured by"
    echo "\`retrystorm --rate\` from each request's intended send time (coordinated omission"
    echo "corrected). Milliseconds."
    echo
    echo "| scenario | p50 | p99 | p99.9 | max |"
    echo "|---|---|---|---|---|"
    lrow keyless-nginx "nginx, keyless GET"
    lrow keyless-idemproxy "idemproxy, keyless GET"
    lrow fresh-idemproxy "idemproxy, keyed POST, fresh key"
    echo
    echo "## Memory with idle connections"
    echo
    echo "| proxy | RSS before | RSS with idle connections | connections held |"
    echo "|---|---|---|---|"
    echo "| idemproxy | $((PX_RSS0 / 1024)) MiB | $((PX_RSS1 / 1024)) MiB | $PX_IDLE_OK |"
    echo "| nginx (master + workers) | $((NG_RSS0 / 1024)) MiB | $((NG_RSS1 / 1024)) MiB | $NG_IDLE_OK |"
    echo "| HAProxy | $((HA_RSS0 / 1024)) MiB | $((HA_RSS1 / 1024)) MiB | $HA_IDLE_OK |"
    echo
    echo "Idle TLS 1.3 connections, each with its handshake done (same certificate):"
    echo
    echo "| proxy | RSS before | RSS with idle TLS connections | connections held | bytes per connection |"
    echo "|---|---|---|---|---|"
    echo "| idemproxy | $((PXT_RSS0 / 1024)) MiB | $((PXT_RSS1 / 1024)) MiB | $PXT_IDLE_OK | $(per_conn "$PXT_RSS0" "$PXT_RSS1" "$PXT_IDLE_OK") |"
    echo "| nginx (master + workers) | $((NGT_RSS0 / 1024)) MiB | $((NGT_RSS1 / 1024)) MiB | $NGT_IDLE_OK | $(per_conn "$NGT_RSS0" "$NGT_RSS1" "$NGT_IDLE_OK") |"
    echo "| HAProxy | $((HAT_RSS0 / 1024)) MiB | $((HAT_RSS1 / 1024)) MiB | $HAT_IDLE_OK | $(per_conn "$HAT_RSS0" "$HAT_RSS1" "$HAT_IDLE_OK") |"
    echo
    echo "## Raw results"
    echo
    echo "label, req/s, requests, CPU ms per 10k requests of the proxy / Redis / upstreams, Redis cmds/req,"
    echo "upstream conns opened, non-2xx, wrk CPU ms per 10k requests (one line per round):"
    echo
    echo '```'
    cat "$W/results"
    echo '```'
    if [ -f "$ROOT/docs/BENCHMARKS.notes.md" ]; then
        echo
        cat "$ROOT/docs/BENCHMARKS.notes.md"
    fi
    echo
    echo "## Reproduce"
    echo
    echo '```sh'
    echo "scripts/bench.sh --rounds $ROUNDS --duration $DUR --connections $CONN --idle $IDLE"
    echo '```'
} >"$OUT"
say "wrote $OUT"
cat "$OUT"
