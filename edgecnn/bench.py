"""edgecnn bench: latency of a build, and of other backends on the same model, per batch size.

One timed run is one `Runner.run(x)` call as an application sees it: input copy-in, inference and the
outputs back as numpy arrays (so a GPU is synchronised around the timer). Each subject (the build and
every `compare` backend) runs in its own fresh process: its peak resident memory is its own, and thread
settings (TVM_NUM_THREADS) apply before any thread pool starts.

A subject is a picklable callable returning a Runner-like object (`run(x) -> {name: array}`, a context
manager). A runner with `time_runs(x, warmup, runs, seconds) -> [ns, ...]` (a remote device timing itself)
is timed by its own clock, and one with `memory() -> dict` reports its own memory.
Fixed-batch artifacts (TVM host builds are batch 1) are benched only at their batch: other batch sizes
need a build compiled for them (`edgecnn compile ... --batch N|dynamic`).
"""

import functools
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecnn import backends, manifest as manifest_mod
from edgecnn.errors import EdgecnnError, suggest
from edgecnn.fileio import write_json

COMPARE = ("onnxruntime", "torch")
DEFAULT_SECONDS = 2.0
MIN_RUNS, MAX_RUNS = 10, 100_000


def load_build(build_dir: str, threads: int | None):
    """The build's own runner on this machine."""
    man = manifest_mod.read(build_dir, check_files=False)
    return backends.require(man["backend"]).load(build_dir, man, threads=threads)


def load_reference(build_dir: str, backend: str, threads: int | None):
    """onnxruntime on the build's model.onnx, or torch on the checkpoint its manifest records."""
    if backend == "onnxruntime":
        from edgecnn.backends.onnxruntime import OrtRunner

        return OrtRunner(Path(build_dir) / "model.onnx", threads or 0)
    man = manifest_mod.read(build_dir, check_files=False)
    return backends.require(backend).load(build_dir, man, threads=threads)


def stats(ns: np.ndarray, batch: int) -> dict:
    ms = np.asarray(ns, np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"batch": batch, "runs": len(ms), "mean_ms": float(ms.mean()), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "std_ms": float(ms.std()), "throughput_ips": float(batch * 1000 / ms.mean())}


def time_runs(runner, x: np.ndarray, warmup: int, runs: int | None, seconds: float | None, tick=None) -> np.ndarray:
    """Per-run latencies in ns: `runs` runs, else as many as fit in `seconds` (at least MIN_RUNS)."""
    if hasattr(runner, "time_runs"):
        return np.asarray(runner.time_runs(x, warmup, runs, seconds), np.int64)
    for _ in range(warmup):
        runner.run(x)
    times: list[int] = []
    deadline = time.perf_counter_ns() + int((seconds or DEFAULT_SECONDS) * 1e9)
    while True:
        t0 = time.perf_counter_ns()
        runner.run(x)
        t1 = time.perf_counter_ns()
        times.append(t1 - t0)
        if tick:
            tick()
        if len(times) >= (runs or MAX_RUNS) or (not runs and t1 >= deadline and len(times) >= MIN_RUNS):
            return np.array(times, np.int64)


