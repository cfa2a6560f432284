"""How sure a score on a finite test set is: confidence intervals and paired tests.

FER-2013's PrivateTest has 3,589 images, so an accuracy near 70% is known to about +-1.5 points
and most gaps between recipes (and between papers) sit inside that. Everything here works on
per-image labels and predictions:

- :func:`bootstrap_intervals`: percentile-bootstrap intervals for accuracy and macro-F1,
  resampling images. Both scores depend only on the multiset of (label, prediction) pairs, which
  a confusion matrix holds exactly, so the pairs are put in a canonical order first: the same
  confusion matrix gives the same interval whether it comes from saved predictions or from an old
  run's ``metrics.json`` (:func:`pairs_from_confusion`).
- :func:`wilson_interval`: the closed-form interval for accuracy alone.
- :func:`paired_difference` and :func:`mcnemar_exact`: two models scored on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb, sqrt

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


def pairs_from_confusion(confusion: np.ndarray | list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The (label, prediction) pairs a confusion matrix (rows: labels) counts, in canonical order."""
    confusion = np.asarray(confusion, dtype=np.int64)
    cells = np.arange(confusion.size)
    flat = np.repeat(cells, confusion.ravel())
    return flat // confusion.shape[1], flat % confusion.shape[1]


def macro_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int = NUM_CLASSES) -> float:
    """Macro-F1 as torchmetrics' ``MulticlassF1Score(average="macro")`` computes it: classes that
    appear neither as a label nor as a prediction are left out of the mean."""
    return float(_macro_f1(_confusions(labels[None], predictions[None], num_classes))[0])


def bootstrap_intervals(
    labels: np.ndarray,
    predictions: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    num_classes: int = NUM_CLASSES,
) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals of accuracy and macro-F1 over images: ``{"acc": [lo, hi],
    "f1_macro": [lo, hi]}``. Seeded and order-free (see the module docstring)."""
    labels, predictions = _canonical(np.asarray(labels), np.asarray(predictions), num_classes)
    if len(labels) == 0:
        raise ValueError("A bootstrap interval needs at least one image.")
    index = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    resampled_labels, resampled_predictions = labels[index], predictions[index]
    accuracy = (resampled_labels == resampled_predictions).mean(axis=1)
    f1 = _macro_f1(_confusions(resampled_labels, resampled_predictions, num_classes))
    return {"acc": _percentiles(accuracy, level), "f1_macro": _percentiles(f1, level)}


def intervals_from_confusion(confusion: np.ndarray | list[list[int]], **options: int) -> dict[str, list[float]]:
    """:func:`bootstrap_intervals` of the pairs a confusion matrix counts, plus ``acc_wilson``."""
    labels, predictions = pairs_from_confusion(confusion)
    intervals = bootstrap_intervals(labels, predictions, num_classes=np.asarray(confusion).shape[0], **options)
    intervals["acc_wilson"] = list(wilson_interval(int((labels == predictions).sum()), len(labels)))
    return intervals


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
    gain = correct_b.astype(np.int8) - correct_a.astype(np.int8)
    index = np.random.default_rng(seed).integers(0, len(gain), size=(resamples, len(gain)))
    lo, hi = _percentiles(gain[index].mean(axis=1), level)
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    return PairedDifference(
        acc_a=float(correct_a.mean()),
        acc_b=float(correct_b.mean()),
        difference=float(gain.mean()),
        interval=(lo, hi),
        only_a_right=only_a,
        only_b_right=only_b,
        p_value=mcnemar_exact(only_a, only_b),
        images=len(gain),
    )


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


def _canonical(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"Labels and predictions need one value per image, got shapes {labels.shape} and {predictions.shape}.")
    order = np.argsort(labels.astype(np.int64) * num_classes + predictions, kind="stable")
    return labels[order].astype(np.int64), predictions[order].astype(np.int64)


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
