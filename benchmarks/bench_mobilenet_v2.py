"""MobileNet v2 224x224x3 (ImageNet layout, 1000 classes, untrained) at batch 1: TVM host vs ONNX Runtime vs
PyTorch in one `edgecnn bench` run. Writes benchmarks/results/mobilenet_v2-224-tN.json and .png (N threads).

    .venv/bin/python benchmarks/bench_mobilenet_v2.py [--runs 50] [--threads N] [--work DIR]

By default the TVM build is untuned, so it is far slower than ONNX Runtime; `--build DIR` benches another
build of the same model instead, e.g. the MetaSchedule-tuned one benchmarks/tvm_vs_ort.py leaves in
.cache/tvm_vs_ort/mobilenet_v2_224/build-host-nhwc-tuned (results then go to ...-tuned-tN.json). Latency
does not depend on the weights, so an untrained model measures the same as a trained one.
"""

import argparse
from pathlib import Path

import torch

from edgecnn import bench, compiler, export
from edgecnn.bench import report as benchreport
from edgecnn.train import checkpoint, recipe
from edgecnn.core.progress import console

RESULTS = Path(__file__).resolve().parent / "results"
IMAGENET = {"input_size": 224, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def make_build(work: Path) -> Path:
    """Checkpoint -> ONNX -> TVM host build (reused when already there)."""
    build = work / "build-host-fp32"
    if (build / "manifest.json").exists():
        return build
    rec = recipe.parse({"name": "mobilenet_v2-224", "model": {"name": "mobilenet_v2"}, "data": IMAGENET})
    spec = checkpoint.model_spec(rec, 1000, [f"class {i}" for i in range(1000)])
    torch.manual_seed(0)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint.save(work / "model.pt", checkpoint.build_model(spec), spec)
    return compiler.compile_model(export.export(work), "host", out=build)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="default: the usable CPU cores")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-mobilenet_v2-224"))
    ap.add_argument("--build", type=Path, default=None, help="bench this build of MobileNet v2 224 instead")
    args = ap.parse_args()
    build = args.build or make_build(args.work)
    RESULTS.mkdir(exist_ok=True)
    threads = args.threads or bench.usable_cores()
    report = bench.bench(build, [1], args.warmup, args.runs, None, threads, ["onnxruntime", "torch"],
                         RESULTS / f"mobilenet_v2-224{'-tuned' if args.build else ''}-t{threads}.json")
    console.print(benchreport.table(report))
    console.print(f"load average at start: {report['system']['load_avg_1min']}; results in {RESULTS}")


if __name__ == "__main__":
    main()
