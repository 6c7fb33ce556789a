"""ONNX Runtime int8 vs fp32 latency, side by side in one run (2 threads, batch 1 by default).

    .venv/bin/python benchmarks/quant_ort_latency.py [--run RUN_DIR ...] [--rounds 7] [--iters 30]

Models: MobileNet v2 224x224x3 (ImageNet layout, 1000 classes, random weights calibrated on random data:
latency does not depend on the weights) and every --run RUN_DIR (e.g. the Fashion-MNIST LeNet-5 and
MobileNet v2, calibrated on their val split). Variants of each model:
- fp32: the exported ONNX;
- int8 (TensorRT Q/DQ): `edgecnn quantize` (--form tensorrt, the default: symmetric int8, Q/DQ only on
  the inputs of Conv/Gemm/Add, ReLU/Clip kept), the form TensorRT fuses;
- int8 (ORT CPU Q/DQ): `edgecnn quantize --form onnxruntime`, ONNX Runtime's own CPU recipe (uint8
  asymmetric activations, Q/DQ after every op, ReLU/Clip folded), which ORT fuses into QLinearConv;
- int8 (TensorRT Q/DQ converted): what `edgecnn compile --target onnxruntime-cpu` now builds from the default
  form (qdq.forms.convert: the float graph under the TensorRT Q/DQ, re-quantized in ORT's form from the
  asymmetric ranges quantize records).
Rounds interleave the variants so machine noise hits all alike; the median of the round medians is
reported with the int8/fp32 ratio. Writes benchmarks/results/quant_ort_latency.json and .png.
"""

import argparse
import json
import platform
import tempfile
import functools
from pathlib import Path

import numpy as np
import torch

from edgecnn.models import checkpoint
from edgecnn.train import recipe
from edgecnn import export
from edgecnn.core.progress import console
from edgecnn.qdq import ptq
from edgecnn.quantize import data

RESULTS = Path(__file__).resolve().parent / "results"
IMAGENET = {"input_size": 224, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def imagenet_mobilenet(work: Path) -> tuple[Path, np.ndarray]:
    """MobileNet v2 1.0 at 224x224x3, random weights, with random calibration images."""
    rec = recipe.parse({"name": "mobilenet_v2-224", "model": {"name": "mobilenet_v2"}, "data": IMAGENET})
    spec = checkpoint.model_spec(rec, 1000, [str(i) for i in range(1000)])
    torch.manual_seed(0)
    checkpoint.save(work / "model.pt", checkpoint.build_model(spec), spec)
    images = np.random.default_rng(0).integers(0, 256, (64, 3, 224, 224), dtype=np.uint8)
    from edgecnn.data import normalize

    fp32 = export.export(work, work / "fp32.onnx", batch="dynamic")
    return fp32, normalize(images, IMAGENET["mean"], IMAGENET["std"])


def trained_model(run_dir: Path, work: Path) -> tuple[Path, np.ndarray]:
    _, spec = checkpoint.load(run_dir)
    calib = data.load(data.recipe(run_dir).data, spec, "val", n=512)
    return export.export(run_dir, work / "fp32.onnx", batch="dynamic"), calib.x


def variants(fp32: Path, x: np.ndarray, work: Path) -> dict[str, Path]:
    """fp32 and the two Q/DQ forms `edgecnn quantize --form` writes (minmax calibration on `x`)."""
    symmetric = ptq.calibrate(fp32, x, algo="minmax", work=work, form=ptq.Scheme().placement)
    asymmetric = ptq.calibrate(fp32, x, algo="minmax", work=work, form=ptq.Scheme(form="onnxruntime").placement)
    import onnx

    from edgecnn.qdq import forms

    trt = ptq.quantize_onnx(fp32, work / "int8-trt.onnx", symmetric, work=work)
    onnx.save(forms.float_graph(onnx.load(str(trt))), str(work / "trt-float.onnx"))  # as forms.convert does
    return {"fp32": fp32, "int8 (TensorRT Q/DQ)": trt,
            "int8 (ORT CPU Q/DQ)": ptq.quantize_onnx(fp32, work / "int8-ort.onnx", asymmetric,
                                                     ptq.Scheme(form="onnxruntime"), work=work),
            "int8 (TensorRT Q/DQ converted)": ptq.quantize_onnx(work / "trt-float.onnx", work / "int8-conv.onnx",
                                                                asymmetric, ptq.Scheme(form="onnxruntime"), work=work)}


def measure(paths: dict[str, Path], x: np.ndarray, threads: int, rounds: int, iters: int) -> dict:
    """Median ms per variant: `rounds` interleaved rounds (edgecnn.core.rounds, a new random order each) that
    each time every variant `iters` times."""
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.core.rounds import interleaved

    runners = {k: OrtRunner(p, threads) for k, p in paths.items()}
    per_round, _ = interleaved({k: functools.partial(r.run, x) for k, r in runners.items()}, rounds=rounds, runs=iters)
    return {k: {"median_ms": float(np.median(v)), "round_medians_ms": v} for k, v in per_round.items()}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    kinds = list(next(iter(results["models"].values()))["latency"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        lat = results["models"][m]["latency"]
        bars = ax.bar(range(len(kinds)), [lat[k]["median_ms"] for k in kinds],
                      color=["tab:blue", "tab:red", "tab:orange", "tab:green"][:len(kinds)])
        ax.set_xticks(range(len(kinds)), [k.replace(" (", "\n(") for k in kinds], fontsize=7)
        ax.bar_label(bars, [f"{lat[k]['median_ms']:.2f} ms\n{lat[k]['median_ms'] / lat['fp32']['median_ms']:.2f}x"
                            for k in kinds], fontsize=7)
        ax.set(title=m, ylabel="ms per batch (median)")
        ax.margins(y=0.25)
    fig.suptitle(f"ONNX Runtime {results['onnxruntime']}, {results['threads']} threads, batch {results['batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    import onnxruntime

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", default=[], help="a trained RUN_DIR (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    out = {"onnxruntime": onnxruntime.__version__, "cpu": platform.processor() or platform.machine(),
           "threads": args.threads, "batch": args.batch, "rounds": args.rounds, "iters": args.iters, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"mobilenet_v2 224 (random)": imagenet_mobilenet}
        models.update({f"{r.name} (Fashion-MNIST)": (lambda w, r=r: trained_model(r, w)) for r in args.run})
        for label, make in models.items():
            work = Path(tmp) / str(len(out["models"]))
            work.mkdir()
            fp32, x = make(work)
            paths = variants(fp32, x, work)
            console.print(f"measuring {label} ...")
            lat = measure(paths, x[:args.batch], args.threads, args.rounds, args.iters)
            ratios = {k: v["median_ms"] / lat["fp32"]["median_ms"] for k, v in lat.items()}
            out["models"][label] = {"latency": lat, "ratio_vs_fp32": ratios,
                                    "onnx_bytes": {k: p.stat().st_size for k, p in paths.items()}}
            console.print(f"{label}: " + ", ".join(f"{k} {v['median_ms']:.3f} ms ({ratios[k]:.2f}x)"
                                                   for k, v in lat.items()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quant_ort_latency.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, RESULTS / "quant_ort_latency.png")
    console.print(f"wrote {RESULTS / 'quant_ort_latency.json'} and .png")


if __name__ == "__main__":
    main()
