"""DenseNet-BC. Huang et al., "Densely Connected Convolutional Networks", 2017. Dense blocks of
BN-ReLU-1x1 conv (bottleneck, bn_size x k channels) -> BN-ReLU-3x3 conv (growth rate k) whose k new
channels are concatenated to the block's input; transition layers (BN-ReLU-1x1 conv with compression
0.5, 2x2 average pool) between blocks. densenet121 (k=32, blocks of 6-12-24-16 layers) at 224x224x3
and 1000 classes: 7,978,856 parameters.

The pre-activation BatchNorms follow a concat, not a conv, so no conv absorbs them at export:
StandaloneBatchNorm2d exports each as a Mul and an Add.

strides='small' (the default below 64 px) runs the 7x7 stem at stride 1 and drops the stem's max pool:
total stride 8 instead of 32, 28x28 -> 3x3 and 32x32 -> 4x4 before the pool. Only strides change, so
the parameter count is the ImageNet layout's. `width` scales the growth rate and the stem.
"""

import torch
import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import (Backbone, Classifier, ConvBnAct, StandaloneBatchNorm2d, make_divisible,
                                   stride_schedule)

__all__ = ["DenseLayer", "DenseNet", "Transition", "densenet121"]


class BnReluConv(nn.Sequential):
    """Pre-activation BN -> ReLU -> conv (no bias)."""

    def __init__(self, cin, cout, kernel=1):
        super().__init__(StandaloneBatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, kernel, padding=(kernel - 1) // 2, bias=False))


class DenseLayer(nn.Module):
    """Bottleneck BN-ReLU-1x1 conv -> BN-ReLU-3x3 conv; returns the input with k new channels appended."""

    def __init__(self, cin, growth, bn_size=4):
        super().__init__()
        self.conv = nn.Sequential(BnReluConv(cin, bn_size * growth, 1), BnReluConv(bn_size * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compression) -> 2x2 average pool, stride 2."""

    def __init__(self, cin, cout):
        super().__init__(BnReluConv(cin, cout, 1), nn.AvgPool2d(2, 2))


class DenseNet(Backbone):
    def __init__(self, block_config=(6, 12, 24, 16), growth=32, num_classes=1000, in_channels=3, *,
                 input_size=224, strides=None, width=1.0, bn_size=4, compression=0.5, dropout=0.0):
        super().__init__()
        small = stride_schedule(input_size, strides) == "small"
        k = make_divisible(growth * width)
        c = make_divisible(2 * growth * width)
        stem = ConvBnAct(in_channels, c, 7, 1 if small else 2)
        blocks: list[nn.Module] = [stem if small else nn.Sequential(stem, nn.MaxPool2d(3, 2, 1))]
        for i, n in enumerate(block_config):
            blocks.append(nn.Sequential(*(DenseLayer(c + j * k, k, bn_size) for j in range(n))))
            c += n * k
            if i < len(block_config) - 1:
                blocks.append(Transition(c, int(c * compression)))
                c = int(c * compression)
        blocks.append(nn.Sequential(StandaloneBatchNorm2d(c), nn.ReLU()))
        self.features = nn.Sequential(*blocks)
        self.head = Classifier(c, num_classes, dropout)


# block_config, growth rate k: layers per dense block and new channels per layer (paper table 1)
DENSENET121 = ((6, 12, 24, 16), 32)


@register
def densenet121(**cfg) -> DenseNet:
    return DenseNet(*DENSENET121, **cfg)
