#!/usr/bin/env bash
# Run a Node test script of this directory with the client libraries package-lock.json
# pins, installing them first (npm ci) when node_modules is missing or older than the
# lock. Test-only: nothing here is shipped. Usage: tests/node/run.sh SCRIPT [ARGS...]
set -euo pipefail
cd "$(dirname "$0")"
# a Node 20 that scripts/test.sh fetched from npm when the system's is older
for fallback in .node/node_modules/node-linux-*/bin; do
    [ -x "$fallback/node" ] && PATH="$PWD/$fallback:$PATH"
done
command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "run.sh: node and npm are needed (scripts/test.sh installs them)" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] ||
    { echo "run.sh: stripe@23 needs Node.js 20 or later, found $(node -v)" >&2; exit 1; }
# Two tests may start at once: one installs, the other waits for it.
exec 9>.npm-install.lock
flock 9
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error >&2
fi
flock -u 9
exec node "$@"
