"""VGG-style networks trained from scratch on 48x48 faces.

- ``vgg1``, ``vgg2``, ``vgg3``: the seed project's VGG1/2/3 (one to three blocks of two 3x3 convs,
  32/64/128 filters, max-pool; dense 128), with its ablation switches: batch norm, dropout none /
  fixed / increasing. One class, :class:`SeedVGG`, registered once per depth, so that a run's and
  a checkpoint's model name says which net it was (older ones say ``seed_vgg``:
  :data:`fer.models.registry.LEGACY_NAMES`).
- ``vggnet``: the deeper VGGNet of Khaireddin & Chen (2021): four stages of two conv-BN-ReLU,
  64-512 channels, two wide FC layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from fer.classes import NUM_CLASSES
from fer.models.registry import register

DROPOUT_MODES = ("none", "fixed", "increasing")


def _he_uniform(module: nn.Module) -> None:
    """Keras' he_uniform for convs and dense layers (the seed's initialiser), zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)


class SeedVGG(nn.Module):
    """The seed's VGG-n: per block conv-ReLU(-BN) x2, max-pool(, dropout); dense 128 -> 7.

    ``dropout``: ``none``; ``fixed`` = ``dropout_rate`` after every block and the dense layer;
    ``increasing`` = ``dropout_rate`` + 0.1 per block (0.2/0.3/0.4 for three blocks) and +0.1 more
    on the dense layer (0.5).

    ``bn_eps`` and ``bn_momentum`` default to PyTorch's (1e-5, 0.1); Keras' BatchNormalization, which
    the seed used, has eps 1e-3 and moving-average momentum 0.99, i.e. ``bn_momentum=0.01`` here.
    With BN after ReLU the eps is not a detail (at initialisation about a fifth of the first
    block's channels have variance below 1e-3, which eps 1e-5 scales up by as much as 316x and
    eps 1e-3 by at most 32x: ``experiments/bench/bn_variance.py``), but
    Keras' values left the seed's BN row training as slowly as PyTorch's
    (``experiments/results_notes.md``).
    """

    def __init__(
        self,
        blocks: int = 3,
        filters: Sequence[int] = (32, 64, 128),
        batch_norm: bool = False,
        dropout: str = "none",
        dropout_rate: float = 0.2,
        dense: int = 128,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        in_channels: int = 1,
        input_size: int = 48,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        if not 1 <= blocks <= len(filters):
            raise ValueError(f"model.blocks={blocks} must be between 1 and len(model.filters)={len(filters)}.")
        if dropout not in DROPOUT_MODES:
            raise ValueError(f"model.dropout={dropout!r} must be one of {', '.join(DROPOUT_MODES)}.")
        if bn_eps <= 0 or not 0 <= bn_momentum <= 1:
            raise ValueError(
                f"model.bn_eps={bn_eps} must be > 0 and model.bn_momentum={bn_momentum} within [0, 1] "
                "(PyTorch's defaults: 1e-5 and 0.1; Keras': 1e-3 and 0.01 in PyTorch's convention)."
            )
        if input_size < 2**blocks:
            raise ValueError(f"input_size={input_size} must be at least 2**blocks={2**blocks}.")
        rates = [self._rate(dropout, dropout_rate, i) for i in range(blocks + 1)]
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(blocks):
            for _ in range(2):
                layers += [nn.Conv2d(channels, filters[i], 3, padding=1), nn.ReLU(inplace=True)]
                if batch_norm:
                    layers.append(nn.BatchNorm2d(filters[i], eps=bn_eps, momentum=bn_momentum))
                channels = filters[i]
            layers.append(nn.MaxPool2d(2))
            if rates[i]:
                layers.append(nn.Dropout(rates[i]))
        self.in_channels = in_channels
        self.features = nn.Sequential(*layers)
        side = input_size // 2**blocks
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, dense),
            nn.ReLU(inplace=True),
            nn.Dropout(rates[blocks]) if rates[blocks] else nn.Identity(),
            nn.Linear(dense, num_classes),
        )
        self.apply(_he_uniform)

    @staticmethod
    def _rate(mode: str, rate: float, position: int) -> float:
        if mode == "none":
            return 0.0
        return rate if mode == "fixed" else round(rate + 0.1 * position, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class VGGNet(nn.Module):
    """Four stages of [3x3 conv, BN, ReLU] x2 + max-pool; FC-hidden x2 with dropout; FC-7."""

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        hidden: int = 4096,
        dropout: float = 0.2,
        in_channels: int = 1,
        input_size: int = 40,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        stages = len(channels)
        if input_size < 2**stages:
            raise ValueError(f"input_size={input_size} must be at least 2**stages={2**stages}.")
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            for _ in range(2):
                layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                previous = width
            layers.append(nn.MaxPool2d(2))
        self.in_channels = in_channels
        self.features = nn.Sequential(*layers)
        side = input_size // 2**stages  # max-pooling floors odd sides (40 -> 20 -> 10 -> 5 -> 2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(previous * side * side, hidden),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def vgg_n(blocks: int) -> Callable[..., SeedVGG]:
    """The constructor of VGG-``blocks``: :class:`SeedVGG` with that many blocks. Options may
    repeat ``blocks`` (configs and checkpoints do) but not change it, or the name would lie."""

    def build(**options: Any) -> SeedVGG:
        if options.setdefault("blocks", blocks) != blocks:
            raise ValueError(
                f"model=vgg{blocks} has {blocks} block(s), not model.blocks={options['blocks']}: choose the net by its name (model=vgg1|vgg2|vgg3)."
            )
        return SeedVGG(**options)

    return build


register("vgg1")(vgg_n(1))
register("vgg2")(vgg_n(2))
register("vgg3")(vgg_n(3))
register("vggnet")(VGGNet)
