"""What ``GET /model`` says about the model being served: enough for a client to read the
probabilities (class order, calibration) and to know which weights answered."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fer import packaged
from fer.classes import CLASSES
from fer.training.module import FERClassifier


def model_info(model: FERClassifier, ckpt_path: str | None) -> dict[str, Any]:
    """The card of a checkpoint's model; for the packaged model (``ckpt_path=None``) the same fields
    plus its whole model card under ``card`` (:func:`fer.packaged.card`)."""
    if ckpt_path is None:
        return {**_fields(model, "packaged"), "card": packaged.card()}
    return _fields(model, str(Path(ckpt_path).resolve()))


def _fields(model: FERClassifier, checkpoint: str) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint,
        "model": model.hparams["net"]["name"],
        "classes": list(CLASSES),
        "input_spec": asdict(model.input_spec),
        "tta": model.tta,
        "precision": model.inference_precision,
        "temperature": model.temperature,
    }
