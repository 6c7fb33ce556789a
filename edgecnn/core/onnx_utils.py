"""ONNX helpers every stage shares: loading with one-line errors (external data, > 2 GB), the real inputs,
opset conversion naming the op that blocks it, shapes inferred without the weights, edgecnn's metadata
(JSON values under 'edgecnn.*' keys of metadata_props) and the fp16 conversion."""

import json
import re
from pathlib import Path

from edgecnn.core import tolerance
from edgecnn.core.errors import EdgecnnError

WEIGHTED = ("Conv", "Gemm", "MatMul")  # the ops whose second input is a weight that int8 quantizes

PREFIX = "edgecnn."
MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
PROTOBUF_LIMIT = 2**31 - 2**24  # what one serialized ModelProto may hold (2 GB, with room for the graph)


def load(path: str | Path, load_weights: bool = True):
    """onnx.load with a one-line error for a missing or corrupt file."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise EdgecnnError(f"ONNX file not found: {path} (edgecnn export RUN_DIR writes one)")
    try:
        onnx.checker.check_model(str(path))  # by path: external data is checked and a > 2 GB model fits
    except Exception as e:  # protobuf DecodeError, onnx ValidationError, ...
        missing = re.search(r"should be stored in (\S+), but it", str(e))
        if missing:
            raise EdgecnnError(f"{path}: its weights are stored in {missing.group(1)}, which is missing: keep the "
                               "external data file(s) beside the model") from None
        raise EdgecnnError(f"{path} is not a valid ONNX model ({type(e).__name__}: {_first_line(e)[:120]}): "
                           "re-export it") from None
    return onnx.load(str(path), load_external_data=load_weights)


def real_inputs(model) -> list:
    """The graph inputs that are not initializers (before IR 4, initializers were listed as inputs too)."""
    weights = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def external_files(model) -> list[str]:
    """The external data files the model's tensors point to, relative to the model's folder."""
    return sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})


def save(model, path: str | Path, *, external: bool) -> list[str]:
    """Save `model`; with `external`, its weights go to PATH.data beside it. Returns the data files written."""
    import onnx

    path = Path(path)
    if not external:
        onnx.save(model, str(path))
        return []
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{path.name}.data", size_threshold=1024)
    return [f"{path.name}.data"]


def opset_of(model) -> int:
    """The default-domain opset of a model (0 when it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def dims(value_info) -> list:
    """[int or symbolic name] of a graph input or output."""
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


def too_big(model) -> bool:
    """Whether the model cannot be serialized in one piece (over 2 GB with its weights in memory)."""
    try:
        return model.ByteSize() > PROTOBUF_LIMIT
    except Exception:  # protobuf's EncodeError: even measuring serializes past the limit
        return True


def set_dims(value_info, dims: list) -> None:
    """Set a graph input's dims: an int fixes one, a name (or None) leaves it symbolic."""
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int) and d > 0:
            dim.dim_value = d
        else:
            dim.dim_param = d or "batch"


def input_info(model) -> tuple[str, list[int], bool]:
    """(input name, dims after the batch, whether the batch dimension is dynamic) of a one-input image model."""
    inp = real_inputs(model)[0]
    shape = dims(inp)
    return inp.name, [int(d) for d in shape[1:]], not isinstance(shape[0], int) or shape[0] <= 0


def light_copy(model, batch: int | None = None):
    """A light copy for shape inference: the real inputs only (the first with its batch set to `batch`), stale
    intermediate shapes dropped, small initializers kept and the large ones turned into graph inputs of the
    same shape (their values change no shape), so a model of any size infers in memory."""
    from math import prod

    import onnx

    graph = model.graph
    small = [i for i in graph.initializer if prod(i.dims) <= 64 and not i.external_data]
    large = [onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
             for i in graph.initializer if prod(i.dims) > 64 or i.external_data]
    inputs = [onnx.ValueInfoProto.FromString(i.SerializeToString()) for i in real_inputs(model)]
    if batch and inputs and inputs[0].type.tensor_type.shape.dim:
        inputs[0].type.tensor_type.shape.dim[0].Clear()
        inputs[0].type.tensor_type.shape.dim[0].dim_value = batch
    light = onnx.helper.make_graph(graph.node, graph.name, [*inputs, *large], graph.output, small)
    copy = onnx.helper.make_model(light, opset_imports=model.opset_import, ir_version=max(model.ir_version, 4))
    copy.functions.extend(model.functions)
    return copy


