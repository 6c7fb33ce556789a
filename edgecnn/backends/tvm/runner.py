"""The Relax VM runner: one for a build loaded here and for one on a board (edgecnn.backends.tvm.rpc)."""

import os
from pathlib import Path

import numpy as np

from edgecnn.backends.base import Runner
from edgecnn.backends.tvm.build import require_tvm


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
    """A build's model.so loaded on this machine's CPU."""

    def __init__(self, so_path: str | Path, output_names: list[str], *, batch: int | None, input_shape=None,
                 input_dtype: str = "float32", threads: int | None = None):
        if threads:
            os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's thread pool starts
        super().__init__(output_names, batch, input_shape, input_dtype)
        from tvm import relax

        device = self.tvm.cpu()
        self.attach(relax.VirtualMachine(self.tvm.runtime.load_module(str(so_path)), device), device)
