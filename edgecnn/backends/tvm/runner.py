"""The Relax VM runner: one for a build loaded here and for one on a board (edgecnn.backends.tvm.rpc)."""

import os
from pathlib import Path

import numpy as np

from edgecnn.backends.base import Runner
from edgecnn.backends.tvm.build import require_tvm


# what TVM's thread pool reads from the environment when it starts (strings in libtvm_runtime.so)
THREAD_VARS = ("TVM_NUM_THREADS", "TVM_BIND_THREADS", "TVM_THREAD_POOL_SPIN_COUNT")
# per target family: the settings benchmarks/tvm_threads.py chose by p99 against ONNX Runtime's (README, TVM
# section). x86_64: unbound workers; bound to cores (TVM's default) a worker waits for its core while another
# process holds it: MobileNet v2 224's p99 was 3.9x ONNX Runtime's bound, 0.90x unbound (loaded 2-core EPYC).
# A family not measured keeps TVM's defaults.
MEASURED = {"x86_64": {"TVM_BIND_THREADS": "0"}}


def thread_settings(spec: dict) -> dict:
    """What a build records for its runner's thread pool (manifest artifact.threads): env and why.

    TVM_NUM_THREADS is the target's core count, the threads its schedules were made for: unset, TVM halves
    the x86 hardware threads (it assumes hyper-threading), so a 2-vCPU machine ran one thread."""
    from edgecnn.backends.tvm.build import require_tvm

    triple = spec.get("mtriple") or require_tvm().target.codegen.llvm_get_system_triple()
    family = triple.split("-")[0]
    cores = {"TVM_NUM_THREADS": str(spec["num-cores"])} if spec.get("num-cores") else {}
    if family in MEASURED:
        return {"env": {**cores, **MEASURED[family]}, "chosen_by": f"benchmarks/tvm_threads.py on {family} (p99 "
                "vs ONNX Runtime); threads: the target's num-cores; the environment overrides each variable"}
    return {"env": cores, "chosen_by": f"not measured on {family}: TVM's defaults but the threads (the target's "
            "num-cores); the environment overrides each variable"}


def apply_thread_settings(env: dict | None, threads: int | None) -> dict:
    """Set the recorded settings where the environment does not name them (it overrides), `threads` (an
    explicit request: bench --threads) over both. Effective only before this process's TVM pool starts.
    Returns what the pool will read."""
    for var, value in (env or {}).items():
        os.environ.setdefault(var, str(value))
    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)
    return {var: os.environ.get(var) for var in THREAD_VARS}


class VmRunner(Runner):
    """Runs `main` of a Relax VM on `device`; subclasses make the VM (locally or on a board)."""

    name = "tvm"

    def __init__(self, output_names: list[str], batch: int | None, input_shape=None, input_dtype: str = "float32"):
        self.tvm = require_tvm()
        self.output_names, self.batch, self.input_shape = output_names, batch, input_shape
        self.input_dtype = input_dtype
        self.vm = self.main = self.device = None

    def attach(self, vm, device) -> None:
        self.vm, self.main, self.device = vm, vm["main"], device

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.main(self.tvm.runtime.tensor(x, self.device))
        outs = [out] if isinstance(out, self.tvm.runtime.Tensor) else list(out)
        return {n: o.numpy() for n, o in zip(self.output_names, outs)}


class TvmRunner(VmRunner):
    """A build's model.so loaded on this machine's CPU.

    Per call, the input is copied into one preallocated, 64-byte aligned tensor (the compiled kernels assume
    that alignment) and the outputs come back as numpy views of the VM's fresh output tensors: together
    ~1 us, against ~17 us of Python in tvm.runtime.tensor(x) + .numpy(), which LeNet-5 cannot afford.
    """

    def __init__(self, so_path: str | Path, output_names: list[str], *, batch: int | None, input_shape=None,
                 input_dtype: str = "float32", threads: int | None = None, thread_env: dict | None = None):
        self.thread_env = apply_thread_settings(thread_env, threads)  # read when TVM's thread pool starts
        super().__init__(output_names, batch, input_shape, input_dtype)
        from tvm import relax

        device = self.tvm.cpu()
        self.attach(relax.VirtualMachine(self.tvm.runtime.load_module(str(so_path)), device), device)
        self.staging: dict[tuple, tuple] = {}  # input shape -> (aligned tensor, its numpy view)

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if x.shape not in self.staging:
            tensor = self.tvm.runtime.empty(x.shape, self.input_dtype, self.device)
            self.staging[x.shape] = (tensor, np.from_dlpack(tensor))
        tensor, view = self.staging[x.shape]
        np.copyto(view, x, casting="unsafe")
        out = self.main(tensor)
        outs = [out] if isinstance(out, self.tvm.runtime.Tensor) else list(out)
        return {n: np.from_dlpack(o) for n, o in zip(self.output_names, outs)}
