"""What a trained model expects of its input, kept in its checkpoint, from which the data side is
built (as timm resolves a data config from a model): training writes it once from ``data.*``;
evaluation, ensembles, plots, prediction and export read it back from the checkpoint.

Every face starts as 48x48 grayscale (:func:`fer.vision.images.to_face`), is resized to ``image_size``,
and the model crops ``crop_size`` out of it (randomly in training, the centre or ten crops in
evaluation) and adapts ``channels`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fer.vision.images import IMAGE_SIZE

MIN_CROP = 8


@dataclass(frozen=True)
class InputSpec:
    """``image_size``: side the 48x48 faces are resized to; ``crop_size``: side of the model's crop
    (at most ``image_size``); ``channels``: 1 (gray) or 3 (gray copied to RGB by the loader)."""

    image_size: int = IMAGE_SIZE
    crop_size: int = IMAGE_SIZE
    channels: int = 1

    def __post_init__(self) -> None:
        if not MIN_CROP <= self.crop_size <= self.image_size:
            raise ValueError(
                f"data.crop_size={self.crop_size} must be between {MIN_CROP} and data.image_size={self.image_size}: "
                "the model crops its input out of the resized face."
            )
        if self.channels not in (1, 3):
            raise ValueError(f"data.channels={self.channels} must be 1 (grayscale) or 3 (gray copied to RGB).")

    @classmethod
    def from_data_config(cls, data: Mapping[str, Any]) -> InputSpec:
        """From a ``data`` config (``crop_size: null`` means the whole image)."""
        image_size = int(data.get("image_size") or IMAGE_SIZE)
        return cls(image_size, int(data.get("crop_size") or image_size), int(data.get("channels") or 1))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> InputSpec:
        """From a checkpoint's ``input_spec`` hyperparameter (None: written before it existed, 48/48/1)."""
        return cls(**values) if values else cls()

    def as_dict(self) -> dict[str, int]:
        """Plain numbers, what checkpoints store (they load with ``weights_only``) and what the
        ``data`` config takes as overrides."""
        return asdict(self)
