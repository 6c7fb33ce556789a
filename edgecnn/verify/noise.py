"""How far float rounding alone can move a fake-quant reference's logits (the int8 noise bound).

A correct int8 build still differs from its Q/DQ reference where a value sits on a rounding edge: it lands
one quantization level off, and the level propagates. Two measures, the larger is used:
- the spread: the largest logit difference between the reference and its float-equivalent executions
  (reference.twins: the same graph with ONNX Runtime's float optimisations, which fold the conv biases
  onto the int32 grid and run other float kernels);
- one output step: how much one level of the last quantized activation moves a logit (the output's own
  DequantizeLinear scale, or the scale feeding the classifier times its largest weight).
"""

import numpy as np

SHAPE_OPS = ("Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze")


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _constant(graph, name: str, producers: dict):
    """The float value of an initializer, or of a DequantizeLinear of initializers; None otherwise."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float64)
    node = producers.get(name)
    if node is None or node.op_type != "DequantizeLinear" or any(i not in inits for i in node.input if i):
        return None
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 else 0.0
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
    return (q - zero) * scale


def _activation_scale(graph, name: str, producers: dict) -> float | None:
    """The scale of the DequantizeLinear that makes `name` (through shape-only ops), if any."""
    node = producers.get(name)
    while node is not None and node.op_type in SHAPE_OPS:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        return None
    scale = _constant(graph, node.input[1], producers)
    return float(np.max(np.abs(scale))) if scale is not None else None


def output_step(model, output: str) -> float:
    """How far one quantization level of the last quantized activation moves a logit of `output` (0: none)."""
    graph = model.graph
    producers = _producers(graph)
    direct = _activation_scale(graph, output, producers)
    if direct is not None:
        return direct
    node = producers.get(output)
    if node is None or node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
        return 0.0
    scale, weight = _activation_scale(graph, node.input[0], producers), _constant(graph, node.input[1], producers)
    if scale is None or weight is None:
        return 0.0
    alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
    return float(scale * abs(alpha) * np.max(np.abs(weight)))
