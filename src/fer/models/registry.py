"""Name -> network constructor. A new architecture is one module that registers itself (imported in
``fer/models/__init__.py``, so that registering happens) plus one config file in ``conf/model/`` whose
``name`` is the registered name and the file's own (``conf/model/vgg2.yaml``: ``name: vgg2``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}

# The legacy aliases: names that checkpoints and run directories made by older code use for a net
# now registered under another name, each with how to tell that name from the net's options. Before
# each net had its own name (e.g. in the code at 715ba56), VGG1, VGG2 and VGG3 were all ``seed_vgg``
# and only ``blocks`` said which (SeedVGG's default: three).
LEGACY_NAMES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "seed_vgg": lambda options: f"vgg{options.get('blocks', 3)}",
}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS or name in LEGACY_NAMES:
            raise ValueError(f"Model name {name!r} is registered twice.")
        MODELS[name] = constructor
        return constructor

    return decorator


def resolve(net: Mapping[str, Any]) -> dict[str, Any]:
    """``{"name": ..., **options}`` under the name the net is registered as now: a legacy alias
    (:data:`LEGACY_NAMES`) becomes its net's name, options unchanged; any other name stays. The one
    place old names are understood: checkpoints (:class:`fer.training.module.FERClassifier`), runs
    (:mod:`fer.results`) and :func:`build_model` all ask here."""
    alias = LEGACY_NAMES.get(net["name"])
    return {**net, "name": alias(net)} if alias else dict(net)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network (a legacy alias builds the net it stands for); an unknown name lists the known ones."""
    name = resolve({"name": name, **kwargs})["name"]
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Registered models: {', '.join(sorted(MODELS))}.")
    return MODELS[name](**kwargs)
