"""The README's model table: every registered model's parameters, MACs (counted from its exported ONNX by
edgecnn.macs), Fashion-MNIST accuracy where a recipe has been trained, and host latency per backend.

    .venv/bin/python benchmarks/model_table.py [--models a,b] [--runs-dir /work/runs] [--work DIR]
    .venv/bin/python benchmarks/model_table.py --table-only      # regenerate the README block from the JSON

Latency: batch 1, 2 threads, ONNX Runtime vs TVM host (untuned), measured side by side by `edgecnn.bench`
(each in a fresh process, one after the other in one run; TVM/ORT is the ratio). Models run at their
default input: 224x224x3 with 1000 classes (the ImageNet layout), LeNet-5 at 28x28x1 with 10 classes;
untrained weights (latency does not depend on them). Each trained recipe (RUNS_DIR/<recipe name>) also gets
a row at its own configuration: test top-1 (PyTorch), TVM host parity on the full test set (in the JSON).
Results merge into benchmarks/results/model_table.json (re-run a subset with --models); the markdown goes
between the README markers.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml

from edgecnn import bench, compiler, export, models, verify
from edgecnn.core import manifest
from edgecnn.models import checkpoint
from edgecnn.train import recipe
from edgecnn.export import macs
from edgecnn.core.fileio import write_json
from readme import replace_block
from edgecnn.core.progress import console

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "model_table.json"
MARKERS = ("<!-- model-table:start -->", "<!-- model-table:end -->")
IMAGENET = {"input_size": 224, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SMALL = {"input_size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}
THREADS = 2


def default_input(name: str) -> tuple[dict, int]:
    return (SMALL, 10) if name == "lenet5" else (IMAGENET, 1000)


def export_untrained(name: str, work: Path) -> Path:
    data, classes = default_input(name)
    rec = recipe.parse({"name": name, "model": {"name": name}, "data": data})
    spec = checkpoint.model_spec(rec, classes, [str(i) for i in range(classes)])
    torch.manual_seed(0)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint.save(work / "model.pt", checkpoint.build_model(spec), spec)
    return export.export(work, work / "model.onnx")


def latency(onnx_path: Path, est_macs: int) -> dict:
    """TVM host build, then TVM and ONNX Runtime timed side by side; p50 in ms and the ratio."""
    t0 = time.perf_counter()
    build = compiler.compile_model(onnx_path, "host", out=onnx_path.parent / "build-host-fp32")
    compile_s = time.perf_counter() - t0
    runs = max(5, min(50, int(20 / max(est_macs / 2e9, 1e-3))))  # untuned TVM: ~2 GMAC/s here
    report = bench.bench(build, batches=[1], warmup=2, runs=runs, threads=THREADS, compare=["onnxruntime"], plot=False)
    p50 = {k: r["batches"]["1"]["p50_ms"] for k, r in report["results"].items()}
    return {"onnxruntime_ms": p50["onnxruntime"], "tvm_ms": p50["tvm"], "tvm_over_ort": p50["tvm"] / p50["onnxruntime"],
            "schedules": manifest.read(build)["artifact"]["schedules"], "runs": runs, "tvm_compile_s": compile_s,
            "load_avg_1min": report["system"]["load_avg_1min"],
            "cpu": report["system"]["cpu"], "build": str(build)}


def model_row(name: str, work: Path) -> dict:
    data, classes = default_input(name)
    onnx_path = export_untrained(name, work / name)
    counted = macs.count(onnx_path)
    net = models.create(name, num_classes=classes, in_channels=data["channels"], input_size=data["input_size"])
    return {"model": name, "input": counted.input_shape, "classes": classes, "params": models.count_params(net),
            "macs": counted.macs, **latency(onnx_path, counted.macs)}


def recipe_row(path: Path, runs_dir: Path, work: Path) -> dict | None:
    rec = recipe.load(path)
    run = runs_dir / rec.name
    if not (run / "metrics.json").exists():
        return None
    metrics = json.loads((run / "metrics.json").read_text())
    trained = yaml.safe_load((run / "recipe.yaml").read_text())
    onnx_path = export.export(run, work / rec.name / "model.onnx")  # never writes into the run directory
    counted = macs.count(onnx_path)
    row = {"recipe": rec.name, "model": rec.model.name, "options": {k: v for k, v in trained["model"].items()
                                                                    if k != "name"},
           "input": counted.input_shape, "params": models.count_params(checkpoint.load(run)[0]),
           "macs": counted.macs, "test_top1": metrics["test_top1"], "epochs": trained["schedule"]["epochs"],
           "train_minutes": metrics["train_seconds"] / 60, **latency(onnx_path, counted.macs)}
    report = verify.verify(row["build"], "torch", data="test")["outputs"]["logits"]
    row["parity"] = {k: report[k] for k in ("samples", "max_abs", "min_cosine", "top1_agreement", "top1_candidate")}
    return row


def fmt_count(n: int) -> str:
    return macs.human(n).replace(" ", "\u00a0")


def fmt_ms(ms: float) -> str:
    return f"{ms:.{3 if ms < 1 else 2 if ms < 100 else 0}f}\u00a0ms"


TUNED = {"mobilenet_v1": "mobilenet_v1_224", "mobilenet_v2": "mobilenet_v2_224"}  # model -> tvm_vs_ort.py's name


def tuned_ratios() -> dict[str, str]:
    """model -> 'ratio (minutes)' of its tuned TVM build in benchmarks/results/tvm_vs_ort.json, where tuned."""
    path = ROOT / "benchmarks" / "results" / "tvm_vs_ort.json"
    found = {r["model"]: r for r in json.loads(path.read_text())["results"]} if path.exists() else {}
    out = {}
    for model, name in TUNED.items():
        r = found.get(name, {})
        keys = [k for k in r.get("ratio_vs_onnxruntime", {}) if k.startswith("tvm tuned")]
        if keys:
            out[model] = "; ".join(f"{r['ratio_vs_onnxruntime'][k]:.2f}x ({r['tuning'][k]['minutes']:g} min)"
                                   for k in keys)
    return out


def models_table(results: dict) -> list[str]:
    """Every model's size and cost; latencies only from rows measured with edgecnn's default schedules
    (`schedules` in the row: older rows timed TVM's unscheduled loops and no longer apply)."""
    rows = ["| model | input | params | MACs | Fashion-MNIST top-1 (recipe below) | ONNX Runtime "
            "| TVM host (untuned) | untuned / ORT | tuned / ORT |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    trained, tuned = {r["model"]: r for r in results["recipes"].values()}, tuned_ratios()
    for name in sorted(results["models"]):
        r = results["models"][name]
        acc = f"{trained[name]['test_top1']:.2f}%" if name in trained else "-"
        timed = [fmt_ms(r["onnxruntime_ms"]), fmt_ms(r["tvm_ms"]), f"{r['tvm_over_ort']:.2f}x"] \
            if r.get("schedules") else ["not re-measured"] * 3
        rows.append(f"| `{name}` | {'x'.join(map(str, r['input'][1:]))} | {r['params']:,} | {fmt_count(r['macs'])} "
                    f"| {acc} | {' | '.join(timed)} | {tuned.get(name, '-')} |")
    return rows


def recipes_table(results: dict) -> list[str]:
    rows = ["| recipe | options | epochs trained | params | MACs | test top-1 |", "|---|---|---:|---:|---:|---:|"]
    for name in sorted(results["recipes"]):
        r = results["recipes"][name]
        opts = ", ".join(f"{k} {v}" for k, v in r["options"].items() if k not in ("num_classes", "in_channels"))
        path = ROOT / "recipes" / f"{name}.yaml"
        planned = yaml.safe_load(path.read_text())["schedule"]["epochs"] if path.exists() else r["epochs"]
        epochs = r["epochs"] if planned == r["epochs"] else f"{r['epochs']} (the recipe: {planned})"
        rows.append(f"| `{name}` | {opts} | {epochs} | {r['params']:,} | {fmt_count(r['macs'])} "
                    f"| {r['test_top1']:.2f}% |")
    return rows


def stale_note(results: dict) -> str:
    if all(r.get("schedules") for r in results["models"].values()):
        return ""
    return ("'not re-measured': timed before edgecnn's default schedules (TVM's plain loops then, 9-66x ONNX "
            "Runtime; that no longer applies); rerun `benchmarks/model_table.py --models NAME`. ")


def markdown(results: dict) -> str:
    rows = [r for r in results["models"].values() if r.get("schedules")] or list(results["models"].values())
    cpus = ", ".join(sorted({r["cpu"] for r in rows}))
    loads = [r["load_avg_1min"] for r in rows]
    return "\n".join([
        *models_table(results), "",
        stale_note(results) + "The models of `benchmarks/tvm_vs_ort.py` are measured side by side in the TVM section's table. "
        f"Generated by `benchmarks/model_table.py` ({cpus}; batch 1, {THREADS} threads, p50 of `edgecnn bench "
        f"--compare onnxruntime`, each backend in its own process; 1-minute load average {min(loads):.1f} to "
        f"{max(loads):.1f} during the runs). Tuned: `edgecnn tune --minutes M`, from `benchmarks/tvm_vs_ort.py` "
        "(models it tuned; '-': not tuned in that run). MACs: Conv/Gemm/MatMul multiply-adds counted from the "
        "exported ONNX (`edgecnn info`).", "",
        "Fashion-MNIST recipes, the trained models at 28x28x1 (test top-1 of PyTorch): the runs `benchmarks/"
        "model_table.py` read from `--runs-dir` (RUNS_DIR/<recipe>, trained by `edgecnn train`), each with the epochs "
        "it was trained (and the recipe's own where that differs); their latency, untuned and tuned, is in the TVM "
        "vs ONNX Runtime table (section TVM below):", "", *recipes_table(results)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated subset (default: all registered; '' for none)")
    ap.add_argument("--recipes", default="recipes/*-fashion.yaml",
                    help="glob of recipes whose runs to report ('' for none)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "model-table")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--table-only", action="store_true", help="only regenerate the README block from the JSON")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(1)  # torch only builds, exports and checks here; the timed backends set their own
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"models": {}, "recipes": {}}
    if not args.table_only:
        for name in models.names() if args.models is None else [n for n in args.models.split(",") if n]:
            console.rule(name)
            results["models"][name] = model_row(name, args.work)
            write_json(RESULTS, results)
        for path in sorted(ROOT.glob(args.recipes)) if args.recipes else []:
            console.rule(path.name)
            row = recipe_row(path, args.runs_dir, args.work)
            if row:
                results["recipes"][row["recipe"]] = row
                write_json(RESULTS, results)
    replace_block(args.readme, MARKERS, markdown(results))
    console.print(markdown(results))


if __name__ == "__main__":
    main()