def _proc_status_mib(field: str) -> float | None:
    """VmRSS (now) or VmHWM (peak) of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mib() -> float | None:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of a big
    # process would report its parent's peak
    peak = _proc_status_mib("VmHWM")
    if peak is None:
        try:
            import resource
        except ImportError:  # Windows
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if platform.system() == "Darwin" else 1024)
    return peak


def _gpu_mib(pid: int) -> float | None:
    """GPU memory this process holds, per nvidia-smi (None without an NVIDIA GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    used = [float(m) for p, m in (line.split(",") for line in out.splitlines() if "," in line) if int(p) == pid]
    return sum(used) if used else None


def _memory(runner, rss_before: float | None, isolated: bool) -> dict:
    if hasattr(runner, "memory"):
        return runner.memory()
    if not isolated:  # this process also holds the other subjects: its RSS would not be the runner's
        return {"peak_rss_mib": None, "runner_rss_mib": None, "gpu_mib": None}
    peak = _peak_rss_mib()
    added = peak - rss_before if peak is not None and rss_before is not None else None
    return {"peak_rss_mib": peak, "runner_rss_mib": added, "gpu_mib": _gpu_mib(os.getpid())}


def measure(name: str, load, batches: list[int] | None, warmup: int, runs: int | None, seconds: float | None,
            isolated: bool = True) -> dict:
    """Load one subject and time it at each batch size (runs inside the subject's own process)."""
    from edgecnn.progress import progress_bar

    rss_before = _proc_status_mib("VmRSS")
    with load() as runner:
        batches = batches or [runner.batch or 1]
        _check_batches(runner, batches)
        results = {}
        with progress_bar() as bar:
            for b in batches:
                task = bar.add_task(f"bench {name} batch {b}", total=runs, info="")
                x = np.random.default_rng(0).standard_normal((b, *runner.input_shape)).astype(np.float32)
                ns = time_runs(runner, x, warmup, runs, seconds, lambda: bar.advance(task))
                results[str(b)] = {**stats(ns, b), "times_ms": [round(t / 1e6, 5) for t in ns.tolist()]}
                bar.update(task, info=f"p50 {results[str(b)]['p50_ms']:.3f} ms")
        return {"runner": runner.name, "batches": results, "memory": _memory(runner, rss_before, isolated)}


def _check_batches(runner, batches: list[int]) -> None:
    fixed = runner.batch
    other = [b for b in batches if fixed and b != fixed]
    if other:
        raise EdgecnnError(f"this {runner.name} artifact is compiled for batch {fixed} only, not {other[0]}: "
                           f"bench it with --batch {fixed}, or compile a build for that batch "
                           f"(edgecnn compile BUILD_DIR/model.onnx --target T --batch {other[0]}|dynamic)")
    if not runner.input_shape:
        raise EdgecnnError(f"the {runner.name} runner does not say its input shape: cannot make inputs")


def _portable(load) -> bool:
    """Can `load` be re-created in a fresh interpreter (pickled by reference to an importable function)?"""
    func = getattr(load, "func", load)
    if getattr(func, "__module__", "__main__") == "__main__":
        return False
    try:
        pickle.dumps(load)
    except Exception:  # pickle raises several types for closures, locks, sessions
        return False
    return True


def run_subject(name: str, load, *args) -> dict:
    """measure() in a fresh interpreter when `load` can travel there (always for the built-in loaders).

    A plain subprocess, not multiprocessing: a caller's script needs no `if __name__ == "__main__"` guard.
    """
    if not _portable(load):
        return measure(name, load, *args, isolated=False)
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-") as tmp:
        job, result = Path(tmp, "job.pkl"), Path(tmp, "result.pkl")
        job.write_bytes(pickle.dumps((name, load, args)))
        # the child imports what this process can (edgecnn, and the module defining `load`)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.run([sys.executable, "-c", "from edgecnn.bench import worker; worker()", str(job),
                               str(result)], env=env)
        if not result.exists():
            raise EdgecnnError(f"the {name} runner failed while benchmarking (exit {proc.returncode}; "
                               "its messages are above)")
        ok, value = pickle.loads(result.read_bytes())
    if not ok:
        raise EdgecnnError(value)
    return value


def worker() -> None:
    """Entry point of a subject's process: argv = job file, result file (both pickles we wrote)."""
    job, result = sys.argv[1:3]
    name, load, args = pickle.loads(Path(job).read_bytes())
    if name == "tvm":  # tvm_ffi imports torch whenever it is installed; a deployed TVM runtime has no torch
        sys.modules.setdefault("torch", None)
    try:
        out = (True, measure(name, load, *args))
    except EdgecnnError as e:
        out = (False, str(e))
    Path(result).write_bytes(pickle.dumps(out))


