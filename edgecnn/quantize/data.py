"""Calibration and evaluation data for quantization, with the checks that keep a bad set out.

Calibration reads the recipe's held-out 'val' split (never the test split, which only measures);
the first `n` images calibrate, the next ones measure per-layer sensitivity.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn.core.errors import EdgecnnError

MIN_CALIB = 16  # fewer images give ranges set by a handful of samples
# merged variants (predict_variants): a run holds activations of every branch, so fewer images a run and a
# bounded number of branches a graph (the shared prefix then runs once a group)
VARIANT_BATCH, VARIANT_GROUP = 64, 16


@dataclass
class Batch:
    x: np.ndarray  # preprocessed as the model expects (edgecnn.data.preprocess)
    labels: np.ndarray | None
    described: str

    def __len__(self) -> int:
        return len(self.x)


def recipe(run_dir: Path):
    """The recipe a RUN_DIR was trained with (RUN_DIR/recipe.yaml): its data settings and schedule."""
    from edgecnn.train import recipe as recipe_mod

    path = Path(run_dir) / "recipe.yaml"
    if not path.exists():
        raise EdgecnnError(f"{path} not found: quantize a RUN_DIR written by edgecnn train")
    return recipe_mod.load(path)


def load(cfg, spec: dict, split: str, *, start: int = 0, n: int | None = None) -> Batch:
    """Images [start, start + n) of a split, normalized with the checkpoint's mean/std."""
    from edgecnn.data import load_split, preprocess

    ds = load_split(cfg, split)
    stop = len(ds) if n is None else min(len(ds), start + n)
    ds = ds.subset(slice(start, stop))
    want = list(spec["input"]["shape"])
    if len(ds) and list(ds.images.shape[1:]) != want:
        raise EdgecnnError(f"{split} images are {list(ds.images.shape[1:])}, the model takes {want}")
    x = preprocess.preprocess(ds.images, spec["input"])
    return Batch(x, ds.labels, f"{cfg.dataset}:{split}[{start}:{start + len(ds)}]")


def check_calibration(batch: Batch) -> Batch:
    """Refuse an empty, too small or non-finite calibration set with the fix in the message."""
    if len(batch) == 0:
        raise EdgecnnError(f"the calibration set {batch.described} is empty: raise data.val_size in the recipe "
                           "(calibration uses the held-out val split)")
    if len(batch) < MIN_CALIB:
        raise EdgecnnError(f"the calibration set {batch.described} has {len(batch)} images, fewer than "
                           f"{MIN_CALIB}: raise data.val_size in the recipe")
    bad = ~np.isfinite(batch.x).reshape(len(batch), -1).all(axis=1)
    if bad.any():
        raise EdgecnnError(f"calibration data {batch.described} holds NaN or inf in {int(bad.sum())} images "
                           f"(first: #{int(np.argmax(bad))}): fix the data or its normalization")
    return batch


def predict(onnx_path: Path, x: np.ndarray, what: str | None = None) -> np.ndarray:
    """Logits of an ONNX model on ONNX Runtime, in chunks (with a progress bar when `what` names it).

    A Q/DQ model runs in its fast exact form (qdq.forms.evaluation_graph: weights dequantized once,
    ONNX Runtime's float optimisations, no int8 kernel): the predictions of the op-by-op fake-quant reference,
    several times faster, and the same on every CPU (no CPU-dependent int8 kernel runs)."""
    import onnx

    from edgecnn.qdq import forms

    if not len(x):
        return np.zeros((0, 0), np.float32)
    model = onnx.load(str(onnx_path))
    qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    graph = forms.evaluation_graph(model) if qdq else model
    return _run(graph, x, qdq=qdq, what=what, original=None if qdq else onnx_path)[0]


def predict_variants(fp32_path: Path, variants: list[Path], x: np.ndarray, what: str | None = None) -> list:
    """`predict` of each Q/DQ variant of the fp32 model, run as one graph (qdq.branches: the part every variant
    computes as fp32 runs once): each variant's logits, as `predict` gives them alone."""
    import onnx

    from edgecnn.qdq import branches, forms

    base, found = onnx.load(str(fp32_path)), []
    for start in range(0, len(variants), VARIANT_GROUP):
        group = [forms.evaluation_graph(onnx.load(str(v))) for v in variants[start:start + VARIANT_GROUP]]
        merged, names = branches.merge(base, group)
        found += _run(merged, x, qdq=True, what=what and f"{what} ({start + len(group)}/{len(variants)})",
                      outputs=names, batch=VARIANT_BATCH)
    return found


def _run(model, x: np.ndarray, *, qdq: bool, what: str | None, original: Path | None = None,
         outputs: list[str] | None = None, batch: int = 256) -> list[np.ndarray]:
    """The outputs (default: the first) of `model` on x, as class scores."""
    import contextlib
    import tempfile

    import onnx

    from edgecnn.backends import run_batches
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.backends.reference import NO_INT8_KERNELS
    from edgecnn.core.progress import progress_bar
    from edgecnn.data import preprocess

    with tempfile.TemporaryDirectory(prefix="edgecnn-eval-") as tmp:
        path = original or Path(tmp) / "evaluate.onnx"
        if original is None:
            onnx.save(model, str(path))
        runner = OrtRunner(path, level="all", config=NO_INT8_KERNELS if qdq else None)
        with progress_bar() if what else contextlib.nullcontext() as bar:
            task = bar.add_task(what, total=len(x), info="") if what else None
            out = run_batches(runner.run, x, batch, (lambda n: bar.update(task, advance=n)) if what else None)
    found = [out[n] for n in outputs] if outputs else [next(iter(out.values()))]
    return [(preprocess.class_scores(s) if s.ndim > 2 else s).astype(np.float32) for s in found]
