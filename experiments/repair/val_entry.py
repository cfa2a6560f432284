"""Bring the ``metrics.json`` of runs made at commit d312d44 in line with the fixed code, from
their own ``predictions.npz``; each file lists what was recomputed under ``repaired``.

- ``val``: when ``module.val_tta`` differed from ``module.tta`` (``speedrun_cpu``: none vs
  tencrop), d312d44's calibration pass validated again with the test-time augmentation and its
  scores overwrote the ``val`` entry (fixed in 43d6b1c). The run saved the right per-image logits
  (``predictions.npz``'s ``val`` split, scored with ``val_tta`` as during fit), so the entry is
  recomputed from them.
- ``ci95`` of every split: d312d44 drew bootstrap resamples as image indices; from 0f5135d they
  are multinomial draws of the confusion table (the same distribution, other random draws), so
  that every interval is a function of the confusion matrix and ``fer.results`` prints the same
  numbers as ``metrics.json``.

Usage: ``python experiments/repair/val_entry.py RUN_DIR [RUN_DIR ...]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from fer.run.rundir import read_metrics, write_json
from fer.scoring.predictions import load_predictions, score_report
from fer.scoring.stats import bootstrap_intervals
from fer.training.module import eval_metrics, summarise


def repair(run_dir: Path) -> None:
    metrics = read_metrics(run_dir)
    if metrics.get("commit") != "d312d44":
        raise SystemExit(f"{run_dir}: not a run of commit d312d44 (commit {metrics.get('commit')}).")
    splits, temperature = load_predictions(run_dir)
    repaired = metrics.setdefault("repaired", {})
    if "val" not in repaired and "calibration" in splits:
        val = splits["val"]
        module = yaml.safe_load((run_dir / "config.yaml").read_text())["module"]
        if module.get("class_weights"):
            raise SystemExit(f"{run_dir}: class-weighted loss; this script recomputes the unweighted one only.")
        logits, labels = torch.from_numpy(val.logits), torch.from_numpy(val.labels)
        loss = F.cross_entropy(logits, labels, label_smoothing=module["label_smoothing"]).item()
        metrics["val"] = {"loss": loss, **summarise(eval_metrics()(logits, labels)), **score_report(val, temperature)}
        repaired["val"] = (
            f"recomputed from predictions.npz (val, tta={val.tta}): at d312d44 the calibration pass "
            f"(tta={splits['calibration'].tta}) overwrote this entry; fixed in 43d6b1c"
        )
        print(f"{run_dir}: val acc {metrics['val']['acc']:.4f} (tta={val.tta}); the ten-crop pass had {metrics['calibration']['acc']:.4f}")
    for split in ("val", "test"):
        if f"{split}_ci95" not in repaired and split in metrics and split in splits:
            metrics[split]["ci95"] = bootstrap_intervals(splits[split].labels, splits[split].predicted)
            repaired[f"{split}_ci95"] = "recomputed with the bootstrap of 0f5135d (multinomial draws of the confusion table)"
    write_json(run_dir / "metrics.json", metrics)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        repair(Path(path))
