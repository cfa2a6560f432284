"""Ensemble evaluation averages members' probabilities on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from conftest import compose_config

import fer.ensemble
from fer.ensemble import ensemble
from fer.factory import build_datamodule
from fer.module import FERClassifier


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


def test_ensemble_needs_two_checkpoints(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint}]")
    with pytest.raises(ValueError, match="two or more checkpoints"):
        ensemble(cfg)


def test_ensemble_averages_the_members_probabilities(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    """Members that disagree on every image: the ensemble predicts the argmax of their mean softmax,
    so two confident members outvote the third whichever comes last or first."""
    saved = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    weight = next(k for k in reversed(saved["state_dict"]) if k.endswith(".weight"))
    for key in (weight, weight.replace(".weight", ".bias")):
        saved["state_dict"][key] = saved["state_dict"][key].roll(1, dims=0)  # predicts class c+1 for c
    shifted = tmp_path / "shifted.ckpt"
    torch.save(saved, shifted)
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


def test_ensemble_refuses_members_scored_on_different_images(
    tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Averaging probabilities row by row is only meaningful when every member saw the same
    images in the same order; a member whose loader reordered them must stop the ensemble."""
    real = fer.ensemble.member_probabilities
    calls = []

    def reordered_second_time(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities, labels = real(*args)
        calls.append(len(labels))
        return (probabilities.flip(0), labels.flip(0)) if len(calls) == 2 else (probabilities, labels)

    monkeypatch.setattr(fer.ensemble, "member_probabilities", reordered_second_time)
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "tta=none")
    with pytest.raises(ValueError, match="scored on different images than .*check data.root and split"):
        ensemble(cfg)
    assert calls == [14, 14]
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()
