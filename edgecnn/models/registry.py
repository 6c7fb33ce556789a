"""The model registry (timm style): families register their variants with `@register`."""

from typing import Callable

import torch.nn as nn

from edgecnn.core.errors import EdgecnnError, suggest

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, num_classes: int = 10, in_channels: int = 1, **cfg) -> nn.Module:
    """Build a registered model. `cfg` holds family-specific options (alpha, input_size, ...)."""
    if name not in _REGISTRY:
        raise EdgecnnError(f"unknown model '{name}'{suggest(name, _REGISTRY)}")
    try:
        return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **cfg)
    except (TypeError, ValueError) as e:
        raise EdgecnnError(f"bad option for model '{name}': {e}") from None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
