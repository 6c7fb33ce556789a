"""The Q/DQ lint on QDQ models from ONNX Runtime's quantize_static and on broken copies of them."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import helper, numpy_helper

from edgecnn.backends.tensorrt import qdqlint

class Block(nn.Module):
    """conv-bn-relu6 stem, depthwise-bn-relu, pointwise conv with a residual add, pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Conv2d(8, 8, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.pw(self.dw(x)))


@pytest.fixture(scope="session")
def fp32_onnx(tmp_path_factory):
    from edgecnn.export import torch_export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qdq") / "block.onnx"
    torch_export(Block().eval(), torch.randn(1, 1, 16, 16), opset=18, dynamic=True, path=path)
    return path


def quantize(src, dst, per_channel=True, form="tensorrt"):
    """edgecnn's own quantizer (ONNX Runtime's quantize_static underneath) in a backend's Q/DQ form."""
    from edgecnn.qdq import ptq

    scheme = ptq.Scheme(per_channel, form, reduce_range=False)
    x = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    ranges = ptq.calibrate(src, x, algo="minmax", work=dst.parent, form=scheme.placement)
    return onnx.load(str(ptq.quantize_onnx(src, dst, ranges, scheme, work=dst.parent)))


@pytest.fixture(scope="session")
def good(fp32_onnx):
    return quantize(fp32_onnx, fp32_onnx.with_name("good.onnx"))


def rules(violations):
    return sorted({(v.rule, v.severity) for v in violations})


def node(model, op_type, index=0):
    return [n for n in model.graph.node if n.op_type == op_type][index]


def node_named(model, name):
    return next(n for n in model.graph.node if n.name == name)


def set_const(model, name, array):
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(array.astype(numpy_helper.to_array(init).dtype), name))


def test_good_model_is_clean(good):
    assert qdqlint.has_qdq(good)
    assert qdqlint.lint(good, max_opset=20) == []


def test_float_model_has_nothing_to_lint(fp32_onnx):
    assert qdqlint.lint(onnx.load(str(fp32_onnx)), 20) == []


def test_opset_above_target_and_per_axis_below_13(good):
    assert [(v.rule, v.node) for v in qdqlint.lint(good, 17)] == [("opset", "model")]
    old = onnx.ModelProto()
    old.CopyFrom(good)
    old.opset_import[0].version = 12
    found = [v for v in qdqlint.lint(old) if v.rule == "opset"]
    assert len(found) == 1 and "per-axis Q/DQ needs opset >= 13" in found[0].message


def foreign_qdq(src, dst):
    """A model from another tool, not edgecnn's quantizer: ONNX Runtime's quantize_static with its default
    placement, symmetric int8 per channel (what a user may bring to compile for TensorRT)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 1, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True})
    return onnx.load(str(dst))


def test_ort_default_placement_splits_conv_and_relu(fp32_onnx):
    """quantize_static's default QDQ puts Q/DQ between Conv and ReLU/Clip and quantizes biases."""
    model = foreign_qdq(fp32_onnx, fp32_onnx.with_name("default.onnx"))
    found = qdqlint.lint(model, 20)
    assert rules(found) == [("conv-bn-relu", "warning"), ("int8-only", "error")]
    bias_dqs = {n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and "bias" in n.input[0]}
    assert {v.node for v in found if v.rule == "int8-only"} == bias_dqs and len(bias_dqs) == 4
    found = [v for v in found if v.rule == "conv-bn-relu"]
    assert {op for v in found for op in ("Clip", "Relu") if f"({op})" in v.message} == {"Clip", "Relu"}
    conv_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
    assert all(node_named(model, v.node).input[0] in conv_outputs for v in found)


def test_per_tensor_weights(fp32_onnx):
    model = quantize(fp32_onnx, fp32_onnx.with_name("per_tensor.onnx"), per_channel=False)
    found = qdqlint.lint(model, 20)
    assert rules(found) == [("per-channel-weights", "warning")]
    assert sorted(v.node for v in found) == sorted(n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm"))


def test_uint8_activations_are_not_symmetric(fp32_onnx):
    model = quantize(fp32_onnx, fp32_onnx.with_name("uint8.onnx"), form="onnxruntime")
    found = qdqlint.lint(model, 20)
    assert ("symmetric", "error") in rules(found)
    assert all("uint8 zero point" in v.message for v in found if v.rule == "symmetric")


def test_asymmetric_zero_point_is_named(good):
    bad = onnx.ModelProto()
    bad.CopyFrom(good)
    q = node(bad, "QuantizeLinear", 1)
    set_const(bad, q.input[2], np.array(3))
    found = qdqlint.lint(bad, 20)
    sharing = [n.name for n in bad.graph.node if n.op_type in qdqlint.QDQ and n.input[2] == q.input[2]]
    assert sorted((v.rule, v.node) for v in found) == sorted(("symmetric", name) for name in sharing)
    assert q.name in sharing and all("zero point [3] is not 0" in v.message for v in found)


def test_weight_outside_127_and_wrong_axis(good):
    bad = onnx.ModelProto()
    bad.CopyFrom(good)
    conv = node(bad, "Conv")
    dq = next(n for n in bad.graph.node if n.output[0] == conv.input[1])
    w = numpy_helper.to_array(next(i for i in bad.graph.initializer if i.name == dq.input[0])).copy()
    w.flat[0] = -128
    set_const(bad, dq.input[0], w)
    next(a for a in dq.attribute if a.name == "axis").i = 1
    assert sorted((v.rule, v.node) for v in qdqlint.lint(bad, 20)) == [("weight-axis", dq.name),
                                                                        ("weight-range", dq.name)]


def test_per_axis_activation_scale(good):
    bad = onnx.ModelProto()
    bad.CopyFrom(good)
    q = node(bad, "QuantizeLinear", 1)
    for name in q.input[1:]:
        value = numpy_helper.to_array(next(i for i in bad.graph.initializer if i.name == name))
        set_const(bad, name, np.repeat(value.reshape(1), 8))
    for n in bad.graph.node:
        if n.input[1:] == q.input[1:]:
            n.attribute.append(helper.make_attribute("axis", 1))
    found = qdqlint.lint(bad, 20)
    assert ("activation-per-tensor", "error") in rules(found)
    assert q.name in {v.node for v in found if v.rule == "activation-per-tensor"}


def test_residual_add_missing_qdq_on_one_input(good):
    bad = onnx.ModelProto()
    bad.CopyFrom(good)
    add = node(bad, "Add")
    dq = next(n for n in bad.graph.node if n.output[0] == add.input[1])
    q = next(n for n in bad.graph.node if n.output[0] == dq.input[0])
    add.input[1] = q.input[0]  # the float tensor: the Add's second input skips its Q/DQ
    found = qdqlint.lint(bad, 20)
    assert [(v.rule, v.node) for v in found] == [("residual-add", add.name)]
    assert q.input[0] in found[0].message
