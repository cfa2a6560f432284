"""ImageNet VGG16 transfer learning: torchvision's VGG16 convolutions with a new 7-class head."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from fer.classes import NUM_CLASSES
from fer.models.frozen_cache import FrozenFeatureCache, check_frozen
from fer.models.registry import register

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED = ("imagenet", "none")
WEIGHTS_HELP = (
    "Supply the ImageNet VGG16 weights as a file: model.weights_path=PATH or the FER_VGG16_WEIGHTS "
    "environment variable (a torchvision VGG16 state_dict, full or features-only), or go online once "
    "so that torchvision caches them, or use model.pretrained=none."
)


class VGG16Transfer(nn.Module):
    """VGG16 features (13 convs) -> flatten -> ``head`` hidden layers with dropout -> 7 logits.

    ``trainable_convs``: how many of the last convolutions train (-1: all; 0: all frozen; the
    seed's 2). Inputs are RGB in [0, 1]; the net applies ImageNet normalisation itself, so callers
    never need to know about it. ``cache_frozen``: remember each image's output of the frozen
    convolutions (:mod:`fer.models.frozen_cache`), for training without augmentation; not saved in
    checkpoints.
    """

    def __init__(
        self,
        pretrained: str = "imagenet",
        weights_path: str | None = None,
        trainable_convs: int = -1,
        head: Sequence[int] = (256, 128),
        head_dropout: float = 0.2,
        input_size: int = 48,
        num_classes: int = NUM_CLASSES,
        cache_frozen: bool = False,
    ) -> None:
        super().__init__()
        if pretrained not in PRETRAINED:
            raise ValueError(f"model.pretrained={pretrained!r} must be one of {', '.join(PRETRAINED)}.")
        if input_size < 32:
            raise ValueError(f"VGG16 needs input_size >= 32 (five 2x poolings), got {input_size}.")
        self.pretrained = pretrained
        self.weights_path = weights_path
        self.in_channels = 3
        self.features = vgg16_features()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        side = input_size // 32
        layers: list[nn.Module] = [nn.Flatten()]
        width = 512 * side * side
        for hidden in head:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(head_dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)
        self.cache = FrozenFeatureCache() if cache_frozen else None
        self.register_load_state_dict_post_hook(clear_cache_after_load)
        self.freeze(trainable_convs)

    def freeze(self, trainable_convs: int) -> None:
        """Freeze all convolutions except the last ``trainable_convs`` (-1: train all)."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        if not -1 <= trainable_convs <= len(convs):
            raise ValueError(f"model.trainable_convs={trainable_convs} must be -1 (all) or 0..{len(convs)}.")
        frozen = [] if trainable_convs == -1 else convs[: len(convs) - trainable_convs]
        if self.cache is not None and not frozen:
            raise ValueError(
                f"model.cache_frozen=true needs frozen convolutions: model.trainable_convs must be 0..{len(convs) - 1}, not {trainable_convs}."
            )
        for conv in convs:
            conv.requires_grad_(conv not in frozen)
        trainable = [i for i, layer in enumerate(self.features) if isinstance(layer, nn.Conv2d) and layer not in frozen]
        self.split = trainable[0] if trainable else len(self.features)
        self.clear_cache()

    def clear_cache(self) -> None:
        if self.cache is not None:
            self.cache.clear()

    def load_pretrained(self) -> None:
        """Load ImageNet weights into the convolutions: from ``weights_path`` if given, else through
        torchvision's weights API (downloads once into the torch hub cache)."""
        if self.pretrained == "none":
            return
        if self.weights_path:
            state = load_vgg16_features(self.weights_path)
        else:
            try:
                full = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
            except OSError as error:
                raise RuntimeError(f"Could not download torchvision's ImageNet VGG16 weights ({error}). {WEIGHTS_HELP}") from error
            state = {k.removeprefix("features."): v for k, v in full.items() if k.startswith("features.")}
        self.features.load_state_dict(state)
        self.clear_cache()

    def forward(self, x: Tensor) -> Tensor:
        if self.cache is None:
            return self.classifier(self.features((x - self.mean) / self.std))
        return self.classifier(self.features[self.split :](self.cached_prefix(x)))

    @torch.compiler.disable
    def cached_prefix(self, x: Tensor) -> Tensor:
        """The frozen convolutions' output, looked up per image (kept out of compiled graphs: the
        lookup hashes images on the host)."""
        prefix = self.features[: self.split]
        check_frozen(prefix)
        return self.cache(lambda batch: prefix((batch - self.mean) / self.std), x, self.training)


def clear_cache_after_load(net: VGG16Transfer, incompatible_keys: object) -> None:
    """New weights invalidate every cached feature (a function, not a lambda, so the net pickles)."""
    net.clear_cache()


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 convolution stack alone (configuration "D"), without building the
    120M-parameter ImageNet classifier that ``vgg16()`` would allocate and initialise."""
    return make_layers(cfgs["D"])


def load_vgg16_features(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a torchvision VGG16 state_dict (full, or features-only) and return the convolution
    weights keyed as in ``vgg16().features``; a file that does not fit says why."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights file {path} does not exist. {WEIGHTS_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(f"Could not read VGG16 weights {path}: {error}. {WEIGHTS_HELP}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} does not hold a state_dict (found {type(state).__name__}). {WEIGHTS_HELP}")
    features = state
    if any(k.startswith("features.") for k in state):  # a full VGG16, or features saved with the prefix
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    with torch.device("meta"):  # names and shapes only, no allocation
        expected = vgg16_features().state_dict()
    missing = sorted(set(expected) - set(features))
    extra = sorted(set(features) - set(expected))
    wrong = sorted(k for k in expected if k in features and features[k].shape != expected[k].shape)
    if missing or extra or wrong:
        raise RuntimeError(
            f"{path} does not fit VGG16's convolutions: missing {missing[:4]}, unexpected {extra[:4]}, "
            f"wrong shapes {wrong[:4]} (expected 26 tensors 'features.0.weight' ... 'features.28.bias')."
        )
    return {k: features[k] for k in expected}


register("vgg16")(VGG16Transfer)
