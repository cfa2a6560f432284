"""Callbacks that make a resumed run continue exactly, keep diverged weights off disk, average
the weights (:class:`EMAWeights`, ``callbacks=ema``) during fit only, and time each epoch
(:class:`EpochTimer`).

Lightning restores weights, optimizer, scheduler, loop counters and callback state, but not the
random number generators nor the CSV log, and it lets a restored one-cycle schedule run out
mid-epoch. One callback for each (:func:`fer.factory.build_trainer` adds them to every fit):
:class:`RNGState` saves the Python, numpy and torch (CPU and CUDA) RNG states in every checkpoint
and puts them back when ``fit`` restores one, so dropout masks and the DataLoader's shuffling
continue the same random stream; :class:`LogState` flushes the loggers at each checkpoint and
drops the rows a crashed run logged after it; :class:`OneCycleLength` stops a resume that would
train past the end of its OneCycleLR schedule before the first step.

Limits: one RNG state (rank 0's) is saved, which is exact because every DDP rank is seeded alike
and draws alike; DataLoader workers re-seed from the restored RNG, so ``persistent_workers`` (whose
workers outlive an epoch) continue a different stream after a resume than without one.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn
from torch.optim.lr_scheduler import OneCycleLR

from fer.run.loggers import CSVLogger

log = logging.getLogger(__name__)


def capture_rng() -> dict[str, Any]:
    """The global RNG states as plain data and tensors (loadable with ``weights_only=True``)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "python": [version, list(python_state), python_gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, python_state, python_gauss = state["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(Callback):
    """The RNG states in every checkpoint, restored when ``fit`` resumes from one."""

    @property
    def state_key(self) -> str:
        """The key of the state in a checkpoint's ``callbacks``: that of ``ResumeState``, which did
        this and the jobs of :class:`LogState` and :class:`OneCycleLength` before they were split,
        so checkpoints written before the split (``tests/data/old_vgg1.ckpt``) resume their RNGs."""
        return "ResumeState"

    def state_dict(self) -> dict[str, Any]:
        return {"rng": capture_rng()}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Runs when ``fit`` restores a checkpoint, before it creates the first DataLoader iterator,
        whose creation draws from the torch RNG exactly as the epoch start it replaces does."""
        if trainer.state.fn != TrainerFn.FITTING:
            return
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None:
            log.warning("The checkpoint holds no RNG state: the resumed run draws other random numbers than an uninterrupted one.")
            return
        restore_rng(state["rng"])
        log.info("Restored the Python, numpy and torch RNG states saved in the checkpoint")


class LogState(Callback):
    """The logs in step with the checkpoints: flushed at each checkpoint (and epoch start), and on
    resume the CSV rows logged after the checkpoint dropped (the resumed run logs them again)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            logger.save()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                dropped = logger.drop_rows_from(trainer.global_step)
                if dropped:
                    log.info("Dropped %d rows logged at step >= %d from %s", dropped, trainer.global_step, logger.log_dir)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.save()


class OneCycleLength(Callback):
    """A restored OneCycleLR keeps the length it was planned with; say so before it runs out
    (torch's "Tried to step N times" comes mid-epoch and does not say why)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, OneCycleLR) and scheduler.total_steps < trainer.estimated_stepping_batches:
                raise ValueError(
                    f"The checkpoint's OneCycleLR schedule ends after {scheduler.total_steps} steps, but this run "
                    f"trains {trainer.estimated_stepping_batches} (trainer.max_epochs or the data changed since). A one-cycle "
                    "schedule cannot be extended: continue with the trainer.max_epochs the run started with, or "
                    "train the checkpoint further under another scheduler (scheduler=cosine, step or none)."
                )


class FiniteWeights(Callback):
    """Refuse to write a checkpoint whose weights hold NaN or inf, so a diverged run never
    replaces its last good ``last.ckpt``."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = [
            name for name, value in checkpoint["state_dict"].items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if bad:
            raise FloatingPointError(
                f"Non-finite weights ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}) at epoch "
                f"{trainer.current_epoch}, step {trainer.global_step}: training diverged, so no checkpoint "
                "was written and the last good one is kept. Lower module.optimizer.lr, set "
                "trainer.gradient_clip_val, or check the data."
            )


class EMAWeights(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights, confined to ``fit``.

    Lightning's callback keeps its average after ``fit`` and still acts in ``validate`` and
    ``test``: it swaps that average in at every validation start, and when a checkpoint is loaded
    it replaces the checkpoint's weights (the average) by the raw ones saved beside them. So
    ``trainer.test(ckpt_path=best)`` after ``fit`` scored the raw weights and ``validate`` the
    last epoch's average, not the best checkpoint's. Outside ``fit`` this subclass does nothing,
    and every evaluation scores the averaged weights a checkpoint holds, as ``fer.evaluate`` and
    ``load_from_checkpoint`` do.
    """

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)


class EpochTimer(Callback):
    """Logs ``time/epoch_s``, the wall time of each training epoch with its validation, so that a
    learning curve reads against time and a short probe run tells how many epochs a budget holds."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("time/epoch_s", time.perf_counter() - self.started)
