"""The classic families: published ImageNet parameter counts, the small stride schedule, structure, and
fp32 parity of untrained narrow models on ONNX Runtime and TVM host (plus the aarch64 cross-compile)."""

from functools import cache

import numpy as np
import pytest
import torch
import torch.nn as nn

from cpp_build import run_app

from edgecnn import backends, compiler, export, models, verify
from edgecnn.models import checkpoint
from edgecnn.train import recipe
from edgecnn.verify import compare
from edgecnn.core import manifest
from edgecnn.core.errors import EdgecnnError
from edgecnn.models.densenet import DenseLayer, DenseNet, Transition
from edgecnn.models.googlenet import Inception
from edgecnn.models.layers import StandaloneBatchNorm2d
from edgecnn.models.resnet import BasicBlock

# torchvision's published counts at 224x224x3 and 1000 classes (GoogLeNet without its aux heads)
IMAGENET_PARAMS = {"alexnet": 61_100_840, "vgg11": 132_863_336, "vgg11_bn": 132_868_840,
                   "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "googlenet": 6_624_904,
                   "resnet18": 11_689_512, "resnet34": 21_797_672, "densenet121": 7_978_856}
CLASSIC = sorted(IMAGENET_PARAMS)
# feature-map side before the head: 224 px (ImageNet layout), 28 px and 32 px (small schedule)
SIDES = {"alexnet": (6, 4, 4), "vgg": (7, 3, 4), "googlenet": (7, 4, 4), "resnet": (7, 4, 4),
         "densenet": (7, 3, 4)}
# AlexNet/VGG heads pool to 6x6/7x7 at 224 px and to 1x1 in the small schedule: first linear shrinks
HEAD_SHRINK = {"alexnet": 256 * 35 * 4096, "vgg": 512 * 48 * 4096}


def family(name: str) -> str:
    return next(f for f in SIDES if name.startswith(f))


@cache
def on_meta(name: str, size: int, channels: int, classes: int):
    """Build on the meta device (no weight memory, no compute) and run the shapes through (shared)."""
    with torch.device("meta"):
        net = models.create(name, num_classes=classes, in_channels=channels, input_size=size).eval()
        feats = net.forward_features(torch.empty(2, channels, size, size))
        return net, feats, net.forward_head(feats)


def test_registry_lists_the_classic_families():
    assert set(CLASSIC) <= set(models.names())


def test_bad_option_is_a_clear_error():
    with pytest.raises(EdgecnnError, match="bad option for model 'resnet18'"):
        models.create("resnet18", alpha=0.5)


@pytest.mark.parametrize("name", CLASSIC)
def test_imagenet_layout_matches_published_parameter_count(name):
    net, feats, logits = on_meta(name, 224, 3, 1000)
    assert models.count_params(net) == IMAGENET_PARAMS[name]
    assert feats.shape[-2:] == (SIDES[family(name)][0],) * 2 and logits.shape == (2, 1000)


@pytest.mark.parametrize("name", CLASSIC)
@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_small_schedule_total_stride_8(name, size, channels):
    net, feats, logits = on_meta(name, size, channels, 10)
    side = SIDES[family(name)][1 if size == 28 else 2]
    assert feats.shape[-2:] == (side, side) and logits.shape == (2, 10)


@pytest.mark.parametrize("name", CLASSIC)
def test_small_schedule_changes_strides_not_weights(name):
    small, _, _ = on_meta(name, 32, 3, 1000)
    assert models.count_params(small) == IMAGENET_PARAMS[name] - HEAD_SHRINK.get(family(name), 0)
    with torch.device("meta"):
        forced = models.create(name, in_channels=3, input_size=224, strides="small")
        assert forced.forward_features(torch.empty(1, 3, 224, 224)).shape[-2:] == (28, 28)


@pytest.mark.parametrize("name,depth", [("alexnet", 8), ("vgg11", 11), ("vgg16_bn", 16), ("resnet18", 18),
                                        ("resnet34", 34), ("densenet121", 121)])
