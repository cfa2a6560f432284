"""``fer.scoring.calibration``: ECE by hand, temperature scaling recovers a known temperature, and a
calibrated checkpoint changes probabilities, never labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import synthetic_face

from fer import FERClassifier
from fer.inference import predict
from fer.run.checkpoints import read_checkpoint, update_checkpoint
from fer.scoring.calibration import calibration_report, fit_temperature, nll, reliability, softmax
from fer.training.module import CALIBRATION_KEY


def test_ece_of_a_hand_made_case() -> None:
    # one image at confidence 0.9, right; one at 0.55, wrong: ECE = 0.5 x 0.1 + 0.5 x 0.55
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45]])
    bins = reliability(probabilities, np.array([0, 1]))
    assert bins.ece == pytest.approx(0.325)
    assert bins.counts.sum() == 2 and bins.counts[13] == 1 and bins.counts[8] == 1
    assert bins.accuracy[13] == 1.0 and bins.accuracy[8] == 0.0


def sampled(temperature: float, count: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): calibrated at that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(count, 7))
    probabilities = softmax(logits, temperature)
    labels = (probabilities.cumsum(axis=1) > rng.random((count, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_temperature_scaling_recovers_the_temperature_and_lowers_nll_and_ece(true_temperature: float) -> None:
    logits, labels = sampled(true_temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert nll(logits, labels, fitted) < min(nll(logits, labels, fitted * 1.02), nll(logits, labels, fitted / 1.02))
    report = calibration_report(logits, labels, fitted)
    assert report["nll_calibrated"] < report["nll"] and report["ece_calibrated"] < report["ece"]
    assert report["ece_calibrated"] < 0.02


def test_a_separable_split_has_no_temperature() -> None:
    logits = np.eye(7)[np.arange(20) % 7] * 5
    assert fit_temperature(logits, np.arange(20) % 7) is None  # NLL falls all the way to T -> 0


@pytest.fixture
def calibrated_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    path = Path(shutil.copy(tiny_checkpoint, tmp_path / "calibrated.ckpt"))
    update_checkpoint(path, **{CALIBRATION_KEY: {"temperature": 4.0, "fitted_on": "val"}})
    return path


def test_the_temperature_travels_in_the_checkpoint_and_changes_probabilities_not_labels(
    tiny_checkpoint: Path, calibrated_checkpoint: Path
) -> None:
    assert read_checkpoint(calibrated_checkpoint)["state_dict"].keys() == read_checkpoint(tiny_checkpoint)["state_dict"].keys()
    plain = FERClassifier.load_from_checkpoint(tiny_checkpoint).eval()
    calibrated = FERClassifier.load_from_checkpoint(calibrated_checkpoint).eval()
    assert calibrated.temperature == 4.0
    faces = [synthetic_face(label, 300 + label) for label in range(7)]
    labels, raw = predict(plain, faces)
    calibrated_labels, probabilities = predict(calibrated, faces)
    assert calibrated_labels == labels
    assert np.abs(probabilities - raw).max() > 0.05 and probabilities.max() < raw.max()  # T > 1 softens
    with torch.inference_mode():
        logits = calibrated.predict_logits(torch.from_numpy(np.stack(faces)).unsqueeze(1))
    np.testing.assert_allclose(probabilities, (logits / 4.0).softmax(dim=1).numpy(), atol=1e-6)


def test_a_checkpoint_from_before_calibration_loads_with_temperature_one(tiny_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = read_checkpoint(tiny_checkpoint)
    checkpoint.pop(CALIBRATION_KEY, None)
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert FERClassifier.load_from_checkpoint(tmp_path / "old.ckpt").temperature == 1.0


def test_training_again_from_a_calibrated_checkpoint_starts_uncalibrated(calibrated_checkpoint: Path) -> None:
    model = FERClassifier.load_from_checkpoint(calibrated_checkpoint)
    model.on_fit_start()
    assert model.temperature == 1.0
