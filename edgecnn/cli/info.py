"""edgecnn info: what an exported ONNX holds (input, MACs counted from the graph, weights, operators)."""

import json
from collections import Counter
from pathlib import Path

import click

from edgecnn.progress import console


def describe(onnx_path: Path) -> dict:
    from edgecnn import macs, onnxmeta

    model = onnxmeta.load_model(onnx_path)
    meta = onnxmeta.read(model)
    counted = macs.count(model)
    return {"file": str(onnx_path), "model": meta.get("model", {}).get("name"), "precision": meta.get("precision"),
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "input": counted.input_shape, "macs": counted.macs, "macs_by_op": counted.by_op,
            "pool_ops": counted.pool_ops, "elementwise_ops": counted.elementwise_ops,
            "weights": counted.weights, "operators": dict(Counter(n.op_type for n in model.graph.node))}


def info_table(d: dict):
    from rich.table import Table

    from edgecnn.macs import human

    t = Table(title=f"{d['file']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"{d['model'] or '-'} ({d['precision'] or 'no edgecnn metadata'}, opset {d['opset']})")
    t.add_row("input (batch 1)", " x ".join(map(str, d["input"])))
    by_op = ", ".join(f"{k} {human(v)}" for k, v in d["macs_by_op"].items())
    t.add_row("MACs", f"{human(d['macs'])} ({d['macs']:,}; {by_op})")
    t.add_row("not in MACs", f"pooling {human(d['pool_ops'])} ops, elementwise {human(d['elementwise_ops'])} ops")
    t.add_row("weights", f"{d['weights']:,} (float initializers, BatchNorm folded)")
    t.add_row("operators", ", ".join(f"{k} x{v}" for k, v in sorted(d["operators"].items())))
    return t


@click.command("info")
@click.argument("path", metavar="MODEL.onnx|DIR")
@click.option("--json", "as_json", is_flag=True, help="print the facts as JSON")
def info_cmd(path, as_json):
    """Show an ONNX model's input, MACs (counted from the graph), weights and operators.

    DIR (a run or build directory) means DIR/model.onnx.
    """
    path = Path(path)
    d = describe(path / "model.onnx" if path.is_dir() else path)
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        console.print(info_table(d))
