"""MixUp and CutMix: train on blends of two faces against the same blend of their labels.

Both are regularisers from the strongest FER-2013 recipes' toolbox (FER-2013 labels are noisy and
the classes overlap, so soft targets suit it). :class:`~fer.training.module.FERClassifier` applies them in
``training_step`` to the prepared float batch, after augmentation, pairing each image with another
of the same batch; validation and test never mix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mix_batch(
    images: Tensor, targets: Tensor, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Float images [B, C, H, W] and class indices [B] (or class probabilities [B, classes], such as
    a teacher's soft targets) -> mixed images and soft targets [B, classes].

    One mixing ratio ``lam ~ Beta(alpha, alpha)`` per batch. MixUp blends whole images,
    ``lam * a + (1 - lam) * b``; CutMix pastes a box of ``b`` covering ``1 - lam`` of ``a`` (the
    box is clipped at the border and ``lam`` recomputed from its real area). With both alphas
    above zero each batch takes one of the two, evenly; with both zero the batch is returned as is,
    its targets one-hot (probabilities unchanged). Probabilities mix exactly as one-hot labels do.
    The images keep their memory format (channels-last stays channels-last).
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup_alpha={mixup_alpha} and cutmix_alpha={cutmix_alpha} must be >= 0.")
    if targets.ndim == 2:
        if targets.shape[1] != num_classes:
            raise ValueError(f"Soft targets need {num_classes} columns, got shape {tuple(targets.shape)}.")
        soft = targets.to(images.dtype)
    else:
        soft = F.one_hot(targets, num_classes).to(images.dtype)
    if not mixup_alpha and not cutmix_alpha:
        return images, soft
    use_cutmix = cutmix_alpha > 0 and (not mixup_alpha or torch.rand(()).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    partner = torch.randperm(images.shape[0], device=images.device)
    if use_cutmix:
        images, lam = _paste_box(images, images[partner], lam)
    else:
        images = images * lam + images[partner] * (1 - lam)
    return images, soft * lam + soft[partner] * (1 - lam)


def _paste_box(images: Tensor, others: Tensor, lam: float) -> tuple[Tensor, float]:
    """Paste a random box of ``others`` with area ``1 - lam`` into ``images``; the exact kept share."""
    height, width = images.shape[-2:]
    cut = (1 - lam) ** 0.5
    box_h, box_w = round(height * cut), round(width * cut)
    centre_y, centre_x = torch.randint(height, ()).item(), torch.randint(width, ()).item()
    top, bottom = max(centre_y - box_h // 2, 0), min(centre_y + box_h - box_h // 2, height)
    left, right = max(centre_x - box_w // 2, 0), min(centre_x + box_w - box_w // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = others[..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)
