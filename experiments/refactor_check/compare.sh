#!/usr/bin/env bash
# Do two commits compute bit-identical numbers? run.sh at each, then diff their hashes.txt.
#   experiments/refactor_check/compare.sh COMMIT_A COMMIT_B [OUT_DIR]     (exit 0: identical)
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 COMMIT_A COMMIT_B [OUT_DIR]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
out=${3:-$(mktemp -d "${TMPDIR:-/tmp}/refactor_check_compare.XXXXXX")}
"$here/run.sh" "$1" "$out/a"
"$here/run.sh" "$2" "$out/b"
if diff "$out/a/hashes.txt" "$out/b/hashes.txt"; then
    echo "identical: $1 and $2 give the same predictions.npz arrays and accuracies ($out)"
else
    echo "DIFFERENT: $1 and $2 ($out/a/hashes.txt vs $out/b/hashes.txt)" >&2
    exit 1
fi
