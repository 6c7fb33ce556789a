"""Int8 post-training quantization with ONNX Runtime's quantizer, in the Q/DQ form TensorRT takes.

ONNX Runtime does the work (calibrators, `quantize_static` with QuantFormat.QDQ); edgecnn only picks the
settings and adds what ONNX Runtime lacks (the 'mse' threshold). A form (where the Q/DQ go) is declared
by the backend whose int8 kernels want it (`Backend.qdq_form`). The 'tensorrt' form (the default) is
what TensorRT's explicit quantization needs:
- int8 activations and weights, symmetric (zero point 0, weights in [-127, 127]), bias left in float;
- weights per output channel (axis 0) or per tensor, activations per tensor;
- Q/DQ only on the inputs of Conv, Gemm, MatMul and Add (both inputs of a residual Add), so none sits
  between a Conv and its ReLU/Clip (BatchNorm is already folded by export).
ONNX Runtime's CPU kernels cannot fuse that form into int8 convolutions (they need a Q right after the
Conv, with the ReLU folded into an asymmetric range), so the 'onnxruntime' form is ONNX Runtime's own CPU
recipe: uint8 asymmetric activations, int8 weights, Q/DQ after every op. TensorRT refuses it.
"""

import ast
import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn import backends
from edgecnn.backends import DEFAULT_QDQ_FORM, QdqForm, qdq_form, run_batches
from edgecnn.core.errors import EdgecnnError, suggest
from edgecnn.core.onnx_utils import WEIGHTED
from edgecnn.core.progress import progress_bar

ALGOS = ("minmax", "percentile", "entropy", "mse")
ORT_METHOD = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "mse": "Percentile"}


@dataclass
class Scheme:
    per_channel: bool = True  # weight scales per output channel, else one per tensor
    form: str = DEFAULT_QDQ_FORM  # a backend's Q/DQ placement (edgecnn.backends.qdq_forms)
    reduce_range: bool | None = None  # 7-bit weights; None: as the form's backend advises for this CPU

    @property
    def placement(self) -> QdqForm:
        return qdq_form(self.form)

    @property
    def reduced(self) -> bool:
        return self.placement.reduce_range if self.reduce_range is None else self.reduce_range


@dataclass
class Layer:
    name: str  # the PyTorch module path (features.3.conv.1.0), or SCOPE.add for a residual Add
    node: str  # the ONNX node
    op: str


def layers(model) -> list[Layer]:
    """The quantizable layers of an exported model, in graph order, named after the PyTorch modules."""
    inits = {i.name for i in model.graph.initializer}
    found, seen = [], set()
    for n in model.graph.node:
        if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits:
            name = n.input[1].removesuffix(".weight")
        elif n.op_type == "Add" and not any(i in inits for i in n.input):
            name = f"{_scope(n)}.add"
        else:
            continue
        name = name if name not in seen else f"{name}#{sum(k.startswith(name) for k in seen)}"
        seen.add(name)
        found.append(Layer(name, n.name, n.op_type))
    return found


def _scope(node) -> str:
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    except (ValueError, SyntaxError):
        scopes = []
    return scopes[-2] if len(scopes) >= 2 and scopes[-2] else node.name


def select(all_layers: list[Layer], names) -> list[Layer]:
    """Layers named exactly, or by a module prefix ('features.3' is every layer of block 3)."""
    chosen = []
    for want in names:
        hit = [lay for lay in all_layers if lay.name == want or lay.name.startswith(want + ".")]
        if not hit:
            raise EdgecnnError(f"--skip {want}: no such layer{suggest(want, [lay.name for lay in all_layers])}")
        chosen += [lay for lay in hit if lay not in chosen]
    return chosen


@contextlib.contextmanager
def quiet():
    """ONNX Runtime's quantizer logs advice on the root logger and prints progress to stdout."""
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.level = level


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over one array."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 16):
        self.feeds = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.feeds, None)


