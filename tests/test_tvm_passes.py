"""edgecnn's Relax rewrites: ReLU6 that lets NHWC flow, kernels a small model need not run, and Q/DQ convs
as real int8 convs."""

import re

import numpy as np
import onnx
import pytest
import torch

from edgecnn import export
from edgecnn.compiler import targets
from edgecnn.backends import tvm as tvm_backend
from edgecnn.backends.tvm import int8 as tvm_int8, passes as tvm_passes
from edgecnn.backends.onnxruntime import OrtRunner


def run_tvm(mod, x):
    import tvm
    from tvm import relax

    spec = tvm_backend.build.resolve_target(targets.load("host"))
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target(spec)), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def ops(mod) -> str:
    return mod["main"].script()


@pytest.fixture(scope="module")
def mobilenet_onnx(mobilenet_run, tmp_path_factory):
    return export.export(mobilenet_run, tmp_path_factory.mktemp("mnv2") / "m.onnx", batch=1)


@pytest.fixture(scope="module")
def x28():
    return np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)


def test_relu6_rewrite_lets_nhwc_flow_and_keeps_the_result(mobilenet_onnx, x28):
    imported = tvm_backend.frontend.import_onnx(mobilenet_onnx, 1)
    assert "call_tir(maximum" in ops(imported)  # what the ONNX frontend makes of Clip
    nhwc = tvm_passes.to_nhwc(imported)
    assert "call_tir(" not in ops(nhwc) and ops(nhwc).count("R.permute_dims(") == 2  # input + classifier
    assert ops(nhwc).count('data_layout="NHWC"') == ops(imported).count("R.nn.conv2d(")
    want = OrtRunner(mobilenet_onnx).run(x28)["logits"]
    np.testing.assert_allclose(run_tvm(nhwc, x28), want, atol=1e-4, rtol=1e-4)


def test_prepared_graph_runs_no_transpose_and_keeps_the_result(mobilenet_onnx, x28):
    """The 1-channel image's NCHW -> NHWC permute is a reshape, the classifier's flatten permute is folded
    into its weights: no transpose kernel is left."""
    prepared = tvm_passes.prepare(tvm_backend.frontend.import_onnx(mobilenet_onnx, 1), targets.load("host"))
    assert ops(prepared).count("R.permute_dims(") == 0
    want = OrtRunner(mobilenet_onnx).run(x28)["logits"]
    np.testing.assert_allclose(run_tvm(prepared, x28), want, atol=1e-4, rtol=1e-4)


def quantize(onnx_path, out, form="tensorrt"):
    """edgecnn's own quantizer (per-channel weights) in a backend's Q/DQ form, calibrated on random images."""
    from edgecnn.qdq import ptq

    scheme = ptq.Scheme(per_channel=True, form=form, reduce_range=False)
    x = np.random.default_rng(1).standard_normal((32, *input_chw(onnx_path))).astype(np.float32)
    ranges = ptq.calibrate(onnx_path, x, algo="minmax", work=out.parent, form=scheme.placement)
    return ptq.quantize_onnx(onnx_path, out, ranges, scheme, work=out.parent)


def input_chw(onnx_path):
    from edgecnn.core.onnx_utils import input_info

    return input_info(onnx.load(str(onnx_path)))[1]


@pytest.fixture(scope="module")
def mobilenet_dynamic(mobilenet_run, tmp_path_factory):
    return export.export(mobilenet_run, tmp_path_factory.mktemp("mnv2d") / "m.onnx", batch="dynamic")


def test_symmetric_qdq_convs_become_int8_convs(mobilenet_dynamic, tmp_path):
    qdq = quantize(mobilenet_dynamic, tmp_path / "q.onnx")
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(qdq)).graph.node)
    fake = tvm_backend.frontend.import_onnx(qdq, 1)
    real = tvm_int8.qdq_to_int8_conv(tvm_backend.frontend.import_onnx(qdq, 1))
    # the 1-channel stem stays float (int8.MIN_INT8_IC)
    assert tvm_int8.count_int8_convs(fake) == 0 and tvm_int8.count_int8_convs(real) == n_conv - 1 > 0
    assert re.search(r'R\.nn\.conv2d\(lv\w*, metadata\["ir\.GenericConst"\]\[\d+\], .*out_dtype="int32"', ops(real))


class Convs(torch.nn.Module):
    """A conv, a depthwise conv (stride 2) and a pointwise conv: the three kinds in MobileNet v2 (4 input
    channels: a 1-3 channel stem stays float, int8.MIN_INT8_IC)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.pw(self.dw(self.conv(x)))


def int8_conv(xq: np.ndarray, wq: np.ndarray, *, stride: int, pad: int, groups: int) -> np.ndarray:
    """NCHW x OIHW int8 convolution accumulated in int64 (exact: no rounding anywhere)."""
    xp = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, ipg, kh, kw = wq.shape
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    out = [np.einsum("nchwij,ocij->nohw", win[:, g * ipg:(g + 1) * ipg], wq[g * (o // groups):(g + 1) * (o // groups)]
                     .astype(np.int64)) for g in range(groups)]
    return np.concatenate(out, 1)


def reference_int8(model, x: np.ndarray) -> np.ndarray:
    """The Q/DQ graph of Convs computed exactly in numpy: integer convolutions, then one float32 rescale per
    output channel and the float bias (what TVM's int8 conv computes), re-quantized between layers."""
    from onnx import numpy_helper

    c = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        xdq, wdq = prod[conv.input[0]], prod[conv.input[1]]
        s_x = c[xdq.input[1]].astype(np.float32)
        xq = np.clip(np.round(x / s_x), -128, 127)  # QuantizeLinear: round half to even, saturate
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
        acc = int8_conv(xq, c[wdq.input[0]], stride=attrs.get("strides", [1])[0], pad=attrs.get("pads", [0])[0],
                        groups=attrs.get("group", 1))
        scale = (c[wdq.input[1]].astype(np.float32) * s_x).reshape(1, -1, 1, 1)
        x = acc.astype(np.float32) * scale + c[conv.input[2]].astype(np.float32).reshape(1, -1, 1, 1)
    return x


def test_int8_convs_compute_the_integer_convolution_exactly(tmp_path):
    """TVM's int8 convs against numpy's integer convolution: exact by construction on every CPU (the int32
    accumulation has no rounding; only the float32 rescale and bias add round, as in numpy)."""
    from edgecnn.export import torch_export

    torch.manual_seed(0)
    torch_export(Convs().eval(), torch.randn(1, 4, 12, 12), opset=18, dynamic=True, path=tmp_path / "convs.onnx")
    qdq = onnx.load(str(quantize(tmp_path / "convs.onnx", tmp_path / "q.onnx")))
    real = tvm_int8.qdq_to_int8_conv(tvm_backend.frontend.import_onnx(tmp_path / "q.onnx", 2))
    assert tvm_int8.count_int8_convs(real) == 3
    x = np.random.default_rng(2).standard_normal((2, 4, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(run_tvm(real, x), reference_int8(qdq, x), rtol=1e-6, atol=1e-6)


def test_asymmetric_activations_stay_fake_quant(mobilenet_dynamic, tmp_path):
    qdq = quantize(mobilenet_dynamic, tmp_path / "q.onnx", form="onnxruntime")  # uint8 with zero points
    assert tvm_int8.count_int8_convs(tvm_int8.qdq_to_int8_conv(tvm_backend.frontend.import_onnx(qdq, 1))) == 0
