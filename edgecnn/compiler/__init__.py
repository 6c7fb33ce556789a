"""edgecnn compile: MODEL.onnx + target -> build directory (artifact + model.onnx + manifest.json).

    targets.py   targets/*.yaml -> Target
    manifest.py  manifest.json: what was compiled, how, with which tools, every file's sha256
"""

import tempfile
from pathlib import Path

from edgecnn import backends
from edgecnn.compiler import targets
from edgecnn.core import manifest
from edgecnn.core import onnx_utils
from edgecnn.data import image_model
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_dir, atomic_file, sha256

PATH_OPTIONS = ("tune_db",)  # options that name a file or folder: recorded as manifest.recorded_path


def with_batch(facts: dict, batch: int | None) -> tuple[dict, list[dict]]:
    """The build's input and outputs for the manifest, with the batch fixed to `batch` (None: dynamic)."""
    inp = {**facts["input"], "shape": list(facts["input"]["shape"])}
    if batch is not None and inp["shape"]:
        inp["shape"][0] = batch
    outs = [{**o, "shape": [batch if i == 0 and batch is not None else d for i, d in enumerate(o["shape"])]}
            for o in facts["outputs"]]
    return inp, outs


def default_out(onnx_path: Path, target: str, precision: str, *, tuned: bool = False) -> Path:
    """RUN_DIR/model.onnx -> RUN_DIR/build-host-fp32; other.onnx -> other-build-host-fp32 beside it; a build
    with a tuning database gets -tuned, so it never replaces the untuned build it is compared with."""
    stem = onnx_path.name.split(".")[0]
    prefix = "" if stem == "model" else f"{stem}-"
    return onnx_path.parent / f"{prefix}build-{target}-{precision}{'-tuned' if tuned else ''}"


def build_into(out_dir: Path, onnx_path: Path, tgt: targets.Target, precision: str, *, batch: int | None = 1,
               facts: dict | None = None, model=None, converted: dict | None = None, **opts) -> dict:
    """Compile into the existing folder out_dir: model.onnx, the artifact, manifest.json; returns the manifest.

    The one way to a loadable build: compile, localisation and the operator matrix all come through here.
    facts: what compile_model found (image_model.describe); else read from the ONNX as it is. model: the ONNX
    loaded already (else loaded here). converted: onnx_path is the user's int8 model re-quantized in the target's
    Q/DQ form (form_for_target): where it came from, recorded as the source.
    """
    import onnx

    model = onnx.load(str(onnx_path)) if model is None else model  # checked by compile_model, or ours
    meta = onnx_utils.read_meta(model)
    facts = facts or image_model.describe(model, onnx_path, strict=False)
    prepared, changes = image_model.prepare(model, facts["input"])
    data_files = image_model.write(prepared, bool(changes), onnx_path, out_dir / "model.onnx")
    inp, outs = with_batch(facts, batch)
    backend = backends.get(tgt.backend)
    artifact = backend.compile(out_dir / "model.onnx", tgt, precision, out_dir, batch=batch, **opts)
    return manifest.write(out_dir, {
        "model": facts["model"], "recipe": meta.get("recipe"), "labels": facts["labels"], "input": inp,
        "outputs": outs, "data": meta.get("data"), "target": tgt.raw, "backend": tgt.backend, "precision": precision,
        "artifact": artifact, "source": {**source(onnx_path, model, meta, out_dir, changes=changes, data_files=data_files),
                                         **({"onnx": None, "converted": converted} if converted else {})},
        "quantization": meta.get("quantization"), "options": recorded_options(opts, out_dir)},
        tools=backends.tool_versions())


def recorded_options(opts: dict, build_dir: Path) -> dict:
    """Compile options as the manifest keeps them for a replay (localisation): JSON values, paths as
    manifest.recorded_path (build_dir: the build, or the temporary folder beside it that becomes it)."""
    out = {}
    for key, value in opts.items():
        if isinstance(value, Path) or key in PATH_OPTIONS and isinstance(value, str):
            value = manifest.recorded_path(value, build_dir)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        if value is not None:
            out[key] = value
    return out


def source(onnx_path: Path, model, meta: dict, build_dir: Path, *, changes: list[str], data_files: list[str]) -> dict:
    """Where the build came from: the ONNX (and its external data) with their sha256, the checkpoint; paths
    relative to the build where they live beside it (manifest.recorded_path)."""
    import onnx

    def where(path):
        return manifest.recorded_path(path, build_dir) if path else path

    external = onnx_utils.external_files(onnx.load(str(onnx_path), load_external_data=False))
    ckpt = checkpoint_of(onnx_path, meta)
    return {"onnx": where(onnx_path), "onnx_sha256": sha256(onnx_path),
            **({"external_data": {f: sha256(onnx_path.parent / f) for f in external}} if external else {}),
            "opset": onnx_utils.opset_of(model), "ir_version": model.ir_version, "prepared": changes,
            **({"prepared_data": data_files} if data_files else {}),
            "checkpoint": where(ckpt), "checkpoint_sha256": meta.get("checkpoint_sha256"),
            **({"fp32_onnx": where(fp32_onnx(onnx_path, meta["source"])),
                "fp32_onnx_sha256": meta["source"]["onnx_sha256"]}
               if isinstance(meta.get("source"), dict) else {})}  # what a quantized ONNX from elsewhere came from


