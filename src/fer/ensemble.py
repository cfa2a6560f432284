"""Ensemble evaluation: ``python -m fer.evaluate``'s sibling for several models.

``python -m fer.ensemble 'ckpt_paths=[a.ckpt,b.ckpt,c.ckpt]' split=test tta=flip`` runs each
checkpoint (at the image size and crop it trained on, with ``tta``);
``python -m fer.ensemble 'run_dirs=[runA,runB,runC]' split=test`` scores the same from the
members' saved ``predictions.npz`` without running them (each with the test-time augmentation it
was scored with). Either way the members' calibrated probabilities (each with its own temperature)
are averaged, and ``metrics.json`` gets the ensemble's metrics with 95% intervals, each member's
accuracy, ``predictions.npz`` the ensemble's per-image output (the log of the averaged
probabilities), so that ``fer.compare`` takes an ensemble like any run, and
``plots/reliability_<split>.png`` its reliability diagram.

With ``split=train`` the ``predictions.npz`` is a teacher file for knowledge distillation
(``python -m fer.train data.teacher=DIR``, :mod:`fer.data.teacher`); one checkpoint alone makes
a single teacher's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from fer.cli import entry_point
from fer.factory import build_datamodule
from fer.plots import plot_reliability
from fer.run.hardware import autocast_for, resolve_precision
from fer.run.rundir import METRICS_FILE, read_metrics, run_metadata, save_config, write_json
from fer.scoring.predictions import PREDICTIONS_FILE, SplitPredictions, load_predictions, save_predictions, score_report
from fer.training.module import FERClassifier, eval_metrics, summarise

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model's outputs on the ensemble's split, where they came from, and its temperature."""

    source: str
    model: str
    outputs: SplitPredictions
    temperature: float


@torch.inference_mode()
def member_outputs(model: FERClassifier, cfg: DictConfig, device: torch.device, precision: str) -> SplitPredictions:
    """One checkpoint's logits on ``cfg.split``, with the split's image ids."""
    datamodule = build_datamodule(cfg, model.input_spec)
    datamodule.setup("test")
    model.to(device).eval()
    logits, labels = [], []
    for images, targets in datamodule.eval_dataloader(cfg.split):
        with autocast_for(precision, device):
            logits.append(model.predict_logits(images.to(device), cfg.tta).float().cpu())
        labels.append(targets)
    ids = datamodule.split_data(cfg.split).names
    return SplitPredictions(ids, torch.cat(labels).numpy(), torch.cat(logits).numpy(), cfg.tta)


def from_checkpoints(paths: list[str], cfg: DictConfig) -> list[Member]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto", device.type)
    members = []
    for path in paths:
        model = FERClassifier.load_from_checkpoint(path, map_location="cpu")
        members.append(Member(str(Path(path).resolve()), model.hparams.net["name"], member_outputs(model, cfg, device, precision), model.temperature))
    return members


def from_run_dirs(run_dirs: list[str], split: str) -> list[Member]:
    members = []
    for run_dir in run_dirs:
        splits, temperature = load_predictions(run_dir)
        if split not in splits:
            raise ValueError(f"{run_dir} has saved predictions for {', '.join(sorted(splits))}, not split={split!r}.")
        model = read_metrics(run_dir).get("model", "?") if (Path(run_dir) / METRICS_FILE).is_file() else "?"
        members.append(Member(str(Path(run_dir).resolve()), model, splits[split], temperature))
    return members


def average(members: list[Member]) -> SplitPredictions:
    """The members' calibrated probabilities averaged, image by image (aligned by image id)."""
    reference = members[0].outputs
    total = np.zeros_like(reference.logits, dtype=np.float64)
    for member in members:
        try:
            outputs = member.outputs.aligned_to(reference.ids)
        except ValueError as error:
            raise ValueError(f"{member.source} was scored on different images than {members[0].source}: check data.root and split. {error}") from None
        if not np.array_equal(outputs.labels, reference.labels):
            raise ValueError(f"{member.source} labels the images differently from {members[0].source}: not the same data.")
        total += outputs.probabilities(member.temperature)
    probabilities = total / len(members)
    tta = ",".join(dict.fromkeys(m.outputs.tta for m in members))
    return SplitPredictions(reference.ids, reference.labels, np.log(np.maximum(probabilities, 1e-12)), tta)


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    paths, run_dirs = list(cfg.get("ckpt_paths") or []), list(cfg.get("run_dirs") or [])
    if bool(paths) == bool(run_dirs):
        raise ValueError("Pass either ckpt_paths=[A,B,...] (run the checkpoints) or run_dirs=[A,B,...] (their saved predictions.npz), not both or neither.")
    sources = [str(p) for p in paths or run_dirs]
    save_config(cfg, output_dir)
    members = from_checkpoints(sources, cfg) if paths else from_run_dirs(sources, cfg.split)
    combined = average(members)
    for member in members:
        log.info("%s: %s accuracy %.4f", member.source, cfg.split, member.outputs.accuracy)
    probabilities, labels = torch.from_numpy(np.exp(combined.logits)), torch.from_numpy(combined.labels)
    metrics = {
        "task": "ensemble",
        "protocol": cfg.data.split,
        "split": cfg.split,
        "tta": combined.tta,
        "scored_from": "checkpoints" if paths else "saved predictions",
        "members": [
            {"source": m.source, "model": m.model, "temperature": m.temperature, "acc": m.outputs.accuracy}
            for m in members
        ],
        cfg.split: {**summarise(eval_metrics()(probabilities, labels)), **score_report(combined)},
        "predictions": PREDICTIONS_FILE,
        "wall_seconds": round(time.time() - started, 1),
        **run_metadata(),
    }
    save_predictions(output_dir, {cfg.split: combined})
    write_json(output_dir / METRICS_FILE, metrics)
    plot_reliability(output_dir)
    log.info("Ensemble of %d: %s accuracy %.4f; wrote %s", len(members), cfg.split, metrics[cfg.split]["acc"], output_dir / METRICS_FILE)
    return metrics


main = entry_point("ensemble", "ensemble", ensemble)


if __name__ == "__main__":
    main()
