"""int8 on this CPU: ONNX Runtime fp32 and int8 (ORT's own Q/DQ form), TVM fp32 and int8, side by side.

    .venv/bin/python benchmarks/int8.py [--models lenet5_28,mobilenet_v2_28,mobilenet_v2_224,mobilenet_v1_224]
        [--repeats 9] [--seconds 0.3] [--fakequant]

Each model: an untrained checkpoint with random BatchNorm statistics (as benchmarks/tvm_vs_ort.py makes them)
-> PTQ (per-channel weights, minmax on 32 random images) in two Q/DQ forms: symmetric (edgecnn's default,
what TVM's int8 convs take) and ONNX Runtime's own (asymmetric uint8 activations, its fastest kernels).
TVM builds for `host` (int8: the target's int8 path, `int8_conv` on unless --fakequant adds the float
fake-quant build beside it). All subjects run interleaved in a new random order each round, batch 1,
2 threads each; the medians over rounds and the per-round ratios are reported, with the CPU, its LLVM name
and the int8 instruction path of the TVM build. Agreement: the TVM int8 build against ONNX Runtime running
the same symmetric Q/DQ graph on 8 random inputs (top-1 and the largest logit difference).
Writes benchmarks/results/int8.json and int8.png; models and builds stay under .cache/int8/ and are reused
(delete .cache/int8/*/build-* after changing the compiler).
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM's thread pool starts
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from edgecnn.core.fileio import write_json  # noqa: E402
from edgecnn.core.progress import console  # noqa: E402
from tvm_vs_ort import MODELS, machine, make_onnx, measure  # noqa: E402
from tvm_vs_ort import RESULTS as RESULTS_DIR  # noqa: E402

CACHE = ROOT / ".cache" / "int8"
RESULTS = RESULTS_DIR / "int8.json"
MARKERS = ("<!-- int8-speed:start -->", "<!-- int8-speed:end -->")
GOAL_VS_ORT_INT8, GOAL_VS_TVM_FP32 = 1.0, 0.5  # issue 24: TVM int8 <= ORT int8; <= 0.5x TVM fp32 at 224 (VNNI)
DEFAULT_MODELS = "mobilenet_v2_224,mobilenet_v1_224,mobilenet_v2_28,lenet5_28"


def quantized(fp32: Path, form: str) -> Path:
    """PTQ of `fp32` in Q/DQ form `form` (made once)."""
    from edgecnn.core.onnx_utils import input_info
    from edgecnn.qdq import ptq
    import onnx

    out = fp32.parent / f"model.{form}.int8.onnx"
    if out.exists():
        return out
    scheme = ptq.Scheme(per_channel=True, form=form, reduce_range=False)
    chw = input_info(onnx.load(str(fp32)))[1]
    x = np.random.default_rng(1).standard_normal((32, *chw)).astype(np.float32)
    ranges = ptq.calibrate(fp32, x, algo="minmax", work=out.parent, form=scheme.placement)
    return Path(ptq.quantize_onnx(fp32, out, ranges, scheme, work=out.parent))


def target(name: str, int8_conv: bool) -> str:
    """The host target with `int8_conv` set (a YAML beside the builds)."""
    from edgecnn.compiler import targets

    raw = targets.load("host").raw
    path = CACHE / f"host-int8conv-{int(int8_conv)}.yaml"
    path.write_text(yaml.safe_dump({**raw, "name": name, "options": {**raw.get("options", {}), "int8_conv": int8_conv}}))
    return str(path)


def built(onnx: Path, out: Path, tgt: str = "host") -> Path:
    from edgecnn import compiler

    if not (out / "manifest.json").exists():
        compiler.compile_model(onnx, tgt, out=out, batch=1)
    return out


def agreement(tvm_int8, ort_same_graph, shape) -> dict:
    x = np.random.default_rng(2).standard_normal((8, *shape)).astype(np.float32)
    a = np.concatenate([tvm_int8.run(x[i:i + 1])["logits"] for i in range(len(x))])
    b = np.concatenate([ort_same_graph.run(x[i:i + 1])["logits"] for i in range(len(x))])
    return {"top1_agree": float(np.mean(a.argmax(1) == b.argmax(1))), "max_abs_logit_diff": float(np.abs(a - b).max()),
            "logit_range": float(np.abs(b).max())}


def bench_model(name: str, args) -> dict:
    from edgecnn import backends
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.core import manifest

    src = make_onnx(name)
    work = CACHE / name
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "model.onnx"
    if not fp32.exists():
        fp32.write_bytes(src.read_bytes())
    sym, ort_form = quantized(fp32, "tensorrt"), quantized(fp32, "onnxruntime")
    builds = {"tvm fp32": built(fp32, work / "build-fp32"),
              "tvm int8": built(sym, work / "build-int8", target("host-int8", True))}
    if args.fakequant:
        builds["tvm int8 fakequant"] = built(sym, work / "build-int8-fakequant", target("host-fakequant", False))
    subjects = {"ort fp32": OrtRunner(fp32, threads=args.threads), "ort int8": OrtRunner(ort_form, threads=args.threads)}
    for key, b in builds.items():
        subjects[key] = backends.get("tvm").load(b, manifest.read(b), threads=args.threads)
    shape = subjects["ort fp32"].input_shape
    agree = agreement(subjects["tvm int8"], OrtRunner(sym, threads=args.threads), shape)
    x = np.random.default_rng(0).standard_normal([1, *shape]).astype(np.float32)
    rounds, _ = measure(subjects, x, args.repeats, args.seconds)
    ratio = {f"tvm int8 / {k}": float(np.median(np.array(rounds["tvm int8"]) / np.array(rounds[k])))
             for k in rounds if k != "tvm int8"}
    int8_art = manifest.read(builds["tvm int8"])["artifact"]
    result = {"model": name, "input": [1, *map(int, shape)], "median_ms": {k: float(np.median(v)) for k, v in rounds.items()},
              "ratios": ratio, "agreement_vs_ort_same_qdq_graph": agree, "rounds_ms": rounds,
              "tvm_int8_kernels": int8_art.get("schedules")}
    for k, ms in result["median_ms"].items():
        console.print(f"  {name:18s} {k:20s} {ms:9.3f} ms")
    console.print(f"  {name}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()) + f"; agreement {agree}")
    return result


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    keys = list(dict.fromkeys(k for r in results for k in r["median_ms"]))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(2.2 + 1.8 * len(results), 4.8))
    for i, key in enumerate(keys):
        ax.bar([j + i * width for j in range(len(results))], [r["median_ms"].get(key, 0) for r in results], width,
               label=key)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(results))],
                  [f"{r['model']}\nint8/ORT int8 {r['ratios']['tvm int8 / ort int8']:.2f}x" for r in results], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (median, batch 1, 2 threads)")
    m = report["machine"]
    ax.set_title(f"int8 on {m['cpu']['model_name']} ({m['cpu']['llvm_cpu']}, TVM int8 path: {report['int8_path']})",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def verdict(ratio: float, goal: float) -> str:
    return f"{ratio:.2f}x" + ("" if ratio <= goal else " **missed**")


def markdown(report: dict) -> str:
    """README.md's int8-speed block: each model's medians, its two ratios against their goals, the machine."""
    lines = ["| model | input | ORT fp32 | ORT int8 (its form) | TVM fp32 | TVM int8 | TVM int8 / ORT int8 "
             f"(goal <= {GOAL_VS_ORT_INT8}x) | TVM int8 / TVM fp32 (goal <= {GOAL_VS_TVM_FP32}x at 224) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        ms, ratio = r["median_ms"], r["ratios"]
        vs_fp32 = ratio["tvm int8 / tvm fp32"]
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input'][1:]))} | "
                     + " | ".join(f"{ms[k]:.3f} ms" for k in ("ort fp32", "ort int8", "tvm fp32", "tvm int8"))
                     + f" | {verdict(ratio['tvm int8 / ort int8'], GOAL_VS_ORT_INT8)} | "
                     + (verdict(vs_fp32, GOAL_VS_TVM_FP32) if r["input"][-1] >= 224 else f"{vs_fp32:.2f}x") + " |")
    m = report["machine"]
    return "\n".join(lines) + (
        f"\n\n`benchmarks/int8.py` ({RESULTS.name}, {RESULTS.with_suffix('.png').name}): medians of "
        f"{report['repeats']} interleaved rounds, batch 1, {report['threads']} threads each, random weights, on "
        f"{m['cpu']['model_name']} ({m['cpu']['llvm_cpu']}; TVM int8 path: {report['int8_path']}); 1-minute load "
        f"average {m['load_avg_1min_start']:.1f} at the start, {m['load_avg_1min_end']:.1f} at the end. A ratio "
        "over its goal is marked **missed**.")


def main() -> None:
    from edgecnn.backends.tvm import build
    from edgecnn.backends.tvm.cpu import int8_path
    from edgecnn.compiler import targets

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"from {', '.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--fakequant", action="store_true", help="also the float fake-quant TVM int8 build")
    ap.add_argument("--out", default=str(RESULTS), help="(the default also rewrites README.md's int8-speed block)")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    path = int8_path(build.resolve_target(targets.load("host")))
    report = {"machine": machine(), "threads": args.threads, "repeats": args.repeats,
              "int8_path": f"{path.name} ({path.intrin or 'LLVM widening vector code'})",
              "results": [bench_model(m, args) for m in args.models.split(",")]}
    report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    out = Path(args.out)
    write_json(out, report)
    plot(report, out.with_suffix(".png"))
    console.print(f"wrote {out} and {out.with_suffix('.png').name}")
    if out.resolve() == RESULTS.resolve():
        from readme import replace_block

        replace_block(ROOT / "README.md", MARKERS, markdown(report))


if __name__ == "__main__":
    main()
