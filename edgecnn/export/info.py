"""edgecnn info: what an ONNX holds (input, MACs counted from the graph, weights, operators)."""

from collections import Counter
from pathlib import Path

from edgecnn.core import onnx_utils
from edgecnn.export import macs


def describe(onnx_path: Path, input_shape: str | None = None) -> dict:
    """What edgecnn info shows; input_shape fixes a dynamic image input (MODEL.yaml's is used too)."""
    from edgecnn.data import image_model

    model = onnx_utils.load(onnx_path)
    dims = onnx_utils.dims(onnx_utils.real_inputs(model)[0])[1:]
    dynamic = not all(isinstance(d, int) and d > 0 for d in dims)  # strict: the error says how to fix them
    facts = image_model.describe(model, onnx_path, {"input_shape": input_shape},
                                 strict=dynamic or input_shape is not None)
    prepared, _ = image_model.prepare(model, facts["input"])
    meta = onnx_utils.read_meta(model)
    counted = macs.count(prepared)
    return {"file": str(onnx_path), "model": meta.get("model", {}).get("name"), "precision": meta.get("precision"),
            "opset": onnx_utils.opset_of(model), "ir_version": model.ir_version,
            "input": counted.input_shape, "input_name": facts["input"]["name"],
            "layout": facts["input"].get("layout"), "dtype": facts["input"].get("dtype"),
            "outputs": facts["outputs"], "labels": len(facts["labels"] or []), "prepared": facts["changes"],
            "macs": counted.macs, "macs_by_op": counted.by_op,
            "pool_ops": counted.pool_ops, "elementwise_ops": counted.elementwise_ops,
            "weights": counted.weights, "operators": dict(Counter(n.op_type for n in model.graph.node))}


def info_table(d: dict):
    from rich.table import Table

    t = Table(title=f"{d['file']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"{d['model'] or '-'} ({d['precision'] or 'no edgecnn metadata'}, opset {d['opset']}, "
                       f"IR {d['ir_version']})")
    t.add_row("input (batch 1)", f"{d['input_name']}: {' x '.join(map(str, d['input']))} ({d['layout']}, {d['dtype']})")
    t.add_row("outputs", ", ".join(f"{o['name']} {o['shape']}" + (f" ({o['classes']} class {o['scores']})"
                                                                   if o.get("classes") else "") for o in d["outputs"]))
    by_op = ", ".join(f"{k} {macs.human(v)}" for k, v in d["macs_by_op"].items())
    t.add_row("MACs", f"{macs.human(d['macs'])} ({d['macs']:,}; {by_op})")
    t.add_row("not in MACs", f"pooling {macs.human(d['pool_ops'])} ops, "
                             f"elementwise {macs.human(d['elementwise_ops'])} ops")
    folded = "" if "BatchNormalization" in d["operators"] else ", BatchNorm folded"
    t.add_row("weights", f"{d['weights']:,} (float initializers{folded})")
    t.add_row("operators", ", ".join(f"{k} x{v}" for k, v in sorted(d["operators"].items())))
    if d["prepared"]:
        t.add_row("edgecnn will", "; ".join(d["prepared"]))
    return t
