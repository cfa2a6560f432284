"""Albumentations pipelines for 48x48 grayscale faces.

Every knob is a config value (``data.aug.*``). Pipelines run on uint8 HxW arrays and return
uint8 arrays; scaling and normalisation happen on the batch inside the model, so a checkpoint
predicts on raw images and the loaders move 4x fewer bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

from fer.vision.images import IMAGE_SIZE  # noqa: E402


@dataclass
class AugmentConfig:
    """Training augmentation. The defaults are the seed's: 10% shifts and horizontal flips."""

    hflip: float = 0.5
    translate: float = 0.1
    scale: float = 0.0
    rotate: float = 0.0
    affine_p: float = 1.0
    erasing_p: float = 0.0
    erasing_max: float = 0.4

    def __post_init__(self) -> None:
        for name in ("hflip", "affine_p", "erasing_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.aug.{name}={getattr(self, name)} must be a probability in [0, 1].")
        if not 0.0 <= self.translate < 0.5 or not 0.0 <= self.scale < 1.0 or not 0.0 <= self.erasing_max <= 1.0:
            raise ValueError(
                f"data.aug: translate={self.translate} must be in [0, 0.5), scale={self.scale} in [0, 1), "
                f"erasing_max={self.erasing_max} in [0, 1]."
            )


def train_transform(aug: AugmentConfig | None, image_size: int, crop_size: int) -> A.Compose | None:
    """Augmentation (if any), resize to ``image_size``, random crop to ``crop_size``."""
    steps: list[A.BasicTransform] = []
    if aug is not None:
        if aug.translate or aug.scale or aug.rotate:
            steps.append(
                A.Affine(
                    translate_percent=(-aug.translate, aug.translate),
                    scale=(1 - aug.scale, 1 + aug.scale),
                    rotate=(-aug.rotate, aug.rotate),
                    border_mode=cv2.BORDER_REPLICATE,
                    p=aug.affine_p,
                )
            )
        if aug.hflip:
            steps.append(A.HorizontalFlip(p=aug.hflip))
    steps += _resize(image_size)
    if crop_size < image_size:
        steps.append(A.RandomCrop(crop_size, crop_size))
    if aug is not None and aug.erasing_p:
        hole = (max(1, round(crop_size * 0.1)), max(1, round(crop_size * aug.erasing_max)))
        steps.append(
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=hole, hole_width_range=hole, fill=0, p=aug.erasing_p)
        )
    return A.Compose(steps, strict=True) if steps else None


def eval_transform(image_size: int, crop_size: int) -> A.Compose | None:
    """Deterministic resize and centre crop: the view evaluation and prediction see."""
    steps = _resize(image_size)
    if crop_size < image_size:
        steps.append(A.CenterCrop(crop_size, crop_size))
    return A.Compose(steps, strict=True) if steps else None


def _resize(image_size: int) -> list[A.BasicTransform]:
    return [] if image_size == IMAGE_SIZE else [A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR)]
