"""Backends behind one interface (edgecnn.backends.base): found by name, imported on first use.

    backend = backends.require("onnxruntime")       # or get(): without checking it can run here
    artifact = backend.compile(onnx_path, target, precision, out_dir, batch=1)
    with backend.load(build_dir, manifest) as runner:
        outputs = runner.run(x)                      # {output name: array}

verify, bench and localize use only this interface and `reference` (what a build is compared with),
so they never special-case a backend. Each backend module holds `backend`, an instance of its Backend.
"""

import importlib
from importlib import metadata

from edgecnn.backends.base import (CHUNK, Backend, BuildsOnDevice, DeviceFarm, OperatorMatrix, QdqForm, QdqRules,
                                   Runner, RunNotes, Tunable, needs_torch, run_batches)
from edgecnn.core.errors import EdgecnnError, suggest

__all__ = ["CHUNK", "Backend", "BuildsOnDevice", "DeviceFarm", "OperatorMatrix", "QdqForm", "QdqRules", "Runner",
           "RunNotes", "Tunable", "needs_torch", "run_batches", "get", "require", "load_runner", "load_build",
           "device_farm", "names", "availability", "tool_versions", "qdq_forms", "qdq_form", "DEFAULT_QDQ_FORM"]

MODULES = {"torch": "edgecnn.backends.pytorch", "onnxruntime": "edgecnn.backends.onnxruntime",
           "tvm": "edgecnn.backends.tvm", "tensorrt": "edgecnn.backends.tensorrt"}
CORE_PACKAGES = ("edgecnn", "torch", "onnx", "onnxruntime", "numpy")
DEFAULT_QDQ_FORM = "tensorrt"  # TensorRT's placement, which ONNX Runtime and TVM run too


def names() -> list[str]:
    return list(MODULES)


def get(name: str) -> Backend:
    if name not in MODULES:
        raise EdgecnnError(f"unknown backend '{name}'{suggest(name, MODULES)}")
    return importlib.import_module(MODULES[name]).backend


def require(name: str) -> Backend:
    """The backend, or EdgecnnError with the reason it cannot run here."""
    backend = get(name)
    reason = backend.available()
    if reason:
        raise EdgecnnError(f"backend '{name}' is not usable here: {reason}")
    return backend


def load_runner(build_dir, manifest: dict, board: dict | None = None, *, threads: int | None = None) -> Runner:
    """A build's runner here, or on a board of an RPC tracker (board: {"rpc": HOST:PORT, "key": KEY,
    "timeout": seconds}; Backend.remote): the one way from a manifest to a runner."""
    if board:
        load = device_farm(manifest["backend"], build_dir).remote(build_dir, board["rpc"], board.get("key"),
                                                                 timeout=board.get("timeout", 10.0), threads=threads)
        return load()
    return require(manifest["backend"]).load(build_dir, manifest, threads=threads)


def load_build(build_dir: str, threads: int | None = None) -> Runner:
    """A build's own runner on this machine, from its folder's manifest (its files not hashed again): how bench
    loads a build and an int8 build's fp32 build beside it, picklable by reference for a subject's process."""
    from edgecnn.core import manifest as manifest_mod

    return load_runner(build_dir, manifest_mod.read(build_dir, check_files=False), threads=threads)


def device_farm(name: str, build_dir) -> DeviceFarm:
    """The backend of a build that runs on the boards of an RPC tracker, or EdgecnnError."""
    backend = get(name)
    if not isinstance(backend, DeviceFarm):
        raise EdgecnnError(f"--rpc runs builds on the boards of an RPC tracker; {build_dir} is a {name} build, "
                           "which runs where it is loaded")
    return backend


def availability() -> dict[str, str | None]:
    return {name: get(name).available() for name in MODULES}


def tool_versions() -> dict:
    """Versions of the packages every build depends on and of each backend's, where installed."""
    import platform

    out = {"python": platform.python_version()}
    for package in dict.fromkeys([*CORE_PACKAGES, *(p for n in MODULES for p in get(n).packages)]):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def qdq_forms() -> dict[str, QdqForm]:
    """The Q/DQ forms edgecnn quantize writes, named after the backend whose int8 kernels want them."""
    return {n: get(n).qdq_form for n in MODULES if isinstance(get(n), QdqRules)}


def qdq_form(name: str) -> QdqForm:
    forms = qdq_forms()
    if name not in forms:
        raise EdgecnnError(f"--form {name}: unknown{suggest(name, forms)}")
    return forms[name]
