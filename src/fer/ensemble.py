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

``select_on=calibration`` (run_dirs only) chooses the members instead of averaging them all:
greedy forward selection with replacement (Caruana et al., 2004) on the log loss of the averaged
probabilities on that saved split (``calibration``: PublicTest with the augmentation of the
members' test scores; or ``val``), so a member can count twice and a weak one not at all. The
split it selects on is never the one it reports, and never ``test``: PrivateTest is not tuned on.

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


# the saved splits that hold PublicTest: val (as validated in training) and calibration (with the test-time augmentation)
PUBLICTEST_SPLITS = {"val", "calibration"}


@dataclass
class Member:
    """One model's outputs on the ensemble's split, where they came from, and its temperature."""

    source: str
    model: str
    outputs: SplitPredictions
    temperature: float
    selection: SplitPredictions | None = None


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


def from_run_dirs(run_dirs: list[str], split: str, select_on: str | None = None) -> list[Member]:
    members = []
    for run_dir in run_dirs:
        splits, temperature = load_predictions(run_dir)
        for needed in filter(None, (split, select_on)):
            if needed not in splits:
                raise ValueError(f"{run_dir} has saved predictions for {', '.join(sorted(splits))}, not split={needed!r}.")
        model = read_metrics(run_dir).get("model", "?") if (Path(run_dir) / METRICS_FILE).is_file() else "?"
        members.append(Member(str(Path(run_dir).resolve()), model, splits[split], temperature, splits.get(select_on)))
    return members


def aligned_probabilities(member: Member, outputs: SplitPredictions, reference: SplitPredictions, first: str) -> np.ndarray:
    """``member``'s calibrated probabilities on ``outputs``, in ``reference``'s image order."""
    try:
        outputs = outputs.aligned_to(reference.ids)
    except ValueError as error:
        raise ValueError(f"{member.source} was scored on different images than {first}: check data.root and split. {error}") from None
    if not np.array_equal(outputs.labels, reference.labels):
        raise ValueError(f"{member.source} labels the images differently from {first}: not the same data.")
    return outputs.probabilities(member.temperature)


def average(members: list[Member], weights: list[int] | None = None) -> SplitPredictions:
    """The members' calibrated probabilities averaged, image by image (aligned by image id), each
    counted ``weights[i]`` times (once by default; members with weight 0 are left out)."""
    chosen = [(m, w) for m, w in zip(members, weights or [1] * len(members)) if w]
    reference = chosen[0][0].outputs
    total = sum(w * aligned_probabilities(m, m.outputs, reference, chosen[0][0].source) for m, w in chosen)
    probabilities = total / sum(w for _, w in chosen)
    tta = ",".join(dict.fromkeys(m.outputs.tta for m, _ in chosen))
    return SplitPredictions(reference.ids, reference.labels, np.log(np.maximum(probabilities, 1e-12)), tta)


def forward_select(members: list[Member], max_rounds: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Greedy forward selection with replacement on the members' ``selection`` split: each round
    adds the member whose extra vote lowers the log loss of the averaged probabilities most, until
    none lowers it or ``max_rounds`` votes are cast. Returns each member's votes and the rounds."""
    reference = members[0].selection
    probabilities = [aligned_probabilities(m, m.selection, reference, members[0].source) for m in members]
    rows, labels = np.arange(len(reference.labels)), reference.labels
    votes, total, rounds, best = [0] * len(members), np.zeros_like(probabilities[0]), [], np.inf
    for count in range(1, max_rounds + 1):
        losses = [float(-np.log(np.maximum((total + p)[rows, labels] / count, 1e-300)).mean()) for p in probabilities]
        pick = int(np.argmin(losses))
        if losses[pick] >= best:
            break
        best, total = losses[pick], total + probabilities[pick]
        votes[pick] += 1
        rounds.append({"added": members[pick].source, "log_loss": round(best, 5), "acc": round(float((total.argmax(1) == labels).mean()), 5)})
    return votes, rounds


def checked_selection(cfg: DictConfig, from_checkpoints: bool) -> str | None:
    """``cfg.select_on``, refused where it would tune on the reported split or on PrivateTest."""
    select_on = cfg.get("select_on")
    if not select_on:
        return None
    if from_checkpoints:
        raise ValueError("select_on chooses members from their saved predictions: pass run_dirs=[A,B,...] instead of ckpt_paths.")
    on_reported_images = select_on == cfg.split or {select_on, cfg.split} <= PUBLICTEST_SPLITS
    if select_on == "test" or on_reported_images:
        raise ValueError(
            f"select_on={select_on!r} would choose the members on the images split={cfg.split!r} reports, or on PrivateTest (test), "
            "which is tuning on them: select on calibration or val and report split=test."
        )
    if int(cfg.select_rounds) < 1:
        raise ValueError(f"select_rounds={cfg.select_rounds} must be at least 1: the number of votes the selection may cast.")
    return str(select_on)


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    paths, run_dirs = list(cfg.get("ckpt_paths") or []), list(cfg.get("run_dirs") or [])
    if bool(paths) == bool(run_dirs):
        raise ValueError("Pass either ckpt_paths=[A,B,...] (run the checkpoints) or run_dirs=[A,B,...] (their saved predictions.npz), not both or neither.")
    sources = [str(p) for p in paths or run_dirs]
    select_on = checked_selection(cfg, bool(paths))
    save_config(cfg, output_dir)
    members = from_checkpoints(sources, cfg) if paths else from_run_dirs(sources, cfg.split, select_on)
    weights, selection = [1] * len(members), None
    if select_on:
        weights, rounds = forward_select(members, int(cfg.select_rounds))
        selection = {"split": select_on, "criterion": "log loss of the averaged calibrated probabilities", "rounds": rounds}
    combined = average(members, weights)
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
            {"source": m.source, "model": m.model, "temperature": m.temperature, "acc": m.outputs.accuracy, "weight": w}
            for m, w in zip(members, weights)
        ],
        "selection": selection,
        cfg.split: {**summarise(eval_metrics()(probabilities, labels)), **score_report(combined)},
        "predictions": PREDICTIONS_FILE,
        "wall_seconds": round(time.time() - started, 1),
        **run_metadata(),
    }
    save_predictions(output_dir, {cfg.split: combined})
    write_json(output_dir / METRICS_FILE, metrics)
    plot_reliability(output_dir)
    if selection:
        log.info("Selected on %s: %s", select_on, ", ".join(f"{m.source} x{w}" for m, w in zip(members, weights) if w))
    log.info("Ensemble of %d: %s accuracy %.4f; wrote %s", len(members), cfg.split, metrics[cfg.split]["acc"], output_dir / METRICS_FILE)
    return metrics


main = entry_point("ensemble", "ensemble", ensemble)


if __name__ == "__main__":
    main()
