#!/usr/bin/env bash
# Issue 5's GPU rows in one command on one GPU, sized to a time budget:
#   1. warm-up: one batch of fit/validate/test (fast_dev_run) decodes the data into the cache and
#      fills the compiler's cache, and fails in a minute if anything is wrong on this machine;
#   2. probe: PROBE_EPOCHS epochs per seed, all seeds side by side on the one GPU, as in step 3,
#      measure the seconds an epoch takes (time/epoch_s, the first epoch left out) and the
#      overhead around the epochs (start, compilation, final validation);
#   3. the runs: one per seed, side by side, for as many epochs as RUN_BUDGET_S holds (at most
#      the experiment's trainer.max_epochs), so the one-cycle schedule ends where the run ends;
#   4. the ensemble of the runs' best checkpoints, on PublicTest (split=val) and PrivateTest.
# Checkpoints are chosen on PublicTest; PrivateTest is scored once, at the end of each run.
#
# Usage: experiments/gpu/run_sota.sh OUT_DIR [hydra overrides for every run ...]
# Environment: FER2013_ROOT (the data), EXPERIMENT (sota_vgg), SEEDS ("42 1 2"),
#   RUN_BUDGET_S (420: wall seconds of each run in step 3), PROBE_EPOCHS (3), PYTHON (python3).
set -euo pipefail

OUT=${1:?usage: run_sota.sh OUT_DIR [hydra overrides ...]}
shift
EXPERIMENT=${EXPERIMENT:-sota_vgg}
SEEDS=${SEEDS:-42 1 2}
RUN_BUDGET_S=${RUN_BUDGET_S:-420}
PROBE_EPOCHS=${PROBE_EPOCHS:-3}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor_cache}

train() {  # train RUN_DIR [overrides ...]: one fer.train run, its output in RUN_DIR/train.out
    local dir=$1
    shift
    mkdir -p "$dir"
    "$PY" -m fer.train "experiment=$EXPERIMENT" "hydra.run.dir=$dir" callbacks.progress_bar.refresh_rate=0 \
        "$@" >"$dir/train.out" 2>&1
}

side_by_side() {  # side_by_side PHASE_DIR [overrides ...]: one run per seed at once; fail if any fails
    local phase=$1 seed failed=0
    shift
    local pids=()
    for seed in $SEEDS; do
        train "$phase/seed$seed" "seed=$seed" "$@" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    if [ "$failed" = 1 ]; then
        tail -n 30 "$phase"/seed*/train.out
        echo "A run in $phase failed: its train.out is above." >&2
        exit 1
    fi
}

started=$(date +%s)
echo "[$(date -u +%T)] warm-up"
train "$OUT/warmup" trainer.fast_dev_run=true "$@" || { tail -n 40 "$OUT/warmup/train.out"; exit 1; }

echo "[$(date -u +%T)] probe: $PROBE_EPOCHS epochs, seeds $SEEDS side by side"
side_by_side "$OUT/probe" "trainer.max_epochs=$PROBE_EPOCHS" test=false "$@"

# the warm-up's resolved config is the experiment's with these overrides (fast_dev_run changes no setting)
read -r cap tta < <("$PY" -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); print(c["trainer"]["max_epochs"], c["module"]["tta"])' \
    "$OUT/warmup/config.yaml")
[ -n "$tta" ] || { echo "Could not read trainer.max_epochs and module.tta from $OUT/warmup/config.yaml." >&2; exit 1; }
epochs=$("$PY" - "$OUT" "$RUN_BUDGET_S" "$cap" <<'EOF'
"""Epochs that fit the budget: (budget - overhead) / epoch time, both measured by the probe."""
import csv, json, statistics, sys
from pathlib import Path

out, budget, cap = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
epoch_s, overhead_s = [], []
for run in sorted((out / "probe").glob("seed*")):
    with open(run / "csv" / "metrics.csv", newline="") as handle:
        times = [float(row["time/epoch_s"]) for row in csv.DictReader(handle) if row.get("time/epoch_s")]
    epoch_s += times[1:]  # the first epoch compiles
    overhead_s.append(json.loads((run / "metrics.json").read_text())["wall_seconds"] - sum(times[1:]))
plan = {"epoch_s": statistics.median(epoch_s), "overhead_s": max(overhead_s), "run_budget_s": budget, "cap": cap}
plan["epochs"] = max(1, min(cap, int((budget - plan["overhead_s"]) / plan["epoch_s"])))
(out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
print(plan["epochs"])
EOF
)
echo "[$(date -u +%T)] plan: $(tr -d '\n ' <"$OUT/plan.json")"

echo "[$(date -u +%T)] runs: $epochs epochs, seeds $SEEDS side by side"
side_by_side "$OUT/runs" "trainer.max_epochs=$epochs" "$@"

checkpoints=$("$PY" - "$OUT/runs" <<'EOF'
import json, sys
from pathlib import Path

print(",".join(json.loads((run / "metrics.json").read_text())["best_checkpoint"] for run in sorted(Path(sys.argv[1]).glob("seed*"))))
EOF
)
ensemble() {  # ensemble SPLIT: the runs' best checkpoints, softmax probabilities averaged, scored on SPLIT
    "$PY" -m fer.ensemble "ckpt_paths=[$checkpoints]" "split=$1" "tta=$tta" "hydra.run.dir=$OUT/ensemble_$1" \
        >"$OUT/ensemble_$1.out" 2>&1 || { tail -n 30 "$OUT/ensemble_$1.out"; return 1; }
}
echo "[$(date -u +%T)] ensemble on PublicTest and PrivateTest side by side (tta=$tta)"
ensemble val &
val=$!
ensemble test &
test=$!
wait "$val" && wait "$test" || { echo "An ensemble failed: its output is above." >&2; exit 1; }

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

def score(scores):
    """Accuracy with its 95% bootstrap interval, and the ECE before -> after temperature scaling."""
    low, high = scores["ci95"]["acc"]
    ece = f", ECE {scores['ece']:.1%}" + (f" -> {scores['ece_calibrated']:.1%}" if "ece_calibrated" in scores else "")
    return f"{scores['acc']:.2%} (95% CI {low:.2%}-{high:.2%}{ece})"


out = Path(sys.argv[1])
for run in sorted((out / "runs").glob("seed*")):
    m = json.loads((run / "metrics.json").read_text())
    print(f"{run.name}: PrivateTest {score(m['test'])}, PublicTest {m['val']['acc']:.2%}, {m['epochs']} epochs, {m['wall_seconds']:.0f} s")
for split, name in (("val", "PublicTest"), ("test", "PrivateTest")):
    m = json.loads((out / f"ensemble_{split}" / "metrics.json").read_text())
    print(f"ensemble of {len(m['members'])}: {name} {score(m[split])}")
EOF
echo "[$(date -u +%T)] done in $(($(date +%s) - started)) s; copy $OUT/runs/* and $OUT/ensemble_* into experiments/runs/"
