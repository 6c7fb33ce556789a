"""edgecnn info: what an ONNX holds (input, MACs counted from the graph, weights, operators)."""

from collections import Counter
from pathlib import Path

from edgecnn.core import onnx_utils
from edgecnn.export import macs


def describe(onnx_path: Path) -> dict:
    model = onnx_utils.load(onnx_path)
    meta = onnx_utils.read_meta(model)
    counted = macs.count(model)
    return {"file": str(onnx_path), "model": meta.get("model", {}).get("name"), "precision": meta.get("precision"),
            "opset": onnx_utils.opset_of(model),
            "input": counted.input_shape, "macs": counted.macs, "macs_by_op": counted.by_op,
            "pool_ops": counted.pool_ops, "elementwise_ops": counted.elementwise_ops,
            "weights": counted.weights, "operators": dict(Counter(n.op_type for n in model.graph.node))}


def info_table(d: dict):
    from rich.table import Table

    t = Table(title=f"{d['file']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"{d['model'] or '-'} ({d['precision'] or 'no edgecnn metadata'}, opset {d['opset']})")
    t.add_row("input (batch 1)", " x ".join(map(str, d["input"])))
    by_op = ", ".join(f"{k} {macs.human(v)}" for k, v in d["macs_by_op"].items())
    t.add_row("MACs", f"{macs.human(d['macs'])} ({d['macs']:,}; {by_op})")
    t.add_row("not in MACs", f"pooling {macs.human(d['pool_ops'])} ops, "
                             f"elementwise {macs.human(d['elementwise_ops'])} ops")
    t.add_row("weights", f"{d['weights']:,} (float initializers, BatchNorm folded)")
    t.add_row("operators", ", ".join(f"{k} x{v}" for k, v in sorted(d["operators"].items())))
    return t
