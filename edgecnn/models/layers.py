"""Building blocks shared by the model families."""

import torch
import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "hardswish": nn.Hardswish, "leaky_relu": nn.LeakyReLU}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class Backbone(nn.Module):
    """A network as `features` then `head` (timm's split); fine-tuning trains and freezes by these halves."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10% (MobileNet v2 rule)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation '{name}' not in {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBnAct(nn.Sequential):
    """Conv -> BatchNorm -> activation (activation None = linear, as in MobileNet v2's projection)."""

    def __init__(self, cin, cout, kernel=3, stride=1, *, groups=1, act: str | None = "relu"):
        layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if act:
            layers.append(activation(act))
        super().__init__(*layers)


class DepthwiseSeparable(nn.Sequential):
    """MobileNet v1 block: 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, cin, cout, stride=1, act="relu"):
        super().__init__(ConvBnAct(cin, cin, 3, stride, groups=cin, act=act),
                         ConvBnAct(cin, cout, 1, act=act))


class InvertedResidual(nn.Module):
    """MobileNet v2 block: 1x1 expand (t), 3x3 depthwise, linear 1x1 projection; residual when shapes match."""

    def __init__(self, cin, cout, stride, expand, *, act="relu6"):
        super().__init__()
        hidden = int(round(cin * expand))
        layers = [ConvBnAct(cin, hidden, 1, act=act)] if expand != 1 else []
        layers += [ConvBnAct(hidden, hidden, 3, stride, groups=hidden, act=act),
                   ConvBnAct(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class Classifier(nn.Sequential):
    """Global average pool -> flatten -> dropout -> linear."""

    def __init__(self, cin, num_classes, dropout=0.0):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(cin, num_classes))


def stride_schedule(input_size: int, strides: str | None) -> str:
    """'imagenet' keeps the 224px strides (total 32); 'small' (auto below 64 px) keeps total stride 8."""
    strides = strides or ("small" if input_size < 64 else "imagenet")
    if strides not in ("imagenet", "small"):
        raise ValueError(f"strides must be 'imagenet' or 'small', got '{strides}'")
    return strides


class ConvAct(nn.Sequential):
    """Conv (with bias, no BatchNorm) -> ReLU: the AlexNet and plain VGG convolution."""

    def __init__(self, cin, cout, kernel=3, stride=1, *, padding=None):
        padding = (kernel - 1) // 2 if padding is None else padding
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU())


class StandaloneBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d for a BN no conv precedes (DenseNet's pre-activation BN after a concat).

    Same parameters and state dict as nn.BatchNorm2d; in eval mode it computes x * scale + shift, so the
    exported ONNX holds a Mul and an Add (constants folded) instead of a BatchNormalization node that no
    conv can absorb.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class MlpHead(nn.Sequential):
    """AlexNet/VGG classifier: average pool to grid x grid -> flatten -> (dropout -> linear -> ReLU) x 2
    -> linear."""

    def __init__(self, cin, grid, hidden, num_classes, *, dropout=0.5):
        super().__init__(nn.AdaptiveAvgPool2d(grid), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(cin * grid * grid, hidden), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
