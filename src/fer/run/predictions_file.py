"""The ``predictions.npz`` a run keeps beside its ``metrics.json``: its name, its keys, and what a
valid one holds, read and written here alone.

It sits in fer.run, below both layers that read it: scoring (:mod:`fer.scoring.predictions`, which
writes it too) and distillation's teacher files (:mod:`fer.data.teacher`), so that neither keeps
its own copy of the format and its checks.

Per split: ``<split>_ids`` (image ids: file names, or CSV rows), ``<split>_labels`` (class indices
in fer's order), ``<split>_logits`` (one row of one logit per class an image) and ``<split>_tta``
(the test-time augmentation that made them); once: ``classes`` (fer's class order) and
``temperature`` (the calibration fitted on validation). A file made by hand may leave out
``<split>_tta``, ``classes`` (fer's order is then assumed) and ``temperature`` (then 1).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile

from fer.classes import CLASSES
from fer.run.atomic import atomic_write

PREDICTIONS_FILE = "predictions.npz"


class PredictionsFileError(ValueError):
    """A ``predictions.npz`` that cannot be read or does not hold valid per-image outputs.

    ``problem`` is the message without the file, so that a reader can name the file its own way
    (``data.teacher=...``) and add its own fix."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.problem = problem


@dataclass(frozen=True)
class SavedSplit:
    """One split's arrays as the file holds them (read back: ids str, labels int64, logits float64)."""

    ids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    tta: str | None


def predictions_path(run_dir_or_file: str | os.PathLike) -> Path:
    """A run directory's ``predictions.npz``, or the path itself when it is not a directory."""
    path = Path(run_dir_or_file)
    return path / PREDICTIONS_FILE if path.is_dir() else path


def check_split(ids: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> None:
    """Refuse (ValueError) outputs that are not one id, one class index and one logit per class for each image."""
    rows = len(ids) if ids.ndim == 1 else -1
    if labels.shape != (rows,) or logits.shape != (rows, len(CLASSES)):
        raise ValueError(
            f"Predictions need one id, label and {len(CLASSES)} logits per image, got ids of shape {ids.shape}, "
            f"labels of shape {labels.shape} and logits of shape {logits.shape}."
        )
    outside = np.unique(labels[(labels < 0) | (labels >= len(CLASSES))])
    if outside.size:
        raise ValueError(
            f"Predictions need labels that are class indices 0..{len(CLASSES) - 1} (fer's order: {', '.join(CLASSES)}), "
            f"got {outside[:3].tolist()}."
        )


def check_finite(path: Path, split: str, saved: SavedSplit) -> None:
    """Refuse NaN or infinite logits, where they are to be learned from. Reading keeps them: a run
    that diverged saves NaN logits, and its (chance) scores are still its scores."""
    rows = np.flatnonzero(~np.isfinite(saved.logits).all(axis=1))
    if rows.size:
        raise PredictionsFileError(
            path,
            f"holds logits that are not finite (NaN or inf) for {rows.size} of its {len(saved.ids)} {split} images "
            f"(e.g. {saved.ids[rows[:3]].tolist()}): the model that made them diverged.",
        )


def read_predictions(path: Path) -> tuple[dict[str, SavedSplit], float]:
    """(splits by name, calibration temperature) of a ``predictions.npz``, every split checked
    (:func:`check_split`); :class:`PredictionsFileError` says what is wrong with a bad one."""
    arrays = _load_arrays(path)
    if "classes" in arrays and arrays["classes"].tolist() != list(CLASSES):
        raise PredictionsFileError(path, f"uses the classes {arrays['classes'].tolist()}, not fer's {list(CLASSES)}.")
    names = sorted(key.removesuffix("_logits") for key in arrays if key.endswith("_logits"))
    return {name: _split(path, arrays, name) for name in names}, _temperature(path, arrays)


def write_predictions(path: Path, splits: Mapping[str, SavedSplit], temperature: float) -> Path:
    """Write ``path`` atomically (a reader sees the old file or the new one): the splits' arrays as
    they are (float32 logits stay float32), fer's ``classes`` and ``temperature``."""
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(CLASSES), "temperature": np.float64(temperature)}
    for name, split in splits.items():
        arrays.update({f"{name}_ids": split.ids, f"{name}_labels": split.labels, f"{name}_logits": split.logits})
        if split.tta is not None:
            arrays[f"{name}_tta"] = np.asarray(split.tta)
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        saved = np.load(path, allow_pickle=False)
        if isinstance(saved, NpzFile):
            with saved:
                return {key: saved[key] for key in saved.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise PredictionsFileError(path, f"is not a readable {PREDICTIONS_FILE} ({error}).") from error
    raise PredictionsFileError(path, f"holds a single array (a .npy file), not the named arrays of a {PREDICTIONS_FILE}.")


def _split(path: Path, arrays: dict[str, np.ndarray], name: str) -> SavedSplit:
    missing = [key for key in (f"{name}_ids", f"{name}_labels") if key not in arrays]
    if missing:
        raise PredictionsFileError(path, f"holds {name}_logits but no {' or '.join(missing)}: a split needs its ids, labels and logits.")
    try:
        labels, logits = arrays[f"{name}_labels"].astype(np.int64), arrays[f"{name}_logits"].astype(np.float64)
    except ValueError as error:
        raise PredictionsFileError(path, f"holds {name} labels or logits that are not numbers ({error}).") from error
    ids = arrays[f"{name}_ids"].astype(str)
    try:
        check_split(ids, labels, logits)
    except ValueError as error:
        raise PredictionsFileError(path, f"holds an unusable {name} split: {error}") from error
    tta = arrays.get(f"{name}_tta")
    return SavedSplit(ids, labels, logits, None if tta is None else str(tta))


def _temperature(path: Path, arrays: dict[str, np.ndarray]) -> float:
    value = arrays.get("temperature", np.float64(1.0))
    if value.shape != () or value.dtype.kind not in "iuf" or not (np.isfinite(value) and value > 0):
        raise PredictionsFileError(
            path, f"holds the temperature {value.tolist()!r}, which must be one number > 0 (the calibration's T; 1 for none)."
        )
    return float(value)
