"""Q/DQ lint: does a quantized ONNX follow the rules of TensorRT's explicit quantization?

TensorRT builds int8 only from QuantizeLinear/DequantizeLinear pairs in the graph, and only some
placements work or fuse. Each rule names the nodes that break it:

errors (the TensorRT parser or builder refuses the model, or computes something else)
- opset: per-axis Q/DQ needs opset >= 13; the target's parser takes opset <= its maximum
- symmetric: every zero point is 0 and int8 (TensorRT has no asymmetric or uint8 Q/DQ)
- int8-only: no int32 (bias) DequantizeLinear; TensorRT fuses float biases into the convolution
- weight-range: int8 weights lie in [-127, 127]
- weight-axis: per-channel weight scales run along the output channel (axis 0 of Conv and Gemm transB)
- activation-per-tensor: activation scales are one number
warnings (the model builds, but slower or less accurate than it should)
- per-channel-weights: per-tensor weight scales (they collapse depthwise convolutions)
- residual-add: a residual Add needs Q/DQ on both inputs so it fuses into the convolution
- conv-bn-relu: no Q/DQ between Conv, BatchNormalization and ReLU/Clip, which TensorRT fuses
"""

from dataclasses import asdict, dataclass

import numpy as np

from edgecnn.core import onnx_utils

QDQ = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED = (*onnx_utils.WEIGHTED, "ConvTranspose")  # a transposed conv's Q/DQ rules are a conv's
FUSED_AFTER_CONV = ("BatchNormalization", "Relu", "Clip", "LeakyRelu")


@dataclass
class Violation:
    rule: str
    severity: str  # "error" | "warning"
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


