"""Which per-kernel timing predicts the whole model: a kernel alone, alone with caches flushed, or in context.

    .venv/bin/python benchmarks/tune_context.py [--model mobilenet_v2_28] [--kernels 6] [--candidates 3]
        [--out results/tune_context.json]

For the kernels that dominate the default build's profile and a few random candidates of each (edgecnn tune's
search space), one candidate at a time in the model: the candidate's change over the kernel's default
(x its calls) timed alone (edgecnn tune's timer), alone with the caches flushed before each run
(cache_flush_cpu_non_first_arg), and in context (the VM's per-kernel instrument inside the whole model), against
the whole model's change (the build with that one candidate vs the default build, interleaved rounds).
Reports, per predictor, how often it gets the sign of the whole model's change right and the median
absolute error in microseconds. The 1-minute load average is recorded: on a shared machine the whole-model
changes are noisy.
"""

import argparse
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def main() -> None:
    import numpy as np

    from edgecnn.backends.tvm import build, runner, tune
    from edgecnn.backends.tvm.cpu import cpu_info
    from edgecnn.compiler import targets
    from edgecnn.core.fileio import write_json
    from edgecnn.core.progress import console
    from tvm_vs_ort import make_onnx, machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2_28")
    ap.add_argument("--kernels", type=int, default=6)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tune_context.json")
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    tgt = targets.load("host")
    spec = build.resolve_target(tgt)
    runner.apply_thread_settings(runner.thread_settings(spec)["env"], None)  # as a build's runner (and tune) runs
    mod = tune.lowered(make_onnx(args.model), tgt, spec, 1)
    found = tune.kernels(mod, spec)
    model, timer, cpu = tune.ModelTimer(mod, spec, found), tune.Timer(spec), cpu_info(spec)
    report = {"model": args.model, "machine": machine(), "pairs": []}
    base_profile = model.profile({})
    default_vm = model.vm({})
    top = sorted((k for k in found if len(k["space"]) > 1), key=lambda k: -base_profile.get(k["name"], 0.0))
    rng = random.Random(0)
    for k in top[:args.kernels]:
        default = tune.scheduled(k, k["default"], cpu)
        alone_d, flushed_d = 1e6 * timer.seconds(default), 1e6 * timer.seconds(default, flush=True)
        for cand in rng.sample(k["space"], min(args.candidates, len(k["space"]))):
            params = {**k["default"], **cand}
            func = tune.scheduled(k, params, cpu)
            if func is None or params == k["default"]:
                continue
            alone, flushed = 1e6 * timer.seconds(func), 1e6 * timer.seconds(func, flush=True)
            in_model = model.profile({k["key"]: params}).get(k["name"], 0.0)
            whole = model.interleaved_ms({"default": default_vm, "candidate": model.vm({k["key"]: params})})
            pair = {"kernel": k["name"], "params": params, "calls": k["calls"],
                    "predicted_us": {"alone": (alone - alone_d) * k["calls"],
                                     "flushed": (flushed - flushed_d) * k["calls"],
                                     "in_context": in_model - base_profile.get(k["name"], 0.0)},
                    "whole_model_us": 1e3 * (whole["candidate"] - whole["default"])}
            report["pairs"].append(pair)
            console.print(f"{k['name']:36s} whole {pair['whole_model_us']:8.1f} us  " + "  ".join(
                f"{p} {v:8.1f}" for p, v in pair["predicted_us"].items()))
    whole = np.array([p["whole_model_us"] for p in report["pairs"]])
    summary = {}
    for name in ("alone", "flushed", "in_context"):
        pred = np.array([p["predicted_us"][name] for p in report["pairs"]])
        summary[name] = {"sign_agreement": float(np.mean(np.sign(pred) == np.sign(whole))),
                         "median_abs_error_us": float(np.median(np.abs(pred - whole))),
                         "correlation": float(np.corrcoef(pred, whole)[0, 1]) if len(whole) > 2 else None}
        console.print(f"{name:10s} sign right {summary[name]['sign_agreement']:.0%}, median |error| "
                      f"{summary[name]['median_abs_error_us']:.1f} us, correlation {summary[name]['correlation']:.2f}")
    report["summary"] = summary
    report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    console.print(f"load average {report['machine']['load_avg_1min_start']:.1f} -> "
                  f"{report['machine']['load_avg_1min_end']:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
