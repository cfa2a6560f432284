"""Plain ``nn.Module`` networks. Each takes float images in [0, 1] of ``in_channels`` channels and
``input_size`` pixels square and returns class logits; pretrained nets normalise inputs themselves."""

from fer.models import vgg, vgg16  # noqa: F401  (modules register their networks on import)
from fer.models.registry import LEGACY_NAMES, MODELS, build_model, register, resolve

__all__ = ["LEGACY_NAMES", "MODELS", "build_model", "register", "resolve"]
