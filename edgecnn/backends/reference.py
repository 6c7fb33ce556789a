"""What a build is compared with: one definition, used by verify, bench and localize alike.

    torch        the trained checkpoint the manifest records, run by PyTorch
    onnxruntime  the source ONNX (or the build's copy), run by ONNX Runtime fully optimised
    fakequant    the source Q/DQ graph (or the build's copy) run op by op, unfused: the ONNX semantics of
                 int8, the same on every CPU (no int8 kernel runs)

A fakequant reference has twins (`twins`): the same graph run by ONNX Runtime with its float optimisations,
which change the numbers without being wrong: the basic level folds each float conv bias onto the int32
grid (its WeightBiasQuantization), the full level without int8 kernels runs other float kernels (NCHWc,
fusions). verify measures on them how far such changes alone move the reference.
"""

from dataclasses import dataclass, field
from pathlib import Path

from edgecnn.core.manifest import source_path
from edgecnn.core.errors import EdgecnnError
from edgecnn.data.image_model import MIN_OPSET
from edgecnn.core.fileio import sha256

AGAINST = ("torch", "onnxruntime", "fakequant")
FAKEQUANT_LEVEL = "disable"  # op by op: no fusion into ONNX Runtime's CPU-dependent int8 kernels
NO_INT8_KERNELS = {"session.disable_quant_qdq": "1"}  # keep Q/DQ as float ops at any optimisation level
FLOAT16_TWIN = "tvm-float16"  # an fp16 build's float16 graph compiled for this CPU (twins)


@dataclass
class Reference:
    against: str
    onnx: Path | None  # the graph an ONNX Runtime reference runs (None for torch)
    level: str = "all"  # ONNX Runtime's graph optimisation level for it
    checkpoint: Path | None = None  # the checkpoint a torch reference runs
    config: dict = field(default_factory=dict)  # ONNX Runtime session config entries


def default_against(precision: str, man: dict | None = None) -> str:
    """int8 builds are held to their fake-quant reference; the rest to the trained PyTorch model, or to ONNX
    Runtime on the source ONNX when no checkpoint is recorded (a model from elsewhere) or where torch is not
    installed (a board: `edgecnn[board]`)."""
    if precision == "int8":
        return "fakequant"
    recorded = man is None or (man.get("source") or {}).get("checkpoint")
    return "torch" if recorded and has_torch() else "onnxruntime"


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def source_graph(build_dir: Path, man: dict) -> Path:
    """The ONNX the build was compiled from when it is still there unchanged and ONNX Runtime runs its opset,
    else the build's copy."""
    src = man.get("source", {})
    path = source_path(build_dir, src.get("onnx")) or build_dir / "model.onnx"
    if path.is_file() and src.get("opset", MIN_OPSET) >= MIN_OPSET and src.get("onnx_sha256") in (None, sha256(path)):
        return path
    return build_dir / "model.onnx"


def reference(build_dir: str | Path, man: dict, against: str | None = None) -> Reference:
    """The reference of a build for `against` (default: by the build's precision)."""
    build_dir = Path(build_dir)
    against = against or default_against(man["precision"], man)
    if against == "torch":
        return Reference(against, None, checkpoint=source_path(build_dir, man.get("source", {}).get("checkpoint")))
    if against == "onnxruntime":
        return Reference(against, source_graph(build_dir, man))
    if against == "fakequant":
        return Reference(against, source_graph(build_dir, man), level=FAKEQUANT_LEVEL)
    raise EdgecnnError(f"--against {against}: use {', '.join(AGAINST)}")


def twins(ref: Reference, half: Path | None = None) -> list[Reference]:
    """Float-equivalent executions of a fakequant reference (no int8 kernel in any); for an fp16 build held to
    the fp32 model, its float16 graph `half` (half_graph) run by ONNX Runtime (float16 between ops) and compiled
    for this CPU by TVM (float16 arithmetic: backends/tvm/twin.py): how far float16 alone moves the reference;
    else []."""
    if ref.against == "fakequant":
        return [Reference(ref.against, ref.onnx, level="basic"),
                Reference(ref.against, ref.onnx, level="all", config=dict(NO_INT8_KERNELS))]
    if half is not None and ref.against in ("torch", "onnxruntime"):
        return [Reference("onnxruntime", half), Reference(FLOAT16_TWIN, half)]
    return []


def half_graph(build_dir: Path, man: dict) -> Path | None:
    """The float16 graph an fp16 build computes in its own kernels (the build's model.onnx, float16), which its
    twins run; None for other builds and for ONNX Runtime's own fp16 builds (a twin would be the build)."""
    from edgecnn.core import onnx_utils

    path = Path(build_dir) / "model.onnx"
    if man["precision"] != "fp16" or man["backend"] == "onnxruntime" or not path.is_file():
        return None
    import onnx

    return path if onnx_utils.is_fp16(onnx.load(str(path), load_external_data=False)) else None


def load(ref: Reference, *, threads: int | None = None):
    """The runner of a reference."""
    if ref.against == FLOAT16_TWIN:
        from edgecnn.backends.tvm.twin import float16_twin

        return float16_twin(ref.onnx)
    if ref.against == "torch":
        from edgecnn.backends.pytorch import TorchRunner

        if not ref.checkpoint or not ref.checkpoint.exists():
            from edgecnn.backends.pytorch import no_checkpoint

            raise EdgecnnError(no_checkpoint(ref.checkpoint))
        return TorchRunner(ref.checkpoint, threads)
    return load_graph(ref, ref.onnx, threads=threads)


def load_graph(ref: Reference, onnx_path: str | Path, *, threads: int | None = None):
    """ONNX Runtime on `onnx_path` run as the reference runs its graph (localisation's marked copy)."""
    from edgecnn.backends.onnxruntime import OrtRunner

    return OrtRunner(onnx_path, threads or 0, level=ref.level, config=ref.config)


def load_for(build_dir: str | Path, man: dict, against: str | None = None, *, threads: int | None = None):
    """reference() then load(): the runner a build is compared with (at the build's input shape, where the
    source leaves it dynamic)."""
    return fit_input(load(reference(build_dir, man, against), threads=threads), man)


def fit_input(runner, man: dict):
    """The runner at the build's input shape, where the reference's graph leaves it dynamic."""
    if runner.input_shape is None:
        runner.input_shape = list(man["input"]["shape"][1:])
    return runner
