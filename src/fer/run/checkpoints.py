"""Checkpoint files: written atomically, read back with errors that name the file and the fix.

Lightning 2.6.6 (``lightning_fabric.utilities.cloud_io._atomic_save``) serialises into memory and
writes through an fsspec transaction, which for local paths writes a temporary file in the system
temp folder (``tempfile.mkstemp()``) and then ``shutil.move``-s it over the target. That is a
rename only when the temp folder and the checkpoint folder share a filesystem; otherwise (node-local
``/tmp``, checkpoints on shared storage: the usual cluster layout) it copies into the target in
place, so a crash mid-copy leaves a truncated ``last.ckpt`` as the only copy, and nothing is
fsync-ed. :class:`AtomicCheckpointIO` writes beside the target and renames, always
(:func:`fer.run.atomic.atomic_write`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from fer.run.atomic import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model it is loaded into."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write local checkpoints through :func:`~fer.run.atomic.atomic_write`: a reader (or a
    resumed run) sees the old file or the new one, never half of one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local paths.")
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a Lightning checkpoint on CPU (``weights_only``), or say clearly why it cannot be."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Pass ckpt_path=PATH of an existing .ckpt file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Cannot read checkpoint {path} ({path.stat().st_size} bytes): it is truncated or corrupt "
            f"({type(error).__name__}: {str(error).split('. ')[0]}). A crash or an "
            "incomplete copy cuts files short: use another checkpoint of the run (last.ckpt or the best "
            "epochNNN.ckpt in the same folder) or copy it again."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'; found {found}). Pass a .ckpt written by "
            "fer.train (its run's checkpoints/ folder)."
        )
    return checkpoint


def check_fits(path: str | os.PathLike, checkpoint: dict[str, Any], module: nn.Module) -> None:
    """Raise a :class:`CheckpointError` naming the model difference when the checkpoint's weights do
    not fit ``module`` (a vgg1 checkpoint resumed as vgg3, say), before Lightning's long key dump."""
    saved = checkpoint["state_dict"]
    expected = module.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = [
        f"{key} {tuple(saved[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in saved and hasattr(saved[key], "shape") and saved[key].shape != expected[key].shape
    ]
    if not (missing or unexpected or reshaped):
        return
    raise CheckpointError(
        f"Checkpoint {Path(path)} does not fit this run's model ({_net_difference(checkpoint, module)}). "
        f"Missing keys {missing[:3]}, unexpected keys {unexpected[:3]}, shape mismatches "
        f"(checkpoint vs model) {reshaped[:3]}. Resume with the model options the checkpoint was trained "
        "with (its run's config.yaml), or score it with python -m fer.evaluate ckpt_path=PATH, which "
        "rebuilds the model from the checkpoint."
    )


def _net_difference(checkpoint: dict[str, Any], module: nn.Module) -> str:
    """The model options that differ, e.g. ``blocks: checkpoint 1, this run 3``."""
    trained = checkpoint.get("hyper_parameters", {}).get("net") or {}
    wanted = dict(getattr(module, "hparams", {}).get("net") or {})
    keys = sorted(set(trained) | set(wanted))
    differ = [f"model.{k}: checkpoint {trained.get(k)!r}, this run {wanted.get(k)!r}" for k in keys if trained.get(k) != wanted.get(k)]
    return "; ".join(differ) if differ else "same model options, other weights layout"


def update_checkpoint(path: str | os.PathLike, **entries: Any) -> None:
    """Add or replace top-level entries of a checkpoint file (e.g. the calibration fitted after
    training), rewritten atomically like every checkpoint."""
    checkpoint = read_checkpoint(path)
    checkpoint.update(entries)
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)
