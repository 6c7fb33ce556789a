"""AlexNet. Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", 2012. The one-tower layout of Krizhevsky's "One weird trick" (2014) that torchvision ships:
64-192-384-256-256 channels, no local response normalization, 61,100,840 parameters at 224x224x3 and
1000 classes.

strides='small' (the default below 64 px) runs the 11x11 stem at stride 1 (padding 5) and pads the three
3x3 max pools by 1: total stride 8 instead of 32, 28x28 or 32x32 -> 4x4 before the head. The head then
pools to 1x1 instead of 6x6, so its first linear layer takes 256 inputs instead of 9,216.
`width` scales every channel count and the 4096-wide hidden layers.
"""

import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import Backbone, ConvAct, MlpHead, make_divisible, stride_schedule

__all__ = ["AlexNet", "alexnet"]


class AlexNet(Backbone):
    def __init__(self, num_classes=1000, in_channels=3, *, input_size=224, strides=None, width=1.0,
                 dropout=0.5):
        super().__init__()
        small = stride_schedule(input_size, strides) == "small"
        blocks, cin = [], in_channels
        for i, (c, k, s, p, pool) in enumerate(ARCH):
            if small and i == 0:
                s, p = 1, k // 2
            cout = make_divisible(c * width)
            layers = [ConvAct(cin, cout, k, s, padding=p)]
            if pool:
                layers.append(nn.MaxPool2d(3, 2, padding=1 if small else 0))
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.head = MlpHead(cin, 1 if small else 6, make_divisible(4096 * width), num_classes, dropout=dropout)


# c, k, s, p, pool: output channels, kernel, stride, padding, 3x3/2 max pool after (ImageNet layout)
ARCH = [(64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
        (256, 3, 1, 1, True)]


@register
def alexnet(**cfg) -> AlexNet:
    return AlexNet(**cfg)
