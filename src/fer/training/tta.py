"""Test-time augmentation: the views of a batch whose logits are averaged (``none``: the centre
crop; ``flip``: and its mirror; ``tencrop``: the four corners and the centre, and their mirrors).
One list of modes and one check, for the module's ``tta``/``val_tta`` and every ``tta=`` option."""

from __future__ import annotations

from torch import Tensor

TTA_MODES = ("none", "flip", "tencrop")
# how many views of a face each mode classifies (:func:`views`, on images larger than the crop)
VIEWS_PER_FACE = {"none": 1, "flip": 2, "tencrop": 10}


def check_mode(mode: str, option: str = "tta", null_keeps: bool = False) -> str:
    """``mode`` if it is one of :data:`TTA_MODES`; otherwise an error naming ``option`` and the
    choices (``null_keeps``: the option also takes null, which keeps the checkpoint's mode)."""
    if mode not in TTA_MODES:
        null = "null (the checkpoint's) or " if null_keeps else ""
        raise ValueError(f"{option}={mode!r} must be {null}one of {', '.join(TTA_MODES)}.")
    return mode


def centre_crop(x: Tensor, crop: int) -> Tensor:
    """The centre ``crop`` x ``crop`` of images [..., H, W]; images no larger are returned whole."""
    if x.shape[-1] <= crop and x.shape[-2] <= crop:
        return x
    top, left = (x.shape[-2] - crop) // 2, (x.shape[-1] - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def views(x: Tensor, mode: str, crop: int) -> list[Tensor]:
    """The views of ``mode`` of images [B, C, H, W]. ``tencrop`` needs images larger than
    ``crop`` (it is ``flip`` otherwise); the model centre-crops each view it gets to ``crop``."""
    check_mode(mode)
    out = [x]
    if mode == "tencrop" and x.shape[-1] > crop:
        height, width = x.shape[-2:]
        corners = ((0, 0), (0, width - crop), (height - crop, 0), (height - crop, width - crop))
        out = [x[..., top : top + crop, left : left + crop] for top, left in corners]
        out.append(centre_crop(x, crop))
    if mode != "none":
        out += [v.flip(-1) for v in out]
    return out
