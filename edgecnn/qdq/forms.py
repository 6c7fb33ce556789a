"""Q/DQ forms: the fast exact graph quantize evaluates, and the conversion compile applies for a target.

A Q/DQ form is where QuantizeLinear/DequantizeLinear sit (edgecnn.backends.qdq_forms). One form runs fast
on one runtime and slowly on another: ONNX Runtime's CPU kernels fuse only its own form into int8
convolutions, the 'tensorrt' form (the default) runs there as float convolutions wrapped in Q/DQ, slower
than fp32. So:
- `evaluation_graph` is what quantize measures: the weights' DequantizeLinear folded into float
  initializers (the values ONNX Runtime's DequantizeLinear computes, bit for bit), activations still
  rounded by their Q/DQ pairs; ONNX Runtime then runs it with its float optimisations (no int8 kernel),
  giving the same predictions as the op-by-op fake-quant reference in a fraction of the time;
- `convert` re-quantizes a model in the form a target's backend wants (Backend.int8_form), from the
  float graph under the Q/DQ (weights on their int8 grid) and the activation ranges quantize recorded
  for that form (the ONNX's `calibration` metadata).
"""

from pathlib import Path

import numpy as np

from edgecnn.core.errors import EdgecnnError

CALIBRATION_KEY = "calibration"  # ONNX metadata: {form: {tensor: [low, high]}}, written by quantize


def dequantized(node, inits: dict) -> np.ndarray:
    """A DequantizeLinear of initializers, computed as ONNX Runtime does: float(q - zero point) * scale."""
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.int64) if len(node.input) > 2 and node.input[2] \
        else np.zeros_like(scale, np.int64)
    if scale.ndim:  # per channel: along `axis` (default 1)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [-1 if i == axis else 1 for i in range(q.ndim)]
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero).astype(np.float32) * scale


def _constant_dqs(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and all(i in inits for i in n.input[1:] if i)]


def fold_constant_dqs(model):
    """A copy of `model` whose DequantizeLinear of initializers (weights, biases) are float initializers."""
    import onnx
    from onnx import numpy_helper

    model = _copy(model)
    inits = {i.name: i for i in model.graph.initializer}
    folded = _constant_dqs(model)
    for node in folded:
        model.graph.initializer.append(numpy_helper.from_array(dequantized(node, inits), node.output[0]))
        model.graph.node.remove(node)
    _drop_unused_initializers(model)
    onnx.checker.check_model(model)
    return model


def evaluation_graph(model):
    """The graph quantize measures a Q/DQ model with: constant DequantizeLinear folded (bit for bit)."""
    return fold_constant_dqs(model)


def float_graph(model):
    """The fp32 graph under a Q/DQ model: weights folded onto their int8 grid, activation Q/DQ pairs removed
    (each consumer reads the tensor the pair rounded). Tensor and node names stay the original ones."""
    model = fold_constant_dqs(model)
    graph = model.graph
    made = {o: n for n in graph.node for o in n.output}
    rename, dropped = {}, []
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = made.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            raise EdgecnnError(f"DequantizeLinear '{dq.name}' does not follow a QuantizeLinear: this Q/DQ graph "
                               "cannot be converted (quantize the fp32 model in the form you need)")
        rename[dq.output[0]] = q.input[0]
        dropped += [dq, q]
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for name, src in rename.items():
        if name in outputs:  # a model output: its producer writes it under the output's name again
            for node in graph.node:
                node.output[:] = [name if o == src else o for o in node.output]
                node.input[:] = [name if i == src else i for i in node.input]
    for node in {id(n): n for n in dropped}.values():
        graph.node.remove(node)
    _drop_unused_initializers(model)
    return model


def convert(src: Path, dst: Path, form: str, *, reduce_range: bool | None = None) -> dict:
    """Re-quantize the Q/DQ model `src` in `form` from the ranges quantize recorded for it; returns what was
    done (for the manifest). Layers the source kept in fp32 stay in fp32."""
    import onnx

    from edgecnn.core import onnx_utils
    from edgecnn.qdq import ptq

    model = onnx.load(str(src))
    meta = onnx_utils.read_meta(model)
    quant = meta.get("quantization") or {}
    ranges = (meta.get(CALIBRATION_KEY) or {}).get(form)
    if not ranges:
        raise EdgecnnError(f"{Path(src).name} is in the {quant.get('form', 'an unknown')} Q/DQ form and records no "
                           f"calibration for the {form} form: quantize it again with --form {form}")
    fp32 = float_graph(model)
    kept = fp32_nodes(model)
    work = Path(dst).parent
    float_path = work / f"{Path(dst).stem}.float.onnx"
    onnx.save(fp32, str(float_path))
    scheme = ptq.Scheme(quant.get("per_channel", True), form, reduce_range)
    exclude = [ptq.Layer(n, n, "") for n in kept]
    ranges = {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()}
    try:
        ptq.quantize_onnx(float_path, Path(dst), ranges, scheme, exclude=exclude, work=work)
    finally:
        float_path.unlink(missing_ok=True)
        (work / "ranges.json").unlink(missing_ok=True)
    out = onnx.load(str(dst))
    record = {"from": quant.get("form"), "to": form, "how": "re-quantized from the calibration quantize recorded",
              "reduce_range": scheme.reduced}
    onnx_utils.write_meta(out, {**meta, "quantization": {**quant, "form": form, "reduce_range": scheme.reduced,
                                                         "converted": record}})
    onnx.save(out, str(dst))
    return record


def fp32_nodes(model) -> list[str]:
    """The layers of a Q/DQ model quantize kept in fp32: a Conv/Gemm/MatMul whose weight is float, a residual Add
    whose inputs no DequantizeLinear gives."""
    from edgecnn.core.onnx_utils import WEIGHTED

    inits = {i.name for i in model.graph.initializer}
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in model.graph.node
            if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits
            or n.op_type == "Add" and not any(i in inits or i in dq_out for i in n.input)]


def _copy(model):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
