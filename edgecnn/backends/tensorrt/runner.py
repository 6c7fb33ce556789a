"""Run a serialized TensorRT engine: device buffers and a stream from cuda-python (no torch), enqueue
through the version shims in compat (execute_async_v3 on 8.5+, v2 with bindings on 8.2)."""

from math import prod
from pathlib import Path

import numpy as np

from edgecnn.backends.base import Runner
from edgecnn.backends.tensorrt import compat
from edgecnn.backends.tensorrt.device import cuda_call, cudart, require_trt, trt_logger
from edgecnn.core.errors import EdgecnnError


class TrtRunner(Runner):
    """One engine, one execution context, one CUDA stream; buffers sized once for the profile's largest batch."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, dla_core: int | None, profile: dict):
        trt, self.cuda = require_trt(), cudart()
        self.runtime = trt.Runtime(trt_logger(trt))
        if dla_core is not None:
            self.runtime.DLA_core = dla_core
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EdgecnnError(f"TensorRT could not deserialize {engine_path}: rebuild it (edgecnn build --force)")
        self.context = self.engine.create_execution_context()
        self.stream = cuda_call(self.cuda.cudaStreamCreate())  # not the default stream: TensorRT syncs extra on it
        ios = compat.io_tensors(trt, self.engine)
        self.input_name = next(n for n, is_input in ios if is_input)
        self.output_names = [n for n, is_input in ios if not is_input]
        self.dtypes = {n: np.dtype(trt.nptype(compat.tensor_dtype(self.engine, n))) for n, _ in ios}
        self.input_dtype = self.dtypes[self.input_name]
        self.input_shape = list(profile["opt"][1:])
        fixed = profile["min"][0] == profile["max"][0]
        self.batch, self.max_batch = (profile["max"][0] if fixed else None), profile["max"][0]
        self.buffers = self._allocate(profile["max"])

    def _shapes(self, input_shape) -> dict[str, tuple]:
        if not compat.set_input_shape(self.context, self.engine, self.input_name, tuple(input_shape)):
            raise EdgecnnError(f"TensorRT refused input shape {list(input_shape)} (profile: batch 1..{self.max_batch})")
        return {self.input_name: tuple(input_shape),
                **{n: compat.tensor_shape(self.context, self.engine, n) for n in self.output_names}}

    def _allocate(self, largest) -> dict[str, int]:
        return {n: cuda_call(self.cuda.cudaMalloc(max(1, prod(s)) * self.dtypes[n].itemsize))
                for n, s in self._shapes(largest).items()}

    def _copy(self, dst, src, nbytes: int, kind) -> None:
        cuda_call(self.cuda.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream))

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        kinds = self.cuda.cudaMemcpyKind
        shapes = self._shapes(x.shape)
        self._copy(self.buffers[self.input_name], x.ctypes.data, x.nbytes, kinds.cudaMemcpyHostToDevice)
        if not compat.execute(self.context, self.engine, self.buffers, int(self.stream)):
            raise EdgecnnError("TensorRT execution failed (its log above says why)")
        outs = {n: np.empty(shapes[n], self.dtypes[n]) for n in self.output_names}
        for n, out in outs.items():
            self._copy(out.ctypes.data, self.buffers[n], out.nbytes, kinds.cudaMemcpyDeviceToHost)
        cuda_call(self.cuda.cudaStreamSynchronize(self.stream))
        return {n: out.astype(np.float32, copy=False) for n, out in outs.items()}

    def close(self) -> None:
        if self.stream is None:
            return
        cuda_call(self.cuda.cudaStreamSynchronize(self.stream))
        for ptr in self.buffers.values():
            self.cuda.cudaFree(ptr)
        self.cuda.cudaStreamDestroy(self.stream)
        self.context = self.engine = self.stream = None
        self.buffers = {}
