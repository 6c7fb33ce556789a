"""TVM (Relax, 0.27) building blocks: the lazy import, the resolved target, ONNX -> Relax, Relax -> .so."""

import os
import shutil
import subprocess
from pathlib import Path

from edgecnn.core.errors import EdgecnnError, MissingDependency, Unsupported


def available() -> str | None:
    try:
        import tvm  # noqa: F401
    except ImportError:
        return str(MissingDependency("apache-tvm", "tvm"))
    return None


def require_tvm():
    """The tvm module, or EdgecnnError naming the extra to install."""
    reason = available()
    if reason:
        raise EdgecnnError(reason)
    import tvm

    return tvm


def resolve_target(target) -> dict:
    """The target's TVM dict with 'auto' filled in: LLVM's host CPU name and this machine's core count."""
    tvm = require_tvm()
    spec = dict(target.tvm or {"kind": "llvm"})
    if spec.get("mcpu") == "auto":
        spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    if spec.get("num-cores") == "auto":
        spec["num-cores"] = os.cpu_count() or 1
    check_cpu(spec, target.name)
    return spec


def check_cpu(spec: dict, target_name: str) -> None:
    """Refuse an -mcpu LLVM does not know: TVM would only warn and emit generic code."""
    codegen = require_tvm().target.codegen
    cpu, triple = spec.get("mcpu"), spec.get("mtriple") or codegen.llvm_get_system_triple()
    if spec.get("kind", "llvm") != "llvm" or not cpu or codegen.llvm_is_valid_cpu(cpu, triple):
        return
    import difflib

    known = codegen.llvm_get_cpu_archlist(require_tvm().target.Target({"kind": "llvm", "mtriple": triple}))
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

    require_tvm()
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
        raise Unsupported(f"TVM cannot import {Path(onnx_path).name}: {type(e).__name__}: {detail} "
                           "(edgecnn verify --ops shows what each backend takes; onnxruntime-cpu may)") from None


def build(mod, target_spec: dict, out_file: Path, *, opt_level: int = 3, cross_compiler: str | None = None) -> None:
    tvm = require_tvm()
    with tvm.transform.PassContext(opt_level=opt_level):
        ex = tvm.compile(mod, target=tvm.target.Target(target_spec))
    if cross_compiler:
        ex.export_library(str(out_file), fcompile=tvm.support.cc.cross_compiler(cross_compiler))
    else:
        ex.export_library(str(out_file))


def cross_compiler_version(compiler: str) -> str:
    """The first line of `COMPILER --version`, recorded in the manifest."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    return version.splitlines()[0] if version else compiler
