"""GoogLeNet (Inception v1). Szegedy et al., "Going Deeper with Convolutions", 2015. Without the two
auxiliary classifiers (they only add a training loss). As in torchvision's reference weights, the
"5x5" branch uses a 3x3 conv (`k5=5` gives the paper's kernel); at 224x224x3 and 1000 classes:
6,624,904 parameters.

strides='small' (the default below 64 px) runs the 7x7 stem at stride 1 and drops the stem's max pool:
total stride 8 instead of 32, 28x28 or 32x32 -> 4x4 before the pool, like 224x224 -> 7x7. Only
strides change, so the parameter count is the ImageNet layout's. `width` scales every channel count.
"""

import torch
import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import Backbone, Classifier, ConvBnAct, make_divisible, stride_schedule

__all__ = ["GoogLeNet", "Inception", "googlenet"]


class Inception(nn.Module):
    """Four parallel branches concatenated: 1x1 | 1x1 -> 3x3 | 1x1 -> k5 x k5 | 3x3 max pool -> 1x1."""

    def __init__(self, cin, widths: tuple, *, k5=3):
        c1, c3r, c3, c5r, c5, pool_proj = widths
        super().__init__()
        self.branches = nn.ModuleList([
            ConvBnAct(cin, c1, 1),
            nn.Sequential(ConvBnAct(cin, c3r, 1), ConvBnAct(c3r, c3, 3)),
            nn.Sequential(ConvBnAct(cin, c5r, 1), ConvBnAct(c5r, c5, k5)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1), ConvBnAct(cin, pool_proj, 1))])
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class GoogLeNet(Backbone):
    def __init__(self, num_classes=1000, in_channels=3, *, input_size=224, strides=None, width=1.0,
                 dropout=0.2, k5=3):
        super().__init__()
        small = stride_schedule(input_size, strides) == "small"
        ch = lambda c: make_divisible(c * width)  # noqa: E731
        stem = ConvBnAct(in_channels, ch(64), 7, 1 if small else 2)
        blocks: list[nn.Module] = [stem if small else nn.Sequential(stem, pool3x3())]
        blocks.append(nn.Sequential(ConvBnAct(ch(64), ch(64), 1), ConvBnAct(ch(64), ch(192), 3), pool3x3()))
        cin = ch(192)
        for i, stage in enumerate(STAGES):
            if i:
                blocks.append(pool3x3() if i == 1 else nn.MaxPool2d(2, 2, ceil_mode=True))
            for row in stage:
                blocks.append(Inception(cin, tuple(map(ch, row)), k5=k5))
                cin = blocks[-1].out_channels
        self.features = nn.Sequential(*blocks)
        self.head = Classifier(cin, num_classes, dropout)


def pool3x3() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2, ceil_mode=True)


# c1, c3r, c3, c5r, c5, pool_proj: the inception blocks 3a-3b, 4a-4e, 5a-5b (paper table 1); a stride-2
# max pool sits between the stages
STAGES = [[(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)],
          [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
           (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)],
          [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]]


@register
def googlenet(**cfg) -> GoogLeNet:
    return GoogLeNet(**cfg)
