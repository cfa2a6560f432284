"""What ``GET /model`` says about the model being served: enough for a client to read the
probabilities (class order, calibration) and to know which weights answered."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fer.classes import CLASSES
from fer.training.module import FERClassifier


def model_info(model: FERClassifier, ckpt_path: str | None) -> dict[str, Any]:
    """The card of a checkpoint's model; ``ckpt_path=None`` is the packaged model (the same fields for now)."""
    return {
        "checkpoint": str(Path(ckpt_path).resolve()) if ckpt_path is not None else "packaged",
        "model": model.hparams["net"]["name"],
        "classes": list(CLASSES),
        "input_spec": asdict(model.input_spec),
        "tta": model.tta,
        "temperature": model.temperature,
    }
