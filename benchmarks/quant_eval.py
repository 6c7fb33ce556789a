"""How fast `edgecnn quantize` evaluates a Q/DQ model: op by op (the fake-quant reference, how quantize measured
before) vs its fast exact form (qdq.forms.evaluation_graph: weights folded, ONNX Runtime's float
optimisations, no int8 kernel), with fp32 beside them; and whether their predictions agree.

    .venv/bin/python benchmarks/quant_eval.py RUN_DIR [--images 1000] [--threads 1]

Graphs: the whole model quantized (the accuracy and --auto passes) and one layer quantized alone (each
sensitivity pass; the middle layer). CPU seconds of this process (all its threads), so a loaded machine
inflates the wall time, not these. Writes benchmarks/results/quant_eval-RUN.json.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from edgecnn.backends.onnxruntime import OrtRunner
from edgecnn.backends.reference import FAKEQUANT_LEVEL, NO_INT8_KERNELS
from edgecnn.core.progress import console
from edgecnn.qdq import forms, ptq
from edgecnn.quantize import data, export_fp32
from edgecnn.models import checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds(path: Path, x: np.ndarray, threads: int, **session) -> tuple[float, np.ndarray]:
    runner = OrtRunner(path, threads, **session)
    runner.run(x[:16])
    t0 = time.process_time()
    out = np.concatenate([next(iter(runner.run(x[i:i + 256]).values())) for i in range(0, len(x), 256)])
    return time.process_time() - t0, out


def compare(path: Path, x: np.ndarray, threads: int, work: Path) -> dict:
    fast = work / f"{path.stem}.eval.onnx"
    onnx.save(forms.evaluation_graph(onnx.load(str(path))), str(fast))
    slow_s, ref = cpu_seconds(path, x, threads, level=FAKEQUANT_LEVEL)
    fast_s, out = cpu_seconds(fast, x, threads, level="all", config=NO_INT8_KERNELS)
    return {"op_by_op_cpu_s": slow_s, "fast_cpu_s": fast_s, "speedup": slow_s / fast_s,
            "same_top1": float((out.argmax(1) == ref.argmax(1)).mean()), "max_abs_logit_diff": float(abs(out - ref).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    _, spec = checkpoint.load(args.run_dir)
    rec = data.recipe(args.run_dir)
    x = data.load(rec.data, spec, "test", n=args.images).x
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = export_fp32(checkpoint.resolve(args.run_dir), work / "fp32.onnx", 17)
        ranges = ptq.calibrate(fp32, data.load(rec.data, spec, "val", n=512).x, algo="minmax", work=work,
                               form=ptq.Scheme().placement)
        layers = ptq.layers(onnx.load(str(fp32)))
        whole = ptq.quantize_onnx(fp32, work / "whole.onnx", ranges, work=work)
        one = ptq.quantize_onnx(fp32, work / "one.onnx", ranges, only=[layers[len(layers) // 2]], work=work)
        out = {"run_dir": str(args.run_dir), "model": spec["model"]["name"], "images": len(x), "threads": args.threads,
               "fp32_cpu_s": cpu_seconds(fp32, x, args.threads)[0],
               "whole_model": compare(whole, x, args.threads, work), "one_layer": compare(one, x, args.threads, work)}
    for k in ("whole_model", "one_layer"):
        r = out[k]
        console.print(f"{k}: op by op {r['op_by_op_cpu_s']:.2f} s, fast {r['fast_cpu_s']:.2f} s ({r['speedup']:.2f}x), "
                      f"fp32 {out['fp32_cpu_s']:.2f} s; same top-1 {100 * r['same_top1']:.2f}%")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"quant_eval-{args.run_dir.name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
