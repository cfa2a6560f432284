#!/usr/bin/env bash
# Here, once per checkout: fetch the wheels experiments/gpu/wheels.txt pins into .whl/ (ignored),
# for the GPU host's Python (CPython 3.12, manylinux x86_64), which has no network and lacks them.
# Each download is checked against its pinned sha256 (antlr4-python3-runtime: its sdist's, then
# its pure-Python wheel is built here); wheels already here and intact are kept. Then
# `payload.py plan` counts them in the last job, which carries .whl.
#
# Usage: experiments/gpu/fetch_wheels.sh
# Environment: WHEELS_LIST (experiments/gpu/wheels.txt), WHEELS_DIR (.whl), PYTHON (python3).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIST=${WHEELS_LIST:-$ROOT/experiments/gpu/wheels.txt}
DEST=${WHEELS_DIR:-$ROOT/.whl}
PY=${PYTHON:-python3}
HOST=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

is() {  # is FILE SHA256: FILE exists and has that sha256
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

mkdir -p "$DEST"
total=0
while read -r requirement wheel bytes sha; do
    case $requirement in '' | '#'*) continue ;; esac
    if [[ $sha == sdist:* ]]; then
        if [ ! -f "$DEST/$wheel" ]; then
            sdist=$(mktemp -d)
            "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$sdist" "$requirement"
            is "$sdist"/*.tar.gz "${sha#sdist:}" ||
                { echo "fetch_wheels.sh: the sdist of $requirement is not the pinned one (sha256 ${sha#sdist:})." >&2; exit 1; }
            "$PY" -m pip wheel -q --no-deps -w "$DEST" "$sdist"/*.tar.gz
            rm -r "$sdist"
        fi
    elif ! is "$DEST/$wheel" "$sha"; then
        rm -f "$DEST/$wheel"  # pip download keeps a file of that name, broken or not
        "$PY" -m pip download -q --no-deps "${HOST[@]}" -d "$DEST" "$requirement"
        is "$DEST/$wheel" "$sha" ||
            { echo "fetch_wheels.sh: $DEST/$wheel is missing or not the pinned one (sha256 $sha)." >&2; exit 1; }
    fi
    [ -f "$DEST/$wheel" ] || { echo "fetch_wheels.sh: building $requirement made no $DEST/$wheel." >&2; exit 1; }
    size=$(stat -c %s "$DEST/$wheel")
    total=$((total + size))
    [ "$size" = "$bytes" ] || echo "note: $wheel has $size bytes, wheels.txt says $bytes"
done <"$LIST"
echo "$DEST: every pinned wheel, $total bytes; next: python3 experiments/gpu/payload.py plan"
