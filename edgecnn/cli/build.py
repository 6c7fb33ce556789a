"""edgecnn export / compile / verify / targets."""

import click

from edgecnn.progress import console


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

    path = export.export(run_dir, out, opset, batch_option(batch))
    console.print(f"exported {path} (opset {opset}, batch {batch}), matches PyTorch within {export.EXPORT_ATOL}")


@click.command("compile")
@click.argument("onnx_path", metavar="MODEL.onnx")
@click.option("--target", "-t", required=True, help="a name from `edgecnn targets` or a target YAML path")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="default: the ONNX's precision, else the target's")
@click.option("--out", default=None, help="build directory (default beside the ONNX: build-TARGET-PRECISION)")
@click.option("--batch", default="1", show_default=True, help="fixed batch of the artifact, or dynamic")
@click.option("--tune-db", default=None, metavar="DIR", help="apply this edgecnn tune database (TVM targets)")
def compile_cmd(onnx_path, target, precision, out, batch, tune_db):
    """Compile an ONNX model for a target into a build directory with manifest.json."""
    from edgecnn import compile as compile_mod

    batch = batch_option(batch)
    opts = {"tune_db": tune_db} if tune_db else {}
    path = compile_mod.compile(onnx_path, target, precision, out, batch=None if batch == "dynamic" else batch,
                               **opts)
    console.print(f"built {path}")


@click.command("verify")
@click.argument("build_dir", metavar="BUILD_DIR", required=False)
@click.option("--against", type=click.Choice(["torch", "onnxruntime", "fakequant"]), default=None,
              help="reference: torch (default), or fakequant (default for int8: the Q/DQ graph run op by op)")
@click.option("--data", default="test", show_default=True, help="test | val | DATASET:SPLIT | random")
@click.option("--limit", type=int, default=None, help="first N samples only")
@click.option("--report", default=None, help="JSON report path (default BUILD_DIR/verify.json)")
@click.option("--atol", type=float, default=None, help="max abs error allowed (default by precision)")
@click.option("--min-cosine", type=float, default=None)
@click.option("--min-agreement", type=float, default=None, help="top-1 agreement percent")
@click.option("--no-localize", is_flag=True, help="on failure, skip the layer-wise search")
@click.option("--ops", is_flag=True, help="print the operator coverage matrix of every available backend")
def verify_cmd(build_dir, against, data, limit, report, atol, min_cosine, min_agreement, no_localize, ops):
    """Check a build computes what the trained model computes (parity vs a reference)."""
    from edgecnn import tables, verify
    from edgecnn.errors import EdgecnnError

    if ops:
        from edgecnn import opcheck

        console.print(opcheck.matrix_table(opcheck.run_matrix()))
        return
    if not build_dir:
        raise EdgecnnError("verify needs BUILD_DIR (or --ops)")
    try:
        result = verify.verify(build_dir, against, data, limit, report, not no_localize,
                               max_abs=atol, min_cosine=min_cosine, min_agreement=min_agreement)
    except verify.ParityError as e:
        console.print(tables.parity_table(e.report))
        raise
    console.print(tables.parity_table(result))
    if verify.fp32_line(result):
        console.print(verify.fp32_line(result))


@click.command("targets")
def targets_cmd():
    """List the compile targets (targets/*.yaml) and whether their backend is usable here."""
    from edgecnn import backends, tables, targets

    console.print(tables.targets_table(targets.all_targets(), backends.availability()))
