"""edgecnn bench: latency of a build, and of other backends on the same model, per batch size.

One timed run is one `Runner.run(x)` call as an application sees it: input copy-in, inference and the
outputs back as numpy arrays (so a GPU is synchronised around the timer). Each subject (the build and
every `compare` backend) runs in its own fresh process: its peak resident memory is its own, and thread
settings (TVM_NUM_THREADS) apply before any thread pool starts.

A subject is a picklable callable returning a Runner (edgecnn.backends.base): `runner.time_runs` times it
(by this machine's clock, or a remote board's own), and `runner.memory()` reports its memory when it
knows better than this process's RSS (a remote board).
Fixed-batch artifacts (TVM host builds are batch 1) are benched only at their batch: other batch sizes
need a build compiled for them (`edgecnn compile ... --batch N|dynamic`).
The device is read before and after each subject's runs and metered while they go (edgecnn.device.conditions;
`runner.device_probe()` when the runner knows its device better: a board reads its own).

bench.json (summary() is the part a manifest and a bundle carry, with the build's device in brief):
    build, backend, target, precision, model
    settings      batches, warmup, runs or seconds, threads, lock_clocks, wait_cool_c
    system        this machine (system.system_info); with --rpc, cpu names the board and host is this machine
    results.NAME  runner; memory; thread_env (TVM: the thread pool settings it ran with); batches.B: batch, runs,
                  mean/p50/p90/p99/min/max/std _ms, throughput_ips, times_ms; and device:
      before, after  the device's state (edgecnn.device.state.read): host, pid, cpufreq.cpuN {governor, cur/min/max_mhz,
                     online}, thermal {zone: C}, raspberry_pi {throttled {throttled, now, since_boot}, arm_mhz,
                     temp_c}, jetson {power_mode {name, id}, jetson_clocks {cpus, gpu, emc, locked}, gpu_devfreq,
                     emc_mhz, tegrastats {cpu, emc, gpu, temps_c, rails_mw}}, nvidia_smi [{index, name, pstate,
                     power_w, power_limit_w, sm_mhz, mem_mhz, temp_c}], reader ("edgecnn.rpc_server" when a board
                     read it). A fact that could not be read is {"unavailable": why}; so is the whole state of a
                     board that runs TVM's plain rpc_server
      power.B        window_s (warm-up and timed runs), sources {name: {kind (rail, rapl, gpu), mean_w, samples or
                     energy_j}}, mean_w and `of` (what it covers), mj_per_run (mean_w x mean_ms), mj_per_image;
                     or {"unavailable": why}
      clocks         with lock_clocks: done, not_done, restored, failed (else null)
      cooled.B       with wait_cool: target_c, start_c, reached_c, sensor, waited_s, timed_out (else null)
      warnings       a clock that moved by > 10% of its maximum, a temperature that rose >= 5 C, throttling, a
                     power mode that changed, what lock_clocks or wait_cool could not do
    ratios        NAME.B.{mean,p50,p99}: NAME's latency over the build's
    An int8 build is also timed against ONNX Runtime's int8 in ONNX Runtime's own form and against the fp32
    build beside it (bench.baselines), when `compare` is not empty.
    warnings      every subject's warnings, as "NAME: warning"
"""

import contextlib
import functools
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgecnn import backends
from edgecnn.backends.base import DEFAULT_SECONDS
from edgecnn.bench import baselines, system
from edgecnn.device import conditions
from edgecnn.core.errors import EdgecnnError, suggest
from edgecnn.core.fileio import write_json

COMPARE = ("onnxruntime", "torch")
ROUND_SECONDS = 0.3  # --rounds: each subject's time a round without --seconds (benchmarks/tvm_vs_ort.py's)


def load_reference(build_dir: str, against: str, threads: int | None):
    """A reference on the build's model (onnxruntime, torch), as verify defines it."""
    from edgecnn.backends import reference
    from edgecnn.core import manifest as manifest_mod

    return reference.load_for(build_dir, manifest_mod.read(build_dir, check_files=False), against, threads=threads)


def stats(ns: np.ndarray, batch: int) -> dict:
    ms = np.asarray(ns, np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"batch": batch, "runs": len(ms), "mean_ms": float(ms.mean()), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "std_ms": float(ms.std()), "throughput_ips": float(batch * 1000 / ms.mean())}


def _memory(runner, rss_before: float | None, isolated: bool) -> dict:
    own = runner.memory()
    if own is not None:
        return own
    if not isolated:  # this process also holds the other subjects: its RSS would not be the runner's
        return {"peak_rss_mib": None, "runner_rss_mib": None, "gpu_mib": None}
    peak = system.peak_rss_mib()
    added = peak - rss_before if peak is not None and rss_before is not None else None
    return {"peak_rss_mib": peak, "runner_rss_mib": added, "gpu_mib": system.gpu_mib(os.getpid())}


