"""Bad input, seen from the command: each case stops with a message that says what is wrong and how
to fix it (the table in docs/errors.md quotes these messages). Here the cross-cutting cases: exit
codes and one-line errors, Hydra's and the configuration's errors, checkpoints and weights at every
entry point, and the data check made past the reader (blurred faces); what the dataset readers say
about a bad copy (the Data rows of the table) is checked once, in tests/test_sources.py."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli_overrides, compose_config, run_cli
from hydra.errors import InstantiationException
from PIL import Image, ImageFilter

import fer.conf
from fer import load_model
from fer.classes import class_index
from fer.cli import expected_error
from fer.data import DatasetError
from fer.data.sources import locate
from fer.ensemble import ensemble
from fer.evaluate import evaluate
from fer.export import main_export
from fer.factory import build_datamodule
from fer.plots import plot_run
from fer.predict import predict
from fer.run.checkpoints import CheckpointError
from fer.train import main, train
from fer.training.module import FERClassifier

CONF = Path(fer.conf.__file__).parent
ROOT = Path(__file__).resolve().parents[1]  # not CONF.parent: fer.conf may be a src/fer/conf symlink to conf/

pytestmark = pytest.mark.usefixtures("skip_plots")


def _train_fails(make_cfg, error: type[Exception], match: str, *overrides: str) -> None:
    with pytest.raises(error, match=match):
        train(make_cfg(*overrides))


def test_unknown_model_lists_the_choices(fer_zip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    assert run_cli(main, cli_overrides(fer_zip, tmp_path, "model=vgg9"), monkeypatch) == 1
    err = capsys.readouterr().err
    assert "Could not find 'model/vgg9'" in err and "Available options in 'model'" in err and "vgg16" in err


def test_misspelt_key_is_refused(fer_zip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    assert run_cli(main, cli_overrides(fer_zip, tmp_path, "trainer.max_epoch=3"), monkeypatch) == 1
    err = capsys.readouterr().err
    assert "Could not override 'trainer.max_epoch'" in err and "Key 'max_epoch' is not in struct" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_trainer_without_gpu(fer_zip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    args = [a for a in cli_overrides(fer_zip, tmp_path, "trainer=gpu") if not a.startswith("trainer.accelerator")]
    assert run_cli(main, args, monkeypatch) == 1
    err = capsys.readouterr().err
    assert "trainer.accelerator=gpu (trainer=gpu or trainer=ddp) needs a CUDA GPU, but torch" in err
    assert "Run with trainer=cpu" in err


def test_checkpoint_of_another_model(make_cfg, tiny_checkpoint: Path) -> None:
    difference = r"model\.blocks: checkpoint 1, this run 3; model\.name: checkpoint 'vgg1', this run 'vgg3'"
    with pytest.raises(CheckpointError, match=rf"tiny\.ckpt does not fit this run's model \({difference}\)"):
        train(make_cfg("model=vgg3", f"ckpt_path={tiny_checkpoint}"))


@pytest.fixture
def truncated_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    return path


def test_truncated_checkpoint_when_resuming(make_cfg, truncated_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match=r"Cannot read checkpoint .*truncated\.ckpt \(\d+ bytes\): it is truncated or corrupt"):
        train(make_cfg("model=vgg1", f"ckpt_path={truncated_checkpoint}"))


def test_truncated_checkpoint_when_evaluating(make_cfg, truncated_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match=r"Cannot read checkpoint .*truncated\.ckpt .*use another checkpoint of the run"):
        evaluate(make_cfg(f"ckpt_path={truncated_checkpoint}", config_name="eval"))


# every entry point that reads a checkpoint, as a user calls it: (checkpoint, a scratch folder) -> load
LOADERS = {
    "load_from_checkpoint": lambda path, tmp: FERClassifier.load_from_checkpoint(path),
    "load_model": lambda path, tmp: load_model(str(path)),
    "predict": lambda path, tmp: predict(compose_config([f"ckpt_path={path}", f"inputs=[{tmp}]", f"paths.output_dir={tmp / 'run'}"], "predict")),
    "export": lambda path, tmp: main_export(compose_config([f"ckpt_path={path}", f"paths.output_dir={tmp / 'run'}"], "export")),
    "ensemble": lambda path, tmp: ensemble(compose_config([f"ckpt_paths=[{path},{path}]", f"paths.output_dir={tmp / 'run'}"], "ensemble")),
}


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS.keys())
def test_every_entry_point_explains_a_broken_checkpoint(load, truncated_checkpoint: Path, tmp_path: Path) -> None:
    """Not only fer.train and fer.evaluate: a notebook reload or fer.predict on a truncated, missing
    or foreign file names it and the fix, where torch alone would suggest weights_only=False."""
    with pytest.raises(CheckpointError, match=r"Cannot read checkpoint .*truncated\.ckpt .*use another checkpoint of the run") as error:
        load(truncated_checkpoint, tmp_path)
    assert "weights_only" not in str(error.value)
    with pytest.raises(CheckpointError, match=r"missing\.ckpt does not exist"):
        load(tmp_path / "missing.ckpt", tmp_path)
    foreign = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match=r"vgg16\.pth is not a Lightning checkpoint \(no 'state_dict'"):
        load(foreign, tmp_path)


def test_vgg16_weights_that_do_not_fit(make_cfg, tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, path)
    _train_fails(make_cfg, RuntimeError, r"resnet\.pth does not fit VGG16's convolutions: missing \['0\.bias'", "model=vgg16", f"model.weights_path={path}")


def test_on_device_with_loader_workers(make_cfg) -> None:
    """Hydra wraps the DataModule's ValueError, message included."""
    _train_fails(
        make_cfg, InstantiationException, r"data\.on_device=true .* needs data\.num_workers=0 \(got 2\)", "data.on_device=true", "data.num_workers=2"
    )


