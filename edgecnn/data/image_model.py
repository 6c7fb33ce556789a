"""What edgecnn takes from an ONNX file: an image classifier (one image input, class scores out), the
preprocessing and labels it needs, and the normalized graph every backend is given.

ONNX files from elsewhere differ from what `edgecnn export` writes; each difference is handled here, once:
- initializers listed as graph inputs (the convention before IR 4) are weights, not inputs;
- NHWC inputs (Keras, tf2onnx), uint8 inputs, dynamic H/W or batch (fixed by --input-shape);
- outputs N x K, N x K x 1 x 1 or N x 1 x 1 x K are class scores; behind a Softmax, probabilities;
- an opset below ONNX Runtime's floor (7) is upgraded; weights in external data stay external.
Preprocessing and labels come, by priority, from what the user gives (--mean, --labels, ...), a YAML beside
the model (MODEL.yaml for MODEL.onnx and MODEL.int8.onnx), the ONNX's edgecnn metadata, then defaults
(pixel / 255, RGB).
"""

from math import prod
from pathlib import Path

from edgecnn.core import onnx_utils
from edgecnn.core.errors import EdgecnnError, suggest

GIVEN = ("mean", "std", "scale", "channel_order", "layout", "labels", "input_shape")  # flags and MODEL.yaml keys
DTYPES = {1: "float32", 10: "float16", 2: "uint8"}  # ONNX elem types of an image input
MIN_OPSET = 7  # the oldest opset ONNX Runtime runs
SHAPE_OPS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose")
SUPPORTED = ("edgecnn takes image models: one image input N x C x H x W or N x H x W x C (float32, float16 "
             "or uint8); classifiers' outputs N x K or N x K x 1 x 1 are class scores")


def parse_shape(text: str) -> tuple[str | None, list]:
    """'1x224x224x3', 'Nx3x224x224' (dynamic batch) or 'NAME:1x3x224x224' -> (name or None, dims)."""
    name, _, dims = str(text).rpartition(":")
    try:
        shape = [None if d in ("N", "?", "dynamic") else int(d) for d in dims.lower().replace("n", "N").split("x")]
    except ValueError:
        shape = []
    if len(shape) != 4 or any(d is not None and d < 1 for d in shape) or None in shape[1:]:
        raise EdgecnnError(f"--input-shape {text}: give the image input's four dimensions, e.g. 1x224x224x3 "
                           "or 1x3x224x224 (N for a dynamic batch; NAME:1x3x224x224 to name the input)")
    return name or None, shape


