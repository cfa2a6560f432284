#!/usr/bin/env bash
# Bit-identical before/after check for a refactor: at one commit, a fixed-seed short training on the
# real FER-2013 and an evaluation of its best checkpoint on PrivateTest; writes the sha256 of every
# array in both runs' predictions.npz (per-image logits, labels, ids) and the accuracies to
# OUT_DIR/hashes.txt. Two commits compute the same numbers when their hashes.txt are identical:
#
#   experiments/refactor_check/run.sh COMMIT OUT_DIR        (or compare.sh COMMIT_A COMMIT_B)
#
# Environment: FER2013_ROOT (required: the real zip, folder or CSV), FER_CACHE_DIR (decoded-array
# cache; default OUT_DIR/.cache, decoded afresh), PYTHON (default the checkout's .venv/bin/python, what make install creates: any
# environment with fer's dependencies; fer itself is imported from the commit's worktree),
# OMP_NUM_THREADS (default 1; compare only runs made with the same value).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 COMMIT OUT_DIR" >&2
    exit 2
fi
if [ -z "${FER2013_ROOT:-}" ] || [ ! -e "$FER2013_ROOT" ]; then
    echo "$0: set FER2013_ROOT to the real FER-2013 (the Kaggle zip, its extracted folder or fer2013.csv); got '${FER2013_ROOT:-}'" >&2
    exit 2
fi
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
PYTHON=${PYTHON:-$repo/.venv/bin/python}
commit=$(git -C "$repo" rev-parse --verify --quiet "$1^{commit}") || { echo "$0: '$1' is not a commit of $repo" >&2; exit 2; }
mkdir -p "$2"
out=$(cd "$2" && pwd)
if [ -e "$out/train" ] || [ -e "$out/eval" ]; then
    echo "$0: $out already holds a run (train/ or eval/): pass a new or empty OUT_DIR" >&2
    exit 2
fi

# the commit's code in a temporary worktree, conf/ reached as fer.conf the way the package ships it
worktree=$(mktemp -d "${TMPDIR:-/tmp}/refactor_check.XXXXXX")
cleanup() { git -C "$repo" worktree remove --force "$worktree" 2>/dev/null || { rm -rf "$worktree"; git -C "$repo" worktree prune; }; }
trap cleanup EXIT
git -C "$repo" worktree add --quiet --detach "$worktree" "$commit"
[ -e "$worktree/src/fer/conf" ] || ln -s ../../conf "$worktree/src/fer/conf"

# one thread and torch's deterministic algorithms: the same commit gives the same bits every run
export PYTHONPATH="$worktree/src" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONHASHSEED=0 NO_ALBUMENTATIONS_UPDATE=1 HYDRA_FULL_ERROR=1 FER_CACHE_DIR="${FER_CACHE_DIR:-$out/.cache}"
"$PYTHON" - "$worktree" <<'PY'
import sys
from pathlib import Path

import fer
import fer.conf

for module in (fer, fer.conf):
    if not Path(module.__file__).is_relative_to(sys.argv[1]):
        sys.exit(f"{module.__name__} comes from {module.__file__}, not from the worktree {sys.argv[1]}: check PYTHON and PYTHONPATH")
PY
echo "commit $commit ($(git -C "$repo" log -1 --format=%s "$commit" | cut -c1-100))" | tee "$out/commit.txt"

cd "$out"  # relative paths (logs/, .cache/) land here, not in the worktree
# 20 training batches of one epoch; validation and test stay whole: fer.train and fer.evaluate save
# one logit row per image of the split, and refuse outputs that cover only part of it
"$PYTHON" -m fer.train experiment=improved/vgg3 seed=42 trainer.max_epochs=1 trainer.limit_train_batches=20 \
    trainer.deterministic=true callbacks.progress_bar.refresh_rate=0 "paths.root_dir=$out" "hydra.run.dir=$out/train" \
    >"$out/train.out" 2>&1 || { tail -n 30 "$out/train.out" >&2; echo "$0: fer.train failed, see $out/train.out" >&2; exit 1; }
ckpt=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["best_checkpoint"])' "$out/train/metrics.json")
"$PYTHON" -m fer.evaluate "ckpt_path=$ckpt" split=test trainer.deterministic=true "paths.root_dir=$out" "hydra.run.dir=$out/eval" \
    >"$out/eval.out" 2>&1 || { tail -n 30 "$out/eval.out" >&2; echo "$0: fer.evaluate failed, see $out/eval.out" >&2; exit 1; }

"$PYTHON" - "$out" <<'PY' | tee "$out/hashes.txt"
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

out = Path(sys.argv[1])
for run in ("train", "eval"):
    with np.load(out / run / "predictions.npz", allow_pickle=False) as saved:
        for key in sorted(saved.files):
            array = np.ascontiguousarray(saved[key])
            print(f"{run} {key} {array.dtype.str} {list(array.shape)} {hashlib.sha256(array.tobytes()).hexdigest()}")
for run in ("train", "eval"):
    metrics = json.loads((out / run / "metrics.json").read_text())
    for split in ("val", "test"):
        if split in metrics:
            print(f"{run} {split}_acc {metrics[split]['acc']!r}")
PY
