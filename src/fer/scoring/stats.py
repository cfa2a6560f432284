"""How sure a score on a finite test set is: confidence intervals and paired tests.

FER-2013's PrivateTest has 3,589 images, so an accuracy near 70% is known to about +-1.5 points
and most gaps between recipes (and between papers) sit inside that. Everything here works on
per-image labels and predictions:

- :func:`bootstrap_intervals`: percentile-bootstrap intervals for accuracy and macro-F1,
  resampling images. Both scores depend only on the (label, prediction) counts that a confusion
  matrix holds, and resampling images is drawing those counts from a multinomial
  (:func:`confusion_bootstrap`): the same confusion matrix gives the same interval whether it
  comes from saved predictions or from an old run's ``metrics.json``
  (:func:`intervals_from_confusion`).
- :func:`wilson_interval`: the closed-form interval for accuracy alone.
- :func:`paired_difference` and :func:`mcnemar_exact`: two models scored on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb, sqrt
from typing import Any

import numpy as np

from fer.classes import NUM_CLASSES

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0
Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``correct / total`` (95% for the default ``z``)."""
    if total <= 0:
        raise ValueError(f"A score interval needs at least one image, got total={total}.")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts [C, C] of (label, prediction) pairs: rows are labels, columns predictions."""
    return _confusions(np.asarray(labels)[None], np.asarray(predictions)[None], num_classes)[0]


def macro_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int = NUM_CLASSES) -> float:
    """Macro-F1 as torchmetrics' ``MulticlassF1Score(average="macro")`` computes it: classes that
    appear neither as a label nor as a prediction are left out of the mean."""
    return float(_macro_f1(confusion_matrix(labels, predictions, num_classes)[None])[0])


def bootstrap_intervals(
    labels: np.ndarray,
    predictions: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    num_classes: int = NUM_CLASSES,
) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals of accuracy and macro-F1 over images: ``{"acc": [lo, hi],
    "f1_macro": [lo, hi]}`` (and ``acc_wilson``), seeded; a function of the confusion matrix alone."""
    labels, predictions = _paired_arrays(labels, predictions)
    return intervals_from_confusion(confusion_matrix(labels, predictions, num_classes), resamples, seed, level)


def confusion_bootstrap(counts: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Bootstrap resamples of a table of counts [..., cells]: drawing N images with replacement
    from N (label, prediction) pairs is drawing the table's N counts from a multinomial with the
    table's proportions. The same distribution as resampling images, and cheap: [R, *counts.shape]."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("A bootstrap interval needs at least one image.")
    draws = np.random.default_rng(seed).multinomial(total, counts.ravel() / total, size=resamples)
    return draws.reshape(resamples, *counts.shape)


def intervals_from_confusion(
    confusion: np.ndarray | list[list[int]], resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> dict[str, list[float]]:
    """:func:`bootstrap_intervals` from a confusion matrix (rows: labels), plus ``acc_wilson``."""
    confusion = np.asarray(confusion, dtype=np.int64)
    total = int(confusion.sum())
    confusions = confusion_bootstrap(confusion, resamples, seed)
    accuracy = np.trace(confusions, axis1=1, axis2=2) / total
    return {
        "acc": _percentiles(accuracy, level),
        "f1_macro": _percentiles(_macro_f1(confusions), level),
        "acc_wilson": list(wilson_interval(int(np.trace(confusion)), total)),
    }


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of B minus accuracy of A on the same images, with its paired-bootstrap interval
    and the exact McNemar test of the images on which exactly one of them is right."""

    acc_a: float
    acc_b: float
    difference: float
    interval: tuple[float, float]
    only_a_right: int
    only_b_right: int
    p_value: float
    images: int


def paired_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> PairedDifference:
    """Compare two models image by image (``correct_*``: one boolean per image, same order)."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1 or len(correct_a) == 0:
        raise ValueError(f"Paired scores need one value per image for both models, got shapes {correct_a.shape} and {correct_b.shape}.")
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    # resampled images fall into four cells; only the two discordant ones move the difference
    cells = np.array([only_a, only_b, len(correct_a) - only_a - only_b])
    draws = confusion_bootstrap(cells, resamples, seed)
    lo, hi = _percentiles((draws[:, 1] - draws[:, 0]) / len(correct_a), level)
    return PairedDifference(
        acc_a=float(correct_a.mean()),
        acc_b=float(correct_b.mean()),
        difference=(only_b - only_a) / len(correct_a),
        interval=(lo, hi),
        only_a_right=only_a,
        only_b_right=only_b,
        p_value=mcnemar_exact(only_a, only_b),
        images=len(correct_a),
    )


def paired_f1_difference(
    labels: np.ndarray,
    predictions_a: np.ndarray,
    predictions_b: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    num_classes: int = NUM_CLASSES,
) -> dict[str, Any]:
    """Macro-F1 of B minus that of A on the same images, with a paired-bootstrap interval (both
    models scored on the same resampled images)."""
    labels, predictions_a = _paired_arrays(labels, predictions_a)
    _, predictions_b = _paired_arrays(labels, predictions_b)
    # one table of (label, A's prediction, B's prediction): each resample scores both models on the same images
    joint = np.bincount((labels * num_classes + predictions_a) * num_classes + predictions_b, minlength=num_classes**3)
    table = joint.reshape(num_classes, num_classes, num_classes)
    draws = confusion_bootstrap(table, resamples, seed)
    gains = _macro_f1(draws.sum(axis=2)) - _macro_f1(draws.sum(axis=3))
    difference = _macro_f1(table.sum(axis=1)[None]) - _macro_f1(table.sum(axis=2)[None])  # B's confusion minus A's
    return {"difference": float(difference[0]), "ci95": _percentiles(gains, level)}


def mcnemar_exact(only_a_right: int, only_b_right: int) -> float:
    """Two-sided exact McNemar p-value: under "equally good", each of the n discordant images is
    a fair coin, so p = P(a split at least as uneven) = min(1, 2 P(Binomial(n, 1/2) <= min))."""
    if only_a_right < 0 or only_b_right < 0:
        raise ValueError(f"Counts of discordant images must be >= 0, got {only_a_right} and {only_b_right}.")
    n, k = only_a_right + only_b_right, min(only_a_right, only_b_right)
    if n == 0:
        return 1.0
    tail = Fraction(sum(comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


def _paired_arrays(labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"Labels and predictions need one value per image, got shapes {labels.shape} and {predictions.shape}.")
    if len(labels) == 0:
        raise ValueError("A bootstrap interval needs at least one image.")
    return labels, predictions


def _confusions(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """One confusion matrix per row of ``labels``/``predictions`` [R, N]: [R, C, C]."""
    rows = labels.shape[0]
    cell = (np.arange(rows)[:, None] * num_classes + labels) * num_classes + predictions
    return np.bincount(cell.ravel(), minlength=rows * num_classes * num_classes).reshape(rows, num_classes, num_classes)


def _macro_f1(confusions: np.ndarray) -> np.ndarray:
    true_positive = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)
    labelled, predicted = confusions.sum(axis=2), confusions.sum(axis=1)
    denominator = labelled + predicted
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    present = denominator > 0
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def _percentiles(values: np.ndarray, level: float) -> list[float]:
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]
