"""Plain helpers and constants that tests import (``from helpers import ...``; pytest puts tests/ on
sys.path, see pyproject's ``pythonpath``). Fixtures and hooks stay in conftest.py, which pytest
loads by itself and which is not meant to be imported.

- the synthetic FER-2013: ``PER_CLASS``, ``synthetic_face``, ``write_folder``, ``write_csv``
- the real dataset and weights, when the environment names them: ``REAL_ROOT``, ``REAL_WEIGHTS``,
  ``needs_real_data``, ``needs_real_weights``
- configs: ``compose_config``, ``fast_overrides``
- the command-line entry points, run in this process or another: ``cli_overrides``, ``run_cli``,
  ``SlowAfterFirstEpoch`` (a callback that Hydra instantiates as ``helpers.SlowAfterFirstEpoch``)
  and ``SLOW_ENV``
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image
from pytorch_lightning import Callback, LightningModule, Trainer

from fer.classes import CLASSES

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

SLOW_ENV = "FER_TEST_SLOW_SECONDS"


# ---- the synthetic FER-2013 ----


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


def write_csv(path: Path, header: list[str], rows: Iterable[list[object]]) -> Path:
    """A CSV file with this header and these rows (the ICML fer2013.csv is emotion,pixels,Usage)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---- configs ----


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


# ---- the command-line entry points ----


def cli_overrides(fer_zip: Path, tmp_path: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long CPU run on the synthetic zip, logging under ``tmp_path/logs``."""
    return [
        *fast_overrides(fer_zip, tmp_path / "cache"),
        f"paths.log_dir={tmp_path / 'logs'}",
        "model=vgg1",
        "callbacks.progress_bar.refresh_rate=0",
        *extra,
    ]


def run_cli(main: Callable[[], None], args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run a Hydra entry point in this process as ``python -m fer.x ARGS`` would; its exit code."""
    monkeypatch.setattr(sys, "argv", ["fer", *args])
    try:
        main()
    except SystemExit as exit:
        return int(exit.code or 0)
    finally:
        GlobalHydra.instance().clear()
    return 0


class SlowAfterFirstEpoch(Callback):
    """Sleeps after each training batch from the second epoch on when ``FER_TEST_SLOW_SECONDS`` is
    set, so that a test can kill the run mid-epoch; changes no number."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if trainer.current_epoch >= 1 and os.environ.get(SLOW_ENV):
            time.sleep(float(os.environ[SLOW_ENV]))


def write_packaged(folder: Path, checkpoint: Path, name: str = "test-card") -> Path:
    """A packaged-model folder (fer.packaged's layout) holding ``checkpoint``'s weights and a minimal
    card with their checksum, for tests of what uses the packaged model (fer.release writes real ones)."""
    import json

    import torch

    from fer import packaged
    from fer.release import slim_checkpoint
    from fer.run.checkpoints import read_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(slim_checkpoint(read_checkpoint(checkpoint), "fp32"), folder / packaged.WEIGHTS_FILE)
    card = {"name": name, "weights": {"sha256": packaged.sha256(folder / packaged.WEIGHTS_FILE)}}
    (folder / packaged.CARD_JSON).write_text(json.dumps(card))
    return folder
