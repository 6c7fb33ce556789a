"""edgecnn compile: MODEL.onnx + target -> build directory (artifact + model.onnx + manifest.json).

    targets.py   targets/*.yaml -> Target
    manifest.py  manifest.json: what was compiled, how, with which tools, every file's sha256
"""

import shutil
from pathlib import Path

from edgecnn import backends
from edgecnn.compiler import manifest, targets
from edgecnn.core import onnx_utils
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_dir, sha256

PATH_OPTIONS = ("tune_db",)  # options that name a file or folder: recorded as absolute paths


def check_image_model(model) -> None:
    """Refuse what edgecnn does not compile: it takes image models with one N x C x H x W float32 input."""
    if len(model.graph.input) != 1:
        raise EdgecnnError(f"the model has {len(model.graph.input)} inputs: edgecnn compiles image models "
                           "with one N x C x H x W float32 input")
    inp = model.graph.input[0]
    shape = onnx_utils.dims(inp)
    fixed = all(isinstance(d, int) and d > 0 for d in shape[1:])
    if len(shape) != 4 or inp.type.tensor_type.elem_type != 1 or not fixed:
        raise EdgecnnError(f"input '{inp.name}' has shape {shape}: edgecnn compiles image models with one "
                           "N x C x H x W float32 input (C, H, W fixed); re-export with edgecnn export")


def input_output_spec(model, batch) -> tuple[dict, list[dict]]:
    """The build's input and outputs for the manifest, with the batch fixed to `batch` (None: dynamic)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    inp = model.graph.input[0]
    shape = onnx_utils.dims(inp)
    if batch is not None and shape:
        shape[0] = batch
    outs = [{"name": o.name, "shape": [batch if i == 0 and batch is not None else d
                                       for i, d in enumerate(onnx_utils.dims(o))]} for o in model.graph.output]
    dtype = str(tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
    return {"name": inp.name, "shape": shape, "dtype": dtype}, outs


def default_out(onnx_path: Path, target: str, precision: str) -> Path:
    """RUN_DIR/model.onnx -> RUN_DIR/build-host-fp32; other.onnx -> other-build-host-fp32 beside it."""
    stem = onnx_path.name.split(".")[0]
    prefix = "" if stem == "model" else f"{stem}-"
    return onnx_path.parent / f"{prefix}build-{target}-{precision}"


def build_into(out_dir: Path, onnx_path: Path, tgt: targets.Target, precision: str, *, batch: int | None = 1,
               **opts) -> dict:
    """Compile into the existing folder out_dir: model.onnx, the artifact, manifest.json; returns the manifest.

    The one way to a loadable build: compile, localisation and the operator matrix all come through here.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)  # checked by compile_model, or made by edgecnn
    meta = onnx_utils.read_meta(model)
    inp, outs = input_output_spec(model, batch)
    shutil.copyfile(onnx_path, out_dir / "model.onnx")
    backend = backends.get(tgt.backend)
    artifact = backend.compile(out_dir / "model.onnx", tgt, precision, out_dir, batch=batch, **opts)
    return manifest.write(out_dir, {
        "model": meta.get("model", {}), "recipe": meta.get("recipe"), "labels": meta.get("classes"),
        "input": {**meta.get("input", {}), **inp}, "outputs": outs, "data": meta.get("data"),
        "target": tgt.raw, "backend": tgt.backend, "precision": precision, "artifact": artifact,
        "source": {"onnx": str(onnx_path.resolve()), "onnx_sha256": sha256(onnx_path),
                   "checkpoint": meta.get("checkpoint"), "checkpoint_sha256": meta.get("checkpoint_sha256")},
        "quantization": meta.get("quantization"), "options": recorded_options(opts)})


def recorded_options(opts: dict) -> dict:
    """Compile options as the manifest keeps them for a replay (localisation): JSON values, paths absolute."""
    out = {}
    for key, value in opts.items():
        if isinstance(value, Path) or key in PATH_OPTIONS and isinstance(value, str):
            value = str(Path(value).resolve())
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        if value is not None:
            out[key] = value
    return out


def compile_model(onnx_path: str | Path, target: str, precision: str | None = None, out: str | Path | None = None,
                  *, batch: int | None = 1, **opts) -> Path:
    """Compile an exported ONNX for a target; the build directory appears only when everything worked."""
    onnx_path = Path(onnx_path)
    tgt = targets.load(target)
    model = onnx_utils.load(onnx_path)
    meta = onnx_utils.read_meta(model)
    precision = tgt.check_precision(precision or meta.get("precision"))
    if meta.get("precision", "fp32") not in (precision, "fp32"):
        raise EdgecnnError(f"{onnx_path.name} is a {meta['precision']} model; compile it with --precision "
                           f"{meta['precision']}")
    backend = backends.get(tgt.backend)
    if backend.compile_needs_runtime:  # TensorRT prepares anywhere, builds on the device
        backends.require(tgt.backend)
    check_image_model(model)
    out = Path(out) if out else default_out(onnx_path, tgt.name, precision)
    with atomic_dir(out) as tmp:
        build_into(tmp, onnx_path, tgt, precision, batch=batch, **opts)
    return out
