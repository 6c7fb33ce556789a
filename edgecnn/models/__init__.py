"""Model registry (timm style): `create(name, **cfg)` and `names()`.

Each family lives in its own file and registers its variants with `@register` (registry.py); building
blocks shared by the families are in layers.py.
"""

from edgecnn.models import (alexnet, densenet, googlenet, lenet, mobilenet_v1,  # noqa: F401 (fill the registry)
                            mobilenet_v2, resnet, vgg)
from edgecnn.models.registry import count_params, create, names, register

__all__ = ["create", "names", "register", "count_params"]
