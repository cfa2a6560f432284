"""MixUp and CutMix: the soft targets are exactly the blend the images received."""

from __future__ import annotations

import pytest
import torch

from fer.training.mixing import mix_batch

CLASSES = 7


def labelled_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Seven 2-channel 12x12 images, each filled with its own label, so that any blend of images
    has the mean pixel value of the same blend of labels."""
    labels = torch.randperm(CLASSES)
    return labels.float().view(-1, 1, 1, 1).expand(-1, 2, 12, 12).contiguous(), labels


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
@pytest.mark.parametrize("seed", range(5))
def test_soft_targets_match_the_mixed_images(mixup_alpha: float, cutmix_alpha: float, seed: int) -> None:
    torch.manual_seed(seed)
    images, labels = labelled_batch()
    original = images.clone()
    mixed, targets = mix_batch(images, labels, CLASSES, mixup_alpha, cutmix_alpha)
    assert torch.equal(images, original)  # the batch itself is not written to
    assert mixed.shape == images.shape and targets.shape == (CLASSES, CLASSES)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(CLASSES))
    torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), targets @ torch.arange(CLASSES).float())


def test_cutmix_pastes_pixels_and_mixup_blends_them() -> None:
    """CutMix images hold only their own and their partner's pixel values; MixUp's hold neither
    (unless the ratio lands on 0 or 1, which Beta(0.4, 0.4) does not)."""
    torch.manual_seed(0)
    images, labels = labelled_batch()
    cut, cut_targets = mix_batch(images, labels, CLASSES, cutmix_alpha=1.0)
    for image, target in zip(cut, cut_targets):
        assert set(image.unique().tolist()) <= set(target.nonzero().flatten().float().tolist())
    blended, _ = mix_batch(images, labels, CLASSES, mixup_alpha=0.4)
    moved = blended[:, 0, 0, 0] != images[:, 0, 0, 0]
    assert moved.any()
    assert not torch.isin(blended[moved, 0, 0, 0], torch.arange(CLASSES).float()).any()


def test_both_alphas_on_use_both_methods() -> None:
    torch.manual_seed(0)
    images, labels = labelled_batch()
    kinds = set()
    for _ in range(20):
        mixed, _ = mix_batch(images, labels, CLASSES, mixup_alpha=0.4, cutmix_alpha=1.0)
        values = mixed.unique()
        kinds.add("cutmix" if torch.isin(values, torch.arange(CLASSES).float()).all() else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_zero_alphas_leave_the_batch_alone() -> None:
    images, labels = labelled_batch()
    mixed, targets = mix_batch(images, labels, CLASSES)
    assert mixed is images
    assert torch.equal(targets.argmax(dim=1), labels) and torch.equal(targets.sum(dim=1), torch.ones(CLASSES))


def test_negative_alpha_is_refused() -> None:
    images, labels = labelled_batch()
    with pytest.raises(ValueError, match="must be >= 0"):
        mix_batch(images, labels, CLASSES, mixup_alpha=-0.2)


@pytest.mark.parametrize("alphas", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}])
def test_channels_last_batches_stay_channels_last(alphas: dict[str, float]) -> None:
    """FERClassifier feeds the mixed batch straight to the network, prepared channels-last."""
    images, labels = labelled_batch()
    mixed, _ = mix_batch(images.contiguous(memory_format=torch.channels_last), labels, CLASSES, **alphas)
    assert mixed.is_contiguous(memory_format=torch.channels_last)
