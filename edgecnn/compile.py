"""edgecnn compile: MODEL.onnx + target -> build directory (artifact + model.onnx + manifest.json)."""

import shutil
from pathlib import Path

from edgecnn import backends, manifest, onnxmeta, targets
from edgecnn.errors import EdgecnnError
from edgecnn.fileio import atomic_dir, sha256


def input_output_spec(model, batch) -> tuple[dict, list[dict]]:
    def dims(value_info):
        return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]

    if len(model.graph.input) != 1:
        raise EdgecnnError(f"the model has {len(model.graph.input)} inputs: edgecnn compiles image models "
                           "with one N x C x H x W float32 input")
    inp = model.graph.input[0]
    shape = dims(inp)
    if len(shape) != 4 or inp.type.tensor_type.elem_type != 1 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        raise EdgecnnError(f"input '{inp.name}' has shape {shape}: edgecnn compiles image models with one "
                           "N x C x H x W float32 input (C, H, W fixed); re-export with edgecnn export")
    if batch is not None:
        shape[0] = batch
    outs = [{"name": o.name, "shape": [batch if i == 0 and batch is not None else d for i, d in enumerate(dims(o))]}
            for o in model.graph.output]
    return {"name": inp.name, "shape": shape, "dtype": "float32"}, outs


def default_out(onnx_path: Path, target: str, precision: str) -> Path:
    """RUN_DIR/model.onnx -> RUN_DIR/build-host-fp32; other.onnx -> other-build-host-fp32 beside it."""
    stem = onnx_path.name.split(".")[0]
    prefix = "" if stem == "model" else f"{stem}-"
    return onnx_path.parent / f"{prefix}build-{target}-{precision}"


def compile(onnx_path: str | Path, target: str, precision: str | None = None, out: str | Path | None = None,
            batch: int | None = 1, **opts) -> Path:
    """Compile an exported ONNX for a target; the build directory appears only when everything worked."""
    onnx_path = Path(onnx_path)
    tgt = targets.load(target)
    model = onnxmeta.load_model(onnx_path)
    meta = onnxmeta.read(model)
    precision = tgt.check_precision(precision or meta.get("precision"))
    if meta.get("precision", "fp32") not in (precision, "fp32"):
        raise EdgecnnError(f"{onnx_path.name} is a {meta['precision']} model; compile it with --precision "
                           f"{meta['precision']}")
    backend = backends.get(tgt.backend)
    if getattr(backend, "COMPILE_NEEDS_RUNTIME", True):  # TensorRT prepares anywhere, builds on the device
        backend = backends.require(tgt.backend)
    out = Path(out) if out else default_out(onnx_path, tgt.name, precision)
    inp, outs = input_output_spec(model, batch)
    with atomic_dir(out) as tmp:
        shutil.copyfile(onnx_path, tmp / "model.onnx")
        artifact = backend.compile(tmp / "model.onnx", tgt, precision, tmp, batch=batch, **opts)
        manifest.write(tmp, {
            "model": meta.get("model", {}), "recipe": meta.get("recipe"), "labels": meta.get("classes"),
            "input": {**meta.get("input", {}), **inp}, "outputs": outs, "data": meta.get("data"),
            "target": {"name": tgt.name, "backend": tgt.backend, "device": tgt.device, "tvm": tgt.tvm,
                       "tensorrt": tgt.tensorrt, "options": tgt.options},
            "backend": tgt.backend, "precision": precision,
            "artifact": artifact,
            "source": {"onnx": str(onnx_path.resolve()), "onnx_sha256": sha256(onnx_path),
                       "checkpoint": meta.get("checkpoint"), "checkpoint_sha256": meta.get("checkpoint_sha256")}})
    return out
