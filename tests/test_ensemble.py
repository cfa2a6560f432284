"""Ensemble evaluation averages members' probabilities on the same images."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_config
from omegaconf import DictConfig, open_dict

import fer.ensemble
from fer.ensemble import ensemble
from fer.evaluate import evaluate
from fer.factory import build_datamodule
from fer.scoring.predictions import SplitPredictions, load_predictions
from fer.training.module import FERClassifier


def ensemble_cfg(tmp_path: Path, fer_zip: Path, *overrides: str) -> DictConfig:
    cfg = compose_config([f"data.root={fer_zip}", f"paths.cache_dir={tmp_path / 'cache'}", *overrides], "ensemble")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def test_ensemble_of_identical_members_equals_the_member(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "tta=none")
    metrics = ensemble(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert [m["acc"] for m in saved["members"]] == [metrics["members"][0]["acc"]] * 2
    assert saved["test"]["acc"] == pytest.approx(metrics["members"][0]["acc"])
    assert sum(map(sum, saved["test"]["confusion"])) == 14  # the synthetic PrivateTest


def test_one_checkpoint_alone_is_scored_as_itself(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    """One member is allowed (a single teacher for data.teacher); it is the member's own calibrated output."""
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint}]", "tta=none")
    metrics = ensemble(cfg)
    assert len(metrics["members"]) == 1 and metrics["test"]["acc"] == pytest.approx(metrics["members"][0]["acc"])


def test_ensemble_needs_checkpoints_or_run_dirs(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    both = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", f"run_dirs=[{tmp_path}]")
    with pytest.raises(ValueError, match="either ckpt_paths"):
        ensemble(both)


def shifted_checkpoint(checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of ``checkpoint`` whose last layer is rolled: it predicts class c+1 where the original predicts c."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weight = next(k for k in reversed(saved["state_dict"]) if k.endswith(".weight"))
    for key in (weight, weight.replace(".weight", ".bias")):
        saved["state_dict"][key] = saved["state_dict"][key].roll(1, dims=0)
    shifted = tmp_path / "shifted.ckpt"
    torch.save(saved, shifted)
    return shifted


def test_ensemble_averages_the_members_probabilities(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    """Members that disagree on every image: the ensemble predicts the argmax of their mean softmax,
    so two confident members outvote the third whichever comes last or first."""
    shifted = shifted_checkpoint(tiny_checkpoint, tmp_path)
    datamodule = build_datamodule(ensemble_cfg(tmp_path, fer_zip))
    datamodule.setup("test")
    batches = list(datamodule.eval_dataloader("test"))
    labels = torch.cat([y for _, y in batches])
    probabilities = {}
    with torch.no_grad():
        for path in (tiny_checkpoint, shifted):
            model = FERClassifier.load_from_checkpoint(path, map_location="cpu").eval()
            probabilities[path] = torch.cat([model(x).softmax(dim=1) for x, _ in batches])

    def confusion(p: torch.Tensor) -> list[list[int]]:
        matrix = torch.zeros(7, 7, dtype=torch.int64)
        for t, predicted in zip(labels.tolist(), p.argmax(dim=1).tolist()):
            matrix[t, predicted] += 1
        return matrix.tolist()

    assert (probabilities[tiny_checkpoint].argmax(1) != probabilities[shifted].argmax(1)).all()
    for members in ([tiny_checkpoint, tiny_checkpoint, shifted], [shifted, shifted, tiny_checkpoint]):
        cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{','.join(map(str, members))}]", "tta=none")
        expected = confusion(sum(probabilities[m] for m in members) / 3)
        assert ensemble(cfg)["test"]["confusion"] == expected == confusion(probabilities[members[0]])


def test_saved_predictions_make_the_same_ensemble_as_running_the_checkpoints(
    tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path
) -> None:
    shifted = shifted_checkpoint(tiny_checkpoint, tmp_path)
    run_dirs = []
    for index, checkpoint in enumerate((tiny_checkpoint, tiny_checkpoint, shifted)):
        cfg = compose_config([f"data.root={fer_zip}", f"paths.cache_dir={tmp_path / 'cache'}", f"ckpt_path={checkpoint}", "tta=none"], "eval")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / f"eval{index}")
        evaluate(cfg)
        run_dirs.append(cfg.paths.output_dir)
    members = ",".join(map(str, (tiny_checkpoint, tiny_checkpoint, shifted)))
    run = ensemble(ensemble_cfg(tmp_path / "run", fer_zip, f"ckpt_paths=[{members}]", "tta=none"))
    saved = ensemble(ensemble_cfg(tmp_path / "saved", fer_zip, f"run_dirs=[{','.join(run_dirs)}]"))
    assert saved["scored_from"] == "saved predictions" and run["scored_from"] == "checkpoints"
    assert (tmp_path / "saved" / "run" / "plots" / "reliability_test.png").is_file()
    assert saved["test"]["confusion"] == run["test"]["confusion"]
    assert saved["test"]["ci95"] == run["test"]["ci95"] and saved["test"]["ece"] == pytest.approx(run["test"]["ece"], abs=1e-6)
    (from_runs,) = load_predictions(tmp_path / "saved" / "run")[0].values()
    (from_checkpoints,) = load_predictions(tmp_path / "run" / "run")[0].values()
    np.testing.assert_allclose(from_runs.probabilities(), from_checkpoints.probabilities(), atol=1e-6)
    assert from_runs.ids.tolist() == from_checkpoints.ids.tolist() and all("/PrivateTest_" in i for i in from_runs.ids)


def change_second_member(monkeypatch: pytest.MonkeyPatch, change: Callable[[SplitPredictions], SplitPredictions]) -> None:
    """Make the second member's outputs pass through ``change`` (the first's stay as they are)."""
    real = fer.ensemble.member_outputs
    calls = []

    def member_outputs(*args: object) -> SplitPredictions:
        calls.append(args)
        outputs = real(*args)
        return change(outputs) if len(calls) == 2 else outputs

    monkeypatch.setattr(fer.ensemble, "member_outputs", member_outputs)


def test_ensemble_aligns_members_that_list_the_images_in_another_order(
    tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probabilities are averaged image by image, matched by image id, not by position."""
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "tta=none")
    in_order = ensemble(cfg)
    change_second_member(monkeypatch, lambda o: SplitPredictions(o.ids[::-1], o.labels[::-1], o.logits[::-1], o.tta))
    assert ensemble(cfg)["test"]["confusion"] == in_order["test"]["confusion"]
    # without alignment, the reversed member would have voted on the wrong images
    assert in_order["test"]["acc"] == pytest.approx(in_order["members"][0]["acc"])


def test_ensemble_refuses_members_scored_on_different_images(
    tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change_second_member(monkeypatch, lambda o: SplitPredictions(np.char.add(o.ids, "_other"), o.labels, o.logits, o.tta))
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "tta=none")
    with pytest.raises(ValueError, match="scored on different images than .*check data.root and split"):
        ensemble(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()
