"""Per-image predictions a run keeps beside its ``metrics.json``: ``predictions.npz``.

For each scored split it holds the image ids (file names, or CSV rows), the labels and the logits
(float32, after the split's test-time augmentation), plus the temperature the run's calibration
fitted on its validation split. With them two models can be compared image by image
(:mod:`fer.compare`), ensembles scored without running their members again (``fer.ensemble
run_dirs=[...]``), and calibration refitted, all without the checkpoint or the dataset. Small:
a split of 3,589 images takes about 75 KB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer.classes import CLASSES
from fer.run.atomic import atomic_write
from fer.scoring.calibration import calibration_report, softmax
from fer.scoring.stats import bootstrap_intervals

PREDICTIONS_FILE = "predictions.npz"


@dataclass
class SplitPredictions:
    """One split's per-image outputs, in the order the loader gave the images."""

    ids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    tta: str

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids).astype(str)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.logits = np.asarray(self.logits, dtype=np.float32)
        if not (len(self.ids) == len(self.labels) == len(self.logits)) or self.logits.shape[1:] != (len(CLASSES),):
            raise ValueError(
                f"Predictions need one id, label and {len(CLASSES)} logits per image, got {len(self.ids)} ids, "
                f"{len(self.labels)} labels and logits of shape {self.logits.shape}."
            )

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())

    def probabilities(self, temperature: float = 1.0) -> np.ndarray:
        return softmax(self.logits, temperature)

    def aligned_to(self, ids: np.ndarray) -> SplitPredictions:
        """The same predictions in the order of ``ids`` (which must be exactly this split's images)."""
        ids = np.asarray(ids).astype(str)
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("These predictions name some image twice: their ids cannot align them with another model's.")
        position = {name: i for i, name in enumerate(self.ids)}
        missing = [name for name in ids if name not in position]
        if missing or len(ids) != len(self.ids):
            extra = sorted(set(self.ids) - set(ids))
            raise ValueError(
                f"The two sets of predictions are not on the same images: {len(missing)} ids only in one "
                f"(e.g. {missing[:3]}), {len(extra)} only in the other (e.g. {extra[:3]}). Score both on the same split of the same data."
            )
        order = np.array([position[name] for name in ids], dtype=np.int64)
        return SplitPredictions(self.ids[order], self.labels[order], self.logits[order], self.tta)


def score_report(predictions: SplitPredictions, temperature: float = 1.0) -> dict[str, Any]:
    """What ``metrics.json`` adds for a split with saved predictions: 95% intervals for accuracy
    (bootstrap and Wilson) and macro-F1 (bootstrap), and calibration before/after ``temperature``."""
    intervals = bootstrap_intervals(predictions.labels, predictions.predicted)
    return {"ci95": intervals, "images": len(predictions.labels), **calibration_report(predictions.logits, predictions.labels, temperature)}


def save_predictions(run_dir: str | os.PathLike, splits: dict[str, SplitPredictions], temperature: float = 1.0) -> Path:
    """Write ``predictions.npz`` atomically: ``<split>_ids``, ``<split>_labels``, ``<split>_logits``,
    ``<split>_tta`` per split, ``classes`` and ``temperature``."""
    path = Path(run_dir) / PREDICTIONS_FILE
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(CLASSES), "temperature": np.float64(temperature)}
    for split, outputs in splits.items():
        arrays.update({f"{split}_ids": outputs.ids, f"{split}_labels": outputs.labels, f"{split}_logits": outputs.logits})
        arrays[f"{split}_tta"] = np.asarray(outputs.tta)
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_predictions(run_dir_or_file: str | os.PathLike) -> tuple[dict[str, SplitPredictions], float]:
    """(splits, temperature) from a run directory's ``predictions.npz`` (or the file itself)."""
    path = Path(run_dir_or_file)
    path = path / PREDICTIONS_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"No {PREDICTIONS_FILE} at {path}: runs made before per-image predictions were saved have none; "
            "re-score the checkpoint with python -m fer.evaluate ckpt_path=... split=... to make one."
        )
    with np.load(path, allow_pickle=False) as saved:
        if list(saved["classes"]) != list(CLASSES):
            raise ValueError(f"{path} uses the classes {list(saved['classes'])}, not fer's {list(CLASSES)}.")
        names = sorted({key[: -len("_logits")] for key in saved.files if key.endswith("_logits")})
        splits = {
            name: SplitPredictions(saved[f"{name}_ids"], saved[f"{name}_labels"], saved[f"{name}_logits"], str(saved[f"{name}_tta"]))
            for name in names
        }
        return splits, float(saved["temperature"])
