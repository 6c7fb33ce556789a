"""The PyTorch reference: runs the trained checkpoint (model.pt) itself."""

from pathlib import Path

import numpy as np

from edgecnn.backends import Runner
from edgecnn.errors import EdgecnnError


def available() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed: pip install torch==2.13.0"
    return None


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, checkpoint_path: str | Path, threads: int | None = None):
        import torch

        from edgecnn import checkpoint

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model, self.spec = checkpoint.load(checkpoint_path)
        self.input_shape = self.spec["input"]["shape"]

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            return {self.output_names[0]: self.model(self.torch.from_numpy(x)).numpy()}


def compile(onnx_path, target, precision, out_dir, **opts) -> dict:
    raise EdgecnnError("the torch backend is the reference: it runs model.pt, it does not compile ONNX")


def load(build_dir, manifest: dict, threads: int | None = None, **opts) -> TorchRunner:
    path = manifest.get("source", {}).get("checkpoint")
    if not path or not Path(path).exists():
        raise EdgecnnError(f"no checkpoint recorded for this model (looked for {path}): "
                           "use --against onnxruntime, or export from a RUN_DIR")
    return TorchRunner(path, threads)
