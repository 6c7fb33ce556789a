import pytest
import torch
import torch.nn as nn

from edgecnn import models
from edgecnn.core.errors import EdgecnnError
from edgecnn.models.layers import InvertedResidual, make_divisible

# Published ImageNet-layout parameter counts (224x224x3, 1000 classes).
IMAGENET_PARAMS = {"mobilenet_v1": 4_231_976,  # paper: 4.2 M
                   "mobilenet_v2": 3_504_872}  # torchvision / paper: 3.4-3.5 M
# (num_classes, in_channels, input_size) -> LeNet-5 classic count with 10 classes: 61,706
LENET_PARAMS = 61_706


def test_registry_lists_the_families():
    assert {"lenet5", "mobilenet_v1", "mobilenet_v2"} <= set(models.names())


def test_unknown_model_suggests_close_name():
    with pytest.raises(EdgecnnError, match="did you mean 'mobilenet_v2'"):
        models.create("mobilenet_v3x")


def test_bad_option_is_a_clear_error():
    with pytest.raises(EdgecnnError, match="bad option for model 'lenet5'"):
        models.create("lenet5", depth=3)


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMS))
def test_imagenet_layout_parameter_count_and_shape(name):
    net = models.create(name, num_classes=1000, in_channels=3, input_size=224).eval()
    assert models.count_params(net) == IMAGENET_PARAMS[name]
    with torch.no_grad():
        assert net.forward_features(torch.zeros(1, 3, 224, 224)).shape[-2:] == (7, 7)
        assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_lenet5_classic_count():
    assert models.count_params(models.create("lenet5", num_classes=10)) == LENET_PARAMS


@pytest.mark.parametrize("name", ["lenet5", "mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_small_inputs(name, size, channels):
    net = models.create(name, num_classes=10, in_channels=channels, input_size=size).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, channels, size, size))
    assert out.shape == (2, 10)
    if name != "lenet5":  # small stride schedule: total stride 8, 28/32 px -> 4x4 features
        assert net.forward_features(torch.zeros(1, channels, size, size)).shape[-2:] == (4, 4)


@pytest.mark.parametrize("act,pool,act_type,pool_type", [("relu", "max", nn.ReLU, nn.MaxPool2d),
                                                          ("tanh", "avg", nn.Tanh, nn.AvgPool2d),
                                                          ("sigmoid", "avg", nn.Sigmoid, nn.AvgPool2d)])
def test_lenet5_variants(act, pool, act_type, pool_type):
    net = models.create("lenet5", act=act, pool=pool)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(6, (5, 5), (2, 2)), (16, (5, 5), (0, 0))]
    assert [m.out_features for m in net.modules() if isinstance(m, nn.Linear)] == [120, 84, 10]
    assert any(isinstance(m, act_type) for m in net.modules())
    assert sum(isinstance(m, pool_type) for m in net.modules()) == 2


def test_mobilenet_v1_width_multiplier():
    half = models.create("mobilenet_v1", num_classes=1000, in_channels=3, input_size=224, alpha=0.5)
    assert half.head[-1].in_features == 512
    assert len(half.features) == 14  # stem + 13 depthwise-separable blocks


def test_mobilenet_v2_blocks():
    net = models.create("mobilenet_v2", num_classes=1000, in_channels=3, input_size=224)
    blocks = [m for m in net.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    for b in blocks:  # linear bottleneck: projection conv-BN with no activation
        assert len(b.conv[-1]) == 2
        first = b.conv[0][0]
        last = b.conv[-1][0]
        stride = max(c[0].stride[0] for c in b.conv)
        assert b.use_residual == (stride == 1 and first.in_channels == last.out_channels)
    assert any(isinstance(m, nn.ReLU6) for m in net.modules())
    channels = {m.out_channels for m in models.create("mobilenet_v2", alpha=0.35).modules()
                if isinstance(m, nn.Conv2d)}
    assert all(c % 8 == 0 for c in channels)


def test_make_divisible():
    assert make_divisible(32 * 0.35) == 16
    assert make_divisible(24 * 0.5) == 16
    assert make_divisible(100) == 104
