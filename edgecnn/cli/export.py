"""edgecnn export / info."""

import json
from pathlib import Path

import click

from edgecnn.core.progress import console


def batch_option(value: str):
    if value == "dynamic":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter("a positive integer or 'dynamic'")
    return n


@click.command("export")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--out", default=None, help="ONNX path (default RUN_DIR/model.onnx)")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--batch", default="dynamic", show_default=True, help="N or dynamic")
def export_cmd(run_dir, out, opset, batch):
    """Export a trained model to ONNX (BatchNorm folded, checked, verified against PyTorch)."""
    from edgecnn import export

    path = export.export(run_dir, out, opset=opset, batch=batch_option(batch))
    console.print(f"exported {path} (opset {opset}, batch {batch}), matches PyTorch within {export.EXPORT_ATOL}")


@click.command("info")
@click.argument("path", metavar="MODEL.onnx|DIR")
@click.option("--json", "as_json", is_flag=True, help="print the facts as JSON")
def info_cmd(path, as_json):
    """Show an ONNX model's input, MACs (counted from the graph), weights and operators.

    DIR (a run or build directory) means DIR/model.onnx.
    """
    from edgecnn.export import info

    path = Path(path)
    d = info.describe(path / "model.onnx" if path.is_dir() else path)
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        console.print(info.info_table(d))
