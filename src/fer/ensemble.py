"""Ensemble evaluation: ``python -m fer.evaluate``'s sibling for several checkpoints.

``python -m fer.ensemble 'ckpt_paths=[a.ckpt,b.ckpt,c.ckpt]' split=test tta=flip`` averages the
members' softmax probabilities (each member sees the image size and crop it trained on) and writes
the ensemble's metrics, and each member's accuracy, to ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import MulticlassAccuracy

from fer.classes import NUM_CLASSES
from fer.factory import build_datamodule
from fer.hardware import autocast_for, resolve_precision
from fer.module import FERClassifier, eval_metrics, summarise
from fer.rundir import METRICS_FILE, run_metadata, save_config, write_json

log = logging.getLogger(__name__)


@torch.inference_mode()
def member_probabilities(
    model: FERClassifier, cfg: DictConfig, device: torch.device, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities [N, 7], labels [N]) of one checkpoint on ``cfg.split``."""
    datamodule = build_datamodule(OmegaConf.merge(cfg, {"data": model.input_spec}))
    datamodule.setup("test")
    model.to(device).eval()
    probabilities, labels = [], []
    for images, targets in datamodule.eval_dataloader(cfg.split):
        with autocast_for(precision, device):
            logits = model.predict_logits(images.to(device), cfg.tta)
        probabilities.append(logits.float().softmax(dim=1).cpu())
        labels.append(targets)
    return torch.cat(probabilities), torch.cat(labels)


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    save_config(cfg, output_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto", device.type)
    paths = [str(p) for p in cfg.ckpt_paths]
    if len(paths) < 2:
        raise ValueError(f"ckpt_paths needs two or more checkpoints for an ensemble, got {paths}.")
    total, labels, members = None, None, []
    for path in paths:
        model = FERClassifier.load_from_checkpoint(path, map_location="cpu")
        probabilities, member_labels = member_probabilities(model, cfg, device, precision)
        if labels is not None and not torch.equal(labels, member_labels):
            raise ValueError(f"{path} was scored on different images than {paths[0]}: check data.root and split.")
        labels = member_labels
        total = probabilities if total is None else total + probabilities
        accuracy = MulticlassAccuracy(NUM_CLASSES, average="micro")(probabilities, labels).item()
        members.append({"checkpoint": str(Path(path).resolve()), "model": model.hparams.net["name"], "acc": accuracy})
        log.info("%s: %s accuracy %.4f", path, cfg.split, accuracy)
    metrics = {
        "task": "ensemble",
        "protocol": cfg.data.split,
        "split": cfg.split,
        "tta": cfg.tta,
        "members": members,
        cfg.split: summarise(eval_metrics()(total / len(paths), labels)),
        "wall_seconds": round(time.time() - started, 1),
        **run_metadata(),
    }
    write_json(output_dir / METRICS_FILE, metrics)
    log.info("Ensemble of %d: %s accuracy %.4f; wrote %s", len(paths), cfg.split, metrics[cfg.split]["acc"], output_dir / METRICS_FILE)
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://fer.conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    ensemble(cfg)


if __name__ == "__main__":
    main()