def beside(onnx_path: Path) -> dict:
    """MODEL.yaml beside MODEL.onnx: preprocessing, labels and input shape given once for a foreign model."""
    import yaml

    name = Path(onnx_path).name  # model.onnx -> model.yaml; model.int8.onnx -> model.int8.yaml, else model.yaml
    found = [p for p in (Path(onnx_path).with_name(n + ".yaml") for n in (name.split(".onnx")[0], name.split(".")[0]))
             if p.is_file()]
    if not found:
        return {}
    path = found[0]
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgecnnError(f"{path}: bad YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise EdgecnnError(f"{path}: a mapping of {', '.join(GIVEN)} is expected")
    unknown = sorted(set(raw) - set(GIVEN))
    if unknown:
        raise EdgecnnError(f"{path}: unknown key '{unknown[0]}'{suggest(unknown[0], GIVEN)}")
    if isinstance(raw.get("labels"), str):
        raw["labels"] = str(path.parent / raw["labels"])
    return raw


def read_labels(labels) -> list[str]:
    """A list, or a file: one label a line (.txt), a JSON list, or a YAML list / {index: label} mapping."""
    if isinstance(labels, (list, tuple)):
        return [str(x) for x in labels]
    path = Path(labels)
    try:
        text = path.read_text()
    except OSError as e:
        raise EdgecnnError(f"labels file {path}: {e.strerror}") from None
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        import yaml  # YAML reads JSON too

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise EdgecnnError(f"{path}: bad YAML/JSON: {getattr(e, 'problem', e)}") from None
        if isinstance(raw, dict):
            raw = [raw[k] for k in sorted(raw, key=int)]
        if not isinstance(raw, list):
            raise EdgecnnError(f"{path}: expected a list of labels")
        return [str(x) for x in raw]
    return [line.strip() for line in text.rstrip("\n").splitlines()]


def image_input(model, name: str | None = None):
    """The one real input, checked to be an image batch; else a one-line error saying what edgecnn takes."""
    inputs = onnx_utils.real_inputs(model)
    described = ", ".join(f"{i.name} ({DTYPES.get(i.type.tensor_type.elem_type, 'non-image')} "
                          f"{onnx_utils.dims(i)})" for i in inputs[:4])
    if len(inputs) != 1:
        raise EdgecnnError(f"the model has {len(inputs)} inputs{': ' + described if inputs else ''}; {SUPPORTED}")
    inp = inputs[0]
    if name and name != inp.name:
        raise EdgecnnError(f"--input-shape names input '{name}'; the model's input is '{inp.name}'")
    if inp.type.tensor_type.elem_type not in DTYPES or len(onnx_utils.dims(inp)) != 4:
        raise EdgecnnError(f"input {described} is not an image batch; {SUPPORTED}")
    return inp


def guess_layout(model, inp) -> str:
    """NHWC when the input feeds a Transpose to NCHW (tf2onnx) or its last dimension holds 1 or 3 channels."""
    from onnx import helper

    d = onnx_utils.dims(inp)
    if len(d) != 4:
        return "NCHW"
    for node in model.graph.node:
        if inp.name in node.input and node.op_type == "Transpose":
            perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"), None)
            return "NHWC" if list(perm or []) == [0, 3, 1, 2] else "NCHW"
    return "NHWC" if d[3] in (1, 3) and d[1] not in (1, 3) else "NCHW"


def fixed_dims(inp, given: list | None) -> list:
    """The input's dims with H, W (and C) fixed by --input-shape where the model leaves them dynamic; its
    batch as the model has it."""
    have = onnx_utils.dims(inp)
    if given is None:
        if not all(isinstance(d, int) and d > 0 for d in have[1:]):
            example = "x".join(str(d) if isinstance(d, int) and d > 0 else "224" for d in [1, *have[1:]])
            raise EdgecnnError(f"input '{inp.name}' has dynamic dimensions {have}: fix them with --input-shape "
                               f"{example} (the model's layout)")
        return have
    for want, got in zip(given[1:], have[1:]):
        if isinstance(got, int) and got > 0 and got != want:
            raise EdgecnnError(f"--input-shape {'x'.join(map(str, given[1:]))} does not fit input '{inp.name}' "
                               f"{have}: only its dynamic dimensions can be set")
    return [have[0], *given[1:]]  # the batch is the build's (--batch, or --input-shape's through the CLI)


def preprocessing(meta: dict, given: dict, dtype: str, channels: int) -> dict:
    """mean, std, scale and channel order: given (flags, MODEL.yaml) over the ONNX's metadata over defaults."""
    from edgecnn.data.preprocess import CHANNEL_ORDERS, scale_of

    order = str(given.get("channel_order") or meta.get("channel_order") or "rgb").lower()
    if order not in CHANNEL_ORDERS:
        raise EdgecnnError(f"--channel-order {order}: use rgb or bgr")
    if dtype == "uint8":
        extra = [k for k in ("mean", "std", "scale") if given.get(k) is not None]
        if extra:
            raise EdgecnnError(f"the model takes uint8 pixels and normalizes them itself: drop --{extra[0]}")
        return {"channel_order": order}
    out = {"mean": given.get("mean") or meta.get("mean") or [0.0], "std": given.get("std") or meta.get("std") or [1.0],
           "scale": scale_of(given.get("scale") if given.get("scale") is not None else meta.get("scale")),
           "channel_order": order}
    for key in ("mean", "std"):
        values = [float(v) for v in (out[key] if isinstance(out[key], (list, tuple)) else [out[key]])]
        if len(values) not in (1, channels) or (key == "std" and min(values) <= 0):
            how = "1 value" if channels == 1 else f"1 or {channels} values"
            raise EdgecnnError(f"--{key} {values}: the model takes {channels}-channel images: give {how}"
                               f"{' > 0' if key == 'std' else ''}")
        out[key] = values
    if not out["scale"] > 0:
        raise EdgecnnError(f"--scale {out['scale']}: must be > 0")
    return out


def score_kind(model, name: str) -> str:
    """'probabilities' when the output comes from a Softmax (through reshapes), else 'logits'."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(name)
    while node is not None and node.op_type in SHAPE_OPS:
        node = producers.get(node.input[0])
    return "probabilities" if node is not None and node.op_type == "Softmax" else "logits"


def class_count(shape: list) -> int | None:
    """K of an output N x K, N x K x 1 x 1 or N x 1 x 1 x K (None: not class scores)."""
    rest = shape[1:]
    if not rest or not all(isinstance(d, int) and d > 0 for d in rest) or sum(d != 1 for d in rest) != 1:
        return None
    return prod(rest) if prod(rest) > 1 else None


def outputs(model) -> list[dict]:
    """The outputs with their inferred shapes; class-score outputs say how many classes and which kind."""
    shapes = onnx_utils.inferred_dims(model)
    out = []
    for o in model.graph.output:
        entry = {"name": o.name, "shape": shapes.get(o.name) or onnx_utils.dims(o)}
        k = class_count(entry["shape"])
        if k:
            entry.update(classes=k, scores=score_kind(model, o.name))
        out.append(entry)
    return out


def describe(model, onnx_path: Path, given: dict | None = None, *, strict: bool = True) -> dict:
    """The facts a build records: input (name, shape, dtype, layout, preprocessing), outputs, labels, changes.

    strict (compile): refuse what is not an image model. Not strict (localisation's marked graphs, the
    operator matrix's one-op graphs): describe what is there."""
    given = {**beside(onnx_path), **{k: v for k, v in (given or {}).items() if v is not None}}
    meta = onnx_utils.read_meta(model)
    name, dims = parse_shape(given["input_shape"]) if given.get("input_shape") else (None, None)
    if strict:
        inp = image_input(model, name)
        shape = fixed_dims(inp, dims)
    else:
        inp = onnx_utils.real_inputs(model)[0]
        shape = onnx_utils.dims(inp)
    layout = str(given.get("layout") or meta.get("input", {}).get("layout") or guess_layout(model, inp)).upper()
    if layout not in ("NCHW", "NHWC"):
        raise EdgecnnError(f"--layout {layout}: use NCHW or NHWC")
    dtype = DTYPES.get(inp.type.tensor_type.elem_type, "float32")
    spec = {"name": inp.name, "shape": shape, "dtype": dtype, "layout": layout}
    if len(shape) == 4:
        from edgecnn.data.preprocess import geometry

        spec.update(preprocessing(meta.get("input", {}), given, dtype, geometry(spec)[0]))
    prepared, changes = prepare(model, spec)
    outs = outputs(prepared)
    labels = read_labels(given["labels"]) if given.get("labels") else meta.get("classes")
    check_classes(outs, labels)
    return {"model": meta.get("model") or {"name": Path(onnx_path).name.split(".onnx")[0]}, "input": spec,
            "outputs": outs, "labels": labels, "changes": changes}


def check_classes(outs: list[dict], labels: list | None) -> None:
    """Labels, where given, name the classes of the first class-score output, one each."""
    scores = [o for o in outs if o.get("classes")]
    if labels and not scores:
        shapes = ", ".join(f"{o['name']} {o['shape']}" for o in outs)
        raise EdgecnnError(f"labels given, but no output is class scores (N x K or N x K x 1 x 1): {shapes}")
    if labels and len(labels) != scores[0]["classes"]:
        raise EdgecnnError(f"{len(labels)} labels for {scores[0]['classes']} classes (output "
                           f"'{scores[0]['name']}'): give one label per class")


def prepare(model, spec: dict) -> tuple[object, list[str]]:
    """A copy of the model every backend takes: no initializer among the inputs, the input's dims fixed
    (its batch kept), opset >= 7. Returns (model, what changed); the model itself (no copy: it may be over
    2 GB) when nothing has to."""
    import onnx

    weights = {i.name for i in model.graph.initializer}
    listed = [i.name for i in model.graph.input if i.name in weights]
    have = onnx_utils.dims(next(i for i in model.graph.input if i.name == spec["name"]))
    want = [have[0], *spec["shape"][1:]]
    if not listed and have == want and onnx_utils.opset_of(model) >= MIN_OPSET:
        return model, []
    changes, out = [], onnx.ModelProto()
    out.CopyFrom(model)
    if listed:
        keep = [i for i in out.graph.input if i.name not in weights]
        del out.graph.input[:]
        out.graph.input.extend(keep)
        changes.append(f"{len(listed)} initializers listed as inputs are weights (IR {out.ir_version} -> "
                       f"{max(out.ir_version, 4)})")
        out.ir_version = max(out.ir_version, 4)
    if have != want:
        changes.append(f"input '{spec['name']}' {have} fixed to {want}")
        onnx_utils.set_dims(next(i for i in out.graph.input if i.name == spec["name"]), want)
        del out.graph.value_info[:]  # shapes inferred from the dynamic input may be stale
    if onnx_utils.opset_of(out) < MIN_OPSET:
        changes.append(f"opset {onnx_utils.opset_of(out)} -> {MIN_OPSET} (ONNX Runtime's oldest)")
        out = onnx_utils.convert_opset(out, MIN_OPSET)
    return out, changes


def write(prepared, changed: bool, src: Path, dest: Path) -> list[str]:
    """The prepared model at dest: a byte copy of src when nothing changed, else saved, with its weights
    external (DEST.data) when the source's were. Returns the external data files written beside dest."""
    import shutil

    import onnx

    external = bool(onnx_utils.external_files(onnx.load(str(src), load_external_data=False)))
    if not external and not changed:
        shutil.copyfile(src, dest)
        return []
    return onnx_utils.save(prepared, dest, external=external)
