"""ONNX Runtime: the reference ONNX backend and the always-available fast CPU path."""

import shutil
from pathlib import Path

import numpy as np

from edgecnn.backends.base import Backend, QdqForm, Runner
from edgecnn.core.errors import EdgecnnError, MissingDependency

DTYPES = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}  # else float32
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int = 0, providers=None, level: str = "all"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise EdgecnnError(f"ONNX Runtime cannot load {onnx_path}: {str(e).splitlines()[0]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = DTYPES.get(inp.type, np.float32)
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.input_shape = inp.shape[1:] if all(isinstance(d, int) for d in inp.shape[1:]) else None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    matrix_target = "onnxruntime-cpu"
    # ONNX Runtime's own CPU recipe: uint8 activations with zero points, Q/DQ after every op, so its fused
    # int8 kernels take the graph
    qdq_form = QdqForm(symmetric=False, op_types=None)

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return str(MissingDependency("onnxruntime"))
        return None

    def compile(self, onnx_path, target, precision, out_dir, *, batch=1, **opts) -> dict:
        """ONNX Runtime runs the ONNX itself: the artifact is the build's model.onnx (and its external data),
        checked to load."""
        import onnx

        from edgecnn.core.onnx_utils import external_files

        dest = Path(out_dir) / "model.onnx"
        if Path(onnx_path).resolve() != dest.resolve():
            shutil.copyfile(onnx_path, dest)
        OrtRunner(dest)
        files = external_files(onnx.load(str(dest), load_external_data=False))
        return {"file": dest.name, **({"files": files} if files else {})}

    def load(self, build_dir, manifest: dict, *, threads: int | None = None, **opts) -> OrtRunner:
        options = manifest["target"].get("options") or {}
        return OrtRunner(Path(build_dir) / manifest["artifact"]["file"], threads or options.get("threads", 0),
                         options.get("providers"), options.get("graph_optimization_level", "all"))


backend = OnnxRuntimeBackend()