def measure(name: str, load, plan: dict, isolated: bool = True, *, bar=None) -> dict:
    """Load one subject and time it at each batch size (runs inside the subject's own process).

    plan: batches (None: the runner's own), warmup, runs or seconds, lock_clocks, wait_cool (C or None).
    bar: a progress bar to share (several subjects timed at once), else its own."""
    from edgecnn.core.progress import progress_bar

    rss_before = system.proc_status_mib("VmRSS")
    with load() as runner:
        batches, note = _check_batches(runner, plan["batches"] or [runner.batch or 1])
        watch = conditions.Watch(runner.device_probe() or conditions.Probe(), lock=plan.get("lock_clocks", False),
                                 cool_c=plan.get("wait_cool"))
        label = f"{name} on {runner.board}" if runner.board else name
        try:
            with contextlib.nullcontext(bar) if bar else progress_bar() as bar:
                results = {str(b): _time_batch(runner, b, plan, label=label, bar=bar, watch=watch) for b in batches}
            state = watch.record(results)
        finally:
            watch.restore()
        return {"runner": runner.name, **({"board": runner.board} if runner.board else {}), "batches": results,
                "memory": _memory(runner, rss_before, isolated), "device": state, **({"note": note} if note else {}),
                **({"thread_env": runner.thread_env} if getattr(runner, "thread_env", None) else {})}


def _time_batch(runner, b: int, plan: dict, *, label: str, bar, watch) -> dict:
    task = bar.add_task(f"bench {label} batch {b}", total=plan["runs"], info="")
    x = random_input(runner, b)
    with watch.batch(b):
        ns = np.asarray(runner.time_runs(x, warmup=plan["warmup"], runs=plan["runs"], seconds=plan["seconds"],
                                         tick=lambda: bar.advance(task)), np.int64)
    result = {**stats(ns, b), "times_ms": [round(t / 1e6, 5) for t in ns.tolist()]}
    bar.update(task, info=f"p50 {result['p50_ms']:.3f} ms")
    return result


def random_input(runner, batch: int) -> np.ndarray:
    """A batch of the runner's input: uint8 pixels for a model taking them, else standard normal floats."""
    rng, shape = np.random.default_rng(0), (batch, *runner.input_shape)
    if np.dtype(runner.input_dtype) == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def _check_batches(runner, batches: list[int]) -> tuple[list[int], str | None]:
    """The batch sizes a runner can be timed at, and a note when a fixed-batch artifact drops some."""
    if not runner.input_shape:
        raise EdgecnnError(f"the {runner.name} runner does not say its input shape: cannot make inputs")
    fixed = runner.batch
    other = [b for b in batches if fixed and b != fixed]
    if not other:
        return batches, None
    return [fixed], (f"this {runner.name} artifact is compiled for batch {fixed}: measured at batch {fixed} only, "
                     f"not {', '.join(map(str, other))} (a build per batch: edgecnn compile MODEL.onnx --target T "
                     f"--batch {other[0]})")


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


def run_subject(name: str, load, plan: dict) -> dict:
    """measure() in a fresh interpreter when `load` can travel there (always for the built-in loaders).

    A plain subprocess, not multiprocessing: a caller's script needs no `if __name__ == "__main__"` guard.
    """
    if not _portable(load):
        return measure(name, load, plan, isolated=False)
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-") as tmp:
        job, result = Path(tmp, "job.pkl"), Path(tmp, "result.pkl")
        job.write_bytes(pickle.dumps((name, load, plan)))
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
    name, load, plan = pickle.loads(Path(job).read_bytes())
    if name not in backends.names() or not backends.needs_torch(backends.get(name)):  # a deployed runtime has no torch
        sys.modules.setdefault("torch", None)
    try:
        out = (True, measure(name, load, plan))
    except EdgecnnError as e:
        out = (False, str(e))
    Path(result).write_bytes(pickle.dumps(out))


