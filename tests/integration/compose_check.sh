#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine: the file must pass
# `docker-compose config -q`, and every command in it must be one the binaries accept
# (idemproxy -t with the same arguments; demo-bank and retrystorm --check).
#   compose_check.sh BUILD_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:?usage: compose_check.sh BUILD_DIR}
cd "$ROOT"
docker-compose -f docker-compose.yml config -q
echo "docker-compose config: ok"
# The normalised file, one service command per line as NUL-free JSON arrays.
docker-compose -f docker-compose.yml --profile storm --profile sentinel --profile cluster config |
    /usr/bin/python3 -c '
import json, sys, yaml
doc = yaml.safe_load(sys.stdin)
for name, svc in sorted(doc["services"].items()):
    cmd = svc.get("command")
    if cmd:
        if svc.get("image", "").startswith("redis:") and cmd[0] == "sh":
            cmd = ["redis-sh"] + cmd[1:]  # a shell in the official Redis image
        print(name + "\t" + json.dumps(cmd))
' >"${TMPDIR:-/tmp}/compose-commands.$$"
status=0
while IFS=$'\t' read -r name cmd; do
    mapfile -t argv < <(/usr/bin/python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$cmd")
    prog=${argv[0]}
    args=("${argv[@]:1}")
    # paths inside the image → the source tree
    for i in "${!args[@]}"; do
        [ "${args[$i]}" = /etc/idemproxy/idemproxy.conf ] && args[$i]="$ROOT/conf/idemproxy.conf"
    done
    case $prog in
    idemproxy) out=$("$BIN/idemproxy" -t "${args[@]}" 2>&1) || { echo "$name: $out"; status=1; continue; } ;;
    demo-bank) out=$("$BIN/tools/demo-bank/demo-bank" --check "${args[@]}" 2>&1) || { echo "$name: $out"; status=1; continue; } ;;
    retrystorm) out=$("$BIN/tools/retrystorm/retrystorm" --check "${args[@]}" 2>&1) || { echo "$name: $out"; status=1; continue; } ;;
    redis-server) echo "$name: redis-server (official image)"; continue ;;
    redis-sh)
        # the shell line of a Redis image service: sh must parse it (compose turns $$
        # into $ when it runs it)
        sh -n -c "${args[1]//\$\$/\$}" || { echo "$name: sh cannot parse its command"; status=1; continue; }
        echo "$name: shell in the official Redis image"; continue ;;
    *) echo "$name: unknown program '$prog'"; status=1; continue ;;
    esac
    echo "$name: checked $prog"
done <"${TMPDIR:-/tmp}/compose-commands.$$"
rm -f "${TMPDIR:-/tmp}/compose-commands.$$"
exit $status
