"""Do the probabilities mean what they say? Expected calibration error and temperature scaling.

A network trained with cross-entropy (and label smoothing) is often over- or under-confident: of
the faces it calls "happy, 0.9", far fewer or more than 90% are happy. Temperature scaling
(Guo et al., 2017) divides the logits by one number ``T`` fitted to minimise the negative
log-likelihood on the validation split (never on test). It changes every probability and no
prediction: the argmax of ``logits / T`` is the argmax of ``logits``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 15
# log-temperatures searched by bisection on the NLL's derivative: T from 1/100 to 100
LOG_T_RANGE = (-np.log(100.0), np.log(100.0))
BISECTION_STEPS = 60


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under ``softmax(logits / T)``."""
    probabilities = softmax(logits, temperature)
    return float(-np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-300)).mean())


@dataclass(frozen=True)
class Reliability:
    """Confidence (the top probability) in ``BINS`` equal-width bins: per bin, how many images,
    their mean confidence and their accuracy; ``ece`` is the count-weighted mean |accuracy - confidence|."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if len(labels) == 0 or probabilities.shape != (len(labels), probabilities.shape[-1]):
        raise ValueError(f"Calibration needs probabilities [N, classes] for N >= 1 labels, got {probabilities.shape} and {labels.shape}.")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bins are (lo, hi]; a confidence of exactly 0 cannot occur (the top of >= 2 probabilities)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    safe = np.maximum(counts, 1)
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / safe
    accuracy = np.bincount(which, weights=correct.astype(np.float64), minlength=bins) / safe
    ece = float((counts * np.abs(accuracy - mean_confidence)).sum() / len(labels))
    return Reliability(edges, counts, mean_confidence, accuracy, ece)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """The ``T`` that minimises :func:`nll` on these (validation) logits, or None when there is
    none inside 1/100..100: the NLL keeps falling as ``T -> 0`` where the logits rank every
    validation label first (a separable split: no temperature is right), or as ``T -> inf``.

    The NLL is convex in ``1/T``, so its derivative in ``log T`` changes sign once: bisection on
    that sign is exact to float precision, needs no optimiser and cannot diverge."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("Temperature scaling needs at least one validation image.")
    true_logit = logits[np.arange(len(labels)), labels]

    def slope(log_t: float) -> float:
        # d NLL / d(1/T) = mean(E_p[z] - z_true); its sign is opposite to the slope in log T
        probabilities = softmax(logits, float(np.exp(log_t)))
        return -float(((probabilities * logits).sum(axis=1) - true_logit).mean())

    low, high = LOG_T_RANGE
    if slope(low) >= 0 or slope(high) <= 0:
        return None
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if slope(middle) < 0:
            low = middle
        else:
            high = middle
    return float(np.exp((low + high) / 2))


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """ECE and NLL of the raw probabilities and, when ``temperature`` is not 1, of the scaled ones."""
    report = {"ece": reliability(softmax(logits), labels).ece, "nll": nll(logits, labels)}
    if temperature != 1.0:
        report["temperature"] = temperature
        report["ece_calibrated"] = reliability(softmax(logits, temperature), labels).ece
        report["nll_calibrated"] = nll(logits, labels, temperature)
    return report