def measure_rounds(loads: dict, plan: dict, rounds: int, *, base: str) -> tuple[dict, dict]:
    """`bench --rounds N`: every subject loaded in this process and timed in N interleaved rounds, a new random
    order each round (edgecnn.core.rounds), at each batch size. Returns (results as measure() writes them, with
    each round's median as rounds_ms; NAME.B: NAME's round medians over `base`'s, per round and their quartiles).
    The device is read once around all subjects; it is recorded under `base`."""
    from edgecnn.core.rounds import round_ratios

    with contextlib.ExitStack() as stack:
        runners = {name: stack.enter_context(load()) for name, load in loads.items()}
        batches, note = _check_batches(runners[base], plan["batches"] or [runners[base].batch or 1])
        watch = conditions.Watch(conditions.Probe(), lock=plan.get("lock_clocks", False), cool_c=plan.get("wait_cool"))
        try:
            timed = {str(b): _rounds_at(runners, b, plan, rounds=rounds, watch=watch) for b in batches}
            state = watch.record({})
        finally:
            watch.restore()
        results = {name: {"runner": r.name, "memory": _memory(r, None, False), "device": None,
                          "batches": {b: _round_stats(medians[name], runs[name], int(b))
                                      for b, (medians, runs) in timed.items()}}
                   for name, r in runners.items()}
    results[base].update(device=state, **({"note": note} if note else {}))
    ratios_ = {b: round_ratios(medians, base) for b, (medians, _) in timed.items()}
    return results, {name: {b: quartiles(ratios_[b][name]) for b in timed} for name in runners if name != base}


def _rounds_at(runners: dict, b: int, plan: dict, *, rounds: int, watch) -> tuple[dict, dict]:
    """The subjects' warm-up runs, then their interleaved rounds at batch size `b`: (round medians, runs), ms."""
    from edgecnn.core.rounds import interleaved

    inputs = {name: random_input(r, b) for name, r in runners.items()}
    for name, r in runners.items():
        for _ in range(plan["warmup"]):
            r.run(inputs[name])
    with watch.batch(b):
        return interleaved({name: functools.partial(r.run, inputs[name]) for name, r in runners.items()},
                           rounds=rounds, seconds=plan["seconds"] or ROUND_SECONDS, runs=plan["runs"])


def _round_stats(medians: list[float], runs_ms: list[float], batch: int) -> dict:
    return {**stats(np.asarray(runs_ms) * 1e6, batch), "rounds_ms": medians,
            "times_ms": [round(t, 5) for t in runs_ms]}


def quartiles(values: list[float]) -> dict:
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {"median": float(p50), "p25": float(p25), "p75": float(p75), "rounds": [round(v, 5) for v in values]}


def check_compare(names, backend: str) -> list[str]:
    for n in names:
        if n not in COMPARE:
            raise EdgecnnError(f"--compare {n}: not a reference backend{suggest(n, COMPARE)}")
    return [n for n in dict.fromkeys(names) if n != backend]


def remote_subject(build_dir, address: str | None, key: str | None, *, timeout: float, threads: int | None,
                   compare, boards: int = 1) -> tuple:
    """`edgecnn bench --rpc HOST:PORT [--key KEY] [--boards N]`: (the loader of the build on a board, what to
    call the board); with boards > 1, checks that the key has that many boards."""
    if not address:
        raise EdgecnnError("--key names a board of an RPC tracker: give the tracker too (--rpc HOST:PORT)")
    if compare:
        raise EdgecnnError("--compare runs here and --rpc on the board: a ratio of two machines means little; "
                           "bench the references without --rpc")
    from edgecnn.core import manifest as manifest_mod

    man = manifest_mod.read(build_dir, check_files=False)
    backend = backends.device_farm(man["backend"], build_dir)
    load = backend.remote(build_dir, address, key, timeout=timeout, threads=threads)
    board = key or man["target"]["name"]  # the key a remote loader defaults to
    if boards > 1:
        from edgecnn.bench import farm

        farm.check_boards(backend.boards(address, board, timeout=timeout), boards, board, address)
        return load, f"{boards} '{board}' boards of the RPC tracker {address}"
    return load, f"board '{board}' of the RPC tracker {address}"


def ratios(results: dict, build: str) -> dict:
    """Each compared backend's latency divided by the build's (0.5 = the other is twice as fast)."""
    base = results[build]["batches"]
    return {name: {b: {k: r["batches"][b][f"{k}_ms"] / base[b][f"{k}_ms"] for k in ("mean", "p50", "p99")}
                   for b in base} for name, r in results.items() if name != build}