def calibrate(fp32_path: Path, x: np.ndarray, *, algo: str, work: Path, form: QdqForm) -> dict[str, tuple]:
    """Activation ranges {tensor: (low, high)} from ONNX Runtime's calibrators; (-amax, amax) if symmetric."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    if algo not in ALGOS:
        raise EdgecnnError(f"--algo {algo}: unknown{suggest(algo, ALGOS)}")
    symmetric = form.symmetric
    with quiet():
        cal = create_calibrator(Path(fp32_path), list(form.op_types) if form.op_types else None,
                                str(work / "augmented.onnx"), CalibrationMethod[ORT_METHOD[algo]],
                                extra_options={"symmetric": symmetric or algo == "mse"})
    with progress_bar() as bar, quiet():
        task = bar.add_task(f"calibrate ({algo})", total=len(x), info="")
        inp = cal.infer_session.get_inputs()[0]
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None  # a model from elsewhere may fix its batch
        run_batches(lambda part: cal.collect_data(_Reader(inp.name, part, fixed or 16)) or {}, x, fixed or 64,
                    lambda n: bar.update(task, advance=n))
    with quiet():
        raw = mse_ranges(cal.collector.histogram_dict) if algo == "mse" else \
            {k: v.range_value for k, v in cal.compute_data().items()}
    return {name: _checked(name, lo, hi, symmetric) for name, (lo, hi) in raw.items()}


def _checked(name: str, lo, hi, symmetric: bool) -> tuple:
    lo, hi = float(np.min(lo)), float(np.max(hi))
    if not np.isfinite([lo, hi]).all():
        raise EdgecnnError(f"calibration found NaN or inf in tensor '{name}': the model computes non-finite "
                           "values on the calibration data (check the checkpoint and the data)")
    amax = max(abs(lo), abs(hi))
    return (np.float32(-amax), np.float32(amax)) if symmetric else (np.float32(lo), np.float32(hi))


def mse_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = 127) -> float:
    """The clipping threshold that minimizes the int8 quantization MSE of a histogram of |x|."""
    centers = (edges[:-1] + edges[1:]).astype(np.float64) / 2
    candidates = edges[1:][max(1, len(hist) // 64)::4].astype(np.float64)
    if hist.sum() == 0 or len(candidates) == 0 or candidates[-1] <= 0:
        return float(edges[-1])
    step = np.maximum(candidates[:, None], 1e-30) / levels
    error = (centers[None] - np.minimum(np.round(centers[None] / step), levels) * step) ** 2
    return float(candidates[(error * hist[None]).sum(1).argmin()])


def mse_ranges(histograms: dict) -> dict[str, tuple]:
    """What ONNX Runtime lacks: 'mse' calibration, on the |x| histograms of its percentile calibrator."""
    out = {}
    for name, (hist, edges, lo, hi) in histograms.items():
        t = mse_threshold(np.asarray(hist), np.asarray(edges)) if np.isfinite([lo, hi]).all() else np.nan
        out[name] = (-t, t)
    return out


def quantize_onnx(fp32_path: Path, out_path: Path, ranges: dict, scheme: Scheme = Scheme(), *,
                  exclude: list[Layer] = (), only: list[Layer] | None = None, work: Path | None = None) -> Path:
    """fp32 ONNX + activation ranges -> Q/DQ ONNX (ONNX Runtime's `quantize_static`) in `scheme`'s form."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    cache = Path(work or out_path.parent) / "ranges.json"
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, dict(ranges)), cache)
    form = scheme.placement
    with quiet():
        quantize_static(str(fp32_path), str(out_path), None, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8 if form.symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=scheme.per_channel, reduce_range=scheme.reduced,
                        op_types_to_quantize=list(form.op_types) if form.op_types else None,
                        nodes_to_quantize=[lay.node for lay in only] if only is not None else None,
                        nodes_to_exclude=[lay.node for lay in exclude], calibrate_method=CalibrationMethod.MinMax,
                        calibration_cache_path=str(cache), extra_options=dict(form.options))
    return out_path


def lint(model, form: str = DEFAULT_QDQ_FORM) -> list[str]:
    """The Q/DQ lint of the default form's backend (TensorRT's rules) for quant.json; an error raises when
    the model was made in a form that must follow them."""
    found = backends.get(DEFAULT_QDQ_FORM).lint_qdq(model)
    errors = [str(v) for v in found if v.severity == "error"]
    if errors and qdq_form(form).strict:
        raise EdgecnnError(f"the quantized model breaks {DEFAULT_QDQ_FORM}'s Q/DQ rules: {errors[0]} "
                           "(report this model)")
    return [str(v) for v in found]