def system_info() -> dict:
    """CPU, GPUs, load and tool versions: the context a latency number needs."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith(("model name", "Model", "Hardware")))
    except (OSError, StopIteration):
        pass
    try:
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        gpus = []
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "gpus": gpus,
            "system": f"{platform.system()} {platform.release()}", "tools": manifest_mod.tool_versions()}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_compare(names, backend: str) -> list[str]:
    for n in names:
        if n not in COMPARE:
            raise EdgecnnError(f"--compare {n}: not a reference backend{suggest(n, COMPARE)}")
    return [n for n in dict.fromkeys(names) if n != backend]


def ratios(results: dict, build: str) -> dict:
    """Each compared backend's latency divided by the build's (0.5 = the other is twice as fast)."""
    base = results[build]["batches"]
    return {name: {b: {k: r["batches"][b][f"{k}_ms"] / base[b][f"{k}_ms"] for k in ("mean", "p50", "p99")}
                   for b in base} for name, r in results.items() if name != build}


def bench(build_dir: str | Path, batches: list[int] | None = None, warmup: int = 10, runs: int | None = None,
          seconds: float | None = None, threads: int | None = None, compare=(), out: str | Path | None = None,
          load=None, plot: bool = True, device: str | None = None) -> dict:
    """Benchmark a build (and `compare` backends on the same model); write JSON + plot, record in the manifest.

    load: optional picklable callable returning the build's runner (e.g. a remote device's); default: the
    build's backend on this machine. device: what `load` runs on when that is not this machine (the report's
    cpu; this machine's facts go under system.host).
    """
    build_dir = Path(build_dir)
    man = manifest_mod.read(build_dir)
    if runs is not None and seconds is not None:
        raise EdgecnnError("give --runs or --seconds, not both")
    threads = threads or usable_cores()
    backend = man["backend"]
    compare = check_compare(compare, backend)
    system = system_info()
    if device:
        system = {"cpu": device, "gpus": [], "remote": True, "host": system}
    results = {backend: run_subject(backend, load or functools.partial(load_build, str(build_dir), threads),
                                    batches, warmup, runs, seconds)}
    batches = [int(b) for b in results[backend]["batches"]]
    for name in compare:
        results[name] = run_subject(name, functools.partial(load_reference, str(build_dir), name, threads),
                                    batches, warmup, runs, seconds)
    report = {"build": str(build_dir), "backend": backend, "target": man["target"]["name"],
              "precision": man["precision"], "model": man.get("model", {}).get("name"),
              "settings": {"batches": batches, "warmup": warmup, "runs": runs,
                           "seconds": None if runs else seconds or DEFAULT_SECONDS, "threads": threads},
              "system": system, "results": results, "ratios": ratios(results, backend)}
    out = Path(out) if out else build_dir / "bench.json"
    if plot:
        from edgecnn.benchreport import plot as draw

        report["plot"] = str(draw(report, out.with_suffix(".png")))
    write_json(out, report)
    manifest_mod.update(build_dir, bench=summary(report))
    return report


def summary(report: dict) -> dict:
    """The part of a report a manifest or bundle carries: statistics without the per-run times."""
    def brief(r):
        return {"memory": r["memory"], "batches": {b: {k: v for k, v in s.items() if k != "times_ms"}
                                                   for b, s in r["batches"].items()}}

    return {"settings": report["settings"], "cpu": report["system"]["cpu"], "gpus": report["system"]["gpus"],
            "backend": report["backend"], "results": {name: brief(r) for name, r in report["results"].items()},
            "ratios": report["ratios"]}


def build_latency(bench_summary: dict | None, batch: int | None = None) -> dict | None:
    """The build's statistics at `batch` (default: the smallest benched) from a report or summary."""
    if not bench_summary:
        return None
    batches = bench_summary["results"][bench_summary["backend"]]["batches"]
    key = str(batch) if batch is not None else min(batches, key=int)
    return batches.get(key)
