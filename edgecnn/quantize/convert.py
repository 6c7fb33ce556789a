"""ONNX-to-ONNX conversions: fp16 (ONNX Runtime's float16 converter) and opset down-conversion."""

from pathlib import Path

from edgecnn.errors import EdgecnnError

EXPORT_OPSET = 18  # what edgecnn export writes
MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear


def opset_of(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def to_opset(path: Path, opset: int) -> None:
    """Rewrite an ONNX file at a lower opset (TensorRT 8.5 on JetPack 5 parses opset <= 17)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    have = opset_of(model)
    if opset == have:
        return
    if not MIN_OPSET <= opset <= have:
        raise EdgecnnError(f"--opset {opset}: use {MIN_OPSET}..{have} (per-channel Q/DQ needs opset >= "
                           f"{MIN_OPSET}; the export is opset {have})")
    try:
        low = version_converter.convert_version(model, opset)
        for node in low.graph.node:  # the converter keeps this opset-18 attribute on Reduce* nodes
            keep = [a for a in node.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            del node.attribute[:]
            node.attribute.extend(keep)
        onnx.checker.check_model(low, full_check=True)
    except Exception as e:  # the converter asserts (RuntimeError) or leaves an invalid graph
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise EdgecnnError(f"cannot convert the model to opset {opset} ({detail}): use --opset {have}") from None
    onnx.save(low, str(path))


def to_fp16(fp32_path: Path, out_path: Path, keep_io_fp32: bool = True) -> Path:
    """fp16 weights and compute; the input and output stay float32 unless keep_io_fp32 is False."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=keep_io_fp32)
    OnnxModel(model).topological_sort()  # the converter appends the input/output Casts at the end
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return out_path
