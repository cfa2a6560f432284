"""Albumentations pipelines: built strictly (2.x ignores misspelt arguments otherwise), the sizes
they produce, and the augmentation config's validation."""

from __future__ import annotations

import warnings

import albumentations as A
import numpy as np
import pytest
from helpers import synthetic_face

from fer.data.transforms import AugmentConfig, eval_transform, train_transform

FACE = synthetic_face(3, 0)
EVERYTHING = AugmentConfig(hflip=0.5, translate=0.1, scale=0.1, rotate=10, erasing_p=0.5, erasing_max=0.3, affine_p=0.7)


@pytest.mark.parametrize(
    "build",
    [
        lambda: train_transform(EVERYTHING, 64, 56),
        lambda: train_transform(AugmentConfig(), 48, 48),
        lambda: train_transform(None, 64, 48),
        lambda: eval_transform(64, 56),
        lambda: eval_transform(48, 40),
    ],
)
def test_pipelines_are_strict_and_build_without_warnings(build) -> None:
    """strict=True turns an argument albumentations would ignore into an error; no warning may slip out."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipeline = build()
        out = pipeline(image=FACE)["image"]
    assert isinstance(pipeline, A.Compose) and pipeline.strict
    assert out.dtype == np.uint8 and out.ndim == 2


def test_augmentation_settings_reach_the_transforms() -> None:
    steps = train_transform(EVERYTHING, 64, 56).transforms
    assert [type(t).__name__ for t in steps] == ["Affine", "HorizontalFlip", "Resize", "RandomCrop", "CoarseDropout"]
    affine, flip, _, _, erase = steps
    assert affine.translate_percent == {"x": (-0.1, 0.1), "y": (-0.1, 0.1)}
    assert affine.scale == {"x": (0.9, 1.1), "y": (0.9, 1.1)}
    assert affine.rotate == (-10.0, 10.0)
    assert affine.p == 0.7
    assert flip.p == 0.5
    assert erase.p == 0.5 and erase.hole_height_range == (6, 17) == erase.hole_width_range


def test_no_augmentation_at_native_size_is_no_pipeline() -> None:
    assert train_transform(None, 48, 48) is None
    assert eval_transform(48, 48) is None


def test_defaults_shift_and_flip_only() -> None:
    names = [type(t).__name__ for t in train_transform(AugmentConfig(), 48, 48).transforms]
    assert names == ["Affine", "HorizontalFlip"]


def test_flip_with_probability_one_mirrors() -> None:
    pipeline = train_transform(AugmentConfig(hflip=1.0, translate=0.0), 48, 48)
    np.testing.assert_array_equal(pipeline(image=FACE)["image"], FACE[:, ::-1])


def test_training_augmentation_is_random() -> None:
    pipeline = train_transform(AugmentConfig(hflip=0.5, translate=0.2), 48, 48)
    outputs = {pipeline(image=FACE)["image"].tobytes() for _ in range(8)}
    assert len(outputs) > 1


def test_erasing_blanks_a_square() -> None:
    pipeline = train_transform(AugmentConfig(hflip=0.0, translate=0.0, erasing_p=1.0, erasing_max=0.4), 48, 48)
    face = np.full((48, 48), 200, dtype=np.uint8)
    erased = pipeline(image=face)["image"] == 0
    rows, cols = np.nonzero(erased)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert erased.sum() == height * width  # one filled rectangle
    assert 5 <= height <= 19 and 5 <= width <= 19  # 10%..40% of 48


@pytest.mark.parametrize(("image_size", "crop_size"), [(48, 40), (64, 56), (96, 96), (32, 32)])
def test_resize_then_crop_gives_the_crop_size(image_size: int, crop_size: int) -> None:
    for pipeline in (train_transform(None, image_size, crop_size), eval_transform(image_size, crop_size)):
        if pipeline is not None:
            assert pipeline(image=FACE)["image"].shape == (crop_size, crop_size)


def test_eval_crop_is_the_deterministic_centre() -> None:
    np.testing.assert_array_equal(eval_transform(48, 40)(image=FACE)["image"], FACE[4:44, 4:44])


def test_training_crop_is_random() -> None:
    pipeline = train_transform(None, 48, 32)
    assert len({pipeline(image=FACE)["image"].tobytes() for _ in range(8)}) > 1


@pytest.mark.parametrize(
    "values",
    [
        {"hflip": 1.5},
        {"hflip": -0.1},
        {"affine_p": 2.0},
        {"erasing_p": -1.0},
        {"translate": 0.5},
        {"translate": -0.1},
        {"scale": 1.0},
        {"erasing_max": 1.2},
    ],
)
def test_invalid_augment_values_raise(values: dict[str, float]) -> None:
    name = next(iter(values))
    with pytest.raises(ValueError, match=f"{name}={values[name]}"):
        AugmentConfig(**values)


def test_unknown_augment_key_raises() -> None:
    with pytest.raises(TypeError, match="hflip_p"):
        AugmentConfig(hflip_p=0.5)
