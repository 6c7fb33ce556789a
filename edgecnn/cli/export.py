"""edgecnn export / info."""

import json
from pathlib import Path

import click

from edgecnn.cli.options import given, model_facts
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
@click.argument("run_dir", metavar="RUN_DIR|package.module:factory")
@click.option("--out", default=None, help="ONNX path (default RUN_DIR/model.onnx, or ./model.onnx)")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--batch", default="dynamic", show_default=True, help="N or dynamic")
@click.option("--weights", default=None, metavar="FILE.pt", help="a factory's state dict (torch.load, weights only)")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="a keyword argument of the factory (YAML "
              "value), repeatable")
@model_facts
def export_cmd(run_dir, *, out, opset, batch, weights, args, **facts):
    """Export a trained model to ONNX (BatchNorm folded, checked, verified against PyTorch).

    package.module:factory exports a module from your own code (imported from the working folder too):
    give --input-shape 1x3x224x224 and its preprocessing and labels (--mean, --std, --labels ...)."""
    from edgecnn import export

    batch = batch_option(batch)
    if ":" in run_dir and not Path(run_dir).exists():
        module = export.load_factory(run_dir, weights, **factory_args(args))
        facts = given(facts)
        if not facts.get("input_shape"):
            raise click.UsageError("a factory needs --input-shape, e.g. 1x3x224x224")
        path = export.from_module(module, facts["input_shape"], out or "model.onnx", mean=facts.get("mean"),
                                  std=facts.get("std"), scale=facts.get("scale"),
                                  channel_order=facts.get("channel_order") or "rgb", labels=facts.get("labels"),
                                  opset=opset, batch=batch)
    else:
        path = export.export(run_dir, out, opset=opset, batch=batch)
    console.print(f"exported {path} (opset {opset}, batch {batch}), matches PyTorch within {export.EXPORT_ATOL} "
                  "(times the largest logit above 1)")


def factory_args(args) -> dict:
    import yaml

    pairs = [a.partition("=") for a in args]
    if any(not key or not eq for key, eq, _ in pairs):
        raise click.BadParameter("--arg takes KEY=VALUE")
    return {key: yaml.safe_load(value) for key, _, value in pairs}


@click.command("info")
@click.argument("path", metavar="MODEL.onnx|DIR")
@click.option("--json", "as_json", is_flag=True, help="print the facts as JSON")
@click.option("--input-shape", default=None, metavar="[NAME:]1x224x224x3", help="fix a dynamic image input")
def info_cmd(path, as_json, input_shape):
    """Show an ONNX model's input, MACs (counted from the graph), weights and operators.

    DIR (a run or build directory) means DIR/model.onnx.
    """
    from edgecnn.export import info

    path = Path(path)
    d = info.describe(path / "model.onnx" if path.is_dir() else path, input_shape)
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        console.print(info.info_table(d))