def test_one_cycle_warm_up_of_exactly_one_step(make_cfg) -> None:
    """Five steps (42 synthetic faces, batch 8, one epoch) at pct_start 0.2: torch would divide by zero."""
    _train_fails(
        make_cfg, ValueError, r"pct_start x total_steps = 1 of its 5 optimizer steps", "scheduler=onecycle", "module.scheduler.pct_start=0.2"
    )


def test_frozen_feature_cache_with_augmentation(make_cfg) -> None:
    """Augmented images never recur: the cache would only fill memory."""
    _train_fails(
        make_cfg,
        ValueError,
        r"model\.cache_frozen=true needs the same training images every epoch, but data\.augment=true, module\.mixup_alpha > 0 changes them",
        "experiment=seed/vgg16_transfer", "model.pretrained=none", "data.augment=true", "module.mixup_alpha=0.2",
    )


def test_blurred_copy_of_the_dataset(make_cfg, fer_folder_copy: Path) -> None:
    for image in fer_folder_copy.rglob("*.jpg"):
        Image.open(image).filter(ImageFilter.GaussianBlur(2)).save(image, quality=95)
    _train_fails(make_cfg, DatasetError, r"look blurred: their median sharpness .* get the dataset from its source", f"data.root={fer_folder_copy}")
    metrics = train(make_cfg("model=vgg1", "test=false", f"data.root={fer_folder_copy}", "data.min_sharpness=0"))
    assert "val" in metrics


def _command(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m fer.<args>`` as a user types it, in a scratch folder (its logs/ lands there)."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_an_expected_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    """A new user's first command without the dataset: the message and its fix, not a traceback;
    HYDRA_FULL_ERROR=1 brings the traceback back."""
    missing = tmp_path / "nowhere"
    result = _command(tmp_path, "fer.train", f"data.root={missing}", HYDRA_FULL_ERROR="0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2, result.stderr  # Lightning's "Seed set to 42" may come first
    assert lines[-1].startswith(f"fer.train: DatasetError: FER-2013 not found at {missing}. Download FER-2013 from https://www.kaggle.com/")
    assert lines[-1].endswith("then set data.root=PATH or the FER2013_ROOT environment variable.")

    full = _command(tmp_path, "fer.train", f"data.root={missing}", HYDRA_FULL_ERROR="1")
    assert full.returncode == 1
    assert "Traceback (most recent call last)" in full.stderr and "in locate" in full.stderr
    assert f"DatasetError: FER-2013 not found at {missing}" in full.stderr


def test_a_constructor_error_is_the_projects_message_not_hydras(fer_zip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Hydra wraps what the DataModule raises in an InstantiationException; the command shows the
    ValueError inside it."""
    args = cli_overrides(fer_zip, tmp_path, "data.on_device=true", "data.num_workers=2")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    assert run_cli(main, args, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "fer.train: ValueError: data.on_device=true indexes the images where the model runs" in err
    assert "needs data.num_workers=0 (got 2)" in err
    assert "Error in call to target" not in err and "Traceback" not in err


def test_only_the_projects_own_errors_count_as_expected() -> None:
    """A ValueError that fer's validation raises is the user's to fix; one from inside a library
    (or anything else) is a bug and keeps its traceback."""
    try:
        class_index("smiling")
    except ValueError as error:
        assert expected_error(error) is error
    try:
        np.asarray(["x"], dtype=np.int64)
    except ValueError as error:
        assert expected_error(error) is None
    try:
        try:
            locate("/nonexistent")
        except DatasetError as cause:
            raise InstantiationException("Error in call to target 'fer.data.FER2013DataModule'") from cause
    except InstantiationException as error:
        assert isinstance(expected_error(error), DatasetError)
    assert expected_error(RuntimeError("a bug")) is None


def test_a_run_without_epochs_writes_its_metrics_and_warns_about_the_curves(make_cfg, tmp_path: Path, monkeypatch, caplog) -> None:
    """trainer.max_epochs=0 (score the initial weights) has no learning curve to draw: a warning,
    and the other plots and the metrics are written."""
    monkeypatch.setattr("fer.train.plot_run", plot_run)  # this test is about the plots
    with caplog.at_level(logging.WARNING, logger="fer.plots"):
        metrics = train(make_cfg("model=vgg1", "trainer.max_epochs=0"))
    assert metrics["epochs"] == 0 and (tmp_path / "run" / "metrics.json").is_file()
    assert "No plots/learning_curves.png: the run trained no epoch (trainer.max_epochs=0?)" in caplog.text
    plots = tmp_path / "run" / "plots"
    assert (plots / "confusion_test.png").is_file() and (plots / "reliability_val.png").is_file()
    assert not (plots / "learning_curves.png").exists()


@pytest.mark.parametrize("doc", [CONF / "data" / "folder.yaml", ROOT / "README.md"], ids=lambda p: p.name)
def test_label_map_override_in_the_documented_form(doc: Path) -> None:
    """``data=folder 'data.label_map={AN: angry, ...}'`` as conf/data/folder.yaml and the README
    show it, no ``++``."""
    documented = re.search(r"'(data\.label_map=\{[^']*\})'", doc.read_text())
    assert documented, f"{doc} no longer shows the label_map override"
    cfg = compose_config(["data=folder", "data.root=faces", "ckpt_path=x.ckpt", documented.group(1)], "eval")
    assert cfg.data.label_map["AN"] == "angry" and cfg.data.label_map["HA"] == "happy"
    assert build_datamodule(cfg).label_map["AN"] == "angry"
    assert compose_config(["data=folder", "data.root=faces", "ckpt_path=x.ckpt"], "eval").data.label_map is None
