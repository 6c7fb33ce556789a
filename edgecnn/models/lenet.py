"""LeNet-5. LeCun et al., "Gradient-based learning applied to document recognition", 1998.

conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc classes. On 28x28 input the first
conv is padded by 2, which gives the 32x32 geometry of the paper. `act`/`pool` select the original
(tanh or sigmoid, avg) or the modern (relu, max) variant.
"""

import torch.nn as nn

from edgecnn.models.registry import register
from edgecnn.models.layers import Backbone, POOLS, activation

__all__ = ["LeNet5", "lenet5"]


class LeNet5(Backbone):
    def __init__(self, num_classes=10, in_channels=1, *, input_size=28, act="relu", pool="max"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool '{pool}' not in {sorted(POOLS)}")
        pad = max(0, (32 - input_size) // 2)
        side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"input_size {input_size} is too small for LeNet-5 (needs >= 16)")
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=pad), activation(act), POOLS[pool](2)),
            nn.Sequential(nn.Conv2d(6, 16, 5), activation(act), POOLS[pool](2)),
            nn.Flatten(),
            nn.Sequential(nn.Linear(16 * side * side, 120), activation(act)),
            nn.Sequential(nn.Linear(120, 84), activation(act)),
        )
        self.head = nn.Linear(84, num_classes)


@register
def lenet5(**cfg) -> LeNet5:
    return LeNet5(**cfg)
