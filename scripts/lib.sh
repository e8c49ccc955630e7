# Shared helpers for scripts/*.sh (sourced, not executed).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_packages PKG...: make sure Debian packages are installed. As root, install what is
# missing with apt-get; otherwise print the exact command and fail.
need_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]}"
        say "install them with:"
        say "  sudo apt-get install -y ${missing[*]}"
        exit 1
    fi
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}"
    } || die "apt-get could not install: ${missing[*]}"
}

# need_packages_nostart PKG...: the same, but keep Debian from starting the packages'
# services on install (the nginx package would otherwise start a server on port 80;
# we only want the binary).
need_packages_nostart() {
    local created=0 rc=0
    if [ "$(id -u)" -eq 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created=1
    fi
    (need_packages "$@") || rc=$?
    [ $created -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ $rc -eq 0 ] || exit $rc
}

# need_node: node and npm for the test-only client libraries in tests/node (the
# stripe-node test). A missing one is installed from Debian (nodejs, npm) by
# need_packages. stripe@23 needs Node.js 20 or later and Debian 12's is 18: then a Node 20
# comes from the npm registry (the node-linux-ARCH package, a test-only tool) into
# tests/node/.node, and tests/node/run.sh puts it first on PATH.
need_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        need_packages nodejs npm
    fi
    local dir="$ROOT/tests/node/.node" arch major
    major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$major" -ge 20 ] && return 0
    case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) die "Node.js $(node -v) is too old for tests/node (stripe@23 needs 20) and no Node 20 package for $(uname -m)" ;;
    esac
    if [ ! -x "$dir/node_modules/node-linux-$arch/bin/node" ]; then
        say "Node.js $(node -v) is too old for stripe@23: installing node-linux-$arch@20 from npm into tests/node/.node"
        npm install --no-audit --no-fund --loglevel=error --prefix "$dir" "node-linux-$arch@20" >&2 ||
            die "npm could not install node-linux-$arch@20"
    fi
    "$dir/node_modules/node-linux-$arch/bin/node" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' ||
        die "tests/node/.node does not hold a Node.js 20"
}

BUILD_PACKAGES=(build-essential cmake pkg-config libevent-dev libhiredis-dev libssl-dev
    libcriterion-dev redis-server curl)

# build DIR [cmake args...]: configure once, then build incrementally.
build() {
    local dir=$1
    shift
    if [ ! -f "$dir/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$dir" "$@" >/dev/null || die "cmake configure failed"
    fi
    cmake --build "$dir" -j "$(nproc)" -- --no-print-directory >/dev/null ||
        cmake --build "$dir" -j 1 || die "build failed"
}

# free_port: a TCP port on 127.0.0.1 that was free a moment ago, reserved for this script
# against the other scripts and tests running beside it (a file holding our PID in
# $PORT_DIR, as tests/support/proc.c does; released by stop_started): two of them given
# the same free port would start two idemproxys that share it (SO_REUSEPORT), each
# answering the other's requests.
PORT_DIR=/tmp/idemproxy-test-ports
free_port() {
    local p i owner
    mkdir -p "$PORT_DIR" 2>/dev/null || true
    for ((i = 0; i < 64; i++)); do
        # perl-base (Essential in Debian) has IO::Socket::INET
        p=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0")->sockport')
        if (set -C; echo "$$" >"$PORT_DIR/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
        owner=$(cat "$PORT_DIR/$p" 2>/dev/null || true)
        if [ -n "$owner" ] && [ "$owner" != "$$" ] && ! kill -0 "$owner" 2>/dev/null; then
            rm -f "$PORT_DIR/$p" # left by a process that is gone
        fi
    done
    echo "$p"
}

# release_ports: the ports free_port reserved for this script.
release_ports() {
    local f
    for f in "$PORT_DIR"/*; do
        [ -f "$f" ] && [ "$(cat "$f" 2>/dev/null)" = "$$" ] && rm -f "$f"
    done
    return 0
}

# wait_port PORT [SECONDS]: until 127.0.0.1:PORT accepts connections.
wait_port() {
    local port=$1 limit=${2:-10} i
    for ((i = 0; i < limit * 20; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Processes a script started, stopped (TERM, then waited for) by stop_started, which the
# scripts install as their EXIT/INT/TERM trap. Only these PIDs are ever signalled; a
# process the script reaped itself is taken off the list first (forget_pid), so a PID the
# kernel has since given to someone else is never signalled.
PIDS=()
stop_started() {
    trap - INT TERM EXIT
    release_ports
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

# forget_pid PID: take PID off the list stop_started signals (it was reaped).
forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# spawn NAME CMD...: run CMD in the background, output in $RUN/NAME.log ($RUN must be
# set); its PID goes to PIDS and to STARTED.
spawn() {
    local name=$1
    shift
    "$@" >"$RUN/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# start NAME PORT CMD...: spawn, then wait until 127.0.0.1:PORT accepts (or print the
# log and die).
start() {
    local name=$1 port=$2
    shift 2
    spawn "$name" "$@"
    wait_port "$port" 20 || { cat "$RUN/$name.log" >&2; die "$name did not start"; }
}

# wait_exit PID [SECONDS]: wait at most SECONDS (10) for a process this script started to
# exit, reap it and put its exit status in EXIT_STATUS (128+N: killed by signal N). If it
# is still running then, it is SIGKILLed (EXIT_STATUS 137) and wait_exit returns 1.
wait_exit() {
    local pid=$1 limit=${2:-10} i state rc=0
    for ((i = 0; i < limit * 20; i++)); do
        # field 3 of /proc/PID/stat, after the "(comm)" that may hold spaces
        state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || state=""
        [ -z "$state" ] || [ "$state" = Z ] && break
        sleep 0.05
    done
    if [ -n "$state" ] && [ "$state" != Z ]; then
        kill -KILL "$pid" 2>/dev/null || true
        rc=1
    fi
    EXIT_STATUS=0
    wait "$pid" 2>/dev/null || EXIT_STATUS=$?
    forget_pid "$pid"
    return $rc
}

# nginx_conf DIR WORKERS MASTER BODY: DIR/nginx.conf for an nginx kept entirely in DIR
# (pid, logs, temp paths), in the foreground, no access log; MASTER on|off; BODY goes
# inside http {}.
nginx_conf() {
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<CONF
worker_processes $2;
daemon off;
master_process $3;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 32768; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
$4
}
CONF
}

# topology_flags DIR: the idemproxy flags that reach the topology redis-topology.sh
# started in DIR (its idemproxy.conf: one --redis-sentinel / --redis-cluster per node),
# into the array TOPO_FLAGS.
topology_flags() {
    TOPO_FLAGS=()
    local name rest a
    while read -r name rest; do
        case $name in '' | \#*) continue ;; esac
        for a in $rest; do TOPO_FLAGS+=("--$name" "$a"); done
    done <"$1/idemproxy.conf"
}
