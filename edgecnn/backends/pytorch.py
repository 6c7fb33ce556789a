"""The PyTorch reference: runs the trained checkpoint (model.pt) itself."""

from pathlib import Path

import numpy as np

from edgecnn.backends.base import Backend, Runner
from edgecnn.core.errors import EdgecnnError


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, checkpoint_path: str | Path, threads: int | None = None):
        import torch

        from edgecnn.models import checkpoint

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model, self.spec = checkpoint.load(checkpoint_path)
        self.input_shape = self.spec["input"]["shape"]

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            return {self.output_names[0]: self.model(self.torch.from_numpy(x)).numpy()}


def no_checkpoint(path) -> str:
    """Why PyTorch cannot be the reference, and what to use: verify's and bench's own options."""
    where = f"{path} is missing" if path else "a model from elsewhere has none"
    return (f"no PyTorch checkpoint for this model ({where}): verify it --against onnxruntime and bench it with "
            "--compare onnxruntime, or export it from a RUN_DIR")


def checkpoint_runner(path, threads: int | None = None) -> TorchRunner:
    """PyTorch on a recorded checkpoint, or a one-line error saying what to use instead."""
    reason = backend.available()
    if reason:
        raise EdgecnnError(f"backend 'torch' is not usable here: {reason}")
    if not path or not Path(path).exists():
        raise EdgecnnError(no_checkpoint(path))
    return TorchRunner(path, threads)


class PyTorchBackend(Backend):
    name = "torch"
    packages = ("torch",)

    def available(self) -> str | None:
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed: pip install torch==2.13.0"
        return None

    def compile(self, onnx_path, target, precision, out_dir, *, batch=1, **opts) -> dict:
        raise EdgecnnError("the torch backend is the reference: it runs model.pt, it does not compile ONNX")

    def load(self, build_dir, manifest: dict, *, threads: int | None = None, **opts) -> TorchRunner:
        from edgecnn.core.manifest import source_path

        return checkpoint_runner(source_path(build_dir, manifest.get("source", {}).get("checkpoint")), threads)


backend = PyTorchBackend()
