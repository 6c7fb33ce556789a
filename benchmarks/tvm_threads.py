"""TVM's thread pool settings against ONNX Runtime, p50 and p99, batch 1, fp32: which setting the runner uses.

    .venv/bin/python benchmarks/tvm_threads.py [--model mobilenet_v2_224] [--rounds 3] [--seconds 1.5]
        [--out results/tvm_threads.json]

The untuned host build (benchmarks/tvm_vs_ort.py makes it, under .cache/tvm_vs_ort/) runs in a fresh process
per setting and round (TVM reads TVM_NUM_THREADS, TVM_BIND_THREADS and TVM_THREAD_POOL_SPIN_COUNT when its
pool starts), beside ONNX Runtime spinning (its default) and not spinning, all 2 threads, in a new random
order each round; each process times back-to-back runs as an application calls them (Runner.run). p50 and
p99 are over every run of every round; the ratios are to the better ONNX Runtime's. The 1-minute load
average is recorded: on a shared machine the p99 is pessimistic, compare only within one run.
"""

import argparse
import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

# name -> environment of the subject's process (TVM_NUM_THREADS=2 unless said: 2 cores)
SETTINGS = {
    "tvm defaults (bind, spin)": {},
    "tvm no bind": {"TVM_BIND_THREADS": "0"},
    "tvm no spin": {"TVM_THREAD_POOL_SPIN_COUNT": "0"},
    "tvm no bind, no spin": {"TVM_BIND_THREADS": "0", "TVM_THREAD_POOL_SPIN_COUNT": "0"},
    "tvm 1 thread": {"TVM_NUM_THREADS": "1"},
}
ORT = {"onnxruntime": "1", "onnxruntime nospin": "0"}  # allow_spinning


def worker(subject: str, build: str, seconds: float, threads: int) -> None:
    """One subject's process: warm up, time back-to-back runs for `seconds`, print the times (ms) as JSON."""
    import numpy as np

    from edgecnn import backends
    from edgecnn.core import manifest
    from edgecnn.core.rounds import time_round

    man = manifest.read(build, check_files=False)
    if subject.startswith("onnxruntime"):
        from edgecnn.backends.onnxruntime import OrtRunner

        config = {"session.intra_op.allow_spinning": ORT[subject]}
        runner = OrtRunner(Path(build) / "model.onnx", threads, config=config)
    else:
        runner = backends.get("tvm").load(build, man)
    x = np.random.default_rng(0).standard_normal([1, *man["input"]["shape"][1:]]).astype(np.float32)
    for _ in range(10):
        runner.run(x)
    print(json.dumps(time_round(functools.partial(runner.run, x), seconds)))


def subject_env(subject: str, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVM_")}
    return {**env, "TVM_NUM_THREADS": str(threads), **SETTINGS.get(subject, {})}


def main() -> None:
    import numpy as np

    from edgecnn.core.fileio import write_json
    from edgecnn.core.progress import console
    from tvm_vs_ort import CACHE, compiled, make_onnx, machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2_224")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="per subject per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tvm_threads.json")
    args = ap.parse_args()
    build, _ = compiled(make_onnx(args.model), CACHE / args.model / "build-host")
    # the runner applies the build's recorded settings unless the environment says otherwise: the
    # environment of each subject names all three, so every row is the setting it says
    subjects = [*SETTINGS, *ORT]
    times: dict[str, list[float]] = {s: [] for s in subjects}
    report = {"model": args.model, "machine": machine(), "threads": args.threads, "rounds": args.rounds,
              "seconds": args.seconds, "settings": SETTINGS}
    for r in range(args.rounds):
        order = list(subjects)
        random.Random(r).shuffle(order)
        for s in order:
            env = subject_env(s, args.threads)
            for var, default in (("TVM_BIND_THREADS", "1"), ("TVM_THREAD_POOL_SPIN_COUNT", "300000")):
                env.setdefault(var, default)  # TVM's own defaults, said explicitly
            out = subprocess.run([sys.executable, __file__, "--worker", s, str(build), str(args.seconds),
                                  str(args.threads)], env=env, capture_output=True, text=True, check=True)
            times[s] += json.loads(out.stdout.strip().splitlines()[-1])
    stats = {s: {"runs": len(t), "p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                 "mean_ms": float(np.mean(t))} for s, t in times.items()}
    ort_p50 = min(stats[o]["p50_ms"] for o in ORT)
    ort_p99 = min(stats[o]["p99_ms"] for o in ORT)
    for s, st in stats.items():
        st.update(p99_over_p50=st["p99_ms"] / st["p50_ms"], p50_vs_ort=st["p50_ms"] / ort_p50,
                  p99_vs_ort=st["p99_ms"] / ort_p99)
        console.print(f"{s:28s} p50 {st['p50_ms']:7.3f} ms  p99 {st['p99_ms']:7.3f} ms  p99/p50 "
                      f"{st['p99_over_p50']:.2f}  vs ORT: p50 {st['p50_vs_ort']:.2f}x  p99 {st['p99_vs_ort']:.2f}x")
    report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    report.update(results=stats, times_ms=times)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    console.print(f"load average {report['machine']['load_avg_1min_start']:.1f} -> "
                  f"{report['machine']['load_avg_1min_end']:.1f}; wrote {args.out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
