"""MobileNet v2. Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", 2018.
At alpha=1.0, 224x224, 1000 classes: 3.50 M parameters (the reference implementation's count).

strides='small' (the default below 64 px) makes the stem and the 24-channel stage stride 1, so the
total stride is 8 instead of 32: 28x28 -> 4x4 before the pool, like 224x224 -> 7x7.
"""

import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import (Backbone, Classifier, ConvBnAct, InvertedResidual, make_divisible,
                                   stride_schedule)

__all__ = ["MobileNetV2", "mobilenet_v2"]

# t, c, n, s: expansion, output channels, repeats, stride of the first repeat
ARCH = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
        (6, 320, 1, 1)]


class MobileNetV2(Backbone):
    def __init__(self, num_classes=1000, in_channels=3, *, alpha=1.0, input_size=224, strides=None,
                 dropout=0.2):
        super().__init__()
        small = stride_schedule(input_size, strides) == "small"
        cin = make_divisible(32 * alpha)
        blocks: list[nn.Module] = [ConvBnAct(in_channels, cin, 3, 1 if small else 2, act="relu6")]
        for i, (t, c, n, s) in enumerate(ARCH):
            cout = make_divisible(c * alpha)
            for j in range(n):
                stride = 1 if (j > 0 or (small and i == 1)) else s
                blocks.append(InvertedResidual(cin, cout, stride, t))
                cin = cout
        last = make_divisible(1280 * max(1.0, alpha))
        blocks.append(ConvBnAct(cin, last, 1, act="relu6"))
        self.features = nn.Sequential(*blocks)
        self.head = Classifier(last, num_classes, dropout)


@register
def mobilenet_v2(**cfg) -> MobileNetV2:
    return MobileNetV2(**cfg)
