"""The ONNX handed to TensorRT: lowered to the target's opset, checked against its Q/DQ rules.

Runs without TensorRT (it is what `edgecnn compile --target jetson` does on a host).
"""

import contextlib
import io
import logging
import warnings
from pathlib import Path

from edgecnn.core import onnx_utils
from edgecnn.backends.tensorrt import qdqlint
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256
from edgecnn.core.progress import status

PARITY_ATOL = 1e-4


def same_outputs(a, b, what: str) -> None:
    """Run both models on one random input with ONNX Runtime; refuse `b` when it computes something else."""
    onnx_utils.same_outputs(a, b, what, PARITY_ATOL)


def convert(model, max_opset: int):
    """onnx's version converter (core.onnx_utils.convert_opset: its fixes, the checker), checked against the
    original's outputs."""
    lowered = onnx_utils.convert_opset(model, max_opset)
    same_outputs(model, lowered, f"lowering to opset {max_opset}")
    return lowered


def reexport(model, max_opset: int):
    """Export the recorded checkpoint again at `max_opset` with the TorchScript exporter (fp32 models)."""
    import onnx
    import torch

    from edgecnn.models import checkpoint

    meta = onnx_utils.read_meta(model)
    ckpt = Path(meta["checkpoint"]) if meta.get("checkpoint") else None
    if ckpt is None or not ckpt.is_file() or sha256(ckpt) != meta.get("checkpoint_sha256"):
        raise EdgecnnError(f"its checkpoint {ckpt or '(none recorded)'} is missing or changed since the export")
    net, _ = checkpoint.load(ckpt)
    name, chw, dynamic = onnx_utils.input_info(model)
    batch = 1 if dynamic else model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    out_names = [o.name for o in model.graph.output]
    buf = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(batch, *chw),), buf, dynamo=False, opset_version=max_opset,
                          input_names=[name], output_names=out_names, do_constant_folding=True,
                          dynamic_axes={n: {0: "batch"} for n in [name, *out_names]} if dynamic else None)
    lowered = onnx.load_from_string(buf.getvalue())
    onnx_utils.write_meta(lowered, meta)
    onnx.checker.check_model(lowered, full_check=True)
    same_outputs(model, lowered, f"re-exporting at opset {max_opset}")
    return lowered


def lower_opset(model, max_opset: int, source: str, min_opset: int = 0) -> tuple[object, dict]:
    """The model at an opset the target's parser takes (min_opset..max_opset): as is, raised by onnx's
    converter, or lowered by it (else re-exported from its checkpoint)."""
    opset = onnx_utils.opset_of(model)
    if opset < min_opset:
        try:
            raised = onnx_utils.convert_opset(model, min_opset)
        except EdgecnnError as e:
            raise EdgecnnError(f"{source} is opset {opset} and this target's TensorRT parser takes opset >= "
                               f"{min_opset}: {e}") from None
        return raised, {"source": opset, "prepared": min_opset, "how": "raised by onnx.version_converter"}
    if opset <= max_opset:
        return model, {"source": opset, "prepared": opset, "how": "unchanged"}
    reasons = []
    ways = [("onnx.version_converter", convert)]
    if not qdqlint.has_qdq(model):
        ways.append(("re-exported from the checkpoint (TorchScript exporter)", reexport))
    for how, way in ways:
        try:
            lowered = way(model, max_opset)
        except Exception as e:  # the converter raises RuntimeError/ValidationError/...; ours EdgecnnError
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            reasons.append(f"{how.split(' (')[0]}: {detail}")
            continue
        return lowered, {"source": opset, "prepared": onnx_utils.opset_of(lowered), "how": how}
    raise EdgecnnError(f"{source} is opset {opset} and this target's TensorRT parser takes opset <= {max_opset}; "
                       f"lowering failed ({'; '.join(reasons)}): export at opset {max_opset} "
                       f"(edgecnn export RUN_DIR --opset {max_opset}) and quantize from that export")


def check_precision(model, precision: str, source: str) -> None:
    """int8 only by explicit quantization: a Q/DQ model, never TensorRT's implicit calibrator."""
    qdq = qdqlint.has_qdq(model)
    if precision == "int8" and not qdq:
        raise EdgecnnError(f"{source} has no Q/DQ nodes: TensorRT builds int8 only from a Q/DQ model (explicit "
                           "quantization). Quantize it first (edgecnn quantize RUN_DIR) and compile model.int8.onnx")
    if precision != "int8" and qdq:
        raise EdgecnnError(f"{source} is a Q/DQ (int8) model: compile it with --precision int8")


def lint(model, max_opset: int, source: str) -> list[dict]:
    """Refuse on Q/DQ errors (all named); print and return the warnings."""
    found = qdqlint.lint(model, max_opset)
    errors = [v for v in found if v.severity == "error"]
    if errors:
        raise EdgecnnError(f"{source} breaks TensorRT's Q/DQ rules ({len(errors)} error(s)): "
                           + "; ".join(map(str, errors)))
    for v in found:
        status.print(f"Q/DQ lint warning {v}", markup=False, highlight=False)
    return qdqlint.report(found)
