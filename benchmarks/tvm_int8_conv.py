"""TVM int8: Q/DQ lowered as float fake-quant (the default) vs the int8-conv rewrite (target option
`int8_conv: true`, edgecnn/backends/tvm/int8.py), beside fp32 TVM and ONNX Runtime, untuned, batch 1.

    .venv/bin/python benchmarks/tvm_int8_conv.py [--models lenet5_28,mobilenet_v2_28] [--repeats 5]

Models: the Fashion-MNIST ones of tvm_vs_ort.py (their recipes name the calibration data).

Each model: an untrained checkpoint (as benchmarks/tvm_vs_ort.py makes them) -> `edgecnn quantize`
(PTQ, per-channel, 64 calibration images) -> compile for `host` and for `host` + int8_conv -> rounds of
every subject in turn. Reports the medians, the int8-conv / fake-quant ratio and the largest difference
between the two TVM int8 builds' logits. Writes benchmarks/results/tvm_int8_conv.json.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from edgecnn.core.fileio import write_json  # noqa: E402
from edgecnn.core.progress import console  # noqa: E402
from tvm_vs_ort import CACHE, MODELS, RESULTS, machine, make_onnx, measure  # noqa: E402


def int8_target(path: Path) -> Path:
    from edgecnn.compiler import targets

    raw = targets.load("host").raw
    path.write_text(yaml.safe_dump({**raw, "name": "host-int8conv",
                                    "options": {**raw.get("options", {}), "int8_conv": True}}))
    return path


def bench_model(name: str, args) -> dict:
    from edgecnn import compiler
    from edgecnn.core import manifest
    from edgecnn.backends import tvm as tvm_backend
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.quantize import quantize

    fp32 = make_onnx(name)
    work = CACHE / name
    (work / "recipe.yaml").write_text((ROOT / MODELS[name]["recipe"]).read_text())  # calibrates on its val split
    qdq = Path(quantize(work, work / "int8", calib=64, sensitivity=0, limit=500)["files"]["onnx"])
    builds = {"tvm_fp32": compiler.compile_model(fp32, "host", out=work / "build-fp32", batch=1),
              "tvm_int8_fakequant": compiler.compile_model(qdq, "host", out=work / "build-int8", batch=1),
              "tvm_int8_conv": compiler.compile_model(qdq, str(int8_target(work / "host-int8conv.yaml")),
                                                   out=work / "build-int8conv", batch=1)}
    subjects = {"onnxruntime_fp32": OrtRunner(fp32, threads=args.threads),
                "onnxruntime_int8": OrtRunner(qdq, threads=args.threads),
                **{k: tvm_backend.load(b, manifest.read(b), threads=args.threads) for k, b in builds.items()}}
    x = np.random.default_rng(0).standard_normal([1, *subjects["onnxruntime_fp32"].input_shape]).astype(np.float32)
    diff = float(np.abs(subjects["tvm_int8_conv"].run(x)["logits"] - subjects["tvm_int8_fakequant"].run(x)["logits"]).max())
    rounds = measure(subjects, x, args.repeats, args.seconds)
    med = {k: float(np.median(v)) for k, v in rounds.items()}
    ratio = float(np.median(np.array(rounds["tvm_int8_conv"]) / np.array(rounds["tvm_int8_fakequant"])))
    for k, ms in med.items():
        console.print(f"  {name:18s} {k:22s} {ms:9.3f} ms")
    console.print(f"  {name}: int8 conv / fake-quant {ratio:.2f}, max |logit difference| {diff:.3g}")
    return {"model": name, "median_ms": med, "int8conv_over_fakequant": ratio, "max_abs_diff_int8conv_vs_fakequant": diff,
            "rounds_ms": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet5_28,mobilenet_v2_28")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    report = {"machine": machine(), "threads": args.threads, "results": [bench_model(m, args) for m in args.models.split(",")]}
    report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    out = RESULTS / "tvm_int8_conv.json"
    write_json(out, report)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
