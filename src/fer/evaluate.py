"""Evaluate a checkpoint: ``python -m fer.evaluate ckpt_path=PATH split=test``.

Writes ``metrics.json`` (the same per-split structure as training: 95% intervals, ECE before and
after the checkpoint's temperature), ``predictions.npz`` (per-image logits) and the reliability
diagram ``plots/reliability_<split>.png`` in the run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fer.cli import entry_point
from fer.data.folder import FolderDataModule
from fer.factory import build_datamodule, build_trainer
from fer.module import FERClassifier
from fer.plots import plot_reliability
from fer.predictions import PREDICTIONS_FILE, save_predictions
from fer.run.rundir import METRICS_FILE, run_metadata, save_config, write_json
from fer.scoring import split_outputs, with_report

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score one checkpoint on one split of the configured dataset."""
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    save_config(cfg, output_dir)
    model = FERClassifier.load_from_checkpoint(cfg.ckpt_path, map_location="cpu")
    model.use_tta(cfg.tta)
    data_cfg = OmegaConf.merge(cfg, {"data": model.input_spec})
    datamodule = build_datamodule(data_cfg)
    datamodule.setup("test")
    trainer = build_trainer(cfg, logger=False, callbacks=[])
    trainer.test(model, dataloaders=datamodule.eval_dataloader(cfg.split), verbose=False)
    predictions = split_outputs(model, datamodule, "test", cfg.split, model.tta)
    metrics = {
        "task": "evaluate",
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "model": model.hparams.net["name"],
        "protocol": cfg.data.get("split", "folder"),
        "split": cfg.split,
        "tta": model.tta,
        "temperature": model.temperature,
        cfg.split: with_report(model.results["test"], predictions, model.temperature),
        "predictions": PREDICTIONS_FILE,
        "wall_seconds": round(time.time() - started, 1),
        **run_metadata(),
    }
    if isinstance(datamodule, FolderDataModule):
        metrics.update(datamodule.report(model))
    save_predictions(output_dir, {cfg.split: predictions}, model.temperature)
    write_json(output_dir / METRICS_FILE, metrics)
    plot_reliability(output_dir)
    log.info("%s accuracy %.4f; wrote %s", cfg.split, metrics[cfg.split]["acc"], output_dir / METRICS_FILE)
    return metrics


main = entry_point("evaluate", "eval", evaluate)


if __name__ == "__main__":
    main()
