"""Apache TVM (Relax, 0.27): ONNX -> Relax -> a VM executable exported as a shared library.

    frontend.py   ONNX -> Relax (the frontend given the model the way it reads it)
    passes.py     the graph rewrites compile and tune share (NHWC, fewer kernels, int8 convs)
    int8.py       real int8 convolutions from Q/DQ
    legalize.py   edgecnn's conv2d lowering (NHWC, packed weights) that the schedule rules recognise
    schedules/    the default schedule rules, one per kernel kind; cpu.py what they read off the target
    build.py      the lazy import, the resolved target, lower -> schedule -> .so
    tune.py       the budgeted search over the rules' parameters; tunedb.py its database's record
    runner.py  the Relax VM runner; rpc.py the same runner on a board of a TVM RPC tracker
"""

import os
from pathlib import Path

from edgecnn.backends.base import Backend
from edgecnn.backends.tvm import build, frontend, passes
from edgecnn.backends.tvm import runner
from edgecnn.backends.tvm.runner import TvmRunner
from edgecnn.core import onnx_utils
from edgecnn.core.errors import EdgecnnError


class TvmBackend(Backend):
    name = "tvm"
    packages = ("apache-tvm", "apache-tvm-ffi")
    matrix_target = "host"
    int8_form = "tensorrt"  # its int8 kernels take symmetric int8 activations and weights (zero points 0)

    def available(self) -> str | None:
        return build.available()

    def compile(self, onnx_path, target, precision, out_dir, *, batch: int | None = 1, tune_db=None, db_model=None,
                **opts) -> dict:
        """db_model: the ONNX tune_db was tuned for, when onnx_path is a copy derived from it (localisation)."""
        if batch is None:
            raise EdgecnnError(DYNAMIC_BATCH)
        options = target.options or {}
        cross = options.get("cross_compiler")
        build.check_cross_compiler(cross, target.name)
        spec = build.resolve_target(target)
        fp16 = half_model(onnx_path, target.name, spec) if precision == "fp16" else None
        model = frontend.frontend_model(onnx_path, batch)
        mod = build.lower(passes.prepare(frontend.from_model(model, Path(onnx_path).name), target), spec)
        params, tuning = {}, None
        if tune_db:  # schedule parameters from edgecnn tune, checked against this model, target and CPU
            from edgecnn.backends.tvm import tune

            params, tuning = tune.apply_db(spec, tune_db, onnx_path=db_model or onnx_path, target=target,
                                           batch=batch)
        mod, kernels = build.schedule(mod, spec, params)
        build.build(mod, spec, Path(out_dir) / "model.so", opt_level=options.get("opt_level", 3), cross_compiler=cross)
        artifact = {"file": "model.so", "tvm_target": spec, "batch": batch, **passes.graph_options(target),
                    "onnx_opset": onnx_utils.opset_of(model),  # what TVM imported (frontend.for_frontend)
                    "schedules": schedule_summary(kernels, params), "threads": runner.thread_settings(spec)}
        if fp16:
            artifact["fp16"] = fp16
        if tuning:
            artifact["tuning"] = tuning
        if cross:
            artifact["cross_compiler"] = build.cross_compiler_version(cross)
        return artifact

    def load(self, build_dir, manifest: dict, *, threads: int | None = None, **opts) -> TvmRunner:
        art = manifest["artifact"]
        if art.get("tvm_target", {}).get("mtriple", "").startswith("aarch64") and os.uname().machine != "aarch64":
            raise EdgecnnError(f"{build_dir} is an aarch64 build: run it on the board (edgecnn bench --rpc) "
                               "or under qemu, not on this x86 host")
        names = [o["name"] for o in manifest["outputs"]]
        shape = manifest.get("input", {}).get("shape", [None])[1:] or None
        return TvmRunner(Path(build_dir) / art["file"], names, batch=art.get("batch"), input_shape=shape,
                         input_dtype=manifest.get("input", {}).get("dtype", "float32"), threads=threads,
                         thread_env=(art.get("threads") or runner.thread_settings(art["tvm_target"]))["env"])

    def tune(self, onnx_path, target, **opts) -> tuple:
        from edgecnn.backends.tvm import tune

        return tune.tune(onnx_path, target, **opts)

    def remote(self, build_dir, address: str, key: str | None = None, *, timeout: float = 10.0,
               threads: int | None = None):
        from edgecnn.backends.tvm import rpc

        return rpc.loader(build_dir, address, key, timeout=timeout, threads=threads)

    def boards(self, address: str, key: str, *, timeout: float = 10.0) -> dict:
        from edgecnn.backends.tvm import rpc

        return rpc.count_boards(address, key, timeout)


# edgecnn's schedule rules need static shapes: a dynamic batch leaves every kernel as TVM's plain loops
# (measured with `edgecnn bench --batch 1,8 --compare onnxruntime` on LeNet-5, 2 threads, on a loaded Xeon)
DYNAMIC_BATCH = ("--batch dynamic: TVM builds need a fixed batch (edgecnn's schedules take static shapes; a "
                 "dynamic-batch TVM build runs unscheduled, measured on LeNet-5 at 8x ONNX Runtime's p50 at batch 1 "
                 "and 15x at batch 8): compile one build per batch (--batch 8), or --target onnxruntime-cpu for a "
                 "dynamic batch")


def half_model(onnx_path, target_name: str, spec: dict) -> dict:
    """An fp16 build: the build's model.onnx becomes the float16 model TVM compiles (weights and activations
    float16, a Cast at the float32 input and output), scheduled in 8-lane float16 vectors on NEON
    (CpuInfo.for_kernel). Refused where the CPU has no float16 arithmetic: LLVM would convert every value to
    float32 and back (a Cortex-A72 build of MobileNet v2: 9,200 fcvt, no fp16 multiply)."""
    from edgecnn.backends.onnxruntime import write_fp16
    from edgecnn.backends.tvm.cpu import cpu_info

    if not cpu_info(spec).fp16:
        cpu = " ".join([str(spec.get("mcpu", "")), *spec.get("mattr", [])]).strip() or "its CPU"
        raise EdgecnnError(f"target '{target_name}': fp16 on TVM needs float16 arithmetic (+fullfp16 in the "
                           f"target's tvm.mattr, ARMv8.2-A cores such as cortex-a76), which {cpu} lacks; "
                           "compile fp32 or int8 for it")
    lanes = 2 * cpu_info(spec).lanes
    return {**write_fp16(onnx_path, Path(onnx_path)), "activations": "float16", "vector_lanes": lanes}


def schedule_summary(kernels: list[dict], params: dict) -> dict:
    """What the manifest records of the schedules: kernels per rule, how many from a tuning database."""
    rules: dict[str, int] = {}
    for k in kernels:
        rules[k["rule"]] = rules.get(k["rule"], 0) + 1
    return {"kernels": len(kernels), "rules": rules, "tuned": sum(k["key"] in params for k in kernels)}


backend = TvmBackend()
