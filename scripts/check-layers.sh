#!/usr/bin/env bash
# The layering of src/ (README "Architecture"): a file may include headers of its own
# layer and of the layers below it, never above; modules never include each other in a
# cycle. Exits non-zero, naming every offending line, when either rule is broken.
#
#   top (src/*.c: main, worker, config)    may include everything
#   admin/  core net redis http idem admin
#   idem/   core net redis http idem
#   http/   core net http
#   redis/  core net redis
#   net/    core net
#   core/   core
#
# Usage: scripts/check-layers.sh [SRC_DIR]   (default: the repository's src/)
set -euo pipefail
SRC=${1:-"$(cd "$(dirname "$0")/.." && pwd)/src"}

allowed() { # layer of the including file → the layers it may include
    case $1 in
    core) echo "core" ;;
    net) echo "core net" ;;
    redis) echo "core net redis" ;;
    http) echo "core net http" ;;
    idem) echo "core net redis http idem" ;;
    admin) echo "core net redis http idem admin" ;;
    top) echo "core net redis http idem admin top" ;;
    *) echo "" ;;
    esac
}

bad=0
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT

while IFS= read -r file; do
    rel=${file#"$SRC"/}
    case $rel in
    */*) layer=${rel%%/*} ;;
    *) layer=top ;;
    esac
    ok=$(allowed "$layer")
    if [ -z "$ok" ]; then
        echo "$rel: unknown layer '$layer' (add it to scripts/check-layers.sh)" >&2
        bad=1
        continue
    fi
    mod=${rel%.*}
    while IFS=: read -r lineno inc; do
        target=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1/' <<<"$inc")
        case $target in
        */*) tlayer=${target%%/*} ;;
        *) tlayer=top ;;
        esac
        if [ ! -f "$SRC/$target" ]; then
            echo "$rel:$lineno: includes \"$target\", which is not a header under src/" \
                "(include by layer: \"http/frontend.h\")" >&2
            bad=1
            continue
        fi
        if ! grep -qw "$tlayer" <<<"$ok"; then
            echo "$rel:$lineno: layer '$layer' includes \"$target\" of higher layer '$tlayer'" >&2
            bad=1
        fi
        tmod=${target%.*}
        [ "$tmod" != "$mod" ] && echo "$mod $tmod" >>"$edges"
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" || true)
done < <(find "$SRC" -name '*.[ch]' | sort)

# Module cycles: tsort names every module on a loop.
if ! cycle=$(tsort "$edges" 2>&1 >/dev/null) || [ -n "$cycle" ]; then
    echo "include cycle between modules:" >&2
    echo "$cycle" | grep -v "input contains a loop" | sed "s/^tsort: /  /" >&2
    bad=1
fi

if [ $bad -ne 0 ]; then
    echo "layering check FAILED" >&2
    exit 1
fi
echo "layering ok: $(find "$SRC" -name '*.[ch]' | wc -l) files, no upward include, no cycle"
