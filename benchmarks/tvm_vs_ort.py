"""Tuned TVM vs ONNX Runtime on this CPU, side by side in one process, 2 threads each, batch 1, fp32.

    .venv/bin/python benchmarks/tvm_vs_ort.py [--models mobilenet_v2_224,lenet5_28,...] [--target host,...]
        [--trials N] [--repeats 5] [--seconds 1]

For each model: an untrained checkpoint (latency does not depend on the weights) -> edgecnn export ->
edgecnn compile (untuned) -> edgecnn tune (its database is reused when it is already there, so a second
run only measures) -> edgecnn compile --tune-db (timed). Then ONNX Runtime, untuned and tuned TVM run
interleaved, `--repeats` rounds of about `--seconds` each; the medians and the TVM / ONNX Runtime ratio
of each round are reported (median over rounds), against the faster of ONNX Runtime's two thread modes
(spinning, its default, and not spinning) in that round. TVM_NUM_THREADS and intra_op_num_threads are both 2.
Writes benchmarks/results/tvm_vs_ort.json and .png. Models, ONNX files and tuning databases are kept
under .cache/tvm_vs_ort/ (git-ignored).
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM's thread pool starts
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgecnn.core.fileio import write_json  # noqa: E402
from edgecnn.core.progress import console  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / ".cache" / "tvm_vs_ort"
IMAGENET = {"input_size": 224, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# model -> recipe (or ImageNet layout), classes, default trials and per-kernel cap
MODELS = {
    "mobilenet_v2_224": {"recipe": {"model": {"name": "mobilenet_v2"}, "data": IMAGENET}, "classes": 1000,
                         "trials": 1500, "per_task": 64},
    "lenet5_28": {"recipe": "recipes/lenet5-fashion.yaml", "classes": 10, "trials": 100, "per_task": 32},
    "mobilenet_v1_28": {"recipe": "recipes/mobilenet_v1-fashion.yaml", "classes": 10, "trials": 400, "per_task": 32},
    "mobilenet_v2_28": {"recipe": "recipes/mobilenet_v2-fashion.yaml", "classes": 10, "trials": 600, "per_task": 32},
}


def make_onnx(name: str) -> Path:
    """An untrained checkpoint with random BatchNorm statistics, exported at batch 1 (made once)."""
    import torch

    from edgecnn.train import checkpoint, recipe
    from edgecnn import export

    out = CACHE / name / "model.onnx"
    if out.exists():
        return out
    cfg = MODELS[name]["recipe"]
    rec = recipe.load(ROOT / cfg) if isinstance(cfg, str) else recipe.parse({"name": name, **cfg})
    spec = checkpoint.model_spec(rec, MODELS[name]["classes"], [str(i) for i in range(MODELS[name]["classes"])])
    torch.manual_seed(0)
    model = checkpoint.build_model(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    (CACHE / name).mkdir(parents=True, exist_ok=True)
    checkpoint.save(CACHE / name / "model.pt", model, spec)
    return export.export(CACHE / name, out, batch=1)


def builds(name: str, onnx: Path, target: str, trials: int | None, per_task: int | None) -> dict:
    """Untuned and tuned TVM builds of one model for one target; tunes only when no database is there."""
    from edgecnn import compiler
    from edgecnn.backends.tvm import tune, tunedb
    from edgecnn.core.errors import EdgecnnError

    tag = Path(target).stem
    db = CACHE / name / f"tune-{tag}"
    untuned = CACHE / name / f"build-{tag}"
    if not (untuned / "manifest.json").exists():
        compiler.compile_model(onnx, target, out=untuned)
    try:
        record = tunedb.check(db, tunedb.expected(onnx, *target_and_spec(target), 1))
    except EdgecnnError:
        console.print(f"[bold]{name}[/]: tuning for {tag}, {trials} trials")
        _, record = tune.tune(onnx, target, trials, db, per_task)
    start = time.monotonic()
    tuned = compiler.compile_model(onnx, target, out=CACHE / name / f"build-{tag}-tuned", tune_db=db)
    return {"untuned": untuned, "tuned": tuned, "compile_with_db_s": round(time.monotonic() - start, 1),
            "trials": record["trials"], "tuning_minutes": round(sum(s["minutes"] for s in record["sessions"]), 1),
            "per_task": record["sessions"][-1]["per_task"], "prepack": record["prepack"],
            **record["target"]["graph"]}


def target_and_spec(target: str):
    from edgecnn.compiler import targets
    from edgecnn.backends import tvm as tvm_backend

    tgt = targets.load(target)
    return tgt, tvm_backend.resolve_target(tgt)


def time_ms(runner, x: np.ndarray, seconds: float) -> float:
    """Median of back-to-back runs over about `seconds` (at least 5 runs, after 3 warm-up runs)."""
    for _ in range(3):
        runner.run(x)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < 5 or (time.perf_counter() < end and len(times) < 2000):
        t0 = time.perf_counter()
        runner.run(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def measure(subjects: dict, x: np.ndarray, repeats: int, seconds: float) -> dict[str, list[float]]:
    """Rounds of every subject in turn: a slow minute of the shared machine hits them all alike."""
    rounds: dict[str, list[float]] = {k: [] for k in subjects}
    for _ in range(repeats):
        for key, runner in subjects.items():
            rounds[key].append(time_ms(runner, x, seconds))
    return rounds


class OrtNoSpin:
    """ONNX Runtime with its intra-op threads sleeping instead of spinning between ops: on a machine
    shared with other jobs a spinning thread burns the slice the other one waits for."""

    def __init__(self, onnx: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> dict:
        return {"logits": self.session.run(None, {"input": x})[0]}


def bench_model(name: str, targets_: list[str], args) -> dict:
    from edgecnn.compiler import manifest
    from edgecnn.backends import tvm as tvm_backend
    from edgecnn.backends.onnxruntime import OrtRunner

    onnx = make_onnx(name)
    info = {t: builds(name, onnx, t, args.trials or MODELS[name]["trials"], args.per_task or MODELS[name]["per_task"])
            for t in targets_}
    subjects = {"onnxruntime": OrtRunner(onnx, threads=args.threads),
                "onnxruntime_nospin": OrtNoSpin(onnx, args.threads)}
    for t, b in info.items():
        for kind in ("untuned", "tuned"):
            subjects[f"tvm_{kind}:{Path(t).stem}"] = tvm_backend.load(b[kind], manifest.read(b[kind]), threads=args.threads)
    x = np.random.default_rng(0).standard_normal([1, *subjects["onnxruntime"].input_shape]).astype(np.float32)
    rounds = measure(subjects, x, args.repeats, args.seconds)
    ort = np.minimum(rounds["onnxruntime"], rounds["onnxruntime_nospin"])  # the faster ORT of each round
    result = {"model": name, "input": [1, *map(int, x.shape[1:])], "median_ms": {k: float(np.median(v)) for k, v in rounds.items()},
              "ratio_vs_onnxruntime": {k: float(np.median(np.array(v) / ort)) for k, v in rounds.items()
                                       if not k.startswith("onnxruntime")},
              "rounds_ms": rounds,
              "builds": {Path(t).stem: {k: str(v) if isinstance(v, Path) else v for k, v in b.items()} for t, b in info.items()}}
    for k, ms in result["median_ms"].items():
        ratio = result["ratio_vs_onnxruntime"].get(k)
        console.print(f"  {name:18s} {k:26s} {ms:9.3f} ms" + (f"  {ratio:.2f}x ONNX Runtime" if ratio else ""))
    return result


def plot(results: list[dict], path: Path) -> None:
    """Bars per model (log scale: untuned TVM is tens of times slower), the tuned ratio written on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results[0]["median_ms"])
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(2.2 + 2.4 * len(results), 4.5))
    for i, key in enumerate(keys):
        xs = [j + i * width for j in range(len(results))]
        ms = [r["median_ms"][key] for r in results]
        ax.bar(xs, ms, width, label=key.replace("_", " "))
        for xpos, r in zip(xs, results):
            if key.startswith("tvm_tuned"):
                ax.text(xpos, r["median_ms"][key] * 1.08, f"{r['ratio_vs_onnxruntime'][key]:.2f}x",
                        ha="center", fontsize=8)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(results))], [r["model"] for r in results])
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (median, batch 1, 2 threads)")
    ax.set_title("TVM (MetaSchedule-tuned) vs ONNX Runtime, same process; label: TVM / ORT")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine() -> dict:
    from importlib import metadata

    from edgecnn.backends.tvm import tunedb

    return {"cpu": tunedb.host_cpu(), "cores": os.cpu_count(), "load_avg_1min_start": os.getloadavg()[0],
            "versions": {p: metadata.version(p) for p in ("onnxruntime", "apache-tvm", "apache-tvm-ffi")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    ap.add_argument("--target", default="host", help="TVM targets (names or YAML paths), comma-separated")
    ap.add_argument("--trials", type=int, default=None, help="tuning trials (default per model)")
    ap.add_argument("--per-task", type=int, default=None, help="trials cap per kernel (default per model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="per subject per round")
    ap.add_argument("--out", type=Path, default=None, help="default results/tvm_vs_ort.json (-tN for N != 2 threads)")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    args.out = args.out or RESULTS / ("tvm_vs_ort.json" if args.threads == 2 else f"tvm_vs_ort-t{args.threads}.json")
    report = {"machine": machine(), "threads": args.threads, "repeats": args.repeats, "results": []}
    for name in args.models.split(","):
        report["results"].append(bench_model(name, args.target.split(","), args))
    report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    plot(report["results"], args.out.with_suffix(".png"))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
