"""Throughput benchmark: ``python -m fer.bench model=vgg3`` (same overrides as training).

In one process it measures, for the configured model, batch size, precision and memory format:

1. ``limit``: the bare model, a plain PyTorch train-step loop on in-memory tensors;
2. ``pipeline``: the project's full training pipeline, ``Trainer.fit`` on real FER-2013 with
   augmentation and a validation pass each epoch (train images / train-epoch time);
3. ``predict``: batched inference throughput and the single-image latency of ``predict_logits``;

prints images/second for each and the ratio pipeline/limit, and ends with one JSON line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from fer.bench_apply import bench_apply
from fer.cli import entry_point
from fer.factory import build_datamodule, build_module, build_trainer
from fer.run.hardware import autocast_for
from fer.run.rundir import run_metadata, write_json
from fer.training.module import FERClassifier

log = logging.getLogger(__name__)


class TrainTimer(pl.Callback):
    """Wall time of training batches, data loading and augmentation included, validation excluded
    (Lightning runs validation inside the training epoch)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.batches: list[int] = []
        self._mark = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(0.0)
        self.batches.append(0)
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        self.seconds[-1] += now - self._mark
        self.batches[-1] += 1
        self._mark = now


def bare_limit(module: FERClassifier, images: torch.Tensor, labels: torch.Tensor, precision: str, steps: int, warmup: int) -> float:
    """Images/s of a plain train-step loop (same net, loss, precision and memory format)."""
    module.train()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step() -> None:
        train_step(module, optimizer, images, labels, precision)

    return images.shape[0] / _seconds_per_call(step, steps, warmup, images.device)


def train_step(module: FERClassifier, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, precision: str) -> None:
    """One plain training step: forward under the precision's autocast, loss, backward, update."""
    with autocast_for(precision, images.device):
        logits = module(images)
    loss = module.loss(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.inference_mode()
def inference(module: FERClassifier, images: torch.Tensor, precision: str, repeats: int) -> tuple[float, float]:
    """(batched images/s, single-image milliseconds) of the eval path with the configured TTA."""
    module.eval()

    def predict(x: torch.Tensor) -> None:
        with autocast_for(precision, x.device):
            module.predict_logits(x)

    batch_seconds = _seconds_per_call(lambda: predict(images), max(3, repeats // 20), 1, images.device)
    single_seconds = _seconds_per_call(lambda: predict(images[:1]), repeats, 3, images.device)
    return images.shape[0] / batch_seconds, 1000 * single_seconds


def _seconds_per_call(fn: Callable[[], None], count: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(count):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / count


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the three measurements side by side and return them (also written as bench.json);
    with ``bench.apply.enabled`` the applied model's photos/s and video frames/s instead (:mod:`fer.bench_apply`)."""
    metadata = run_metadata()
    if cfg.bench.apply.enabled:
        result = {**bench_apply(cfg), **metadata}
        write_json(Path(cfg.paths.output_dir) / "bench.json", result)
        print(json.dumps(result))
        return result
    pl.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    data_seconds = time.perf_counter() - started

    timer = TrainTimer()
    trainer = build_trainer(
        cfg,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=cfg.bench.epochs,
        limit_train_batches=cfg.bench.train_batches,
        limit_val_batches=cfg.bench.val_batches,
        num_sanity_val_steps=0,
    )
    precision = str(trainer.precision)
    module = build_module(cfg, datamodule.class_counts("train"))
    device = trainer.strategy.root_device

    loader = datamodule.train_dataloader()
    images, labels = next(iter(loader))
    if datamodule.batch_augment is not None:
        images = datamodule.batch_augment(images)
    images, labels = images.to(device), labels.to(device)
    module.to(device)
    limit = bare_limit(module, images, labels, precision, cfg.bench.steps, cfg.bench.warmup)

    trainer.fit(module, datamodule=datamodule)
    timed = slice(1, None) if len(timer.seconds) > 1 else slice(None)
    seconds = sum(timer.seconds[timed])
    pipeline = sum(timer.batches[timed]) * datamodule.batch_size / seconds

    module.to(device)
    eval_images = next(iter(datamodule.val_dataloader()))[0].to(device)
    batch_rate, single_ms = inference(module, eval_images, precision, cfg.bench.predict_repeats)
    result = {
        "model": cfg.model.name,
        "config_model": cfg.bench.label,
        "batch_size": datamodule.batch_size,
        "precision": precision,
        "channels_last": cfg.module.channels_last,
        "augment": bool(cfg.data.augment),
        "augment_on": cfg.data.augment_on,
        "num_workers": datamodule.num_workers,
        "data_setup_s": round(data_seconds, 2),
        "limit_img_s": round(limit, 1),
        "pipeline_img_s": round(pipeline, 1),
        "ratio": round(pipeline / limit, 3),
        "predict_batch_img_s": round(batch_rate, 1),
        "predict_ms": round(single_ms, 2),
        **metadata,
    }
    print(
        f"\n{cfg.bench.label}: limit {limit:.0f} img/s | pipeline {pipeline:.0f} img/s (ratio {pipeline / limit:.2f}) | "
        f"predict {batch_rate:.0f} img/s batched, {single_ms:.2f} ms single | data setup {data_seconds:.2f} s"
    )
    write_json(Path(cfg.paths.output_dir) / "bench.json", result)
    print(json.dumps(result))
    return result


main = entry_point("bench", "bench", bench)


if __name__ == "__main__":
    main()
