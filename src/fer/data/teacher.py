"""Soft targets for knowledge distillation, from a teacher's saved per-image outputs.

A teacher file is a ``predictions.npz`` holding the train split
(``python -m fer.ensemble 'ckpt_paths=[...]' split=train`` writes one), read and checked by
:mod:`fer.run.predictions_file` as scoring reads it; a teacher's logits must also be finite. Each
train image gets the target
``(1 - weight) * one_hot(label) + weight * softmax(logits / (calibration * temperature))``, where
``calibration`` is the temperature the file itself holds (1 for fer.ensemble's, whose logits are
already the log of calibrated probabilities; a single run's fitted temperature for its raw
logits) and ``temperature`` the softening asked for (``data.teacher_temperature``); its teacher outputs
found by image id (file name, or CSV row), so the file may list the images in any order and
hold more of them than the split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fer.classes import CLASSES
from fer.data.sources import DatasetError
from fer.run.predictions_file import PredictionsFileError, check_finite, predictions_path, read_predictions

SPLIT = "train"
HOW_TO_MAKE = (
    "Make one on the same data.root and data.split with python -m fer.ensemble 'ckpt_paths=[...]' "
    "split=train hydra.run.dir=DIR, then pass data.teacher=DIR."
)


def check_teacher_options(weight: float, temperature: float) -> None:
    """Refuse a weight outside [0, 1] or a temperature <= 0 before any data is read."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(
            f"data.teacher_weight={weight} must be in [0, 1]: 0 trains on the labels alone, 1 on the teacher's outputs alone."
        )
    if not temperature > 0.0:
        raise ValueError(
            f"data.teacher_temperature={temperature} must be > 0: 1 keeps the teacher's probabilities, above 1 softens them."
        )


def read_teacher(teacher: str | os.PathLike) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, float]:
    """(file, ids, labels, logits, calibration temperature) of the train split in a teacher file, or a run directory holding one."""
    path = predictions_path(Path(teacher).expanduser())
    if not path.is_file():
        raise DatasetError(f"data.teacher: no teacher outputs at {path}. {HOW_TO_MAKE}")
    try:
        splits, calibration = read_predictions(path)
        if SPLIT in splits:
            check_finite(path, SPLIT, splits[SPLIT])
    except PredictionsFileError as error:
        raise DatasetError(f"data.teacher={path} {error.problem} {HOW_TO_MAKE}") from error
    if SPLIT not in splits:
        raise DatasetError(
            f"data.teacher={path} holds no outputs for the train split (it has: {', '.join(splits) or 'none'}). {HOW_TO_MAKE}"
        )
    train = splits[SPLIT]
    return path, train.ids, train.labels, train.logits, calibration


def teacher_targets(
    teacher: str | os.PathLike, names: np.ndarray, labels: np.ndarray, weight: float, temperature: float
) -> np.ndarray:
    """float32 [N, classes] targets for the train images ``names`` with ``labels``, blending each
    one-hot label with the teacher's softened probabilities (see the module docstring)."""
    check_teacher_options(weight, temperature)
    path, ids, teacher_labels, logits, calibration = read_teacher(teacher)
    names = np.asarray(names).astype(str)
    for what, values in (("this run's train split", names), (f"data.teacher={path}", ids)):
        unique, counts = np.unique(values, return_counts=True)
        if (counts > 1).any():
            raise DatasetError(
                f"{what} names some images more than once (e.g. {unique[counts > 1][:3].tolist()}): teacher outputs are "
                "matched to images by id, which needs unique ids. Use a copy of FER-2013 whose file names (or CSV rows) are unique."
            )
    position = {name: i for i, name in enumerate(ids)}
    missing = [name for name in names.tolist() if name not in position]
    if missing:
        raise DatasetError(
            f"data.teacher={path} has no outputs for {len(missing)} of the {len(names)} train images (e.g. {missing[:3]}): "
            f"it was made on other data or another data.split. {HOW_TO_MAKE}"
        )
    order = np.array([position[name] for name in names], dtype=np.int64)
    disagree = np.flatnonzero(teacher_labels[order] != labels)
    if disagree.size:
        examples = [f"{names[i]} ({CLASSES[teacher_labels[order[i]]]}, here {CLASSES[labels[i]]})" for i in disagree[:3]]
        raise DatasetError(
            f"data.teacher={path} labels {disagree.size} of the {len(names)} train images differently from data.root "
            f"(e.g. {', '.join(examples)}): it was made on other data. {HOW_TO_MAKE}"
        )
    scaled = logits[order] / (calibration * temperature)
    probabilities = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    one_hot = np.eye(len(CLASSES))[labels]
    return ((1.0 - weight) * one_hot + weight * probabilities).astype(np.float32)