def inferred_dims(model) -> dict[str, list]:
    """Tensor name -> dims (int, or the symbolic name of a dynamic one) from ONNX shape inference; tensors
    whose rank is unknown are left out."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(light_copy(model), data_prop=True)
    except Exception as e:  # onnx raises InferenceError, ValidationError, ...
        raise EdgecnnError(f"ONNX shape inference failed ({type(e).__name__}: {_first_line(e)})") from None
    return {v.name: dims(v) for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
            if v.type.tensor_type.HasField("shape")}


def to_opset(path: Path, opset: int) -> None:
    """Rewrite an ONNX file at a lower opset (TensorRT 8.5 on JetPack 5 parses opset <= 17)."""
    import onnx

    model = onnx.load(str(path))
    have = opset_of(model)
    if opset == have:
        return
    if not MIN_OPSET <= opset <= have:
        raise EdgecnnError(f"--opset {opset}: use {MIN_OPSET}..{have} (per-channel Q/DQ needs opset >= "
                           f"{MIN_OPSET}; the export is opset {have})")
    try:
        low = convert_opset(model, opset)
    except EdgecnnError as e:
        raise EdgecnnError(f"{e}: use --opset {have}") from None
    onnx.save(low, str(path))


def convert_opset(model, opset: int):
    """The model at `opset`, up or down (onnx's version converter), checked; else EdgecnnError naming the op
    the converter cannot take there."""
    import onnx
    from onnx import version_converter

    have = opset_of(model)
    if opset == have:
        return model
    if too_big(model):  # the converter and the checker serialize the model
        raise EdgecnnError(f"the model (over 2 GB) cannot be converted from opset {have} to {opset} in memory: "
                           "convert it with onnx.version_converter on the file loaded without its external data")
    try:
        out = version_converter.convert_version(model, opset)
        for node in out.graph.node:  # the converter keeps this opset-18 attribute on Reduce* nodes
            keep = [a for a in node.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            del node.attribute[:]
            node.attribute.extend(keep)
        if have <= 10 < opset:
            keep_resize_10(out)
        onnx.checker.check_model(out, full_check=True)
    except Exception as e:  # the converter asserts (RuntimeError) or leaves an invalid graph
        node = blocking_node(model, opset)
        where = f" at {node.op_type} (node '{node.name or node.output[0]}')" if node is not None else ""
        raise EdgecnnError(f"cannot convert the model from opset {have} to {opset}{where}: "
                           f"{_first_line(e)}") from None
    same_outputs(model, out, f"converting from opset {have} to {opset}")
    return out


def keep_resize_10(model) -> None:
    """onnx's Resize 10 -> 11 adapter leaves the new defaults (half_pixel, round_prefer_floor): set what
    Resize 10 and Upsample compute (asymmetric, floor), which ONNX Runtime confirms."""
    from onnx import helper

    for node in model.graph.node:
        if node.op_type == "Resize" and not any(a.name == "coordinate_transformation_mode" for a in node.attribute):
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
            mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"nearest")
            if mode == b"nearest":
                node.attribute.append(helper.make_attribute("nearest_mode", "floor"))


def same_outputs(a, b, what: str, atol: float = 1e-4) -> None:
    """Run both models on one random input with ONNX Runtime; EdgecnnError when `b` computes something else
    (relative to the outputs' magnitude). Models over 2 GB cannot be handed over in memory: not checked."""
    import numpy as np
    import onnxruntime as ort

    if too_big(a) or too_big(b):
        return
    inp = real_inputs(a)[0]
    shape = [d if isinstance(d, int) and d > 0 else 2 for d in dims(inp)]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8) if inp.type.tensor_type.elem_type == 2 else \
        rng.standard_normal(shape).astype(np.float16 if inp.type.tensor_type.elem_type == 10 else np.float32)
    want, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                 .run(None, {inp.name: x}) for m in (a, b))
    err = max(tolerance.max_abs(g, w) for g, w in zip(got, want))
    if tolerance.exceeds(err, atol, tolerance.magnitude(*want)):
        raise EdgecnnError(f"{what} changed the model's outputs by {err:.2e}")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    text = text.splitlines()[0] if text else type(e).__name__
    return text.split("failed: ")[-1][:160]


def blocking_node(model, opset: int):
    """The first node whose op onnx's version converter cannot take to `opset` on its own (None: none alone)."""
    import onnx
    from onnx import helper, version_converter

    weights = {i.name: i for i in model.graph.initializer}
    types = {v.name: v for v in [*model.graph.input, *model.graph.value_info]}
    tried = set()
    for node in model.graph.node:
        if (node.domain, node.op_type) in tried or any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            continue
        tried.add((node.domain, node.op_type))
        names = [n for n in node.input if n]
        inputs = [types.get(n) or helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names]
        outputs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
        graph = helper.make_graph([node], "one", inputs, outputs, [weights[n] for n in names if n in weights])
        one = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        try:
            version_converter.convert_version(one, opset)
        except Exception:  # what the whole conversion failed on
            return node
    return None


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
