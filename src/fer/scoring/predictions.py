"""Per-image predictions a run keeps beside its ``metrics.json``: ``predictions.npz``.

For each scored split it holds the image ids (file names, or CSV rows), the labels and the logits
(float32, after the split's test-time augmentation), plus the temperature the run's calibration
fitted on its validation split. With them two models can be compared image by image
(:mod:`fer.compare`), ensembles scored without running their members again (``fer.ensemble
run_dirs=[...]``), and calibration refitted, all without the checkpoint or the dataset. Small:
a split of 3,589 images takes about 75 KB. The file itself (its keys, reading, writing and the
checks of what it holds) is :mod:`fer.run.predictions_file`'s, which distillation reads too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer.run.predictions_file import (
    PREDICTIONS_FILE,
    PredictionsFileError,
    SavedSplit,
    check_split,
    predictions_path,
    read_predictions,
    write_predictions,
)
from fer.scoring.calibration import calibration_report, softmax
from fer.scoring.stats import bootstrap_intervals


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
        check_split(self.ids, self.labels, self.logits)

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
    """Write the run's ``predictions.npz`` atomically: each split's ids, labels, float32 logits and
    test-time augmentation, fer's classes and ``temperature``."""
    saved = {name: SavedSplit(outputs.ids, outputs.labels, outputs.logits, outputs.tta) for name, outputs in splits.items()}
    return write_predictions(Path(run_dir) / PREDICTIONS_FILE, saved, temperature)


def load_predictions(run_dir_or_file: str | os.PathLike) -> tuple[dict[str, SplitPredictions], float]:
    """(splits, temperature) from a run directory's ``predictions.npz`` (or the file itself)."""
    path = predictions_path(run_dir_or_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"No {PREDICTIONS_FILE} at {path}: runs made before per-image predictions were saved have none; "
            "re-score the checkpoint with python -m fer.evaluate ckpt_path=... split=... to make one."
        )
    saved, temperature = read_predictions(path)
    return {name: _scored_split(path, name, split) for name, split in saved.items()}, temperature


def _scored_split(path: Path, name: str, split: SavedSplit) -> SplitPredictions:
    if split.tta is None:
        raise PredictionsFileError(
            path,
            f"does not say which test-time augmentation made its {name} logits (it has no {name}_tta), which scores keep. "
            "Re-score the checkpoint with python -m fer.evaluate ckpt_path=... split=... to make a complete one.",
        )
    return SplitPredictions(split.ids, split.labels, split.logits, split.tta)
