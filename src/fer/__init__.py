"""fer: facial expression recognition on FER-2013 with PyTorch Lightning and Hydra."""

from __future__ import annotations

import os

from fer import packaged
from fer.classes import CLASSES, NUM_CLASSES
from fer.run.resume import register_resolver
from fer.training.module import FERClassifier

register_resolver()


def load_model(ckpt_path: str | os.PathLike | None = None, map_location: str = "cpu") -> FERClassifier:
    """A trained model for inference, in eval mode (no Hydra, no config files needed): the
    checkpoint at ``ckpt_path``, or with no argument the model packaged with fer (:mod:`fer.packaged`)."""
    if ckpt_path is None:
        return packaged.load(map_location=map_location)
    return FERClassifier.load_from_checkpoint(ckpt_path, map_location=map_location).eval()


__all__ = ["CLASSES", "NUM_CLASSES", "FERClassifier", "load_model"]
