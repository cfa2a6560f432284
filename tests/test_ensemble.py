"""Ensemble evaluation averages members' probabilities on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from fer.ensemble import ensemble
from conftest import compose_config


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