class Graph:
    """Producers, consumers and constants of an ONNX graph, for pattern checks."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model, self.nodes = model, list(model.graph.node)
        self.const = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.const[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def axis(self, node) -> int:
        return next((a.i for a in node.attribute if a.name == "axis"), 1)

    def is_weight_dq(self, dq) -> bool:
        """A DequantizeLinear of a constant (directly, or through a Q of a constant float weight)."""
        if not dq.input:  # a Constant node
            return False
        src = self.producer.get(dq.input[0])
        return dq.input[0] in self.const or (src is not None and src.op_type == "QuantizeLinear"
                                             and src.input[0] in self.const)


def name(node) -> str:
    return node.name or f"{node.op_type}({node.output[0]})"


def check_symmetric(g: Graph) -> list[Violation]:
    out = []
    for n in (n for n in g.nodes if n.op_type in QDQ):
        zp = g.const.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None:  # absent zero point: 0 and uint8 by the ONNX spec unless the input is int8
            src = g.const.get(n.input[0])
            int8_out = any(a.name == "output_dtype" and a.i == 3 for a in n.attribute)  # opset 21: INT8
            if (n.op_type == "QuantizeLinear" and not int8_out) or (src is not None and src.dtype != np.int8):
                out.append(Violation("symmetric", "error", name(n), "no zero point, so uint8: TensorRT takes "
                                     "int8 Q/DQ with zero point 0"))
            continue
        if zp.dtype == np.int32 and n.op_type == "DequantizeLinear":
            out.append(Violation("int8-only", "error", name(n), "int32 DequantizeLinear (a quantized bias): "
                                 "TensorRT's Q/DQ are int8; keep biases float (ONNX Runtime: QuantizeBias=False)"))
        elif zp.dtype != np.int8:
            out.append(Violation("symmetric", "error", name(n), f"{zp.dtype} zero point: TensorRT takes int8 Q/DQ "
                                 "(quantize with activation_type and weight_type QInt8)"))
        elif np.any(zp != 0):
            out.append(Violation("symmetric", "error", name(n), f"zero point {zp.ravel()[:4].tolist()} is not 0: "
                                 "TensorRT only supports symmetric quantization"))
    return out


def weight_dqs(g: Graph):
    """(weighted node, the DQ on its weight input, the weight's output-channel axis) for each weighted op."""
    for n in g.nodes:
        if n.op_type not in WEIGHTED or len(n.input) < 2:
            continue
        dq = g.producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or not g.is_weight_dq(dq):
            continue
        trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
        out_axis = 1 if (n.op_type == "MatMul" or (n.op_type == "Gemm" and not trans_b)) else 0
        yield n, dq, (1 if n.op_type == "ConvTranspose" else out_axis)


def check_weights(g: Graph) -> list[Violation]:
    out = []
    for node, dq, out_axis in weight_dqs(g):
        scale = np.asarray(g.const.get(dq.input[1], np.zeros(1)))
        weight = g.const.get(dq.input[0])
        if weight is not None and weight.dtype == np.int8 and weight.size and int(weight.min()) < -127:
            out.append(Violation("weight-range", "error", name(dq), f"int8 weight {int(weight.min())} of "
                                 f"{name(node)} is outside [-127, 127] (use symmetric weights)"))
        if scale.size <= 1:
            out.append(Violation("per-channel-weights", "warning", name(node), "per-tensor weight scale: "
                                 "quantize weights per output channel (axis 0)"))
        elif g.axis(dq) != out_axis:
            out.append(Violation("weight-axis", "error", name(dq), f"per-channel weight scale on axis "
                                 f"{g.axis(dq)} of {name(node)}: TensorRT wants the output channel, axis {out_axis}"))
    return out


def check_activations(g: Graph) -> list[Violation]:
    weights = {dq.name for _, dq, _ in weight_dqs(g)} | {n.name for n in g.nodes if g.is_weight_dq(n)}
    out = []
    for n in (n for n in g.nodes if n.op_type in QDQ and n.name not in weights and n.input[0] not in g.const):
        scale = g.const.get(n.input[1])
        if scale is not None and scale.size > 1:
            out.append(Violation("activation-per-tensor", "error", name(n), f"activation scale has {scale.size} "
                                 "values: TensorRT quantizes activations per tensor"))
    return out


def check_residual_adds(g: Graph) -> list[Violation]:
    out = []
    for n in (n for n in g.nodes if n.op_type == "Add" and len(n.input) == 2):
        if any(i in g.const for i in n.input):
            continue  # a bias add, not a residual
        kinds = [g.producer[i].op_type if i in g.producer else "graph input" for i in n.input]
        if "DequantizeLinear" in kinds and kinds != ["DequantizeLinear"] * 2:
            missing = n.input[kinds.index(next(k for k in kinds if k != "DequantizeLinear"))]
            out.append(Violation("residual-add", "warning", name(n), f"input '{missing}' has no Q/DQ: quantize "
                                 "both inputs of a residual Add so TensorRT fuses it into the convolution"))
    return out


def check_conv_bn_relu(g: Graph) -> list[Violation]:
    """A Q->DQ pair whose input comes from Conv/Gemm/BN and whose DQ feeds BN or an activation."""
    out = []
    for q in (n for n in g.nodes if n.op_type == "QuantizeLinear"):
        src = g.producer.get(q.input[0])
        if src is None or src.op_type not in (*WEIGHTED, "BatchNormalization"):
            continue
        for dq in (c for c in g.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"):
            for after in g.consumers.get(dq.output[0], []):
                if after.op_type in FUSED_AFTER_CONV:
                    out.append(Violation("conv-bn-relu", "warning", name(q), f"Q/DQ between {name(src)} "
                                         f"({src.op_type}) and {name(after)} ({after.op_type}), which TensorRT fuses: "
                                         "quantize after the activation instead"))
    return out


def check_opset(g: Graph, max_opset: int | None) -> list[Violation]:
    out, opset = [], g.opset()
    if max_opset and opset > max_opset:
        out.append(Violation("opset", "error", "model", f"opset {opset} is above the target's maximum {max_opset}"))
    per_axis = [n for n in g.nodes if n.op_type in QDQ and np.asarray(g.const.get(n.input[1], 0)).size > 1]
    if per_axis and opset < 13:
        out.append(Violation("opset", "error", name(per_axis[0]), f"per-axis Q/DQ needs opset >= 13, the model "
                             f"is opset {opset}"))
    return out


def lint(model, max_opset: int | None = None) -> list[Violation]:
    """Every violation of TensorRT's Q/DQ rules in `model` (an onnx.ModelProto); [] when it has no Q/DQ."""
    g = Graph(model)
    if not any(n.op_type in QDQ for n in g.nodes):
        return check_opset(g, max_opset)
    return [*check_opset(g, max_opset), *check_symmetric(g), *check_weights(g), *check_activations(g),
            *check_residual_adds(g), *check_conv_bn_relu(g)]


def has_qdq(model) -> bool:
    return any(n.op_type in QDQ for n in model.graph.node)


def report(violations: list[Violation]) -> list[dict]:
    return [asdict(v) for v in violations]
