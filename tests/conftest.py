"""Shared fixtures: tiny synthetic FER-2013 copies in every real layout, composed configs, a tiny
trained checkpoint, and the real dataset/weights when the environment names them. Fixtures and
hooks only: the plain helpers and constants that tests import live in helpers.py."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pytest
from omegaconf import DictConfig, open_dict

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before albumentations is first imported

from helpers import PER_CLASS, compose_config, fast_overrides, synthetic_face, write_csv, write_folder  # noqa: E402

from fer.classes import CLASSES  # noqa: E402


@pytest.fixture(scope="session")
def fer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("fer_folder"))


@pytest.fixture
def fer_folder_copy(fer_folder: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic folder that a test may rename, break or add files to."""
    return Path(shutil.copytree(fer_folder, tmp_path / "fer_folder"))


@pytest.fixture(scope="session")
def fer_zip(fer_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Kaggle zip (stored, like the real one), read in place."""
    path = tmp_path_factory.mktemp("fer_zip") / "fer2013.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(fer_folder.rglob("*.jpg")):
            archive.write(file, file.relative_to(fer_folder).as_posix())
    return path


@pytest.fixture(scope="session")
def fer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ICML fer2013.csv (emotion,pixels,Usage), labels in its own (canonical) order."""
    rows = [
        [label, " ".join(map(str, synthetic_face(label, i + 100 * position).ravel())), usage]
        for position, (usage, count) in enumerate(PER_CLASS.items())
        for label in range(len(CLASSES))
        for i in range(count)
    ]
    return write_csv(tmp_path_factory.mktemp("fer_csv") / "fer2013.csv", ["emotion", "pixels", "Usage"], rows)


@pytest.fixture
def make_cfg(tmp_path: Path, fer_zip: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, config_name="train")``: a config on the synthetic zip, writing under
    tmp_path, sized to run in seconds on CPU (fp32, tiny batches, 1 epoch, no progress bar)."""

    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        base = fast_overrides(fer_zip, tmp_path / "cache")
        if config_name == "train":
            base.append("callbacks.progress_bar.refresh_rate=0")
        cfg = compose_config([*base, *overrides], config_name=config_name)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, fer_zip: Path) -> Path:
    """A vgg1 checkpoint trained for one epoch on the synthetic zip (session-wide, a few seconds)."""
    from fer.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = compose_config([*fast_overrides(fer_zip, out / "cache"), "model=vgg1", "callbacks.progress_bar.refresh_rate=0"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "run")
    metrics = train(cfg)
    path = out / "tiny.ckpt"
    shutil.copy(metrics["best_checkpoint"], path)
    return path


@pytest.fixture(scope="session")
def sample_portrait() -> Path:
    """A real face photo that ships with matplotlib (the face detector needs one)."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"matplotlib's sample portrait {path} is not installed")
    return path


@pytest.fixture
def skip_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave out the end-of-run figures (seconds of matplotlib per run) in tests about other things."""
    monkeypatch.setattr("fer.train.plot_run", lambda *args, **kwargs: None)
