"""Train a model: ``python -m fer.train model=vgg16 data.augment=true`` (any Hydra overrides).

Fits with checkpoints (best on val accuracy, and last), then scores the best checkpoint on val
(selection), fits its temperature on val (:mod:`fer.scoring.calibration`, stored in the checkpoint) and
scores test (reported once), and writes ``metrics.json`` (95% intervals, calibration) and
``predictions.npz`` (per-image logits, :mod:`fer.scoring.predictions`) beside the resolved
``config.yaml`` in the run directory. ``resume=true`` with the same overrides continues the run
from its last checkpoint (:mod:`fer.run.resume`); ``ckpt_path=PATH`` continues from a given one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from fer.cli import entry_point
from fer.factory import build_datamodule, build_module, build_trainer
from fer.plots import plot_run
from fer.run.checkpoints import check_fits, read_checkpoint, update_checkpoint
from fer.run.resume import checkpoint_to_resume
from fer.run.rundir import METRICS_FILE, record_start, run_metadata, save_config, write_json
from fer.scoring.outputs import calibrate, split_outputs, split_results
from fer.scoring.predictions import PREDICTIONS_FILE, save_predictions
from fer.training.module import CALIBRATION_KEY

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Seed, build data, model and trainer, fit, test the best checkpoint, write the metrics."""
    started = time.time()
    metadata = run_metadata()  # at the start: the commit the code runs from, not the one at the end
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = checkpoint_to_resume(output_dir, cfg.get("resume", False), cfg.get("ckpt_path"))
    if rank_zero_only.rank == 0:
        save_config(cfg, output_dir)
        record_start(output_dir, resumed_from=ckpt_path, metadata=metadata)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.class_counts("train"))
    if ckpt_path:
        resumed = read_checkpoint(ckpt_path)
        check_fits(ckpt_path, resumed, module)
        log.info("Continuing from %s (saved at epoch %s, step %s)", ckpt_path, resumed.get("epoch"), resumed.get("global_step"))
    trainer = build_trainer(cfg)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_seconds = time.time() - started
    checkpoint = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""

    metrics: dict[str, Any] = {
        "task": "train",
        "model": cfg.model.name,
        "protocol": cfg.data.split,
        "epochs": trainer.current_epoch,
        "best_checkpoint": checkpoint,
        "fit_seconds": round(fit_seconds, 1),
    }
    val_logged = trainer.validate(module, datamodule=datamodule, ckpt_path=checkpoint or None, verbose=False)
    splits = {"val": split_outputs(module, datamodule, "val", "val", module.val_tta)}
    metrics["calibration"], fitted_on = calibrate(trainer, module, datamodule, checkpoint or None, splits["val"])
    if fitted_on is not splits["val"]:
        splits["calibration"] = fitted_on
    if checkpoint and trainer.is_global_zero:
        update_checkpoint(checkpoint, **{CALIBRATION_KEY: metrics["calibration"]})
    trainer.strategy.barrier()  # every rank's test reloads the checkpoint, temperature included
    metrics["val"] = split_results(val_logged, "val", splits["val"], module.temperature)
    if cfg.get("test"):
        test_logged = trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint or None, verbose=False)
        splits["test"] = split_outputs(module, datamodule, "test", "test", module.tta)
        metrics["test"] = split_results(test_logged, "test", splits["test"], module.temperature)
    metrics["predictions"] = PREDICTIONS_FILE
    metrics["wall_seconds"] = round(time.time() - started, 1)
    metrics.update(metadata)
    if trainer.is_global_zero:
        save_predictions(output_dir, splits, module.temperature)
        write_json(output_dir / METRICS_FILE, metrics)
        log.info("Wrote %s (test acc %s)", output_dir / METRICS_FILE, metrics.get("test", {}).get("acc"))
        plot_run(output_dir)
    return metrics


def val_accuracy(cfg: DictConfig) -> float:
    """Train and return val accuracy, what a sweeper (e.g. Optuna) maximises."""
    return train(cfg)["val"]["acc"]


main = entry_point("train", "train", val_accuracy)


if __name__ == "__main__":
    main()
