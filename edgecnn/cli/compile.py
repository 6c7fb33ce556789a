"""edgecnn compile / targets / build (the on-device step of a TensorRT build)."""

import click

from edgecnn.cli.export import batch_option
from edgecnn.cli.options import given, model_facts
from edgecnn.core.progress import console


@click.command("compile")
@click.argument("onnx_path", metavar="MODEL.onnx")
@click.option("--target", "-t", required=True, help="a name from `edgecnn targets` or a target YAML path")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="default: the ONNX's precision, else the target's")
@click.option("--out", default=None, help="build directory (default beside the ONNX: build-TARGET-PRECISION, "
              "with --tune-db build-TARGET-PRECISION-tuned)")
@click.option("--batch", default=None, help="fixed batch of the artifact, or dynamic (default: --input-shape's, "
              "else 1)")
@click.option("--tune-db", default=None, metavar="DIR", help="apply this edgecnn tune database (TVM targets)")
@model_facts
def compile_cmd(onnx_path, *, target, precision, out, batch, tune_db, **facts):
    """Compile an ONNX model for a target into a build directory with manifest.json.

    A model from elsewhere (tf2onnx, model zoos, your PyTorch code) may need its preprocessing and labels
    said once (--mean, --std, --scale, --channel-order, --labels, or MODEL.yaml beside it): they are recorded
    in the manifest, and verify, bench, bundle and the runtime use them."""
    from edgecnn import compiler

    opts = {"tune_db": tune_db} if tune_db else {}
    said = given(facts)
    path = compiler.compile_model(onnx_path, target, precision, out, batch=batch_of(batch, said.get("input_shape")),
                                  given=said, **opts)
    console.print(f"built {path}")
    recorded = compiler.record_given(onnx_path, said)
    if recorded:
        console.print(f"recorded {', '.join(k for k, v in said.items() if v is not None)} in {recorded}: quantize and "
                      "compile read them there")


def batch_of(batch: str | None, input_shape: str | None) -> int | None:
    """--batch N|dynamic, else the batch --input-shape gives (N: dynamic), else 1."""
    if batch is not None:
        value = batch_option(batch)
        return None if value == "dynamic" else value
    if input_shape:
        from edgecnn.data.image_model import parse_shape

        return parse_shape(input_shape)[1][0]
    return 1


@click.command("targets")
def targets_cmd():
    """List the compile targets, the file each comes from, and whether its backend is usable here."""
    from edgecnn import backends
    from edgecnn.compiler import targets

    from edgecnn.core import catalog

    console.print(targets.table(targets.listing(), backends.availability()))
    for line in catalog.overrides("targets"):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def dla_option(value: str | None):
    if value is None or value == "gpu":
        return value
    if not value.isdigit():
        raise click.BadParameter("a DLA core number (0, 1) or 'gpu'")
    return int(value)


@click.command("build")
@click.argument("build_dir", metavar="BUILD_DIR")
@click.option("--dla-core", default=None, help="run on this DLA core (GPU fallback per the target), or 'gpu'")
@click.option("--force", is_flag=True, help="rebuild even when the engine is up to date")
@click.option("--timing-cache", default=None, help="timing cache file (default ~/.cache/edgecnn/tensorrt/)")
def build_cmd(build_dir, dla_core, force, timing_cache):
    """Finish BUILD_DIR on this device: the TensorRT engine of a `compile --target jetson...` build, recorded."""
    from edgecnn import backends
    from edgecnn.core import manifest
    from edgecnn.core.errors import EdgecnnError

    man = manifest.read(build_dir)
    backend = backends.get(man["backend"])
    if not isinstance(backend, backends.BuildsOnDevice):
        raise EdgecnnError(f"{build_dir} is a {backend.name} build: only TensorRT builds are built on the device "
                           "(the others are complete after edgecnn compile)")
    done = backend.finish(build_dir, man, dla_core=dla_option(dla_core), force=force, timing_cache=timing_cache)
    console.print(done)
