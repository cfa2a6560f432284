"""Remember what a frozen prefix of a network computes for each image it has seen.

Transfer learning with a frozen backbone and no augmentation feeds the same images through the
same fixed layers every epoch. On a CPU that repeated forward pass is over half of a step (VGG16
at 48x48 with the seed's two trainable convolutions), so computing it once per image and looking
it up afterwards makes each later step 2.2x faster there (experiments/benchmarks.md) with the same
result, up to floating-point rounding.

Entries are keyed by a hash of each input image's bytes (plus dtype, device and autocast state), so
a hit is exact by construction; augmented images never repeat and only fill memory, which is why
the training entry point refuses the cache with augmentation or batch mixing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

STATELESS = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Identity)
DEFAULT_LIMIT_BYTES = 4 * 1024**3


class FrozenFeatureCache:
    """Per-image memo of ``prefix(x)`` for a prefix of stateless layers with frozen weights.

    Looked up while training and under ``no_grad``/``inference_mode`` (validation, test, predict);
    bypassed when gradients must reach the prefix's activations (an input that requires grad, or
    evaluation with gradients on, as Grad-CAM does), so analysis tools see the real layers, and
    while ``enabled`` is off (:class:`fer.training.module.FERClassifier` turns it on for ``fit`` only, where
    images recur). Past ``limit_bytes`` it warns once and stops adding; lookups go on.
    """

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.enabled = True
        self.entries: dict[bytes, Tensor] = {}
        self.bytes = 0
        self.full_warned = False

    def clear(self) -> None:
        """Forget every entry: the prefix's weights or extent changed."""
        self.entries.clear()
        self.bytes = 0
        self.full_warned = False

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        """Copies and pickles start empty: an EMA copy of the network must not double the memory."""
        return {**self.__dict__, "entries": {}, "bytes": 0, "full_warned": False}

    def __call__(self, prefix: Callable[[Tensor], Tensor], x: Tensor, training: bool) -> Tensor:
        """``prefix(x)``, per image from the cache where it can be; ``prefix`` must be a fixed
        function of its input (:func:`check_frozen`)."""
        if not self.enabled or x.requires_grad or (not training and torch.is_grad_enabled()):
            return prefix(x)
        keys = self.keys(x)
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        fresh: dict[bytes, Tensor] = {}
        if missing:
            out = self.compute(prefix, x if len(missing) == len(keys) else x[missing])
            fresh = dict(zip([keys[i] for i in missing], out))
            self.store(fresh)
        return torch.stack([fresh[key] if key in fresh else self.entries[key] for key in keys])

    @staticmethod
    def compute(prefix: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        with torch.no_grad():
            return prefix(x)

    def store(self, fresh: dict[bytes, Tensor]) -> None:
        for key, row in fresh.items():
            size = row.numel() * row.element_size()
            if self.bytes + size > self.limit_bytes:
                if not self.full_warned:
                    log.warning(
                        "Frozen-feature cache full (%d entries, %.1f GiB): later images are computed, not cached. "
                        "It only pays when the same images recur (no augmentation).",
                        len(self.entries),
                        self.bytes / 1024**3,
                    )
                    self.full_warned = True
                return
            self.entries[key] = row.clone()
            self.bytes += size

    @staticmethod
    def keys(x: Tensor) -> list[bytes]:
        """One digest per image of its bytes, salted with what else changes the prefix's output."""
        device = x.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        salt = f"{x.dtype}|{device}|{autocast}|{tuple(x.shape[1:])}".encode()
        rows = x.detach().to("cpu").contiguous().view(torch.uint8).reshape(x.shape[0], -1).numpy()
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() + salt for row in rows]


def check_frozen(prefix: nn.Sequential) -> None:
    """The cache is exact only for layers whose output is a fixed function of their input."""
    for layer in prefix:
        if not isinstance(layer, STATELESS):
            raise ValueError(f"Cannot cache features through {type(layer).__name__}: only {', '.join(t.__name__ for t in STATELESS)} are stateless.")
    trainable = [name for name, p in prefix.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(f"Cannot cache features through trainable parameters ({', '.join(trainable[:3])}): freeze them first.")
