"""TVM (untuned and tuned) vs ONNX Runtime on this CPU, side by side in one process, batch 1, fp32, 2 threads.

    .venv/bin/python benchmarks/tvm_vs_ort.py [--models lenet5_28,mobilenet_v2_224,...] [--tune NAME:M[,M2]...]
        [--repeats 15] [--seconds 0.3] [--out results/tvm_vs_ort.json]
    .venv/bin/python benchmarks/tvm_vs_ort.py --table-only     # the README block from the JSON

For each model: an untrained checkpoint with random BatchNorm statistics (latency does not depend on the
weights) -> edgecnn export -> edgecnn compile --target host (untuned: the default schedule rules; timed) and,
for the models given with --tune, edgecnn tune --minutes M (its database is reused when it is there, so
a second run only measures; NAME:30,60 tunes 30 minutes, measures, then tunes 30 more into a copy) ->
edgecnn compile --tune-db. Then ONNX Runtime (spinning, its default, and not spinning) and every TVM build
run interleaved in a fresh random order each round, `--repeats` rounds of about `--seconds` each; each
TVM build's ratio to the faster ONNX Runtime of the round, median over rounds, is the number reported.
TVM_NUM_THREADS and intra_op_num_threads are both 2. Writes results/tvm_vs_ort.json and .png; models,
builds and databases stay under .cache/tvm_vs_ort/ (git-ignored).
"""

