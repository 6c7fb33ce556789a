"""What a build is compared with: one definition, used by verify, bench and localize alike.

    torch        the trained checkpoint the manifest records, run by PyTorch
    onnxruntime  the source ONNX (or the build's copy), run by ONNX Runtime fully optimised
    fakequant    the build's Q/DQ graph run op by op, unfused: the ONNX semantics of int8
"""

from dataclasses import dataclass
from pathlib import Path

from edgecnn.core.errors import EdgecnnError
from edgecnn.core.image_model import MIN_OPSET

AGAINST = ("torch", "onnxruntime", "fakequant")


@dataclass
class Reference:
    against: str
    onnx: Path | None  # the graph an ONNX Runtime reference runs (None for torch)
    level: str = "all"  # ONNX Runtime's graph optimisation level for it
    checkpoint: Path | None = None  # the checkpoint a torch reference runs


def default_against(precision: str, man: dict | None = None) -> str:
    """int8 builds are held to their fake-quant reference; the rest to the trained PyTorch model, or to ONNX
    Runtime on the source ONNX when no checkpoint is recorded (a model from elsewhere)."""
    if precision == "int8":
        return "fakequant"
    return "torch" if man is None or (man.get("source") or {}).get("checkpoint") else "onnxruntime"


def reference(build_dir: str | Path, man: dict, against: str | None = None) -> Reference:
    """The reference of a build for `against` (default: by the build's precision)."""
    build_dir = Path(build_dir)
    against = against or default_against(man["precision"], man)
    if against == "torch":
        path = man.get("source", {}).get("checkpoint")
        return Reference(against, None, checkpoint=Path(path) if path else None)
    if against == "onnxruntime":  # the source itself, unless ONNX Runtime cannot run its opset
        source = man.get("source", {})
        src = Path(source.get("onnx") or build_dir / "model.onnx")
        runs = src.exists() and source.get("opset", MIN_OPSET) >= MIN_OPSET
        return Reference(against, src if runs else build_dir / "model.onnx")
    if against == "fakequant":
        return Reference(against, build_dir / "model.onnx", level="disable")
    raise EdgecnnError(f"--against {against}: use {', '.join(AGAINST)}")


def load(ref: Reference, *, threads: int | None = None):
    """The runner of a reference."""
    if ref.against == "torch":
        from edgecnn.backends.pytorch import TorchRunner

        if not ref.checkpoint or not ref.checkpoint.exists():
            raise EdgecnnError(f"no checkpoint recorded for this model (looked for {ref.checkpoint}): "
                               "use --against onnxruntime, or export from a RUN_DIR")
        return TorchRunner(ref.checkpoint, threads)
    from edgecnn.backends.onnxruntime import OrtRunner

    return OrtRunner(ref.onnx, threads or 0, level=ref.level)


def load_for(build_dir: str | Path, man: dict, against: str | None = None, *, threads: int | None = None):
    """reference() then load(): the runner a build is compared with (at the build's input shape, where the
    source leaves it dynamic)."""
    runner = load(reference(build_dir, man, against), threads=threads)
    if runner.input_shape is None:
        runner.input_shape = list(man["input"]["shape"][1:])
    return runner
