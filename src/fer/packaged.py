"""The model that ships inside the package, so that ``fer.load_model()`` works the minute fer is installed.

``src/fer/weights/`` holds three files, all written by ``python -m fer.release run_dir=RUN_DIR``
(:mod:`fer.release`) from one of the project's own training runs:

- ``model.pt``: a slim Lightning checkpoint (weights, possibly in half precision, hyper-parameters,
  temperature; no optimizer state), which :meth:`FERClassifier.load_from_checkpoint` reads as it
  reads any checkpoint (half-precision weights are cast back to float32 as they load);
- ``card.json`` and ``card.md``: its model card (command, commit, data, PrivateTest accuracy with
  its interval, per-class accuracy, calibration, size, latency, known limits) and the file's
  SHA-256, checked on every load so that a damaged copy never predicts silently.

Nothing is downloaded: a checkout or wheel without the files raises :class:`NoPackagedModel`,
which says how to build them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fer.run.checkpoints import CheckpointError
from fer.training.module import FERClassifier

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = "model.pt"
CARD_JSON = "card.json"
CARD_MD = "card.md"


class NoPackagedModel(CheckpointError):
    """This installation holds no packaged model (or only part of one)."""


def directory(folder: str | os.PathLike | None = None) -> Path:
    """The folder of the packaged files: ``folder`` if given, else the package's own."""
    return WEIGHTS_DIR if folder is None else Path(folder)


def available(folder: str | os.PathLike | None = None) -> bool:
    root = directory(folder)
    return (root / WEIGHTS_FILE).is_file() and (root / CARD_JSON).is_file()


def card(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The packaged model's card (``card.json``)."""
    root = directory(folder)
    if not available(root):
        raise NoPackagedModel(
            f"No packaged model in {root} (it needs {WEIGHTS_FILE} and {CARD_JSON}). Pass ckpt_path=PATH of a checkpoint "
            "written by fer.train, or package one: python -m fer.release run_dir=RUN_DIR (a training run's directory)."
        )
    return json.loads((root / CARD_JSON).read_text())


def weights_path(folder: str | os.PathLike | None = None) -> Path:
    """The packaged checkpoint, after checking its SHA-256 against the card's."""
    root = directory(folder)
    expected = card(root)["weights"]["sha256"]
    path = root / WEIGHTS_FILE
    found = sha256(path)
    if found != expected:
        raise NoPackagedModel(
            f"{path} is damaged: its SHA-256 is {found}, the card says {expected}. Reinstall fer, or rebuild the file "
            "with python -m fer.release run_dir=RUN_DIR."
        )
    return path


def load(folder: str | os.PathLike | None = None, map_location: str = "cpu") -> FERClassifier:
    """The packaged model in eval mode, with the test-time augmentation its card reports."""
    return FERClassifier.load_from_checkpoint(weights_path(folder), map_location=map_location).eval()


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
