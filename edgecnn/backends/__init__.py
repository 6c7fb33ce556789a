"""Backends behind one small interface (Polygraphy style: a loader makes a runner).

Each backend is one module, found by name and imported on first use, with three functions:

    available() -> str | None            None when usable here, else the reason (e.g. the extra to install)
    compile(onnx_path, target, precision, out_dir, **opts) -> dict
                                         write the artifact into out_dir; return what load() needs
    load(build_dir, manifest, **opts) -> Runner

A Runner is a context manager with `run(x) -> {output name: array}` for a batch `x` (float32 NCHW).
verify and bench use only this interface, so they never special-case a backend.
"""

import importlib
from types import ModuleType

import numpy as np

from edgecnn.errors import EdgecnnError, suggest

MODULES = {"torch": "edgecnn.backends.torch_backend", "onnxruntime": "edgecnn.backends.onnxruntime",
           "tvm": "edgecnn.backends.tvm", "tensorrt": "edgecnn.backends.tensorrt"}


def get(name: str) -> ModuleType:
    if name not in MODULES:
        raise EdgecnnError(f"unknown backend '{name}'{suggest(name, MODULES)}")
    return importlib.import_module(MODULES[name])


def require(name: str) -> ModuleType:
    """The backend module, or EdgecnnError with the reason it cannot run here."""
    backend = get(name)
    reason = backend.available()
    if reason:
        raise EdgecnnError(f"backend '{name}' is not usable here: {reason}")
    return backend


def availability() -> dict[str, str | None]:
    return {name: get(name).available() for name in MODULES}


class Runner:
    """Base runner: subclasses set input_name/output_names/batch and write `_run`."""

    name = "runner"
    input_name = "input"
    output_names: list[str] = ["logits"]
    batch: int | None = None  # fixed batch of the artifact, None when dynamic
    input_shape: list | None = None  # C, H, W the artifact takes

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.input_shape and list(x.shape[1:]) != list(self.input_shape):
            raise EdgecnnError(f"input shape {list(x.shape)} does not fit this model: it takes "
                               f"N x {' x '.join(map(str, self.input_shape))} ({self.name})")
        if self.batch is None or len(x) == self.batch:
            return self._run(x)
        return self._run_in_chunks(x)

    def _run_in_chunks(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Fixed-batch artifacts: run chunks of `batch`, padding the last one."""
        parts: dict[str, list] = {}
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), np.float32)])
            for k, v in self._run(chunk).items():
                parts.setdefault(k, []).append(v[:n])
        return {k: np.concatenate(v) for k, v in parts.items()}

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