def test_depth_in_the_name_counts_weight_layers(name, depth):
    """Convs and linears on the main path (ResNet's 1x1 projection shortcuts are not counted)."""
    net, _, _ = on_meta(name, 224, 3, 1000)
    skip = {id(m) for b in net.modules() if isinstance(b, BasicBlock) for m in b.shortcut.modules()}
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in skip]
    assert len(layers) == depth


def test_resnet_projects_only_where_the_shape_changes():
    for name in ("resnet18", "resnet34"):
        blocks = [b for b in on_meta(name, 224, 3, 1000)[0].modules() if isinstance(b, BasicBlock)]
        projected = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
        assert [b.shortcut[0].stride for b in projected] == [(2, 2)] * 3
        assert [b.shortcut[0].kernel_size for b in projected] == [(1, 1)] * 3


def test_googlenet_inception_blocks_and_no_aux_heads():
    net = on_meta("googlenet", 224, 3, 1000)[0]
    blocks = [m for m in net.modules() if isinstance(m, Inception)]
    assert [b.out_channels for b in blocks] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 1
    paper = models.create("googlenet", in_channels=3, input_size=224, k5=5)
    assert paper.features[2].branches[2][1][0].kernel_size == (5, 5)


def test_densenet121_growth_and_compression():
    net = on_meta("densenet121", 224, 3, 1000)[0]
    layers = [m for m in net.modules() if isinstance(m, DenseLayer)]
    assert len(layers) == 58 and all(m.conv[1][2].out_channels == 32 for m in layers)
    assert [t[0][2].out_channels for t in net.modules() if isinstance(t, Transition)] == [128, 256, 512]
    assert net.head[-1].in_features == 1024


def test_vgg_bn_variants_keep_conv_bias():
    net = on_meta("vgg11_bn", 224, 3, 1000)[0]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == len(convs) == 8
    assert all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in on_meta("vgg11", 224, 3, 1000)[0].modules())


def test_standalone_batchnorm_equals_batchnorm():
    torch.manual_seed(0)
    ref, ours = nn.BatchNorm2d(6), StandaloneBatchNorm2d(6)
    ref.running_mean.uniform_(-1, 1)
    ref.running_var.uniform_(0.5, 2)
    ref.weight.data.uniform_(0.5, 2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 6, 5, 5)
    for training in (False, True):
        ref.train(training)
        ours.train(training)
        torch.testing.assert_close(ours(x), ref(x))


# --- parity: untrained narrow models (random weights, random BN statistics), small input ------------

PARITY = ["alexnet", "vgg11_bn", "googlenet", "resnet18", "densenet_tiny"]
PARITY_SLOW = ["vgg16", "resnet34", "densenet121"]
WIDTH = 0.125


@pytest.fixture(scope="module")
def tiny_densenet():
    """DenseNet with 2-layer blocks (densenet121's blocks, transitions and BN-as-Mul/Add in seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(models.registry._REGISTRY, "densenet_tiny", lambda **cfg: DenseNet((2, 2, 2, 2), **cfg))
        yield


@torch.no_grad()
def scale_logits(model: nn.Module) -> None:
    """Rescale the last linear layer so the logits have std ~1 (deep residual nets grow them to ~1e3,
    where float32 rounding alone exceeds the absolute tolerance)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    std = model(torch.randn(8, 1, 28, 28)).std()
    last.weight /= std
    last.bias /= std


def export_untrained(name: str, root):
    rec = recipe.parse({"name": name, "model": {"name": name, "width": WIDTH}, "data": {"input_size": 28}})
    spec = checkpoint.model_spec(rec, 10, [str(i) for i in range(10)])
    torch.manual_seed(0)
    model = checkpoint.build_model(spec)
    for m in model.modules():  # variance-preserving weights: the logits depend on the input
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    scale_logits(model.eval())
    (root / "run").mkdir()
    checkpoint.save(root / "run" / "model.pt", model, spec)
    return export.export(root / "run")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_densenet):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = export_untrained(name, tmp_path_factory.mktemp(name))
        return cache[name]
    return get


