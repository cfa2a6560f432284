"""``python -m fer.release`` and the packaged model: slim weights, their card, checksum, and
``fer.load_model()`` with no argument; the shipped model itself when the package holds one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_config
from omegaconf import DictConfig, open_dict

import fer
from fer import load_model, packaged
from fer.evaluate import score
from fer.inference import predict
from fer.release import python_command, release, slim_checkpoint
from fer.run.checkpoints import CheckpointError, read_checkpoint

FER2013_ROOT = os.environ.get("FER2013_ROOT")


def release_cfg(run_dir: Path, output_dir: Path, fer_zip: Path, tmp_path: Path, *extra: str) -> DictConfig:
    cfg = compose_config(
        [
            f"run_dir={run_dir}",
            f"output_dir={output_dir}",
            f"data.root={fer_zip}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "data.eval_batch_size=16",
            "trainer.accelerator=cpu",
            *extra,
        ],
        config_name="release",
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "release_run")
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tiny_checkpoint: Path) -> Path:
    """The training run directory behind ``tiny_checkpoint`` (metrics.json names its best checkpoint)."""
    return tiny_checkpoint.parent / "run"


@pytest.fixture(scope="module")
def released(tiny_run: Path, fer_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("release")
    output = tmp / "weights"
    card = release(release_cfg(tiny_run, output, fer_zip, tmp))
    return output, card


def test_the_card_gives_the_training_command_as_a_user_types_it() -> None:
    assert python_command("train.py experiment=long_cpu seed=1") == "python -m fer.train experiment=long_cpu seed=1"


def test_slim_checkpoint_keeps_what_inference_needs_in_half_precision(tiny_checkpoint: Path) -> None:
    checkpoint = read_checkpoint(tiny_checkpoint)
    slim = slim_checkpoint(checkpoint, "fp16")
    assert "optimizer_states" in checkpoint and "optimizer_states" not in slim
    assert slim["hyper_parameters"] == checkpoint["hyper_parameters"]
    assert slim["calibration"] == checkpoint["calibration"]
    floats = [v for v in slim["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    ints = {k for k, v in checkpoint["state_dict"].items() if not v.is_floating_point()}
    assert ints and all(slim["state_dict"][k].dtype == checkpoint["state_dict"][k].dtype for k in ints)
    with pytest.raises(ValueError, match="weights='int4' must be one of fp16, fp32"):
        slim_checkpoint(checkpoint, "int4")


def test_release_writes_weights_and_a_card_whose_numbers_the_weights_reproduce(
    released: tuple[Path, dict], tiny_run: Path, fer_zip: Path, tmp_path: Path
) -> None:
    output, card = released
    trained = json.loads((tiny_run / "run.json").read_text())["starts"][0]
    assert sorted(p.name for p in output.iterdir()) == ["card.json", "card.md", "model.pt"]
    assert json.loads((output / "card.json").read_text()) == card
    assert card["weights"]["sha256"] == packaged.sha256(output / "model.pt")
    assert card["weights"]["bytes"] == (output / "model.pt").stat().st_size
    assert card["training"]["command"] == python_command(trained["command"]) and card["training"]["commit"] == trained["commit"]
    assert set(card["metrics"]["test"]["per_class_acc"]) == set(fer.CLASSES)
    assert abs(card["metrics"]["weights_change_points"]) <= 0.2
    low, high = card["metrics"]["test"]["acc_ci95"]
    assert low <= card["metrics"]["test"]["acc"] <= high
    text = (output / "card.md").read_text()
    assert f"{100 * card['metrics']['test']['acc']:.2f}%" in text and card["weights"]["sha256"] in text
    model = packaged.load(output)
    cfg = release_cfg(output, output, fer_zip, tmp_path)
    assert score(cfg, model, "test")[0]["acc"] == card["metrics"]["test"]["acc"]
    autocast = release_cfg(output, output, fer_zip, tmp_path, "trainer.precision=bf16-mixed")
    assert score(autocast, model, "val")[0]["acc"] == card["metrics"]["bf16-mixed"]["val"]["acc"]
    by_tta = card["metrics"]["acc_by_tta"]
    assert list(by_tta) == ["none", "flip", "tencrop"] and by_tta[model.tta]["test"] == card["metrics"]["test"]["acc"]
    assert set(card["latency_ms"]["one_face"]["32-true"]) == set(by_tta)
    assert all(f"| `{mode}` | {views} |" in text for mode, views in (("none", 1), ("flip", 2), ("tencrop", 10)))


def test_release_packages_the_test_time_augmentation_it_is_given(
    released: tuple[Path, dict], tiny_run: Path, fer_zip: Path, tmp_path: Path
) -> None:
    trained = released[1]["model"]["tta"]
    other = "none" if trained != "none" else "flip"
    card = release(release_cfg(tiny_run, tmp_path / "out", fer_zip, tmp_path, f"tta={other}"))
    model = packaged.load(tmp_path / "out")
    assert model.tta == card["model"]["tta"] == other
    assert card["metrics"]["test"]["acc"] == card["metrics"]["acc_by_tta"][other]["test"] == released[1]["metrics"]["acc_by_tta"][other]["test"]
    with pytest.raises(ValueError, match="tta='five' must be null"):
        release(release_cfg(tiny_run, tmp_path / "bad", fer_zip, tmp_path, "tta=five"))


def test_packaged_weights_predict_as_the_checkpoint_does(released: tuple[Path, dict], tiny_checkpoint: Path) -> None:
    faces = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    slim = predict(packaged.load(released[0]), faces).probabilities
    full = predict(load_model(str(tiny_checkpoint)), faces).probabilities
    np.testing.assert_allclose(slim, full, atol=5e-3)


def test_load_model_without_argument_returns_the_packaged_model(released: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", released[0])
    model = load_model()
    assert not model.training and model.hparams.net == released[1]["model"]["net"]
    assert packaged.card() == released[1]


def test_a_damaged_packaged_file_is_refused(released: tuple[Path, dict], tmp_path: Path) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(released[0], copy)
    with open(copy / "model.pt", "r+b") as handle:
        handle.seek(-100, os.SEEK_END)
        handle.write(b"\0" * 10)
    with pytest.raises(packaged.NoPackagedModel, match="is damaged: its SHA-256"):
        packaged.load(copy)


def test_no_packaged_model_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", tmp_path)
    assert not packaged.available()
    with pytest.raises(packaged.NoPackagedModel, match="python -m fer.release run_dir=RUN_DIR"):
        load_model()


def test_release_refuses_what_is_not_a_finished_run(tiny_run: Path, fer_zip: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="holds no metrics.json"):
        release(release_cfg(tmp_path, tmp_path / "out", fer_zip, tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        release(release_cfg(tiny_run, tmp_path / "out", fer_zip, tmp_path, f"ckpt_path={tmp_path / 'missing.ckpt'}"))
    with pytest.raises(ValueError, match="release it with the same: data.split=official"):
        release(release_cfg(tiny_run, tmp_path / "out", fer_zip, tmp_path, "data.split=kaggle"))


def test_a_refused_release_leaves_the_packaged_model_as_it_was(released: tuple[Path, dict], tiny_run: Path, fer_zip: Path, tmp_path: Path) -> None:
    shipped = tmp_path / "out"
    shutil.copytree(released[0], shipped)
    before = {p.name: p.read_bytes() for p in shipped.iterdir()}
    with pytest.raises(ValueError, match="more than max_change=-1.0"):
        release(release_cfg(tiny_run, shipped, fer_zip, tmp_path, "max_change=-1.0"))
    assert {p.name: p.read_bytes() for p in shipped.iterdir()} == before
    assert packaged.load(shipped).hparams.net == released[1]["model"]["net"]


@pytest.mark.skipif(not packaged.available(), reason="this checkout holds no packaged model (src/fer/weights/): build it with python -m fer.release")
def test_the_shipped_model_matches_its_card() -> None:
    card = packaged.card()
    assert packaged.sha256(packaged.WEIGHTS_DIR / "model.pt") == card["weights"]["sha256"]
    assert card["weights"]["bytes"] <= 12 * 1024 * 1024
    # issue 27's target, above the 66% of the best model other FER tools ship (the fer package's
    # mini-Xception); the card's own number is checked on the real data below
    assert card["metrics"]["test"]["acc"] >= 0.69
    assert card["metrics"]["precision"] == "32-true"


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(not (packaged.available() and FER2013_ROOT), reason="needs the packaged model and FER2013_ROOT (the real FER-2013)")
def test_the_shipped_model_reproduces_its_card_on_private_test(tmp_path: Path) -> None:
    card = packaged.card()
    cfg = compose_config(["run_dir=unused", f"paths.cache_dir={os.environ.get('FER_CACHE_DIR', tmp_path / 'cache')}"], config_name="release")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    assert score(cfg, load_model(), "test")[0]["acc"] == card["metrics"]["test"]["acc"]