def bench(build_dir: str | Path, *, batches: list[int] | None = None, warmup: int = 10, runs: int | None = None,
          seconds: float | None = None, threads: int | None = None, compare=(), out: str | Path | None = None,
          load=None, plot: bool = True, device: str | None = None, lock_clocks: bool = False,
          wait_cool: float | None = None, boards: int = 1, rounds: int | None = None) -> dict:
    """Benchmark a build (and `compare` backends on the same model); write JSON + plot, record in the manifest.

    load: optional picklable callable returning the build's runner (e.g. a remote device's); default: the
    build's backend on this machine. device: what `load` runs on when that is not this machine (the report's
    cpu; this machine's facts go under system.host). lock_clocks: pin the device's clocks for each subject
    where it allows (and restore them); wait_cool: before each batch size, wait until the hottest sensor is at
    or below this many degrees C. boards: time `load` on that many boards at once (each call of a remote
    loader holds another board): the report's `boards` and `spread`, results = the first. rounds: the build and
    its baselines loaded in this process and timed in that many interleaved rounds, a new random order each
    (measure_rounds; `seconds`, default ROUND_SECONDS, or `runs` a subject a round): the report's
    rounds.ratios, each baseline over the build per round.
    """
    from edgecnn.core import manifest as manifest_mod  # here: the device modules import on boards without it

    build_dir = Path(build_dir)
    man = manifest_mod.read(build_dir)
    if runs is not None and seconds is not None:
        raise EdgecnnError("give --runs or --seconds, not both")
    threads = threads or system.usable_cores()
    backend = man["backend"]
    compare = check_compare(compare, backend)
    facts = system.system_info()
    if device:
        facts = {"cpu": device, "gpus": [], "remote": True, "host": facts}
    plan = {"batches": batches, "warmup": warmup, "runs": runs, "seconds": seconds, "lock_clocks": lock_clocks,
            "wait_cool": wait_cool}
    farm_report, round_report = {}, {}
    if boards > 1 and load is None:
        raise EdgecnnError(f"--boards {boards} times {boards} boards of an RPC tracker: give --rpc HOST:PORT")
    if rounds and (load is not None or boards > 1):
        raise EdgecnnError("--rounds times the build and its baselines side by side on this machine: without --rpc")
    loads = {backend: load or functools.partial(backends.load_build, str(build_dir), threads)}
    loads |= {name: functools.partial(load_reference, str(build_dir), name, threads) for name in compare}
    # an int8 build's: ORT's own int8 form, the fp32 build
    loads |= baselines.subjects(build_dir, man, threads) if compare and boards == 1 else {}
    if rounds:
        results, by_round = measure_rounds(loads, plan, rounds, base=backend)
        round_report = {"rounds": {"count": rounds, "seconds": None if runs else seconds or ROUND_SECONDS,
                                   "ratios": by_round}}
    elif boards > 1:
        from edgecnn.bench import farm

        farm_report = farm.measure_boards(backend, load, boards, plan, measure=measure)
        results = {backend: farm_report["boards"][0]}
    else:
        results = {backend: run_subject(backend, loads.pop(backend), plan)}
        plan["batches"] = [int(b) for b in results[backend]["batches"]]
        results |= {name: run_subject(name, load_other, plan) for name, load_other in loads.items()
                    if name != backend}
    batches = [int(b) for b in results[backend]["batches"]]
    report = {"build": str(build_dir), "backend": backend, "target": man["target"]["name"],
              "precision": man["precision"], "model": man.get("model", {}).get("name"),
              "settings": {"batches": batches, "warmup": warmup, "runs": runs,
                           "seconds": None if runs else seconds or DEFAULT_SECONDS, "threads": threads,
                           "lock_clocks": lock_clocks, "wait_cool_c": wait_cool, "rounds": rounds},
              "system": facts, "results": results, "ratios": ratios(results, backend),
              "warnings": [*(f"{name}: {r['note']}" for name, r in results.items() if r.get("note")),
                           *(f"{name}: {w}" for name, r in results.items() if r["device"]
                             for w in r["device"]["warnings"])],
              **farm_report, **round_report}
    out = Path(out) if out else build_dir / "bench.json"
    if plot and installed("matplotlib"):
        from edgecnn.bench.report import plot as draw

        report["plot"] = str(draw(report, out.with_suffix(".png")))
    elif plot:
        report["plot"] = "none: matplotlib is not installed (a board needs none; pip install matplotlib)"
    write_json(out, report)
    manifest_mod.update(build_dir, bench=summary(report))
    return report


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def summary(report: dict) -> dict:
    """The part of a report a manifest or bundle carries: statistics without the per-run times."""
    def brief(r):
        return {"memory": r["memory"], "batches": {b: {k: v for k, v in s.items() if k != "times_ms"}
                                                   for b, s in r["batches"].items()}}

    return {"settings": report["settings"], "cpu": report["system"]["cpu"], "gpus": report["system"]["gpus"],
            "backend": report["backend"], "results": {name: brief(r) for name, r in report["results"].items()},
            "ratios": report["ratios"], "device": conditions.brief(report["results"][report["backend"]]["device"]),
            **{k: report[k] for k in ("spread", "rounds") if k in report}}


def build_latency(bench_summary: dict | None, batch: int | None = None) -> dict | None:
    """The build's statistics at `batch` (default: the smallest benched) from a report or summary."""
    if not bench_summary:
        return None
    batches = bench_summary["results"][bench_summary["backend"]]["batches"]
    key = str(batch) if batch is not None else min(batches, key=int)
    return batches.get(key)
