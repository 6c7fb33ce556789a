"""VGG. Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2015.
Configurations A (VGG-11) and D (VGG-16), optionally with BatchNorm after every conv (the conv keeps its
bias, as in the reference weights). At 224x224x3 and 1000 classes: vgg11 132,863,336, vgg11_bn
132,868,840, vgg16 138,357,544, vgg16_bn 138,365,992 parameters.

strides='small' (the default below 64 px) drops the max pools after the first two stages: total stride 8
instead of 32, 28x28 -> 3x3 and 32x32 -> 4x4 before the head. The head then pools to 1x1 instead of
7x7, so its first linear layer takes 512 inputs instead of 25,088.
`width` scales every channel count and the 4096-wide hidden layers.
"""

import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import Backbone, ConvAct, MlpHead, make_divisible, stride_schedule

__all__ = ["VGG", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn"]


def conv3x3(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    if not batch_norm:
        return ConvAct(cin, cout, 3)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class VGG(Backbone):
    def __init__(self, config="A", batch_norm=False, num_classes=1000, in_channels=3, *, input_size=224,
                 strides=None, width=1.0, dropout=0.5):
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"config '{config}' not in {sorted(CONFIGS)}")
        small = stride_schedule(input_size, strides) == "small"
        blocks, cin = [], in_channels
        for i, stage in enumerate(CONFIGS[config]):
            layers = []
            for c in stage:
                layers.append(conv3x3(cin, make_divisible(c * width), batch_norm))
                cin = make_divisible(c * width)
            if not (small and i < 2):
                layers.append(nn.MaxPool2d(2, 2))
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.head = MlpHead(cin, 1 if small else 7, make_divisible(4096 * width), num_classes, dropout=dropout)


# output channels of the 3x3 convs of each of the five stages; a 2x2 max pool ends each stage
CONFIGS = {"A": [[64], [128], [256, 256], [512, 512], [512, 512]],
           "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]}


def _variant(name: str, config: str, batch_norm: bool):
    """A registered VGG variant: `name(**cfg)` builds configuration `config`."""
    def make(**cfg) -> VGG:
        return VGG(config, batch_norm, **cfg)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"VGG configuration {config}{', BatchNorm after every conv' if batch_norm else ''}."
    return register(make)


# the registered variants: name -> (configuration, BatchNorm)
VARIANTS = {"vgg11": ("A", False), "vgg11_bn": ("A", True), "vgg16": ("D", False), "vgg16_bn": ("D", True)}
vgg11, vgg11_bn, vgg16, vgg16_bn = (_variant(name, *v) for name, v in VARIANTS.items())