def checkpoint_of(onnx_path: Path, meta: dict) -> str | None:
    """The checkpoint the ONNX's metadata names; where the run folder was moved since export, the same
    checkpoint (its sha256) beside the ONNX."""
    return moved(onnx_path, meta.get("checkpoint"), meta.get("checkpoint_sha256"))


def fp32_onnx(onnx_path: Path, src: dict) -> str | None:
    """The fp32 ONNX a quantized ONNX from elsewhere came from (its metadata), found beside it when moved."""
    return moved(onnx_path, src.get("onnx"), src.get("onnx_sha256"))


def moved(onnx_path: Path, recorded: str | None, digest: str | None) -> str | None:
    if not recorded or Path(recorded).is_file():
        return recorded
    beside = onnx_path.parent / Path(recorded).name
    return str(beside) if beside.is_file() and sha256(beside) == digest else recorded


def record_given(onnx_path: str | Path, given: dict | None) -> Path | None:
    """What the user said about a model (--mean, --std, --labels ...) written to MODEL.yaml beside MODEL.onnx
    (merged into one already there, the flags winning), so `quantize MODEL.onnx` and later compiles read the
    same preprocessing and labels; returns the YAML when it changed."""
    import yaml

    given = {k: v for k, v in (given or {}).items() if v is not None}
    if not given:
        return None
    onnx_path = Path(onnx_path)
    path = onnx_path.with_name(onnx_path.name.split(".onnx")[0] + ".yaml")
    old = yaml.safe_load(path.read_text()) if path.is_file() else {}
    new = {**(old if isinstance(old, dict) else {}), **given}
    if "labels" in given:
        new["labels"] = image_model.read_labels(given["labels"])
    if new == old:
        return None
    with atomic_file(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(new, sort_keys=False))
    return path


def compile_model(onnx_path: str | Path, target: str, precision: str | None = None, out: str | Path | None = None,
                  *, batch: int | None = 1, given: dict | None = None, **opts) -> Path:
    """Compile an image classifier's ONNX for a target; the build directory appears only when everything worked.

    given: what the user says about the model (image_model.GIVEN: mean, std, scale, channel_order, layout,
    labels, input_shape), over MODEL.yaml beside it and the ONNX's own metadata."""
    onnx_path = Path(onnx_path)
    tgt = targets.load(target)
    model = onnx_utils.load(onnx_path)
    meta = onnx_utils.read_meta(model)
    precision = tgt.check_precision(precision or meta.get("precision"))
    if meta.get("precision", "fp32") not in (precision, "fp32"):
        raise EdgecnnError(f"{onnx_path.name} is a {meta['precision']} model; compile it with --precision "
                           f"{meta['precision']}")
    backend = backends.get(tgt.backend)
    if not isinstance(backend, backends.BuildsOnDevice):  # those prepare anywhere, finish on the device
        backends.require(tgt.backend)
    facts = image_model.describe(model, onnx_path, given)
    fixed = facts["input"]["shape"][0]
    if batch is None and isinstance(fixed, int) and fixed > 0:
        raise EdgecnnError(f"--batch dynamic: {onnx_path.name} fixes its batch at {fixed} (input "
                           f"'{facts['input']['name']}' {facts['input']['shape']}): compile it with --batch {fixed}")
    out = Path(out) if out else default_out(onnx_path, tgt.name, precision, tuned=bool(opts.get("tune_db")))
    with tempfile.TemporaryDirectory(prefix="edgecnn-form-") as work, atomic_dir(out) as tmp:
        path, model, converted = form_for_target(onnx_path, model, backend, precision=precision, work=Path(work))
        build_into(tmp, path, tgt, precision, batch=batch, facts=facts, model=model, converted=converted, **opts)
    return out


def form_for_target(onnx_path: Path, model, backend, *, precision: str, work: Path) -> tuple:
    """An int8 model in the Q/DQ form the target's backend runs fast (Backend.int8_form): as it is, or
    re-quantized from the calibration quantize recorded, said in one line. (path, model, converted or None)."""
    import onnx

    from edgecnn.core.progress import console

    have = (onnx_utils.read_meta(model).get("quantization") or {}).get("form")
    want = backend.int8_form
    if precision != "int8" or not have or not want or have == want:
        return onnx_path, model, None
    from edgecnn.qdq import forms

    dst = work / onnx_path.name
    record = forms.convert(onnx_path, dst, want)
    record.update({"onnx": str(onnx_path.resolve()), "onnx_sha256": sha256(onnx_path)})
    console.print(f"{onnx_path.name}: {have} Q/DQ form -> {want}, the form {backend.name}'s int8 kernels run fast "
                  "(re-quantized from its recorded calibration)", soft_wrap=True)
    return dst, onnx.load(str(dst)), record
