"""Batched on-device augmentation: the same knobs as the albumentations pipeline, as tensor ops."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fer.data import FER2013DataModule
from fer.data.batch_augment import BatchAugment
from fer.data.transforms import AugmentConfig

BATCH = torch.randint(0, 256, (16, 1, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
NO_AUG = {"hflip": 0.0, "translate": 0.0, "scale": 0.0, "rotate": 0.0, "erasing_p": 0.0}


def scaled(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


def test_without_augmentation_it_only_scales() -> None:
    torch.testing.assert_close(BatchAugment(None, 48)(BATCH), scaled(BATCH), atol=1e-5, rtol=0)


def test_certain_flip_mirrors_every_image() -> None:
    out = BatchAugment(AugmentConfig(**{**NO_AUG, "hflip": 1.0}), 48)(BATCH)
    torch.testing.assert_close(out, scaled(BATCH).flip(-1), atol=1e-5, rtol=0)


def test_shifts_move_whole_pixels() -> None:
    """Pure translations resample nothing: each output is its image moved by whole pixels, within
    10% of 48 (5 px), the border replicated, so shifted faces are not blurred."""
    torch.manual_seed(1)
    out = BatchAugment(AugmentConfig(**{**NO_AUG, "translate": 0.1}), 48)(BATCH)
    padded = F.pad(scaled(BATCH), (5, 5, 5, 5), mode="replicate")
    windows = padded.unfold(2, 48, 1).unfold(3, 48, 1)  # [B, 1, 11, 11, 48, 48]: every shift of -5..5
    shifts = []
    for image, candidates in zip(out, windows):
        distance = (candidates[0] - image[0]).abs().amax(dim=(-1, -2))
        assert distance.min() < 1e-5
        shifts.append(divmod(int(distance.argmin()), 11))
    assert len(set(shifts)) > 4  # drawn per image, not one shift for the batch


def test_affine_p_zero_leaves_the_geometry_alone() -> None:
    """affine_p gates shift, scale and rotation per image: at 0 they never happen, at 0.5 some."""
    strong = {**NO_AUG, "translate": 0.1, "scale": 0.2, "rotate": 20}
    torch.manual_seed(6)
    torch.testing.assert_close(BatchAugment(AugmentConfig(**strong, affine_p=0.0), 48)(BATCH), scaled(BATCH), atol=1e-5, rtol=0)
    out = BatchAugment(AugmentConfig(**strong, affine_p=0.5), 48)(BATCH)
    unchanged = [(o - s).abs().max() < 1e-5 for o, s in zip(out, scaled(BATCH))]
    assert 0 < sum(unchanged) < len(unchanged)


def test_random_crop_is_a_window_of_the_image() -> None:
    torch.manual_seed(2)
    out = BatchAugment(None, 40)(BATCH)
    assert out.shape == (16, 1, 40, 40)
    windows = scaled(BATCH).unfold(2, 40, 1).unfold(3, 40, 1)  # [B, 1, 9, 9, 40, 40]
    for image, candidates in zip(out, windows):
        distance = (candidates[0] - image[0]).abs().amax(dim=(-1, -2))
        assert distance.min() < 1e-5


def test_erasing_zeroes_one_rectangle_per_image() -> None:
    torch.manual_seed(3)
    bright = torch.full((8, 1, 48, 48), 200, dtype=torch.uint8)
    out = BatchAugment(AugmentConfig(**{**NO_AUG, "erasing_p": 1.0, "erasing_max": 0.3}), 48)(bright)
    for image in out[:, 0]:
        rows, cols = torch.nonzero(image == 0, as_tuple=True)
        assert len(rows) > 0
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width  # one filled rectangle
        assert 5 <= height <= 15 and 5 <= width <= 15  # 10%..30% of 48


def test_rotation_and_scale_keep_shape_and_range() -> None:
    out = BatchAugment(AugmentConfig(rotate=15, scale=0.2), 40)(BATCH)
    assert out.shape == (16, 1, 40, 40) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_rotation_turns_about_the_centre_and_scale_zooms() -> None:
    """A ring centred in the image stays put under rotation (so the turn is about the centre, with
    no shift), while a bar through the centre turns; zooming moves the ring's radius."""
    coords = torch.arange(48).float() - 23.5
    radius = (coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2).sqrt()
    ring = ((radius - 12).abs() < 2).float().expand(8, 1, 48, 48)
    bar = (coords.view(1, -1).abs() < 2).float().expand(8, 48, 48).unsqueeze(1)
    turn = BatchAugment(AugmentConfig(**{**NO_AUG, "rotate": 30, "affine_p": 1.0}), 48)
    torch.manual_seed(4)
    turned_ring = turn(ring.mul(255).to(torch.uint8))
    assert (turned_ring - ring).abs().mean() < 0.03
    torch.manual_seed(4)
    assert ((turn(bar.mul(255).to(torch.uint8)) - bar).abs().mean(dim=(1, 2, 3)) > 0.005).sum() >= 6  # most images turned
    zoom = BatchAugment(AugmentConfig(**{**NO_AUG, "scale": 0.2, "affine_p": 1.0}), 48)
    torch.manual_seed(5)
    zoomed = zoom(ring.mul(255).to(torch.uint8))
    radii = [float((radius * image[0]).sum() / image[0].sum()) for image in zoomed]
    assert max(radii) - min(radii) > 1.0 and all(9 < r < 16 for r in radii)  # +-20%: 12 px -> 10..15


@pytest.mark.parametrize("training", [True, False])
def test_datamodule_augments_only_training_batches(fer_zip: Path, training: bool) -> None:
    dm = FER2013DataModule(str(fer_zip), augment=True, augment_on="device", aug={"hflip": 1.0, "translate": 0.0}, batch_size=8)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=training)
    images, labels = next(iter(dm.train_dataloader()))
    out, same_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(same_labels, labels)
    if training:
        torch.testing.assert_close(out, scaled(images).flip(-1), atol=1e-5, rtol=0)
    else:
        assert out is images
