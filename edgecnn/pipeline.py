"""edgecnn run: the whole chain for one recipe and target, with one summary at the end."""

import time
from dataclasses import dataclass
from pathlib import Path

from edgecnn.train import recipe as recipe_mod
from edgecnn.core.progress import console


class Stages:
    """Runs named stages, prints a header for each, and records how long each took."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - t0
        return result


@dataclass
class Plan:
    """One `edgecnn run`: where it works and what every precision's deploy() shares."""

    stage: Stages
    run_dir: Path
    onnx_path: Path
    target: str
    limit: int | None


def run(recipe_path: str | Path, *, target: str = "host", precision: str | None = None, out: str | Path | None = None,
        epochs: int | None = None, limit: int | None = None, reuse: bool = False) -> dict:
    """train -> export -> compile -> verify -> bench -> bundle; returns the summary (also printed as a table)."""
    from edgecnn import export, train
    from edgecnn.deploy import bundle
    from edgecnn.models import checkpoint

    rec = recipe_mod.load(recipe_path)
    precisions = precision_list(precision, target)
    precision = precisions[0]
    run_dir = Path(out or f"runs/{rec.name}")
    stage = Stages()
    if reuse and checkpoint.resolve(run_dir).exists():
        console.print(f"reusing the trained model in {run_dir}")
        metrics = {"test_top1": train.eval_run(run_dir, limit)["top1"]}
    else:
        metrics = stage("train", train.train, rec, run_dir, epochs=epochs, limit=limit)
    plan = Plan(stage, run_dir, stage("export", export.export, run_dir), target, limit)
    first = deploy(plan, precision, "")
    bundle_path = stage("bundle", bundle.pack, Path(first["build"]))
    summary = {"recipe": rec.name, "model": rec.model.name, "run_dir": str(run_dir), "target": target,
               "precision": precision, "test_top1": metrics["test_top1"], **first, "bundle": str(bundle_path),
               "bundle_bytes": bundle_path.stat().st_size, "seconds": stage.seconds}
    summary["beside"] = {p: deploy(plan, p, f" {p}") for p in precisions[1:]}
    console.print(summary_table(summary))
    if summary["beside"]:
        console.print(side_by_side(summary))
    return summary


def summary_table(s: dict):
    from rich.table import Table

    from edgecnn.core.progress import fmt

    p = s["parity"]
    t = Table(title=f"edgecnn run: {s['recipe']} -> {s['target']} ({s['precision']})", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("test top-1 (PyTorch)", f"{s['test_top1']:.2f}%")
    t.add_row(f"test top-1 ({s['target']})", f"{p.get('top1_candidate', float('nan')):.2f}%")
    t.add_row(f"parity vs {REFERENCE[p['against']]}",
              f"{'pass' if p['passed'] else 'FAIL'}: max abs {fmt(p['max_abs'])}, "
              f"top-1 agreement {p.get('top1_agreement', 0):.2f}% on {p['data']}")
    lat = s["latency"]
    t.add_row(f"latency ({s['target']}, batch {lat['batch']})",
              f"{p50_text(lat)}, p99 {fmt(lat['p99_ms'])} ms ({lat['runs']} runs)")
    t.add_row("build", s["build"])
    t.add_row("bundle", f"{s['bundle']} ({s['bundle_bytes'] / 1e6:.2f} MB)")
    t.add_row("stage times", ", ".join(f"{k} {v:.0f} s" for k, v in s["seconds"].items()))
    return t


REFERENCE = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "fakequant": "fake-quant"}


def precision_list(precision: str | None, target: str) -> list[str]:
    """'fp32,int8' -> both; None -> the target's precision, and int8 beside it where the target takes int8."""
    from edgecnn.compiler import targets
    from edgecnn.core.errors import EdgecnnError

    if precision:
        wanted = [p.strip() for p in precision.split(",") if p.strip()]
        bad = [p for p in wanted if p not in targets.PRECISIONS]
        if bad or not wanted:
            raise EdgecnnError(f"--precision {precision}: use {', '.join(targets.PRECISIONS)} or a comma list")
        return list(dict.fromkeys(wanted))
    tgt = targets.load(target)
    return [tgt.precision, *(["int8"] if "int8" in tgt.precisions and tgt.precision != "int8" else [])]


def quantized(run_dir: Path, limit: int | None) -> Path:
    """int8 PTQ with the default settings: RUN_DIR/model.int8.onnx and quant.json."""
    from edgecnn.quantize import quantize, report

    rep = quantize(run_dir, limit=limit)
    console.print(report.accuracy_table(rep))
    return Path(rep["files"]["onnx"])


