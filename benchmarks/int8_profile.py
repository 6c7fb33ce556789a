"""Where the TVM int8 and fp32 builds spend their time, kernel by kernel (issue 24's levers, by what they cost).

    .venv/bin/python benchmarks/int8_profile.py [--models mobilenet_v2_224,mobilenet_v1_224] [--runs 20]

The models and Q/DQ graphs are benchmarks/int8.py's (.cache/int8/MODEL: model.onnx, model.tensorrt.int8.onnx,
made by that script first). Each is lowered and scheduled as `edgecnn compile` does for `host`, built with the
bytecode VM (the compiled VM calls no instrument) and run `--runs` times with the VM's instrument timing every
kernel call (2 threads); per kernel: the best run's microseconds over all its calls, its rule, calls, multiply-
adds and GMAC/s. The instrument adds a little per call, so the kernels' sum exceeds `edgecnn bench`'s latency.
Writes benchmarks/results/int8_profile.json and prints the table by kernel and by rule.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before TVM's thread pool starts
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from edgecnn.core.fileio import write_json  # noqa: E402
from edgecnn.core.progress import console  # noqa: E402

CACHE = ROOT / ".cache" / "int8"
RESULTS = ROOT / "benchmarks" / "results"


def scheduled_module(onnx_path: Path, target):
    """The host build's scheduled module and its kernel log (name, rule, params), as compile makes them."""
    from edgecnn.backends.tvm import build, frontend, passes

    spec = build.resolve_target(target)
    model = frontend.frontend_model(onnx_path, 1)
    mod = build.lower(passes.prepare(frontend.from_model(model, onnx_path.name), target), spec)
    macs = {gv.name_hint: kernel_macs(f) for gv, f in mod.functions_items() if hasattr(f, "body")}
    mod, log = build.schedule(mod, spec)
    return mod, spec, log, macs


def kernel_macs(func) -> int:
    """Multiply-adds of a PrimFunc's reduction blocks (0 for an elementwise kernel)."""
    from tvm import s_tir

    from edgecnn.backends.tvm.schedules.common import iter_extents, iter_kinds, prod, top_blocks

    try:
        sch = s_tir.Schedule(func)
        return sum(prod(iter_extents(sch, b)) for b in top_blocks(sch) if "R" in iter_kinds(sch, b))
    except Exception:  # noqa: BLE001 - not a schedulable function
        return 0


def profile(mod, spec, runs: int) -> tuple[dict, dict, float]:
    """(kernel -> best microseconds per model run, kernel -> calls, median model ms without instrument)."""
    import tvm
    from tvm import relax

    with tvm.transform.PassContext(opt_level=3):
        ex = relax.build(mod, tvm.target.Target(spec), exec_mode="bytecode")
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    shape = [int(d) for d in mod["main"].params[0].ty.shape]
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"), dev)
    for _ in range(5):
        vm["main"](x)
    plain = []
    for _ in range(runs):
        t0 = time.perf_counter()
        vm["main"](x)
        plain.append((time.perf_counter() - t0) * 1e3)
    times: dict[str, float] = {}
    calls: dict[str, int] = {}
    started: dict[str, int] = {}

    def instrument(func, name, before, ret, *args):
        if not name.startswith("vm."):
            if before:
                started[name] = time.perf_counter_ns()
            else:
                times[name] = times.get(name, 0.0) + (time.perf_counter_ns() - started[name]) / 1e3
                calls[name] = calls.get(name, 0) + 1
        return 0

    vm.set_instrument(instrument)
    best: dict[str, float] = {}
    per_run_calls: dict[str, int] = {}
    for _ in range(runs):
        times.clear()
        calls.clear()
        vm["main"](x)
        for name, us in times.items():
            best[name] = min(best.get(name, float("inf")), us)
        per_run_calls = dict(calls)
    return best, per_run_calls, float(np.median(plain))


def profile_build(name: str, onnx_path: Path, target, runs: int) -> dict:
    mod, spec, log, macs = scheduled_module(onnx_path, target)
    best, calls, plain_ms = profile(mod, spec, runs)
    rules = {k["name"]: k for k in log}
    kernels = []
    for kname, us in sorted(best.items(), key=lambda kv: -kv[1]):
        k = rules.get(kname, {})
        m = macs.get(kname, 0) * calls.get(kname, 1)
        kernels.append({"kernel": kname, "rule": k.get("rule", "?"), "us": round(us, 2), "calls": calls.get(kname, 1),
                        "macs": m, "gmacs": round(m / us / 1e3, 1) if m else None,
                        "params": {p: v for p, v in (k.get("params") or {}).items() if p != "errors"}})
    by_rule: dict[str, float] = {}
    for k in kernels:
        by_rule[k["rule"]] = by_rule.get(k["rule"], 0.0) + k["us"]
    total = sum(k["us"] for k in kernels)
    return {"build": name, "model_ms_no_instrument": round(plain_ms, 3), "kernels_us_total": round(total, 1),
            "by_rule_us": {r: round(v, 1) for r, v in sorted(by_rule.items(), key=lambda kv: -kv[1])},
            "kernels": kernels}


def show(model: str, res: dict, top: int) -> None:
    console.print(f"[bold]{model} {res['build']}[/]: {res['model_ms_no_instrument']:.3f} ms (median, no instrument), "
                  f"kernels {res['kernels_us_total'] / 1e3:.3f} ms")
    console.print("  by rule: " + ", ".join(f"{r} {us / 1e3:.3f} ms" for r, us in res["by_rule_us"].items()))
    for k in res["kernels"][:top]:
        rate = f"{k['gmacs']:7.1f} GMAC/s" if k["gmacs"] else " " * 14
        console.print(f"  {k['us']:8.1f} us {rate} {k['rule']:16s} x{k['calls']} {k['kernel']}", markup=False,
                      highlight=False)


def main() -> None:
    from edgecnn.compiler import targets

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2_224,mobilenet_v1_224")
    ap.add_argument("--builds", default="fp32,int8")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=str(RESULTS / "int8_profile.json"))
    args = ap.parse_args()
    host = targets.load("host")
    files = {"fp32": "model.onnx", "int8": "model.tensorrt.int8.onnx"}
    report = {"load_avg_1min_start": os.getloadavg()[0], "threads": int(os.environ["TVM_NUM_THREADS"]), "models": {}}
    for model in args.models.split(","):
        report["models"][model] = {}
        for b in args.builds.split(","):
            path = CACHE / model / files[b]
            if not path.exists():
                sys.exit(f"{path} is missing: run benchmarks/int8.py --models {model} first")
            res = profile_build(b, path, host, args.runs)
            report["models"][model][b] = res
            show(model, res, args.top)
    report["load_avg_1min_end"] = os.getloadavg()[0]
    write_json(Path(args.out), report)
    console.print(f"wrote {args.out} (load average {report['load_avg_1min_start']:.2f} -> {report['load_avg_1min_end']:.2f})")


if __name__ == "__main__":
    main()
