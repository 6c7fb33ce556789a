"""Apache TVM (Relax, 0.27): ONNX -> Relax -> a VM executable exported as a shared library.

    build.py   the lazy import, the resolved target, ONNX import, Relax -> .so
    passes.py  the graph rewrites compile and tune share (layout, int8 convs)
    int8.py    real int8 convolutions from Q/DQ
    tune.py    MetaSchedule tuning into a database; tunedb.py its record and checks
    runner.py  the Relax VM runner; rpc.py the same runner on a board of a TVM RPC tracker
"""

import os
from pathlib import Path

from edgecnn.backends.base import Backend
from edgecnn.backends.tvm import build, passes
from edgecnn.backends.tvm.runner import TvmRunner
from edgecnn.core.errors import EdgecnnError


class TvmBackend(Backend):
    name = "tvm"
    packages = ("apache-tvm", "apache-tvm-ffi")
    matrix_target = "host"
    tunable = True

    def available(self) -> str | None:
        return build.available()

    def compile(self, onnx_path, target, precision, out_dir, *, batch: int | None = 1, tune_db=None, **opts) -> dict:
        options = target.options or {}
        cross = options.get("cross_compiler")
        build.check_cross_compiler(cross, target.name)
        spec = build.resolve_target(target)
        mod = passes.prepare(build.import_onnx(onnx_path, batch), target)
        tuning = None
        if tune_db:  # schedules from edgecnn tune, checked against this model, target and CPU
            from edgecnn.backends.tvm import tune

            mod, tuning = tune.apply_db(mod, spec, tune_db, onnx_path=onnx_path, target=target, batch=batch)
        build.build(mod, spec, Path(out_dir) / "model.so", opt_level=options.get("opt_level", 3), cross_compiler=cross)
        artifact = {"file": "model.so", "tvm_target": spec, "batch": batch, **passes.graph_options(target)}
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
                         threads=threads)

    def tune(self, onnx_path, target: str, **opts) -> tuple:
        from edgecnn.backends.tvm import tune

        return tune.tune(onnx_path, target, **opts)

    def remote(self, build_dir, address: str, key: str | None = None, *, timeout: float = 10.0,
               threads: int | None = None):
        from edgecnn.backends.tvm import rpc

        return rpc.loader(build_dir, address, key, timeout=timeout, threads=threads)

    def boards(self, address: str, key: str, *, timeout: float = 10.0) -> dict:
        from edgecnn.backends.tvm import rpc

        return rpc.count_boards(address, key, timeout)


backend = TvmBackend()