def deploy(plan: Plan, precision: str, label: str) -> dict:
    """One precision of the model: (quantize) -> compile -> verify -> bench; `label` tells the stages apart."""
    from edgecnn import bench, compiler, verify

    stage = plan.stage
    source = stage(f"quantize{label}", quantized, plan.run_dir, plan.limit) if precision == "int8" else plan.onnx_path
    build = stage(f"compile{label}", compiler.compile_model, source, plan.target, precision,
                  plan.run_dir / f"build-{plan.target}-{precision}")
    report = stage(f"verify{label}", verify.verify, build, None, data="test", limit=plan.limit)
    latency = with_baseline(stage(f"bench{label}", bench.bench, build, compare=["onnxruntime"]))
    return {"build": str(build), "parity": verify.summary(report), "latency": latency,
            "onnx_bytes": Path(source).stat().st_size}


def with_baseline(report: dict) -> dict:
    """The build's latency at its smallest batch, with ONNX Runtime's p50 beside it (absent for an ONNX Runtime
    build: it is the baseline): for an int8 build ONNX Runtime's int8 in its own Q/DQ form, the one it runs fast;
    and the fp32 build's p50 when bench found one (bench.baselines)."""
    from edgecnn import bench
    from edgecnn.bench import baselines

    latency = dict(bench.build_latency(report))
    b = str(latency["batch"])
    own_form = baselines.ORT_INT8 in report["results"]
    ort = report["results"].get(baselines.ORT_INT8 if own_form else "onnxruntime")
    if ort and report["backend"] != "onnxruntime":
        latency["onnxruntime_p50_ms"] = ort["batches"][b]["p50_ms"]
        latency["vs_onnxruntime"] = latency["p50_ms"] / latency["onnxruntime_p50_ms"]
        latency["onnxruntime_label"] = "ONNX Runtime int8" if own_form else \
            "ONNX Runtime, same Q/DQ graph" if report["precision"] == "int8" else "ONNX Runtime"
    fp32 = report["results"].get(baselines.FP32_BUILD)
    if fp32:
        latency["fp32_build_p50_ms"] = fp32["batches"][b]["p50_ms"]
        latency["vs_fp32_build"] = latency["p50_ms"] / latency["fp32_build_p50_ms"]
    return latency


def p50_text(lat: dict) -> str:
    """'p50 0.012 ms (ONNX Runtime int8 0.022 ms: 0.55x; fp32 build 0.015 ms: 0.80x)'."""
    from edgecnn.core.progress import fmt

    beside = []
    if "onnxruntime_p50_ms" in lat:
        beside.append(f"{lat.get('onnxruntime_label', 'ONNX Runtime')} {fmt(lat['onnxruntime_p50_ms'])} ms: "
                      f"{lat['vs_onnxruntime']:.2f}x")
    if "fp32_build_p50_ms" in lat:
        beside.append(f"fp32 build {fmt(lat['fp32_build_p50_ms'])} ms: {lat['vs_fp32_build']:.2f}x")
    return f"p50 {fmt(lat['p50_ms'])} ms" + (f" ({'; '.join(beside)})" if beside else "")


def side_by_side(s: dict):
    """One column per precision: top-1 of the build, drop vs fp32, parity, latency, ONNX size."""
    from rich.table import Table

    cols = {s["precision"]: {"parity": s["parity"], "latency": s["latency"], "build": s["build"],
                             "onnx_bytes": s["onnx_bytes"]}, **s["beside"]}
    t = Table(title=f"{s['recipe']} on {s['target']}: {' vs '.join(cols)}")
    t.add_column("")
    for name in cols:
        t.add_column(name, justify="right")

    def row(label, cell):
        t.add_row(label, *(cell(c) for c in cols.values()))

    row(f"test top-1 ({s['target']})", lambda c: f"{c['parity'].get('top1_candidate', float('nan')):.2f}%")
    row("drop vs fp32 (points)", lambda c: f"{c['parity']['fp32']['top1_drop']:.2f}"
        if "top1_drop" in c["parity"].get("fp32", {}) else "")
    row("parity", lambda c: f"{'pass' if c['parity']['passed'] else 'FAIL'} vs {REFERENCE[c['parity']['against']]}, "
                            f"top-1 agreement {c['parity'].get('top1_agreement', 0):.2f}%")
    row("latency", lambda c: p50_text(c["latency"]) if c.get("latency") else "-")
    row("ONNX size", lambda c: f"{c['onnx_bytes'] / 1e3:.0f} kB")
    return t
