"""Build the DataModule, the LightningModule and the Trainer from a composed Hydra config.

Entry points (train, evaluate, bench) share these so that a config means the same thing everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fer.classes import CLASSES
from fer.data import FaceDataModule
from fer.input_spec import InputSpec
from fer.run.callbacks import FiniteWeights, LogState, OneCycleLength, RNGState
from fer.run.checkpoints import AtomicCheckpointIO
from fer.run.hardware import check_accelerator, resolve_precision, uses_gpu
from fer.training.module import FERClassifier

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig, input_spec: InputSpec | None = None) -> FaceDataModule:
    """``cfg.data``'s DataModule. Evaluation passes its checkpoint's ``input_spec``, which then
    decides ``data.image_size``, ``crop_size`` and ``channels``; training takes them from ``cfg.data``."""
    overrides = input_spec.as_dict() if input_spec is not None else {}
    return instantiate(cfg.data, **overrides, _convert_="all")


def balanced_class_weights(counts: list[int]) -> list[float]:
    """Inverse-frequency weights (sklearn's 'balanced'): every class carries the same total weight,
    and the average weight per training image is 1."""
    total = sum(counts)
    return [total / (len(counts) * max(count, 1)) for count in counts]


def build_module(cfg: DictConfig, train_class_counts: list[int] | None = None) -> FERClassifier:
    """The LightningModule for ``cfg.model`` with plain (checkpoint-safe) hyperparameters:
    ``cfg.module`` holds :class:`FERClassifier`'s arguments, and ``cfg.data`` its
    :class:`~fer.input_spec.InputSpec`. It names no ``_target_``: every entry point reloads a
    FERClassifier from checkpoints, so no other class could take its place.

    ``module.class_weights: balanced`` is turned into numbers from ``train_class_counts``.
    """
    module_cfg: dict[str, Any] = OmegaConf.to_container(cfg.module, resolve=True)
    weights = module_cfg.get("class_weights")
    if weights == "balanced":
        if train_class_counts is None:
            raise ValueError("module.class_weights=balanced needs the train split's class counts: pass train_class_counts.")
        module_cfg["class_weights"] = balanced_class_weights(train_class_counts)
        log.info("Balanced class weights: %s", dict(zip(CLASSES, module_cfg["class_weights"])))
    elif isinstance(weights, str):
        raise ValueError(f"module.class_weights={weights!r} must be null, 'balanced' or a list of {len(CLASSES)} numbers.")
    net = OmegaConf.to_container(cfg.model, resolve=True)
    spec = InputSpec.from_data_config(cfg.data)
    check_cache_frozen(net, cfg.data, spec, module_cfg)
    return FERClassifier(net=net, input_spec=spec.as_dict(), **module_cfg)


def check_cache_frozen(net: dict[str, Any], data: DictConfig, spec: InputSpec, module_cfg: dict[str, Any]) -> None:
    """``model.cache_frozen`` pays only when every epoch feeds the same images: refuse the settings
    under which no image recurs, rather than fill memory for nothing."""
    if not net.get("cache_frozen"):
        return
    changing = [
        name
        for name, on in (
            ("data.augment=true", bool(data.get("augment"))),
            (f"data.crop_size={spec.crop_size} < data.image_size={spec.image_size}", spec.crop_size < spec.image_size),
            ("module.mixup_alpha > 0", module_cfg.get("mixup_alpha", 0) > 0),
            ("module.cutmix_alpha > 0", module_cfg.get("cutmix_alpha", 0) > 0),
        )
        if on
    ]
    if changing:
        raise ValueError(
            f"model.cache_frozen=true needs the same training images every epoch, but {', '.join(changing)} changes them. "
            "Set model.cache_frozen=false, or switch those off."
        )


def build_trainer(cfg: DictConfig, **overrides: Any) -> pl.Trainer:
    """The Trainer with ``precision: auto`` resolved for this machine, callbacks and loggers, plus
    what every fit needs to survive a crash: RNG and log state in checkpoints (:mod:`fer.run.callbacks`)
    and atomic checkpoint writes (:mod:`fer.run.checkpoints`)."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_accelerator(trainer_cfg.get("accelerator", "auto"))
    trainer_cfg["precision"] = resolve_precision(trainer_cfg.get("precision", "auto"), trainer_cfg.get("accelerator", "auto"))
    if uses_gpu(trainer_cfg.get("accelerator", "auto")):
        torch.set_float32_matmul_precision("high")
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # OneCycleLength first: a resume it stops leaves the CSV log untrimmed
    callbacks += [OneCycleLength(), RNGState(), LogState(), FiniteWeights()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer_cfg.update(overrides)
    trainer_cfg.setdefault("callbacks", callbacks)
    trainer_cfg.setdefault("logger", loggers or False)
    trainer_cfg.setdefault("plugins", [AtomicCheckpointIO()])
    log.info("Trainer: accelerator=%s precision=%s", trainer_cfg.get("accelerator"), trainer_cfg["precision"])
    return instantiate(trainer_cfg, _convert_="all")
