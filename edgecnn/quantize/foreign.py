"""Quantizing an ONNX from elsewhere (no RUN_DIR): its fp32 graph as every backend takes it, stamped with its
preprocessing and labels, and its images: calibration from a folder (--calib DIR), evaluation from --data or
the folder's images left after the calibration ones.

Without labelled evaluation images the report holds agreement with the fp32 model, not accuracy; per-layer
sensitivity then counts agreement with the fp32 model's top-1 as its "top-1".
"""

from pathlib import Path

import numpy as np

from edgecnn.core import onnx_utils
from edgecnn.data import image_model
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256
from edgecnn.quantize.data import Batch

SEED = 0  # the calibration images are a fixed random sample of the folder


def prepare_fp32(onnx_path: Path, dest: Path, *, opset: int, given: dict | None) -> dict:
    """The model with the image-model fixes (data.image_model), at `opset`, with edgecnn's metadata; returns
    the spec (model, input, classes) the quantization reads."""
    model = onnx_utils.load(onnx_path)
    meta = onnx_utils.read_meta(model)
    if meta.get("precision", "fp32") != "fp32":
        raise EdgecnnError(f"{onnx_path.name} is already a {meta['precision']} model: quantize its fp32 source")
    facts = image_model.describe(model, onnx_path, given)
    said = {k for k, v in (given or {}).items() if v is not None} | set(image_model.beside(onnx_path))
    if not said & {"mean", "std", "scale", "labels"} and "mean" not in meta.get("input", {}):
        from edgecnn.core.progress import console

        console.print(f"warning: nothing gives {onnx_path.name}'s preprocessing or labels (no flags, no "
                      f"{onnx_path.name.split('.onnx')[0]}.yaml beside it, no edgecnn metadata): calibrating on x = "
                      "pixel / 255 with labels by index; give --mean, --std, --scale, --labels", markup=False)
    prepared, _ = image_model.prepare(model, facts["input"])
    prepared = onnx_utils.convert_opset(prepared, opset)
    spec = {"model": facts["model"], "input": facts["input"], "classes": facts["labels"]}
    onnx_utils.write_meta(prepared, {**meta, "format": "edgecnn.onnx/1", **spec, "precision": "fp32",
                                     "source": {"onnx": str(onnx_path.resolve()), "onnx_sha256": sha256(onnx_path)}})
    onnx_utils.save(prepared, dest, external=onnx_utils.too_big(prepared))
    return spec


def calibration_images(folder: str | Path, spec: dict, n: int) -> tuple[Batch, Batch | None]:
    """(n images of the folder, a fixed random sample, preprocessed; the others, or None when none are left)."""
    from edgecnn.data import preprocess, read_image_dir

    channels, height, _ = preprocess.geometry(spec["input"])
    ds = read_image_dir(folder, height, channels)
    order = np.random.default_rng(SEED).permutation(len(ds))
    calib, rest = ds.subset(np.sort(order[:n])), ds.subset(np.sort(order[n:]))
    x = preprocess.preprocess(calib.images, spec["input"])
    held = Batch(preprocess.preprocess(rest.images, spec["input"]), None, f"{folder} (the {len(rest)} images "
                 "not calibrated on)") if len(rest) else None
    return Batch(x, None, f"{folder} ({len(calib)} of {len(ds)} images)"), held


def evaluation_images(data: str | None, spec: dict, held: Batch | None, calib: Batch) -> Batch:
    """--data (labelled: accuracy), else the images not calibrated on, else the calibration images."""
    from edgecnn.data import load_images, preprocess, relabel

    if data:
        channels, height, _ = preprocess.geometry(spec["input"])
        ds, described = load_images(data, None, size=height, channels=channels)
        labels, _ = relabel(ds, spec.get("classes"))
        return Batch(preprocess.preprocess(ds.images, spec["input"]), labels, described)
    if held is not None:
        return held
    return Batch(calib.x, None, f"{calib.described}: the calibration images themselves (give --data to measure "
                                "on others)")


def pseudo_labelled(batch: Batch | None, fp32_path: Path) -> Batch | None:
    """Unlabelled images labelled with the fp32 model's top-1, so sensitivity measures agreement with it."""
    from edgecnn.quantize.data import predict

    if batch is None or batch.labels is not None or not len(batch):
        return batch
    return Batch(batch.x, predict(fp32_path, batch.x).argmax(1), f"{batch.described}, labels: the fp32 model's top-1")
