"""TVM (Relax, 0.27) building blocks: the lazy import, the resolved target, lowering, scheduling, .so."""

import os
import shutil
import subprocess
from pathlib import Path

from edgecnn.core.errors import EdgecnnError, MissingDependency


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
    spec = dict(target.section("tvm") or {"kind": "llvm"})
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


def lower(mod, spec: dict):
    """A prepared Relax graph (passes.prepare) -> fused, unscheduled PrimFuncs: what the schedule rules see.
    edgecnn's conv2d lowering (legalize.py) pads few output channels to whole vectors and packs weights."""
    tvm = require_tvm()
    from tvm import relax

    from edgecnn.backends.tvm import legalize
    from edgecnn.backends.tvm.cpu import cpu_info, int8_path

    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(legalize.legalize_map(cpu_info(spec).lanes, int8_path(spec))),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.RewriteDataflowReshape(),  # reshape kernels -> in-place reshapes of the VM
        relax.transform.DeadCodeElimination(),
    ])
    return seq(mod)


def schedule(mod, spec: dict, params: dict | None = None) -> tuple:
    """Every PrimFunc of a lowered module scheduled by the first rule that takes it (schedules/, on dlight's
    ApplyDefaultSchedule, one function at a time for its log), with the
    parameters `params` gives for its kernel key (a tuning database), else the rule's defaults.
    Returns (module, [{"name", "key", "rule", "params"} per kernel])."""
    tvm = require_tvm()
    from edgecnn.backends.tvm import schedules
    from edgecnn.backends.tvm.cpu import cpu_info

    cpu, params, log = cpu_info(spec), params or {}, []
    with tvm.target.Target(spec):
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled"):
                continue
            key = schedules.func_key(func)
            new, rule, used = schedules.schedule_func(func, cpu, params.get(key))
            mod[gv] = new.with_attr("tirx.is_scheduled", True)
            log.append({"name": gv.name_hint, "key": key, "rule": rule, "params": used})
    return mod, log


def build(mod, target_spec: dict, out_file: Path, *, opt_level: int = 3, cross_compiler: str | None = None) -> None:
    """Scheduled module -> model.so. The VM runs `main` compiled to native code (exec_mode "compiled"):
    half the dispatch cost of bytecode per kernel, the same C++ API for apps (vm_load_executable, main)."""
    tvm = require_tvm()
    from tvm import relax

    with tvm.transform.PassContext(opt_level=opt_level):
        ex = relax.build(mod, tvm.target.Target(target_spec), exec_mode="compiled")
    if cross_compiler:
        ex.export_library(str(out_file), fcompile=tvm.support.cc.cross_compiler(cross_compiler))
    else:
        ex.export_library(str(out_file))


def cross_compiler_version(compiler: str) -> str:
    """The first line of `COMPILER --version`, recorded in the manifest."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    return version.splitlines()[0] if version else compiler
