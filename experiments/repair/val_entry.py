"""Rewrite the ``val`` entry of runs made at commit d312d44 from their own ``predictions.npz``.

At d312d44, when ``module.val_tta`` differed from ``module.tta`` (``speedrun_cpu``: none vs
tencrop), fer.train's calibration pass validated again with the test-time augmentation and its
scores overwrote the ``val`` entry of ``metrics.json`` (fixed in 43d6b1c). The run saved the right
per-image logits (``predictions.npz``'s ``val`` split, scored with ``val_tta`` as during fit), so
the entry is recomputed from them with the code the fixed version uses; the file records that.

Usage: ``python experiments/repair/val_entry.py RUN_DIR [RUN_DIR ...]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from fer.module import eval_metrics, summarise
from fer.predictions import load_predictions, score_report
from fer.rundir import read_metrics, write_json

FIXED_IN = "43d6b1c"


def repair(run_dir: Path) -> None:
    metrics = read_metrics(run_dir)
    if metrics.get("commit") != "d312d44" or "val_rescored" in metrics:
        raise SystemExit(f"{run_dir}: not an unrepaired run of commit d312d44 (commit {metrics.get('commit')}).")
    splits, temperature = load_predictions(run_dir)
    if "calibration" not in splits:
        raise SystemExit(f"{run_dir}: val_tta equalled tta, so its val entry was right already.")
    val = splits["val"]
    module = yaml.safe_load((run_dir / "config.yaml").read_text())["module"]
    if module.get("class_weights"):
        raise SystemExit(f"{run_dir}: class-weighted loss; this script recomputes the unweighted one only.")
    logits, labels = torch.from_numpy(val.logits), torch.from_numpy(val.labels)
    loss = F.cross_entropy(logits, labels, label_smoothing=module["label_smoothing"]).item()
    metrics["val"] = {"loss": loss, **summarise(eval_metrics()(logits, labels)), **score_report(val, temperature)}
    metrics["val_rescored"] = (
        f"recomputed from predictions.npz (val, tta={val.tta}) by experiments/repair/val_entry.py: at d312d44 the "
        f"calibration pass (tta={splits['calibration'].tta}) overwrote this entry; fixed in {FIXED_IN}"
    )
    write_json(run_dir / "metrics.json", metrics)
    print(f"{run_dir}: val acc {metrics['val']['acc']:.4f} (tta={val.tta}); the ten-crop pass had {metrics['calibration']['acc']:.4f}")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        repair(Path(path))
