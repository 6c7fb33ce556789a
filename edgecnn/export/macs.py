"""Multiply-accumulates (MACs) of an ONNX model, counted from its graph after ONNX shape inference.

What counts, per image (a dynamic batch is fixed to 1 first):
- MACs: Conv and ConvTranspose (groups included: each output element costs C_in/groups x kernel),
  Gemm and MatMul (M x N x K). Bias adds are not counted, as in the MobileNet papers and torchvision's
  GFLOPS column (which holds multiply-adds).
- Reported apart, never added to MACs: `pool_ops`, one per window element read by MaxPool/AveragePool
  (and per input element of the global pools and reductions); `elementwise_ops`, one per output
  element of elementwise and activation ops (Add, Mul, Relu, Clip, ...). Shape-only ops count nothing.
"""

from dataclasses import dataclass, field
from math import prod
from pathlib import Path

from edgecnn.core.errors import EdgecnnError

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WINDOW_POOLS = ("MaxPool", "AveragePool", "LpPool")
GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum")
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid",
               "LeakyRelu", "Max", "Min", "Sqrt", "Exp", "Softmax", "Erf", "Pow", "Neg", "Abs",
               "QuantizeLinear", "DequantizeLinear")


@dataclass
class MacCount:
    macs: int  # Conv/ConvTranspose/Gemm/MatMul multiply-accumulates for one image
    by_op: dict[str, int] = field(default_factory=dict)  # MACs per op type
    pool_ops: int = 0
    elementwise_ops: int = 0
    weights: int = 0  # float initializer elements (after export's BatchNorm folding)
    input_shape: list = field(default_factory=list)


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def for_inference(model):
    """A light copy for shape inference at batch 1 (core.onnx_utils.light_copy)."""
    from edgecnn.core import onnx_utils

    return onnx_utils.light_copy(model, batch=1)


def infer_shapes(model) -> dict[str, list[int]]:
    """Tensor name -> concrete shape, from ONNX shape inference (strict: a failure is an error)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises InferenceError, ValidationError, ...
        raise EdgecnnError(f"ONNX shape inference failed ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[-1]}): MACs need concrete shapes") from None
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    return shapes


def node_macs(node, shapes: dict) -> int:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul node."""
    def shape(i):
        name = node.input[i] if i >= 0 else node.output[0]
        if name not in shapes:
            where = f"{node.op_type} {node.name}".strip()
            raise EdgecnnError(f"no inferred shape for '{name}' ({where}): MACs need concrete shapes")
        return shapes[name]

    if node.op_type == "Conv":  # weight: C_out x C_in/groups x k...
        return prod(shape(-1)) * prod(shape(1)[1:])
    if node.op_type == "ConvTranspose":  # weight: C_in x C_out/groups x k...
        return prod(shape(0)) * prod(shape(1)[1:])
    if node.op_type == "Gemm":
        a = shape(0)
        return prod(shape(-1)) * (a[0] if _attr(node, "transA", 0) else a[1])
    return prod(shape(-1)) * shape(0)[-1]  # MatMul


def other_ops(node, shapes: dict) -> tuple[int, int]:
    """(pool_ops, elementwise_ops) of a node that is not a MAC op."""
    out = shapes.get(node.output[0]) if node.output else None
    if node.op_type in WINDOW_POOLS and out:
        return prod(out) * prod(_attr(node, "kernel_shape", [1])), 0
    if node.op_type in GLOBAL_POOLS and node.input[0] in shapes:
        return prod(shapes[node.input[0]]), 0
    if node.op_type in ELEMENTWISE and out:
        return 0, prod(out)
    return 0, 0


def count(model_or_path) -> MacCount:
    """Count MACs (and pooling/elementwise work, apart) of an ONNX model or file, for one image."""
    import numpy as np
    from onnx.helper import tensor_dtype_to_np_dtype

    from edgecnn.core import onnx_utils

    model = onnx_utils.load(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path
    shapes = infer_shapes(for_inference(model))
    result = MacCount(0, input_shape=shapes.get(onnx_utils.real_inputs(model)[0].name, []))
    for node in model.graph.node:
        if node.op_type in MAC_OPS:
            n = node_macs(node, shapes)
            result.macs += n
            result.by_op[node.op_type] = result.by_op.get(node.op_type, 0) + n
        else:
            pool, elementwise = other_ops(node, shapes)
            result.pool_ops += pool
            result.elementwise_ops += elementwise
    result.weights = sum(prod(i.dims) for i in model.graph.initializer
                         if np.issubdtype(tensor_dtype_to_np_dtype(i.data_type), np.floating))
    return result


def human(n: float) -> str:
    """1234567 -> '1.23 M' (G, M, k)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))