import argparse
import functools
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM's thread pool starts
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from edgecnn.core.rounds import interleaved  # noqa: E402
from edgecnn.core.fileio import write_json  # noqa: E402
from edgecnn.core.progress import console  # noqa: E402
from readme import replace_block  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / ".cache" / "tvm_vs_ort"
IMAGENET = {"input_size": 224, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# model -> recipe (a Fashion-MNIST one, or the ImageNet layout) and classes; goal: untuned TVM / ORT
MODELS = {
    "lenet5_28": ("recipes/lenet5-fashion.yaml", 10, 1.0),
    "mobilenet_v1_28": ("recipes/mobilenet_v1-fashion.yaml", 10, 1.5),
    "mobilenet_v2_28": ("recipes/mobilenet_v2-fashion.yaml", 10, 1.5),
    "resnet18_28": ("recipes/resnet18-fashion.yaml", 10, 1.5),
    "googlenet_28": ("recipes/googlenet-fashion.yaml", 10, 1.5),
    "mobilenet_v1_224": ({"model": {"name": "mobilenet_v1"}, "data": IMAGENET}, 1000, 2.0),
    "mobilenet_v2_224": ({"model": {"name": "mobilenet_v2"}, "data": IMAGENET}, 1000, 2.0),
}


def make_onnx(name: str) -> Path:
    """An untrained checkpoint with random BatchNorm statistics, exported at batch 1 (made once)."""
    import torch

    from edgecnn import export
    from edgecnn.models import checkpoint
    from edgecnn.train import recipe

    out = CACHE / name / "model.onnx"
    if out.exists():
        return out
    cfg, classes, _ = MODELS[name]
    rec = recipe.load(ROOT / cfg) if isinstance(cfg, str) else recipe.parse({"name": name, **cfg})
    spec = checkpoint.model_spec(rec, classes, [str(i) for i in range(classes)])
    torch.manual_seed(0)
    model = checkpoint.build_model(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    (CACHE / name).mkdir(parents=True, exist_ok=True)
    checkpoint.save(CACHE / name / "model.pt", model, spec)
    return export.export(CACHE / name, out, batch=1)


COMPILE_S: dict[str, float] = {}  # build folder -> seconds `edgecnn compile` took (this run's builds)


def compiled(onnx: Path, out: Path, tune_db: Path | None = None) -> tuple[Path, float | None]:
    """A host build (made once) and how long `edgecnn compile` took (None: built by an earlier run)."""
    from edgecnn import compiler

    if not (out / "manifest.json").exists():
        start = time.monotonic()
        compiler.compile_model(onnx, "host", out=out, **({"tune_db": tune_db} if tune_db else {}))
        COMPILE_S[str(out)] = round(time.monotonic() - start, 1)
    return out, COMPILE_S.get(str(out))


def tuned_dbs(name: str, onnx: Path, budgets: list[float]) -> list[tuple[float, Path, dict]]:
    """(minutes, database, record) per cumulative budget: each one continues a copy of the previous."""
    from edgecnn.backends.tvm import tune, tunedb
    from edgecnn.compiler import targets

    out, prev_db, prev_min = [], None, 0.0
    for minutes in sorted(budgets):
        db = CACHE / name / f"tune-host-{minutes:g}min"
        if not (db / tunedb.RECORD).exists():
            if prev_db:
                shutil.copytree(prev_db, db, dirs_exist_ok=True)
            console.print(f"[bold]{name}[/]: tuning for {minutes - prev_min:g} more minutes")
            tune.tune(onnx, targets.load("host"), minutes=minutes - prev_min, db=db)
        out.append((minutes, db, tunedb.read_record(db)))
        prev_db, prev_min = db, minutes
    return out


def measure(subjects: dict, x: np.ndarray, repeats: int, seconds: float) -> tuple[dict, dict]:
    """Rounds of every subject (a runner) in a new random order each round: a slow minute hits them all alike
    (edgecnn.core.rounds, as `edgecnn bench --rounds`). Returns (each round's median per subject, every run's
    time per subject), in ms."""
    return interleaved({k: functools.partial(r.run, x) for k, r in subjects.items()}, rounds=repeats,
                       seconds=seconds)


def ort_nospin(onnx: Path, threads: int):
    """ONNX Runtime with its intra-op threads sleeping instead of spinning between ops: on a machine shared with
    other jobs a spinning thread burns the slice the other one waits for."""
    from edgecnn.backends.onnxruntime import NO_SPIN, OrtRunner

    return OrtRunner(onnx, threads, config=NO_SPIN)


def bench_model(name: str, budgets: list[float], args) -> dict:
    from edgecnn import backends
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.core import manifest

    onnx = make_onnx(name)
    untuned, compile_s = compiled(onnx, CACHE / name / "build-host")
    builds = {"tvm untuned": untuned}
    tuning = {}
    for minutes, db, record in tuned_dbs(name, onnx, budgets):
        key = f"tvm tuned {minutes:g} min"
        builds[key], _ = compiled(onnx, CACHE / name / f"build-host-tuned-{minutes:g}min", db)
        tuning[key] = {"minutes": round(sum(s["minutes"] for s in record["sessions"]), 1), "trials": record["trials"],
                       "estimate_ms": record["sessions"][-1]["estimate_ms"],
                       # what the whole-model check measured and kept (default_ms, tuned_ms, final_ms, kept, lost)
                       "model_check": {k: v for k, v in record["sessions"][-1].get("model_check", {}).items()
                                       if k != "steps"}}
    subjects = {"onnxruntime": OrtRunner(onnx, threads=args.threads), "onnxruntime nospin": ort_nospin(onnx, args.threads)}
    for key, build in builds.items():
        subjects[key] = backends.get("tvm").load(build, manifest.read(build), threads=args.threads)
    x = np.random.default_rng(0).standard_normal([1, *subjects["onnxruntime"].input_shape]).astype(np.float32)
    rounds, runs = measure(subjects, x, args.repeats, args.seconds)
    ort = np.minimum(rounds["onnxruntime"], rounds["onnxruntime nospin"])  # the faster ORT of each round
    ratios = {k: np.array(v) / ort for k, v in rounds.items() if k.startswith("tvm")}
    p50 = {k: float(np.percentile(v, 50)) for k, v in runs.items()}
    p99 = {k: float(np.percentile(v, 99)) for k, v in runs.items()}
    ort_p99 = min(p99["onnxruntime"], p99["onnxruntime nospin"])  # the better ORT tail
    result = {"model": name, "input": [1, *map(int, x.shape[1:])], "goal_untuned": MODELS[name][2],
              "median_ms": {k: float(np.median(v)) for k, v in rounds.items()},
              "ratio_vs_onnxruntime": {k: float(np.median(v)) for k, v in ratios.items()},
              # over every run of every round: the tail an application budgets
              "p50_ms": p50, "p99_ms": p99, "runs": {k: len(v) for k, v in runs.items()},
              "p99_ratio_vs_onnxruntime": {k: v / ort_p99 for k, v in p99.items() if k.startswith("tvm")},
              "ratio_p25_p75": {k: [float(np.percentile(v, 25)), float(np.percentile(v, 75))] for k, v in ratios.items()},
              "compile_untuned_s": compile_s, "tuning": tuning, "rounds_ms": rounds,
              "kernels": manifest.read(untuned)["artifact"]["schedules"]}
    for k, ms in result["median_ms"].items():
        ratio, tail = result["ratio_vs_onnxruntime"].get(k), result["p99_ratio_vs_onnxruntime"].get(k)
        console.print(f"  {name:18s} {k:24s} {ms:9.3f} ms  p99 {p99[k]:9.3f} ms"
                      + (f"  {ratio:.2f}x ONNX Runtime (p99 {tail:.2f}x)" if ratio else ""))
    return result


def plot(report: dict, path: Path) -> None:
    """One group of bars per model (log scale), each TVM build's ratio to ONNX Runtime written above it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    keys = list(dict.fromkeys(k for r in results for k in r["median_ms"] if k != "onnxruntime nospin"))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(results), 4.8))
    for i, key in enumerate(keys):
        rows = [(j, r) for j, r in enumerate(results) if key in r["median_ms"]]
        xs = [j + i * width for j, _ in rows]
        ax.bar(xs, [r["median_ms"][key] for _, r in rows], width, label=key)
        for xpos, (_, r) in zip(xs, rows):
            if key in r["ratio_vs_onnxruntime"]:
                ax.text(xpos, r["median_ms"][key] * 1.08, f"{r['ratio_vs_onnxruntime'][key]:.2f}x", ha="center",
                        fontsize=7, rotation=90)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(results))], [r["model"] for r in results],
                  fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (median, batch 1, 2 threads)")
    ax.set_title(f"TVM vs ONNX Runtime on {report['machine']['cpu']['model_name']} "
                 f"({report['machine']['cpu']['llvm_cpu']}); label: TVM / ORT")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine() -> dict:
    from importlib import metadata

    from edgecnn.backends.tvm import tunedb

    return {"cpu": tunedb.host_cpu(), "cores": os.cpu_count(), "load_avg_1min_start": os.getloadavg()[0],
            "versions": {p: metadata.version(p) for p in ("onnxruntime", "apache-tvm", "apache-tvm-ffi")}}


def parse_tune(text: str) -> dict[str, list[float]]:
    """'mobilenet_v2_224:30,60 lenet5_28:5' -> {name: [minutes, ...]}."""
    out = {}
    for item in text.split():
        name, _, minutes = item.partition(":")
        out[name] = [float(m) for m in minutes.split(",") if m]
    return out


MARKERS = ("<!-- tvm-vs-ort:start -->", "<!-- tvm-vs-ort:end -->")


def markdown(report: dict) -> str:
    """The README table: per model ONNX Runtime, untuned and tuned TVM (median ms) and their ratios to ORT."""
    rows = ["| model | input | ONNX Runtime | TVM untuned | untuned / ORT (goal) | TVM tuned | tuned / ORT "
            "| p99 / ORT p99: untuned; tuned | compile (untuned) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        ms, ratio = r["median_ms"], r["ratio_vs_onnxruntime"]
        ort = min(ms["onnxruntime"], ms["onnxruntime nospin"])
        tuned = [k for k in ratio if k.startswith("tvm tuned")]
        goal = r["goal_untuned"]
        verdict = "" if ratio["tvm untuned"] <= goal else " **over the goal**"
        cells = [f"{ms[k]:.3f} ms ({r['tuning'][k]['minutes']:g} min)" for k in tuned] or ["-"]
        tuned_ratio = [f"{ratio[k]:.2f}x" for k in tuned] or ["-"]
        compile_s = f"{r['compile_untuned_s']:.0f} s" if r.get("compile_untuned_s") is not None else "-"
        tail = r.get("p99_ratio_vs_onnxruntime", {})
        tails = "; ".join(f"{tail[k]:.2f}x" for k in ["tvm untuned", *tuned] if k in tail) or "-"
        rows.append(f"| `{r['model']}` | {'x'.join(map(str, r['input'][1:]))} | {ort:.3f} ms | "
                    f"{ms['tvm untuned']:.3f} ms | {ratio['tvm untuned']:.2f}x (<= {goal:g}x){verdict} | "
                    f"{'; '.join(cells)} | {'; '.join(tuned_ratio)} | {tails} | {compile_s} |")
    m = report["machine"]
    rows += ["", f"`benchmarks/tvm_vs_ort.py` on {m['cpu']['model_name']} ({m['cpu']['llvm_cpu']}, {m['cores']} cores; "
                 f"1-minute load average {m['load_avg_1min_start']:.1f} at the start, "
                 f"{m.get('load_avg_1min_end', float('nan')):.1f} at the end): batch 1, fp32, {report['threads']} "
                 f"threads each, median of {report['repeats']} interleaved rounds; ORT is the faster of ONNX "
                 "Runtime spinning (its default) and not spinning in each round; p99 over every run of every "
                 "round, against the better ONNX Runtime p99; untrained weights."]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    ap.add_argument("--tune", default="", help="NAME:MINUTES[,MINUTES] ... (space-separated): tuned builds too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=0.3, help="per subject per round")
    ap.add_argument("--out", type=Path, default=RESULTS / "tvm_vs_ort.json")
    ap.add_argument("--table-only", action="store_true", help="only write the README block from --out")
    args = ap.parse_args()
    if args.table_only:
        import json

        replace_block(ROOT / "README.md", MARKERS, markdown(json.loads(args.out.read_text())))
        return
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    budgets = parse_tune(args.tune)
    names = args.models.split(",")
    for name in names:  # builds and tuning first: the measurements then run without them beside
        onnx = make_onnx(name)
        compiled(onnx, CACHE / name / "build-host")
        tuned_dbs(name, onnx, budgets.get(name, []))
    report = {"machine": machine(), "threads": args.threads, "repeats": args.repeats, "results": []}
    for name in names:
        report["results"].append(bench_model(name, budgets.get(name, []), args))
    report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    plot(report, args.out.with_suffix(".png"))
    replace_block(ROOT / "README.md", MARKERS, markdown(report))
    console.print(markdown(report))
    console.print(f"wrote {args.out}, {args.out.with_suffix('.png')} and the README table")


if __name__ == "__main__":
    main()
