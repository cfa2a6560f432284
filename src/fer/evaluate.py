"""Evaluate a checkpoint: ``python -m fer.evaluate ckpt_path=PATH split=test``.

Writes ``metrics.json`` (the same per-split structure as training: 95% intervals, ECE before and
after the checkpoint's temperature), ``predictions.npz`` (per-image logits) and the reliability
diagram ``plots/reliability_<split>.png`` in the run directory.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fer.classes import CLASSES
from fer.cli import entry_point
from fer.data.base import FaceDataModule
from fer.data.folder import FolderDataModule
from fer.factory import build_datamodule, build_trainer
from fer.inference import predict
from fer.plots import plot_reliability
from fer.run.rundir import METRICS_FILE, run_metadata, save_config, write_json
from fer.scoring.outputs import split_outputs, split_results
from fer.scoring.predictions import PREDICTIONS_FILE, SplitPredictions, save_predictions
from fer.training.module import FERClassifier

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score one checkpoint on one split of the configured dataset."""
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    save_config(cfg, output_dir)
    model = FERClassifier.load_from_checkpoint(cfg.ckpt_path, map_location="cpu")
    model.use_tta(cfg.tta)
    results, predictions, datamodule = score(cfg, model, cfg.split)
    metrics = {
        "task": "evaluate",
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "model": model.hparams.net["name"],
        "protocol": cfg.data.get("split", "folder"),
        "split": cfg.split,
        "tta": model.tta,
        "temperature": model.temperature,
        cfg.split: results,
        "predictions": PREDICTIONS_FILE,
        "wall_seconds": round(time.time() - started, 1),
        **run_metadata(),
    }
    if isinstance(datamodule, FolderDataModule):
        metrics.update(folder_report(datamodule, model))
    save_predictions(output_dir, {cfg.split: predictions}, model.temperature)
    write_json(output_dir / METRICS_FILE, metrics)
    plot_reliability(output_dir)
    log.info("%s accuracy %.4f; wrote %s", cfg.split, metrics[cfg.split]["acc"], output_dir / METRICS_FILE)
    return metrics


def score(cfg: DictConfig, model: FERClassifier, split: str) -> tuple[dict[str, Any], SplitPredictions, FaceDataModule]:
    """``model``'s results on one split of the configured dataset (accuracy, intervals, per-class
    accuracy, calibration), its per-image predictions, and the datamodule it was scored on."""
    datamodule = build_datamodule(cfg, model.input_spec)
    datamodule.setup("test")
    trainer = build_trainer(cfg, logger=False, callbacks=[])
    logged = trainer.test(model, dataloaders=datamodule.eval_dataloader(split), verbose=False)
    predictions = split_outputs(model, datamodule, "test", split, model.tta)
    return split_results(logged, "test", predictions, model.temperature), predictions, datamodule


def folder_report(datamodule: FolderDataModule, model: FERClassifier) -> dict[str, Any]:
    """What ``metrics.json`` adds for a labelled folder: where its labels came from, its counts,
    and for each class the model does not know, its count and what the model predicted for it."""
    folder = datamodule.folder
    unknown = {}
    for name, images in folder.unknown.items():
        prediction = predict(model, images, batch_size=datamodule.eval_batch_size)
        counts = Counter(prediction.labels)
        unknown[name] = {
            "count": len(images),
            "predicted": {c: counts.get(c, 0) for c in CLASSES},
            "mean_probabilities": dict(zip(CLASSES, prediction.probabilities.mean(axis=0).round(4).tolist())),
            "examples": folder.unknown_names[name][:5],
        }
    return {"dataset": datamodule.describe(), "unknown_classes": unknown}


main = entry_point("evaluate", "eval", evaluate)


if __name__ == "__main__":
    main()
