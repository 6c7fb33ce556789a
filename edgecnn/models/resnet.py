"""ResNet with basic blocks. He et al., "Deep Residual Learning for Image Recognition", 2016.
At 224x224x3 and 1000 classes: resnet18 11,689,512 and resnet34 21,797,672 parameters (option B
shortcuts: identity, or a 1x1 conv-BN projection where the stride or the width changes).

strides='small' (the default below 64 px) runs the 7x7 stem at stride 1 and drops the stem's max pool:
total stride 8 instead of 32, 28x28 -> 4x4 before the pool, like 224x224 -> 7x7. Only strides change,
so the parameter count is the ImageNet layout's. `width` scales every channel count.
"""

import torch
import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import Backbone, Classifier, ConvBnAct, make_divisible, stride_schedule

__all__ = ["BasicBlock", "ResNet", "resnet18", "resnet34"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN (ReLU between) plus the shortcut, then ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Sequential(ConvBnAct(cin, cout, 3, stride), ConvBnAct(cout, cout, 3, act=None))
        projection = stride != 1 or cin != cout
        self.shortcut = ConvBnAct(cin, cout, 1, stride, act=None) if projection else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) + self.shortcut(x))


class ResNet(Backbone):
    def __init__(self, depths=(2, 2, 2, 2), num_classes=1000, in_channels=3, *, input_size=224, strides=None,
                 width=1.0, dropout=0.0):
        super().__init__()
        small = stride_schedule(input_size, strides) == "small"
        cin = make_divisible(64 * width)
        stem = ConvBnAct(in_channels, cin, 7, 1 if small else 2)
        blocks: list[nn.Module] = [stem if small else nn.Sequential(stem, nn.MaxPool2d(3, 2, 1))]
        for (c, s), n in zip(STAGES, depths, strict=True):
            for j in range(n):
                blocks.append(BasicBlock(cin, make_divisible(c * width), s if j == 0 else 1))
                cin = make_divisible(c * width)
        self.features = nn.Sequential(*blocks)
        self.head = Classifier(cin, num_classes, dropout)


# c, s: output channels and stride of the first block of the four stages; `depths` gives the block counts
STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]


@register
def resnet18(**cfg) -> ResNet:
    return ResNet((2, 2, 2, 2), **cfg)


@register
def resnet34(**cfg) -> ResNet:
    return ResNet((3, 4, 6, 3), **cfg)
