"""Real int8 on TVM: every int8 kernel path computes numpy's integer convolution exactly (int32, no rounding),
on each x86 instruction path this CPU can run (the others are built and their instructions counted), and a
quantized model built with int8 convs agrees with ONNX Runtime running the same Q/DQ graph."""

import numpy as np
import pytest
import yaml

from edgecnn.backends.tvm import build
from edgecnn.backends.tvm.cpu import INT8_PATHS, int8_path
from edgecnn.backends.tvm.legalize import MIN_DOT_IC
from edgecnn.compiler import targets

# an LLVM CPU per x86 int8 path, and the host feature it needs to run here
X86_PATHS = {"avx512_vnni": ("icelake-server", "avx512vnni"), "avx_vnni": ("alderlake", "avxvnni"),
             "avx512": ("skylake-avx512", "avx512bw"), "avx2": ("haswell", "avx2"), "generic": ("x86-64", None)}
# (H, C, OC, K, stride, pad, groups): 3x3, the 3-channel stem (channels padded to 4), 1x1 with odd channel
# counts (output channels padded to whole blocks), depthwise strided, grouped, 1x1 at 14x14
CONVS = [(8, 16, 32, 3, 1, 1, 1), (9, 3, 24, 3, 2, 1, 1), (7, 13, 20, 1, 1, 0, 1), (8, 16, 16, 3, 2, 1, 16),
         (6, 8, 16, 3, 1, 1, 2), (14, 32, 64, 1, 1, 0, 1)]


def int8_conv_module(shape, w, stride, pad, groups):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), stride, pad, 1, groups, "NHWC", "HWIO", "NHWC", "int32"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def numpy_int8_conv(x, w, stride, pad, groups):
    """NHWC x HWIO integer convolution in int64."""
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, icg, oc = w.shape
    oh, ow = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    ocg = oc // groups
    out = np.zeros((x.shape[0], oh, ow, oc), np.int64)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
            for g in range(groups):
                out[..., g * ocg:(g + 1) * ocg] += np.einsum(
                    "nhwc,co->nhwo", win[..., g * icg:(g + 1) * icg], w[i, j, :, g * ocg:(g + 1) * ocg].astype(np.int64))
    return out


def host_has(feature) -> bool:
    from tvm.target import Target
    from tvm.target.codegen import target_has_features

    target = Target(build.resolve_target(targets.load("host")))
    with target:
        return feature is None or bool(target_has_features(feature, target))


@pytest.mark.parametrize("path", list(X86_PATHS))
def test_int8_conv_paths_compute_the_integer_convolution_exactly(path):
    import tvm
    from tvm import relax

    mcpu, feature = X86_PATHS[path]
    spec = {"kind": "llvm", "mcpu": mcpu, "num-cores": 2}
    assert int8_path(spec) == INT8_PATHS[path]
    rng = np.random.default_rng(0)
    for h, c, oc, k, s, p, g in CONVS:
        x = rng.integers(-128, 128, (1, h, h, c)).astype(np.int8)
        w = rng.integers(-128, 128, (k, k, c // g, oc)).astype(np.int8)  # full range: saturation would show
        mod, log = build.schedule(build.lower(int8_conv_module(x.shape, w, s, p, g), spec), spec)
        dot = g == 1 and c >= MIN_DOT_IC  # the 3-channel stem: LLVM's widening code
        assert log[0]["rule"] == ("conv2d_nhwc_dot" if dot else "depthwise_nhwc" if g == c else "conv2d_nhwc"), log
        ex = tvm.compile(mod, tvm.target.Target(spec))
        if dot and INT8_PATHS[path].intrin:
            assert "vpdpbusd" in ex.mod.imports[0].inspect_source("asm")
        if host_has(feature):  # only what this CPU can run
            got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
            np.testing.assert_array_equal(got, numpy_int8_conv(x, w, s, p, g), err_msg=str((path, h, c, oc, k, s, p, g)))


def int8_target(tmp_path, name="host") -> str:
    raw = targets.load(name).raw
    path = tmp_path / f"{name}-int8.yaml"
    path.write_text(yaml.safe_dump({**raw, "name": f"{name}-int8", "options": {**raw.get("options", {}), "int8_conv": True}}))
    return str(path)


def agree_with_ort(qdq, build_dir, shape, n=16):
    """Top-1 and logits of the TVM int8 build against ONNX Runtime running the same Q/DQ graph."""
    from edgecnn import backends
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.backends.reference import FAKEQUANT_LEVEL
    from edgecnn.core import manifest

    x = np.random.default_rng(2).standard_normal((n, *shape)).astype(np.float32)
    runner = backends.get("tvm").load(build_dir, manifest.read(build_dir))
    got = np.concatenate([runner.run(x[i:i + 1])["logits"] for i in range(n)])
    want = OrtRunner(qdq, level=FAKEQUANT_LEVEL).run(x)["logits"]
    return got, want


def symmetric_qdq(onnx_path, out):
    """edgecnn's PTQ (per-channel weights, symmetric: the form TVM's int8 convs take) on random images."""
    from edgecnn.qdq import ptq

    scheme = ptq.Scheme(per_channel=True, form="tensorrt", reduce_range=False)
    x = np.random.default_rng(1).standard_normal((32, 1, 28, 28)).astype(np.float32)
    ranges = ptq.calibrate(onnx_path, x, algo="minmax", work=out.parent, form=scheme.placement)
    return ptq.quantize_onnx(onnx_path, out, ranges, scheme, work=out.parent)


@pytest.mark.parametrize("model", ["lenet", "mobilenet"])
def test_int8_build_agrees_with_onnxruntime_on_the_qdq_graph(model, lenet_run, mobilenet_run, tmp_path):
    """A quantized LeNet-5 / small MobileNet v2 with int8 convs: the same top-1 as ONNX Runtime running the
    Q/DQ graph op by op, logits within a few output steps (a requantized activation may land one level off
    where float rounding differs)."""
    from edgecnn import compiler, export
    from edgecnn.core import manifest

    fp32 = export.export(lenet_run if model == "lenet" else mobilenet_run, tmp_path / "m.onnx", batch=1)
    qdq = symmetric_qdq(fp32, tmp_path / "q.onnx")
    out = compiler.compile_model(qdq, int8_target(tmp_path), out=tmp_path / "b", batch=1)
    kernels = manifest.read(out)["artifact"]["schedules"]
    assert kernels["rules"].get("conv2d_nhwc_dot", 0) >= 1, kernels
    got, want = agree_with_ort(qdq, out, (1, 28, 28))
    assert (got.argmax(1) == want.argmax(1)).all()
    np.testing.assert_allclose(got, want, atol=0.03 * float(np.abs(want).max()))
