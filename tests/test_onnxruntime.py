"""ONNX Runtime's int8 kernels on x86 CPUs without VNNI: the saturation, and the fix compile applies.

The CPU without VNNI is emulated (qemu-x86_64-static -cpu Haswell: AVX2 and FMA, no AVX-512, no VNNI), so
these tests give the same result on every x86-64 machine, with VNNI or without.
"""

import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT
from onnx import TensorProto, helper, numpy_helper

from edgecnn.backends import onnxruntime as ort_backend
from edgecnn.backends.onnxruntime import OrtRunner

NO_VNNI = ("qemu-x86_64-static", "-cpu", "Haswell")  # Debian qemu-user-static; TCG emulates AVX2, not AVX-512
needs_no_vnni_cpu = pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which(NO_VNNI[0]),
                                       reason="needs an x86-64 host and qemu-user-static (make test-tools)")


def saturating_conv(activation=np.uint8, channels=64):
    """One Q/DQ 1x1 conv whose u8 x s8 pair sums (255 x 127 x 2) overflow int16 on an input of ones: weights
    all 127, activations quantized to 255 (uint8) or 127 (int8, which ONNX Runtime shifts to uint8 255)."""
    zero, top = np.array(0, activation), np.iinfo(activation).max
    inits = [numpy_helper.from_array(np.full((8, channels, 1, 1), 127, np.int8), "w"),
             numpy_helper.from_array(np.full(8, 1 / 127, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(1 / top, np.float32), "x_scale"), numpy_helper.from_array(zero, "x_zero"),
             numpy_helper.from_array(np.array(1.0, np.float32), "y_scale"), numpy_helper.from_array(zero, "y_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["x"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=0),
             helper.make_node("Conv", ["x", "wd"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zero"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["logits"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, 2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# Run on the emulated CPU: what this CPU is, then each model before and after compile's fix, with ONNX
# Runtime's int8 kernels (level all) and op by op (the fakequant reference).
ON_THE_CPU = """
import json, shutil, sys, numpy as np
from pathlib import Path
from edgecnn.backends import onnxruntime as o
out = {"isa": o.int8_isa()}
for path in sys.argv[1:]:
    fixed = Path(path).with_suffix(".fixed.onnx")
    shutil.copyfile(path, fixed)
    record = o.prepare_int8(fixed)
    x = np.ones((1, 64, 2, 2), np.float32)
    run = lambda p, level: float(o.OrtRunner(p, level=level).run(x)["logits"].max())
    out[path] = {"record": record, "int8": run(path, "all"), "fixed": run(fixed, "all"), "exact": run(path, "disable")}
print(json.dumps(out))
"""


@needs_no_vnni_cpu
def test_without_vnni_int8_kernels_saturate_and_compile_fixes_it(tmp_path):
    paths = []
    for form, dtype in (("onnxruntime", np.uint8), ("tensorrt", np.int8)):  # u8 and s8 activations
        paths.append(tmp_path / f"{form}.onnx")
        onnx.save(saturating_conv(dtype), str(paths[-1]))
    r = subprocess.run([*NO_VNNI, sys.executable, "-c", ON_THE_CPU, *map(str, paths)], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["isa"] == {"flags": ["AVX2", "FMA3"], "vnni": False, "u8s8_saturates": True}
    for path in map(str, paths):
        case = out[path]
        assert case["exact"] == 64.0 and case["int8"] < 40  # VPMADDUBSW saturated the pair sums
        assert case["fixed"] == case["exact"]  # u8 x u8 does not saturate
        assert case["record"]["vnni"] is False and case["record"]["weights"].startswith("uint8 (zero point + 128)")


def test_uint8_weights_hold_the_same_values(lenet_int8, tmp_path):
    src = lenet_int8[1] / "model.int8.onnx"
    model = onnx.load(str(src))
    assert ort_backend.full_range_weights(model) > 0
    n = ort_backend.weights_to_uint8(model)
    assert n == sum(node.op_type in ("Conv", "Gemm") for node in model.graph.node) > 0
    onnx.save(model, str(tmp_path / "u8.onnx"))
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    want = OrtRunner(src, level="disable").run(x)["logits"]
    np.testing.assert_array_equal(OrtRunner(tmp_path / "u8.onnx", level="disable").run(x)["logits"], want)
    assert ort_backend.full_range_weights(model) == 0  # no int8 weight left


def test_compile_applies_the_fix_where_this_cpu_needs_it_and_records_it(lenet_int8, tmp_path):
    from edgecnn import compiler
    from edgecnn.core import manifest

    build = compiler.compile_model(lenet_int8[1] / "model.int8.onnx", "onnxruntime-cpu", "int8", tmp_path / "b")
    man, isa = manifest.read(build), ort_backend.int8_isa()
    record = man["artifact"]["int8"]
    assert record["cpu"] == isa["flags"] and record["vnni"] == isa["vnni"]
    # the TensorRT form is re-quantized in ONNX Runtime's form with its advice for this CPU: 7-bit weights where
    # u8 x s8 saturates, so nothing is left to shift to uint8 (weights_to_uint8 is tested above)
    assert man["quantization"]["form"] == "onnxruntime" and man["source"]["converted"]["from"] == "tensorrt"
    assert man["quantization"]["reduce_range"] == isa["u8s8_saturates"]
    assert not record["weights"].startswith("uint8")


def test_onnxruntime_form_reduces_the_range_where_the_cpu_needs_it():
    assert ort_backend.backend.qdq_form.reduce_range == ort_backend.int8_isa()["u8s8_saturates"]


@needs_no_vnni_cpu
def test_onnxruntime_form_reduces_the_range_on_a_cpu_without_vnni():
    code = "from edgecnn.backends import qdq_form; print(qdq_form('onnxruntime').reduce_range, qdq_form('tensorrt').reduce_range)"
    r = subprocess.run([*NO_VNNI, sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "False"]


def test_fp16_build_runs_float16_weights(lenet_onnx, tmp_path):
    """compile --precision fp16 for ONNX Runtime converts the model (float16 weights, float32 input and
    output); it is not the fp32 model labelled fp16."""
    from edgecnn import compiler, verify
    from edgecnn.core import manifest

    fp32 = compiler.compile_model(lenet_onnx, "onnxruntime-cpu", "fp32", tmp_path / "fp32")
    fp16 = compiler.compile_model(lenet_onnx, "onnxruntime-cpu", "fp16", tmp_path / "fp16")
    model = onnx.load(str(fp16 / "model.onnx"))
    weights = [i.data_type for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert weights and set(weights) == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert (fp16 / "model.onnx").stat().st_size < 0.6 * (fp32 / "model.onnx").stat().st_size
    assert manifest.read(fp16)["artifact"]["fp16"]["weights"] == "float16"
    report = verify.verify(fp16, "torch", data="test", limit=50)
    assert report["passed"] and report["outputs"]["logits"]["max_abs"] > 1e-5  # fp16 rounding, not fp32's
