"""MobileNet v1. Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", 2017. At alpha=1.0, 224x224, 1000 classes: 4.23 M parameters (paper: 4.2 M).

strides='small' (the default below 64 px) makes the stem and the first stride-2 block stride 1, so the
total stride is 8 instead of 32: 28x28 -> 4x4 before the pool, like 224x224 -> 7x7.
"""

import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import Backbone, Classifier, ConvBnAct, DepthwiseSeparable, stride_schedule

__all__ = ["MobileNetV1", "mobilenet_v1"]

# c, s: output channels and stride of the 13 depthwise-separable blocks (ImageNet layout)
ARCH = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(Backbone):
    def __init__(self, num_classes=1000, in_channels=3, *, alpha=1.0, input_size=224, strides=None,
                 dropout=0.0):
        super().__init__()
        small = stride_schedule(input_size, strides) == "small"
        width = lambda c: max(8, int(c * alpha))  # noqa: E731
        blocks = [ConvBnAct(in_channels, width(32), 3, 1 if small else 2)]
        cin, first_s2 = width(32), True
        for c, s in ARCH:
            if small and s == 2 and first_s2:
                s, first_s2 = 1, False
            blocks.append(DepthwiseSeparable(cin, width(c), s))
            cin = width(c)
        self.features = nn.Sequential(*blocks)
        self.head = Classifier(cin, num_classes, dropout)


@register
def mobilenet_v1(**cfg) -> MobileNetV1:
    return MobileNetV1(**cfg)
