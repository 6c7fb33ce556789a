"""ONNX helpers every stage shares: loading with one-line errors, opset and its conversion, input dims,
edgecnn's metadata (JSON values under 'edgecnn.*' keys of metadata_props) and the fp16 conversion."""

import json
from pathlib import Path

from edgecnn.core.errors import EdgecnnError

PREFIX = "edgecnn."
MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear


def load(path: str | Path, load_weights: bool = True):
    """onnx.load with a one-line error for a missing or corrupt file."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise EdgecnnError(f"ONNX file not found: {path} (edgecnn export RUN_DIR writes one)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, ...
        raise EdgecnnError(f"{path} is not a valid ONNX model ({type(e).__name__}): re-export it") from None
    missing = missing_external_data(model, path.parent)
    if missing:
        raise EdgecnnError(f"{path} keeps its weights in '{missing}', which is not beside it: copy that file "
                           f"next to {path.name} (or re-export it as one file)")
    try:
        if load_weights:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx ValidationError, ...
        raise EdgecnnError(f"{path} is not a valid ONNX model ({type(e).__name__}): re-export it") from None
    return model


def missing_external_data(model, folder: Path) -> str | None:
    """The first external data file the model names that is not in `folder`, else None."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            if not (folder / location).is_file():
                return location
    return None


def opset_of(model) -> int:
    """The default-domain opset of a model (0 when it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def dims(value_info) -> list:
    """[int or symbolic name] of a graph input or output."""
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


def input_info(model) -> tuple[str, list[int], bool]:
    """(input name, [C, H, W], whether the batch dimension is dynamic) of a one-input image model."""
    inp = model.graph.input[0]
    shape = dims(inp)
    return inp.name, [int(d) for d in shape[1:]], not isinstance(shape[0], int) or shape[0] <= 0


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


def read_meta(model) -> dict:
    out = {}
    for p in model.metadata_props:
        if p.key.startswith(PREFIX):
            out[p.key[len(PREFIX):]] = json.loads(p.value)
    return out


def write_meta(model, facts: dict) -> None:
    keep = [p for p in model.metadata_props if not (p.key[len(PREFIX):] in facts and p.key.startswith(PREFIX))]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = PREFIX + key, json.dumps(value)


def is_fp16(model) -> bool:
    from onnx import TensorProto

    return any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)


def to_fp16(model, keep_io_fp32: bool = True):
    """An fp16 copy (ONNX Runtime's float16 converter); input and output stay float32 unless told otherwise."""
    if is_fp16(model):
        return model
    import warnings

    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = OnnxModel(convert_float_to_float16(model, keep_io_types=keep_io_fp32))
    half.topological_sort()  # the converter appends the input/output Casts after their consumers
    onnx.checker.check_model(half.model, full_check=True)
    return half.model
