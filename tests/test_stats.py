"""``fer.scoring.stats``: intervals and paired tests, checked against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassF1Score

from fer.classes import NUM_CLASSES
from fer.scoring.stats import (
    bootstrap_intervals,
    intervals_from_confusion,
    macro_f1,
    mcnemar_exact,
    paired_difference,
    paired_f1_difference,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [
        (1, 5, 14 / 64),  # n = 6: 2 x (C(6,0) + C(6,1)) / 2^6
        (0, 5, 2 / 32),  # n = 5: 2 x C(5,0) / 2^5
        (5, 0, 2 / 32),  # symmetric
        (3, 3, 1.0),  # an even split: 2 x 42/64 > 1, capped
        (0, 0, 1.0),  # no discordant image: nothing to tell them apart
        (2, 10, 2 * (1 + 12 + 66) / 4096),  # n = 12
    ],
)
def test_mcnemar_exact_is_the_two_sided_binomial_tail(only_a: int, only_b: int, p: float) -> None:
    assert mcnemar_exact(only_a, only_b) == pytest.approx(p, rel=1e-12)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact(-1, 3)


def test_wilson_interval_matches_the_textbook_value() -> None:
    # 8 of 10: p = 0.8, centre 0.71674, half-width 0.22658 (z = 1.96)
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError, match="at least one image"):
        wilson_interval(0, 0)


def test_paired_bootstrap_of_a_hand_countable_case() -> None:
    """A right on none of 10 images, B on 6: the resampled difference is k/10 with k ~ Binomial(10, 0.6).
    P(k <= 2) = 0.012 < 2.5% < P(k <= 3) = 0.055 and P(k <= 8) = 0.954 < 97.5% < P(k <= 9) = 0.994,
    so the percentile interval is [0.3, 0.9]."""
    correct_b = np.array([1] * 6 + [0] * 4, dtype=bool)
    result = paired_difference(np.zeros(10, dtype=bool), correct_b, resamples=20000, seed=1)
    assert result.difference == pytest.approx(0.6)
    assert result.interval == pytest.approx((0.3, 0.9))
    assert (result.only_a_right, result.only_b_right, result.images) == (0, 6, 10)
    assert result.p_value == pytest.approx(2 / 64)
    # images both get right (or wrong) change neither the difference nor the test
    both = paired_difference(np.r_[np.zeros(10, bool), np.ones(5, bool)], np.r_[correct_b, np.ones(5, bool)], resamples=2000)
    assert both.difference == pytest.approx(6 / 15) and both.p_value == result.p_value


def test_paired_bootstrap_is_seeded_and_refuses_unpaired_inputs() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.6, rng.random(500) < 0.7
    assert paired_difference(a, b, seed=3).interval == paired_difference(a, b, seed=3).interval
    assert paired_difference(a, b, seed=3).interval != paired_difference(a, b, seed=4).interval
    with pytest.raises(ValueError, match="one value per image"):
        paired_difference(a, b[:-1])


def test_macro_f1_is_torchmetrics_macro_f1_with_an_absent_class() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES - 1, 300)  # the last class never appears...
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, NUM_CLASSES - 1, 300))
    predictions[:2] = 0  # ...and some other class appears only as a prediction
    expected = MulticlassF1Score(NUM_CLASSES, average="macro")(torch.from_numpy(predictions), torch.from_numpy(labels)).item()
    assert macro_f1(labels, predictions) == pytest.approx(expected, abs=1e-6)


def test_bootstrap_intervals_depend_only_on_the_confusion_matrix() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, NUM_CLASSES, 800)
    predictions = np.where(rng.random(800) < 0.65, labels, rng.integers(0, NUM_CLASSES, 800))
    order = rng.permutation(800)
    intervals = bootstrap_intervals(labels, predictions)
    assert intervals == bootstrap_intervals(labels[order], predictions[order])
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(confusion, (labels, predictions), 1)
    from_confusion = intervals_from_confusion(confusion)
    assert from_confusion == intervals
    accuracy, f1 = (labels == predictions).mean(), macro_f1(labels, predictions)
    assert intervals["acc"][0] < accuracy < intervals["acc"][1] and intervals["f1_macro"][0] < f1 < intervals["f1_macro"][1]
    # about +-1.96 sqrt(p(1-p)/n) = +-3.3 points here, like Wilson's
    wilson = from_confusion["acc_wilson"]
    assert intervals["acc"][1] - intervals["acc"][0] == pytest.approx(wilson[1] - wilson[0], rel=0.1)


def test_paired_f1_difference_is_zero_for_the_same_model_and_covers_a_real_gain() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, NUM_CLASSES, 1000)
    a = np.where(rng.random(1000) < 0.5, labels, rng.integers(0, NUM_CLASSES, 1000))
    same = paired_f1_difference(labels, a, a)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0]
    b = np.where(rng.random(1000) < 0.3, labels, a)  # B fixes about 30% of A's mistakes
    gain = paired_f1_difference(labels, a, b)
    assert gain["difference"] == pytest.approx(macro_f1(labels, b) - macro_f1(labels, a))
    assert 0 < gain["ci95"][0] < gain["difference"] < gain["ci95"][1]
