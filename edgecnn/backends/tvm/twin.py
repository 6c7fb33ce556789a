"""An fp16 build's float16 twin on this CPU: the build's float16 graph compiled here by TVM.

Where the CPU has no float16 arithmetic (x86 without AVX512-FP16), LLVM computes each float16 operation in
float32 and rounds the result to float16 (exact: float32 holds any float16 sum or product), so the twin does
the build's IEEE float16 arithmetic, accumulations included, in another order (x86 vectors of 8 or 16 float32
lanes, the ARM build 8 float16 lanes). verify measures on it how far float16 arithmetic alone moves the fp32
reference: ONNX Runtime's float16 run rounds only between ops (it computes in float32 on x86), and a trained
LeNet-5's float16 rpi5 build moved logits of 186 by 0.67, 26x ONNX Runtime's float16 spread, and by 0.38 from
this twin.
"""

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

TWIN_BATCH = 8  # the twin's batch where the graph leaves it dynamic (Runner pads the last chunk)


def float16_twin(onnx_path: str | Path):
    """A TvmRunner of the float16 graph `onnx_path` compiled for this CPU with edgecnn's rules."""
    import onnx

    from edgecnn.backends.tvm import build, frontend, passes
    from edgecnn.backends.tvm.runner import TvmRunner
    from edgecnn.core import onnx_utils

    codegen = build.require_tvm().target.codegen
    spec = {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": os.cpu_count() or 1}
    if codegen.llvm_get_system_triple().startswith("aarch64"):  # verify on an ARM board: float16 by promotion
        spec["mattr"] = ["-fullfp16"]  # as on x86, so the twin is not the build's own 8-lane code (unmeasured)
    batch = onnx_utils.dims(onnx_utils.real_inputs(onnx.load(str(onnx_path), load_external_data=False))[0])[0]
    batch = batch if isinstance(batch, int) and batch > 0 else TWIN_BATCH
    model = frontend.frontend_model(onnx_path, batch)
    outputs = [o.name for o in model.graph.output]
    prepared = passes.prepare(frontend.from_model(model, Path(onnx_path).name), SimpleNamespace(options={}))
    mod, _ = build.schedule(build.lower(prepared, spec), spec)
    with tempfile.TemporaryDirectory(prefix="edgecnn-twin-") as work:  # loaded, the library may go
        build.build(mod, spec, Path(work) / "twin.so")
        return TvmRunner(Path(work) / "twin.so", outputs, batch=batch)
