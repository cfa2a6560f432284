"""Shared fixtures: tiny synthetic FER-2013 copies in every real layout, composed configs, a tiny
trained checkpoint, and the real dataset/weights when the environment names them."""

from __future__ import annotations

import csv
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from fer.classes import CLASSES  # noqa: E402

# images per class in each ICML usage of the synthetic copies
PER_CLASS = {"Training": 6, "PublicTest": 2, "PrivateTest": 2}
REAL_ROOT = os.environ.get("FER2013_ROOT")
REAL_WEIGHTS = os.environ.get("FER_VGG16_WEIGHTS")

needs_real_data = pytest.mark.skipif(
    not (REAL_ROOT and Path(REAL_ROOT).exists()), reason="set FER2013_ROOT to the real FER-2013 to run"
)
needs_real_weights = pytest.mark.skipif(
    not (REAL_WEIGHTS and Path(REAL_WEIGHTS).is_file()), reason="set FER_VGG16_WEIGHTS to the VGG16 weights file"
)


def synthetic_face(label: int, index: int) -> np.ndarray:
    """A 48x48 uint8 image whose class is learnable: a bright horizontal band at a class-specific
    height, over seeded noise."""
    rng = np.random.default_rng(1000 * label + index)
    image = rng.integers(0, 90, size=(48, 48), dtype=np.uint8)
    row = 4 + 6 * label
    image[row : row + 5, :] = 230
    return image


def write_folder(root: Path) -> Path:
    """The Kaggle layout: train/<class>/Training_*.jpg, test/<class>/{PublicTest,PrivateTest}_*.jpg."""
    for usage, count in PER_CLASS.items():
        folder = "train" if usage == "Training" else "test"
        for label, name in enumerate(CLASSES):
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                index = i + 100 * list(PER_CLASS).index(usage)
                Image.fromarray(synthetic_face(label, index)).save(root / folder / name / f"{usage}_{label}{index:04d}.jpg", quality=95)
    return root


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
    path = tmp_path_factory.mktemp("fer_csv") / "fer2013.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, count in PER_CLASS.items():
            for label in range(len(CLASSES)):
                for i in range(count):
                    pixels = synthetic_face(label, i + 100 * list(PER_CLASS).index(usage))
                    writer.writerow([label, " ".join(map(str, pixels.ravel())), usage])
    return path


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose a config as ``python -m fer.<entry>`` would, without running Hydra's app."""
    with initialize_config_module(config_module="fer.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def fast_overrides(fer_zip: Path, cache_dir: Path) -> list[str]:
    """Overrides that make a run on the synthetic zip take seconds on CPU (fp32, tiny batches, 1 epoch)."""
    return [
        f"data.root={fer_zip}",
        f"paths.cache_dir={cache_dir}",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
    ]


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
