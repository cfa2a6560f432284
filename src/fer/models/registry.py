"""Name -> network constructor. A new architecture is one module that registers itself (imported in
``fer/models/__init__.py``, so that registering happens) plus one config file in ``conf/model/`` naming it."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"Model name {name!r} is registered twice.")
        MODELS[name] = constructor
        return constructor

    return decorator


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered network; an unknown name lists the known ones."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Registered models: {', '.join(sorted(MODELS))}.")
    return MODELS[name](**kwargs)
