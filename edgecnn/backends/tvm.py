"""Apache TVM (Relax, 0.27): ONNX -> Relax -> a VM executable exported as a shared library."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgecnn.backends import Runner, tvm_passes
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
    check_cpu(spec, target.name)
    return spec


def check_cpu(spec: dict, target_name: str) -> None:
    """Refuse an -mcpu LLVM does not know: TVM would only warn and emit generic code."""
    codegen = _tvm().target.codegen
    cpu, triple = spec.get("mcpu"), spec.get("mtriple") or codegen.llvm_get_system_triple()
    if spec.get("kind", "llvm") != "llvm" or not cpu or codegen.llvm_is_valid_cpu(cpu, triple):
        return
    import difflib

    known = codegen.llvm_get_cpu_archlist(_tvm().target.Target({"kind": "llvm", "mtriple": triple}))
    close = difflib.get_close_matches(cpu, list(known), n=3)
    hint = f" (closest: {', '.join(close)})" if close else ""
    raise EdgecnnError(f"target '{target_name}': LLVM {codegen.llvm_version_major()} does not know mcpu "
                       f"'{cpu}' for {triple}{hint}; fix mcpu in the target YAML")


def check_cross_compiler(compiler: str | None, target_name: str) -> None:
    """Fail before the long compile when the target's cross compiler is not installed."""
    if not compiler or shutil.which(compiler):
        return
    triple, _, tool = compiler.rpartition("-")
    package = f"apt-get install {tool}-{triple}" if tool in ("g++", "gcc") and triple else f"install {compiler}"
    raise EdgecnnError(f"target '{target_name}' cross-compiles with {compiler}, which is not on PATH: "
                       f"{package}")


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
        # batch None: keep the ONNX's symbolic batch dimension (a dynamic-shape build)
        return from_onnx(model, shape_dict={inp.name: shape} if batch else None, keep_params_in_input=False)
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
    options = target.options or {}
    check_cross_compiler(options.get("cross_compiler"), target.name)
    spec = resolve_target(target)
    mod = tvm_passes.prepare(import_onnx(onnx_path, batch), target)
    tuning = None
    if opts.get("tune_db"):  # schedules from edgecnn tune, checked against this model, target and CPU
        from edgecnn import tune

        mod, tuning = tune.apply_db(mod, spec, opts["tune_db"], onnx_path, target, batch)
    cross = options.get("cross_compiler")
    build(mod, spec, out_dir / "model.so", options.get("opt_level", 3), cross)
    artifact = {"file": "model.so", "tvm_target": spec, "batch": batch,
                **tvm_passes.graph_options(target)}
    if tuning:
        artifact["tuning"] = tuning
    if cross:
        version = subprocess.run([cross, "--version"], capture_output=True, text=True).stdout
        artifact["cross_compiler"] = version.splitlines()[0] if version else cross
    return artifact


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
