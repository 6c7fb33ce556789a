"""What an int8 build is also timed against, so its speed-up is read against the alternatives a user has:

    onnxruntime int8  ONNX Runtime on the same model re-quantized in ONNX Runtime's own Q/DQ form (its fused
                      int8 kernels run only that form; the same Q/DQ graph as the build may run slower than fp32
                      there), when the build's form is another one
    fp32 build        the fp32 build of the same checkpoint for the same target, found beside the build (the
                      folders `edgecnn compile` and `edgecnn run` write: RUN_DIR/build-TARGET-PRECISION)
"""

import functools
import tempfile
from pathlib import Path

from edgecnn import backends

ORT = "onnxruntime"
ORT_INT8 = "onnxruntime int8"
FP32_BUILD = "fp32 build"


def subjects(build_dir: Path, man: dict, threads: int | None) -> dict:
    """{name: picklable loader} of the baselines this build has (none for a build that is not int8)."""
    if man["precision"] != "int8":
        return {}
    out = {}
    if man["backend"] != ORT and ort_form_available(build_dir, man):
        out[ORT_INT8] = functools.partial(load_ort_form, str(build_dir), threads)
    fp32 = fp32_build(build_dir, man)
    if fp32 is not None:
        out[FP32_BUILD] = functools.partial(backends.load_build, str(fp32), threads)
    return out


def ort_form_available(build_dir: Path, man: dict) -> bool:
    """Is the build's model in another form than ONNX Runtime's, with the calibration to re-quantize it?"""
    import onnx

    from edgecnn.backends.reference import source_graph
    from edgecnn.core.onnx_utils import read_meta
    from edgecnn.qdq.forms import CALIBRATION_KEY

    want = backends.get(ORT).int8_form
    meta = read_meta(onnx.load(str(source_graph(Path(build_dir), man)), load_external_data=False))
    return (meta.get("quantization") or {}).get("form") != want and want in (meta.get(CALIBRATION_KEY) or {})


def load_ort_form(build_dir: str, threads: int | None):
    """ONNX Runtime on the build's model in ONNX Runtime's own int8 form, prepared for this CPU as
    `edgecnn compile --target onnxruntime-cpu` prepares it."""
    from edgecnn.backends.onnxruntime import OrtRunner, prepare_int8
    from edgecnn.backends.reference import source_graph
    from edgecnn.core import manifest as manifest_mod
    from edgecnn.qdq import forms

    man = manifest_mod.read(build_dir, check_files=False)
    with tempfile.TemporaryDirectory(prefix="edgecnn-ort-int8-") as tmp:
        path = Path(tmp) / "model.int8.onnx"
        forms.convert(source_graph(Path(build_dir), man), path, backends.get(ORT).int8_form)
        prepare_int8(path)
        return OrtRunner(path, threads or 0)  # the session holds the model: the file may go


def fp32_build(build_dir: Path, man: dict) -> Path | None:
    """The fp32 build beside this one: same target, same checkpoint (or fp32 source ONNX)."""
    from edgecnn.core import manifest as manifest_mod

    mine = origin(man)
    if mine is None:
        return None
    for other in sorted(Path(build_dir).resolve().parent.iterdir()):
        if not (other / "manifest.json").is_file() or other == Path(build_dir).resolve():
            continue
        theirs = manifest_mod.read(other, check_files=False)
        if theirs.get("precision") == "fp32" and theirs["target"].get("name") == man["target"].get("name") \
                and origin(theirs) == mine:
            return other
    return None


def origin(man: dict) -> str | None:
    """What a build was made from, across precisions: its checkpoint's sha256, else its fp32 ONNX's."""
    src = man.get("source") or {}
    fp32_onnx = src.get("onnx_sha256") if man.get("precision") == "fp32" else src.get("fp32_onnx_sha256")
    return src.get("checkpoint_sha256") or fp32_onnx or None