def check_parity(onnx_path, target, out):
    build = compiler.compile_model(onnx_path, target, out=out)
    report = verify.verify(build, "torch", data="random", limit=16)
    logits = report["outputs"]["logits"]
    assert report["passed"] and logits["max_abs"] <= 1e-4 and logits["min_cosine"] >= 0.99999
    assert logits["samples"] == 16 and logits["top1_agreement"] == 100.0
    print(f"{manifest.read(build)['model']['name']} {target} vs PyTorch: max abs {logits['max_abs']:.3g}, "
          f"min cosine {logits['min_cosine']:.9f}")


def assert_not_degenerate(onnx_path):
    """Parity of a model whose logits ignore the input would prove nothing."""
    from edgecnn.backends.onnxruntime import OrtRunner

    x = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    assert np.ptp(OrtRunner(onnx_path).run(x)["logits"], axis=0).max() > 0.1


@pytest.mark.parametrize("target", ["onnxruntime-cpu", "host"])
@pytest.mark.parametrize("name", PARITY)
def test_fp32_parity(exported, tmp_path, name, target):
    onnx_path = exported(name)
    assert_not_degenerate(onnx_path)
    check_parity(onnx_path, target, tmp_path / "b")


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnxruntime-cpu", "host"])
@pytest.mark.parametrize("name", PARITY_SLOW)
def test_fp32_parity_full_depth(exported, tmp_path, name, target):
    check_parity(exported(name), target, tmp_path / "b")


def test_exported_graphs_hold_the_classic_operators(exported):
    import onnx

    ops = {name: {n.op_type for n in onnx.load(str(exported(name))).graph.node} for name in PARITY}
    assert "Concat" in ops["googlenet"] and "MaxPool" in ops["googlenet"]
    assert "Add" in ops["resnet18"] and "Gemm" in ops["alexnet"]
    assert {"Concat", "Mul", "Add", "AveragePool"} <= ops["densenet_tiny"]
    assert not any("BatchNormalization" in o for o in ops.values())


def check_aarch64_parity(onnx_path, arm_app, tmp_path):
    """Cross-compile for aarch64 (an ARM ELF), run it under qemu with the C++ app, compare with PyTorch."""
    app, emulator = arm_app
    build = compiler.compile_model(onnx_path, "aarch64", out=tmp_path / "b")
    head = (build / "model.so").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    man = manifest.read(build)
    x = np.random.default_rng(2).standard_normal((4, *man["input"]["shape"][1:])).astype(np.float32)
    x.tofile(tmp_path / "input.f32")
    r = run_app(app, build, "--raw", tmp_path / "input.f32", "--dump", tmp_path / "logits.f32", emulator=emulator)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "logits.f32", np.float32).reshape(len(x), -1)
    with backends.require("torch").load(build, man) as ref:
        metrics = compare.compare_output(got, ref.run(x)["logits"])
    assert not compare.failures(metrics, compare.tolerance("fp32")), metrics
    print(f"{man['model']['name']} aarch64 (qemu) vs PyTorch: max abs {metrics['max_abs']:.3g}, "
          f"min cosine {metrics['min_cosine']:.9f}, top-1 agreement {metrics['top1_agreement']:.0f}%")


@pytest.mark.arm
@pytest.mark.parametrize("name", ["resnet18"])
def test_aarch64_parity_under_qemu(exported, arm_app, tmp_path, name):
    check_aarch64_parity(exported(name), arm_app, tmp_path)


@pytest.mark.arm
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in PARITY if n != "resnet18"])
def test_aarch64_parity_under_qemu_other_families(exported, arm_app, tmp_path, name):
    check_aarch64_parity(exported(name), arm_app, tmp_path)
