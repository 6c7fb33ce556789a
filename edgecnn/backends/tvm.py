"""Apache TVM (Relax, 0.27): ONNX -> Relax -> a VM executable exported as a shared library."""

import os
from pathlib import Path

import numpy as np

from edgecnn.backends import Runner
from edgecnn.errors import EdgecnnError, MissingDependency


def available() -> str | None:
    try:
        import tvm  # noqa: F401
    except ImportError:
        return str(MissingDependency("apache-tvm", "tvm"))
    return None


def _tvm():
    reason = available()
    if reason:
        raise EdgecnnError(reason)
    import tvm

    return tvm


def resolve_target(target) -> dict:
    """The target's TVM dict with 'auto' filled in: LLVM's host CPU name and this machine's core count."""
    tvm = _tvm()
    spec = dict(target.tvm or {"kind": "llvm"})
    if spec.get("mcpu") == "auto":
        spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    if spec.get("num-cores") == "auto":
        spec["num-cores"] = os.cpu_count() or 1
    return spec


def import_onnx(onnx_path: str | Path, batch: int | None = 1):
    """ONNX file -> Relax IRModule with weights bound as constants and the batch fixed to `batch`."""
    import onnx

    _tvm()
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(onnx_path))
    inp = model.graph.input[0]
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    shape = [batch or dims[0], *dims[1:]]
    try:
        return from_onnx(model, shape_dict={inp.name: shape}, keep_params_in_input=False)
    except Exception as e:  # the frontend raises many types for an unsupported op or attribute
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise EdgecnnError(f"TVM cannot import {Path(onnx_path).name}: {type(e).__name__}: {detail} "
                           "(edgecnn verify --ops shows what each backend takes; onnxruntime-cpu may)") from None


def build(mod, target_spec: dict, out_file: Path, opt_level: int = 3, cross_compiler: str | None = None) -> None:
    tvm = _tvm()
    with tvm.transform.PassContext(opt_level=opt_level):
        ex = tvm.compile(mod, target=tvm.target.Target(target_spec))
    if cross_compiler:
        ex.export_library(str(out_file), fcompile=tvm.support.cc.cross_compiler(cross_compiler))
    else:
        ex.export_library(str(out_file))


def compile(onnx_path, target, precision, out_dir: Path, batch: int | None = 1, **opts) -> dict:
    spec = resolve_target(target)
    mod = import_onnx(onnx_path, batch)
    options = target.options or {}
    build(mod, spec, out_dir / "model.so", options.get("opt_level", 3), options.get("cross_compiler"))
    return {"file": "model.so", "tvm_target": spec, "batch": batch}


class TvmRunner(Runner):
    name = "tvm"

    def __init__(self, so_path: str | Path, output_names: list[str], batch: int | None, input_shape=None,
                 threads: int | None = None):
        if threads:
            os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's thread pool starts
        tvm = _tvm()
        from tvm import relax

        self.tvm = tvm
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(so_path)), tvm.cpu())
        self.main = self.vm["main"]
        self.output_names, self.batch, self.input_shape = output_names, batch, input_shape

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.main(self.tvm.runtime.tensor(x))
        outs = [out] if hasattr(out, "numpy") else list(out)
        return {n: o.numpy() for n, o in zip(self.output_names, outs)}


def load(build_dir, manifest: dict, threads: int | None = None, **opts) -> TvmRunner:
    art = manifest["artifact"]
    if art.get("tvm_target", {}).get("mtriple", "").startswith("aarch64") and os.uname().machine != "aarch64":
        raise EdgecnnError(f"{build_dir} is an aarch64 build: run it on the board (edgecnn bench --rpc) "
                           "or under qemu, not on this x86 host")
    names = [o["name"] for o in manifest["outputs"]]
    shape = manifest.get("input", {}).get("shape", [None])[1:] or None
    return TvmRunner(Path(build_dir) / art["file"], names, art.get("batch"), shape, threads)
