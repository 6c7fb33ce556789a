"""edgecnn build: make a TensorRT build directory's engine on the device it is for."""

import click

from edgecnn.progress import console


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
    """Build BUILD_DIR's TensorRT engine here (from `edgecnn compile --target jetson...`) and record it."""
    from pathlib import Path

    from edgecnn import manifest
    from edgecnn.backends import tensorrt
    from edgecnn.errors import EdgecnnError

    man = manifest.read(build_dir)
    if man.get("backend") != "tensorrt":
        raise EdgecnnError(f"{build_dir} is a {man.get('backend')} build: only TensorRT builds are built on the "
                           "device (the others are complete after edgecnn compile)")
    art, core = man["artifact"], dla_option(dla_core)
    engine = art.get("engine")
    if engine and not force and core is None and (Path(build_dir) / art["file"]).is_file():
        tensorrt.check_engine(engine, tensorrt.local_device(tensorrt._trt()))
        console.print(f"{build_dir}/{art['file']} is up to date (TensorRT {engine['tensorrt']}, {engine['gpu']}); "
                      "--force rebuilds it")
        return
    rec = tensorrt.build_and_record(Path(build_dir), man, core, timing_cache)
    size = (Path(build_dir) / art["file"]).stat().st_size / 2**20
    where = f"DLA core {rec['dla_core']}" if rec["dla_core"] is not None else "GPU"
    console.print(f"built {build_dir}/{art['file']} ({size:.1f} MiB) in {rec['build_s']} s: TensorRT "
                  f"{rec['tensorrt']}, {rec['gpu']} (sm {rec['sm']}), {rec['precision']} on the {where}")
