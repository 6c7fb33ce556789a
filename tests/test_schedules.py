"""The default schedule rules (edgecnn/backends/tvm/schedules): every kernel of every zoo model gets one, for
the host and for a Raspberry Pi 4, and the candidates a tuner searches compute what the default computes."""

import random

import numpy as np
import pytest
import torch

from edgecnn import models
from edgecnn.backends.tvm import build, frontend, passes, schedules, tune
from edgecnn.backends.tvm.cpu import cpu_info
from edgecnn.compiler import targets
from edgecnn.export import torch_export

RULES = {"conv2d_nhwc", "depthwise_nhwc", "inner_spatial_reduction", "injective", "fallback"}


def zoo_onnx(name: str, path) -> str:
    """A registered model at 28x28 (the small stride schedule), untrained, exported."""
    cfg = {} if name == "lenet5" else {"alpha": 0.5} if name.startswith("mobilenet") else {"width": 0.25}
    model = models.create(name, num_classes=10, in_channels=1, input_size=28, **cfg).eval()
    torch_export(model, torch.randn(1, 1, 28, 28), opset=18, dynamic=False, path=path)
    return path


def scheduled(onnx_path, target: str):
    tgt = targets.load(target)
    spec = build.resolve_target(tgt)
    return build.schedule(build.lower(passes.prepare(frontend.import_onnx(onnx_path, 1), tgt), spec), spec)


@pytest.mark.parametrize("name", models.names())
def test_every_kernel_of_every_zoo_model_is_scheduled(name, tmp_path):
    import tvm

    path = zoo_onnx(name, tmp_path / f"{name}.onnx")
    for target in ("host", "rpi4"):
        mod, log = scheduled(path, target)
        assert {k["rule"] for k in log} <= RULES, (target, log)
        for gv, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc):
                text = func.script()
                assert func.attrs["tirx.is_scheduled"] and ("T.vectorized" in text or "T.parallel" in text), \
                    (name, target, gv.name_hint)  # none left as plain loops


def run_kernel(func, spec, args):
    import tvm

    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=tvm.target.Target(spec))
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib.mod["main"](*tensors)
    return tensors[-1].numpy()


def test_tuning_candidates_compute_what_the_default_computes(lenet_onnx):
    """The search space holds legal schedules only: a sample of every LeNet-5 kernel's candidates, run on
    random inputs, give the default schedule's output."""
    tgt = targets.load("host")
    spec = build.resolve_target(tgt)
    cpu = cpu_info(spec)
    rng = np.random.default_rng(0)
    for kernel in tune.kernels(tune.lowered(lenet_onnx, tgt, spec, 1), spec):
        args = [rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)) for p in kernel["func"].params]
        want = run_kernel(tune.scheduled(kernel, kernel["default"], cpu), spec, args)
        for params in random.Random(0).sample(kernel["space"], min(4, len(kernel["space"]))):
            func = tune.scheduled(kernel, {**kernel["default"], **params}, cpu)
            assert func is not None, (kernel["name"], params)
            np.testing.assert_allclose(run_kernel(func, spec, args), want, rtol=1e-5, atol=1e-5)


def test_rules_read_the_vector_width_and_cores_off_the_target():
    widths = {t: cpu_info(build.resolve_target(targets.load(t))).lanes for t in ("rpi4", "rpi5", "aarch64")}
    assert widths == {"rpi4": 4, "rpi5": 4, "aarch64": 4}  # NEON: 128 bits
    assert cpu_info({"kind": "llvm", "mcpu": "znver3", "num-cores": 2}) == schedules.CpuInfo(8, 16, 2, "avx2")
    assert cpu_info({"kind": "llvm", "mcpu": "znver4", "num-cores": 2}) == schedules.CpuInfo(16, 32, 2, "avx512")


def test_float16_kernels_get_float16_lanes_where_the_cpu_computes_in_float16():
    """rpi5 (+fullfp16): a kernel writing float16 is vectorized 8 lanes wide (fmla v.8h); a float32 kernel, and
    every kernel of a CPU without float16 arithmetic (rpi4, the host), keeps the float32 lanes."""
    import tvm
    from tvm import te

    def kernel(dtype):
        a = te.placeholder((64,), dtype, "a")
        return te.create_prim_func([a, te.compute((64,), lambda i: a[i] * a[i], "b")])

    rpi5, rpi4 = (cpu_info(build.resolve_target(targets.load(t))) for t in ("rpi5", "rpi4"))
    host = cpu_info(build.resolve_target(targets.load("host")))
    assert rpi5.fp16 and not rpi4.fp16 and not host.fp16
    assert rpi5.for_kernel(kernel("float16")).lanes == 8 and rpi5.for_kernel(kernel("float32")).lanes == 4
    assert rpi4.for_kernel(kernel("float16")).lanes == 4 and host.for_kernel(kernel("float16")) == host
    mod = tvm.IRModule({"main": kernel("float16")})
    func, rule, params = schedules.schedule_func(mod["main"], rpi5)
    assert rule == "injective" and "T.vectorized(8)" in func.script(), func.script()
