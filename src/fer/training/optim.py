"""Optimizer and learning-rate schedule from the ``module.optimizer`` / ``module.scheduler``
configs: any ``torch.optim`` optimizer and scheduler by ``_target_``, with the lengths a schedule
needs (one-cycle's total steps, cosine's epochs) taken from the Trainer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class

# schedulers that step every optimizer step; the others step once per epoch
PER_STEP_SCHEDULERS = ("OneCycleLR",)


def build_optimizer(parameters: Iterable[torch.nn.Parameter], options: dict[str, Any]) -> torch.optim.Optimizer:
    """``{"_target_": "torch.optim.SGD", **kwargs}`` over the trainable ``parameters``."""
    options = dict(options)
    optimizer_class = get_class(options.pop("_target_"))
    if not issubclass(optimizer_class, torch.optim.Optimizer):
        raise ValueError(f"module.optimizer._target_={optimizer_class} is not a torch.optim optimizer.")
    return optimizer_class([p for p in parameters if p.requires_grad], **options)


def build_scheduler(optimizer: torch.optim.Optimizer, options: dict[str, Any], trainer: pl.Trainer) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry for ``{"_target_": "torch.optim.lr_scheduler.X", **kwargs}``.
    ``total_steps`` (OneCycleLR) and ``T_max`` (CosineAnnealingLR) default to the Trainer's run;
    ReduceLROnPlateau follows ``val/acc``."""
    options = dict(options)
    scheduler_class = get_class(options.pop("_target_"))
    name = scheduler_class.__name__
    if name == "OneCycleLR":
        options.setdefault("total_steps", int(trainer.estimated_stepping_batches))
        if options.get("pct_start", 0.3) * options["total_steps"] == 1:
            raise ValueError(
                "The one-cycle schedule warms up for pct_start x total_steps = 1 of its "
                f"{options['total_steps']} optimizer steps, where torch's OneCycleLR divides by zero. "
                "Change trainer.max_epochs, data.batch_size or module.scheduler.pct_start."
            )
    if name == "CosineAnnealingLR":
        options.setdefault("T_max", trainer.max_epochs)
    if name == "ReduceLROnPlateau":
        options.setdefault("mode", "max")
    interval = "step" if name in PER_STEP_SCHEDULERS else "epoch"
    return {"scheduler": scheduler_class(optimizer, **options), "interval": interval, "monitor": "val/acc"}
