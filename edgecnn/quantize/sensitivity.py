"""Per-layer sensitivity (quantize one layer at a time) and --auto mixed precision.

Both measure top-1 on held-out val images (after the calibration images), never on the test split,
so the layers kept in fp32 are not chosen on the numbers that are reported.
"""

from pathlib import Path

from edgecnn.verify.compare import top1
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.progress import progress_bar
from edgecnn.qdq import ptq
from edgecnn.quantize.data import Batch, predict, predict_variants


def measure(fp32_path: Path, ranges: dict, layers: list, batch: Batch, *, scheme: ptq.Scheme, work: Path) -> dict:
    """Each layer quantized alone: its top-1 drop (points) and the share of predictions it flips."""
    base = predict(fp32_path, batch.x)
    base_top1 = top1(base, batch.labels)
    rows = []
    for lay, logits in zip(layers, predict_variants(fp32_path, one_layer_models(fp32_path, ranges, layers,
                                                                                 scheme=scheme, work=work),
                                                    batch.x, "sensitivity")):
        acc = top1(logits, batch.labels)
        rows.append({"layer": lay.name, "op": lay.op, "top1": acc, "drop": base_top1 - acc,
                     "flipped": 100.0 * float((logits.argmax(1) != base.argmax(1)).mean())})
    return {"data": batch.described, "fp32_top1": base_top1, "layers": rows}


def one_layer_models(fp32_path: Path, ranges: dict, layers: list, *, scheme: ptq.Scheme, work: Path) -> list[Path]:
    """The model with each layer alone quantized: one file a layer."""
    paths = []
    with progress_bar() as bar:
        task = bar.add_task("quantize each layer", total=len(layers), info="")
        for i, lay in enumerate(layers):
            paths.append(ptq.quantize_onnx(fp32_path, work / f"one-layer-{i}.onnx", ranges, scheme, only=[lay],
                                           work=work))
            bar.update(task, advance=1, info=lay.name)
    return paths


def ranking(sens: dict) -> list[str]:
    """Layer names, most sensitive first (top-1 drop, then flipped predictions)."""
    return [r["layer"] for r in sorted(sens["layers"], key=lambda r: (-r["drop"], -r["flipped"]))]


def auto_skip(fp32_path: Path, ranges: dict, layers: list, sens: dict, *, holdout: Batch, scheme: ptq.Scheme,
              max_drop: float, skip: list, work: Path) -> tuple[list, list[dict]]:
    """Keep the most sensitive layers in fp32, one more at a time, until the val drop is <= max_drop."""
    by_name = {lay.name: lay for lay in layers}
    order = [by_name[n] for n in ranking(sens) if by_name[n] not in skip]
    skip, steps = list(skip), []
    with progress_bar() as bar:
        task = bar.add_task(f"auto (drop <= {max_drop})", total=None, info="")
        while True:
            q = ptq.quantize_onnx(fp32_path, work / "auto.onnx", ranges, scheme, exclude=skip, work=work)
            drop = sens["fp32_top1"] - top1(predict(q, holdout.x), holdout.labels)
            steps.append({"fp32_layers": [lay.name for lay in skip], "drop": drop})
            bar.update(task, advance=1, info=f"{len(skip)} fp32 layers, drop {drop:.2f}")
            if drop <= max_drop:
                return skip, steps
            if len(order) <= 1:
                raise EdgecnnError(f"--auto: the drop stays at {drop:.2f} points (> {max_drop}) with all but one "
                                   "layer in fp32: try --method qat or another --algo")
            skip.append(order.pop(0))


def worst(sens: dict, n: int = 10) -> list[dict]:
    names = ranking(sens)[:n]
    rows = {r["layer"]: r for r in sens["layers"]}
    return [rows[k] for k in names]
