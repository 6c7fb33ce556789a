"""edgecnn's Relax rewrites: ReLU6 that lets NHWC flow, kernels a small model need not run, and Q/DQ convs
as real int8 convs."""

import re

import numpy as np
import pytest

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


def quantize(onnx_path, out, symmetric=True):
    """ONNX Runtime's static QDQ quantization (int8, per-channel weights), calibrated on random images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Images(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.batches = iter([{"input": rng.standard_normal((1, 1, 28, 28)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(onnx_path), str(out), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return out


def test_symmetric_qdq_convs_become_int8_convs_with_the_same_result(mobilenet_onnx, x28, tmp_path):
    import onnx

    qdq = quantize(mobilenet_onnx, tmp_path / "q.onnx")
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(qdq)).graph.node)
    fake = tvm_backend.frontend.import_onnx(qdq, 1)
    real = tvm_int8.qdq_to_int8_conv(tvm_backend.frontend.import_onnx(qdq, 1))
    assert tvm_int8.count_int8_convs(fake) == 0 and tvm_int8.count_int8_convs(real) == n_conv > 0
    assert re.search(r'R\.nn\.conv2d\(lv\w*, metadata\["ir\.GenericConst"\]\[\d+\], .*out_dtype="int32"', ops(real))
    got, want = run_tvm(real, x28), OrtRunner(qdq).run(x28)["logits"]  # ORT runs Q/DQ convs in int8 too
    np.testing.assert_allclose(got, want, atol=2e-2)  # a value on a rounding edge may land one level off
    assert got.argmax() == want.argmax()


def test_asymmetric_activations_stay_fake_quant(mobilenet_onnx, tmp_path):
    qdq = quantize(mobilenet_onnx, tmp_path / "q.onnx", symmetric=False)  # uint8 with zero points
    assert tvm_int8.count_int8_convs(tvm_int8.qdq_to_int8_conv(tvm_backend.frontend.import_onnx(qdq, 1))) == 0
