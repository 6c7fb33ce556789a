import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from device_trees import path_with, raspberry_pi4, write

from edgecnn import bench
from edgecnn.core import manifest
from edgecnn.backends import Runner
from edgecnn.backends.base import MIN_RUNS
from edgecnn.bench import report as benchreport
from edgecnn.device import conditions
from edgecnn.core.errors import EdgecnnError

STAT_FIELDS = {"batch", "runs", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms",
               "throughput_ips", "times_ms"}


@pytest.fixture
def ort_build(lenet_builds, tmp_path):
    return shutil.copytree(lenet_builds["onnxruntime-cpu"], tmp_path / "ort")


@pytest.fixture
def host_build(lenet_builds, tmp_path):
    return shutil.copytree(lenet_builds["host"], tmp_path / "host")


def check_stats(s: dict, runs: int, batch: int) -> None:
    assert set(s) == STAT_FIELDS and s["runs"] == runs == len(s["times_ms"]) and s["batch"] == batch
    assert 0 < s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["min_ms"] <= s["mean_ms"] <= s["max_ms"] and s["std_ms"] >= 0
    assert s["throughput_ips"] == pytest.approx(batch * 1000 / s["mean_ms"])
    assert s["p50_ms"] == pytest.approx(float(np.median(s["times_ms"])), rel=1e-3, abs=1e-4)


def test_bench_batches_compare_memory_and_manifest(ort_build, tmp_path):
    report = bench.bench(ort_build, batches=[1, 4], warmup=2, runs=15, threads=1, compare=["torch"], out=tmp_path / "b.json")
    for name in ("onnxruntime", "torch"):
        r = report["results"][name]
        for b in (1, 4):
            check_stats(r["batches"][str(b)], 15, b)
        mem = r["memory"]
        assert mem["peak_rss_mib"] > mem["runner_rss_mib"] > 0 and mem["gpu_mib"] is None
    # each backend ran in its own process: torch's libraries are not counted against onnxruntime
    peaks = {name: r["memory"]["peak_rss_mib"] for name, r in report["results"].items()}
    assert peaks["torch"] > peaks["onnxruntime"]
    ort, torch = report["results"]["onnxruntime"]["batches"], report["results"]["torch"]["batches"]
    assert report["ratios"]["torch"]["4"]["p50"] == pytest.approx(torch["4"]["p50_ms"] / ort["4"]["p50_ms"])
    assert report["settings"] == {"batches": [1, 4], "warmup": 2, "runs": 15, "seconds": None, "threads": 1,
                                  "lock_clocks": False, "wait_cool_c": None, "rounds": None}
    assert report["system"]["cpu"] and report["system"]["tools"]["onnxruntime"]
    assert json.loads((tmp_path / "b.json").read_text())["results"]["torch"]["batches"]["1"]["runs"] == 15
    assert (tmp_path / "b.png").stat().st_size > 10_000
    recorded = manifest.read(ort_build)["bench"]  # the manifest's hashes still check after the update
    assert "times_ms" not in recorded["results"]["onnxruntime"]["batches"]["1"]
    assert bench.build_latency(recorded)["p50_ms"] == ort["1"]["p50_ms"]


def test_cli_bench_tvm_host_vs_onnxruntime(host_build):
    r = run_cli("bench", host_build, "--runs", "20", "--warmup", "2", "--threads", "1", "--compare", "onnxruntime")
    assert r.returncode == 0, r.stderr
    assert "tvm*" in r.stdout and "onnxruntime" in r.stdout and "p50 / build" in r.stdout
    report = json.loads((host_build / "bench.json").read_text())
    assert report["backend"] == "tvm" and report["settings"]["batches"] == [1]
    check_stats(report["results"]["tvm"]["batches"]["1"], 20, 1)
    assert report["ratios"]["onnxruntime"]["1"]["p99"] > 0
    assert (host_build / "bench.png").exists() and manifest.read(host_build)["bench"]["backend"] == "tvm"
    ort = report["ratios"]["onnxruntime"]["1"]
    said = " ".join(r.stdout.split())
    assert "p99 / p50" in said and "p99 / build" in said  # the tail beside the median, per subject
    assert (f"the build's p50 is {1 / ort['p50']:.2f}x ONNX Runtime's" in said
            and f"its p99 is {1 / ort['p99']:.2f}x ONNX Runtime's p99" in said)


def test_seconds_budget_runs_at_least_the_minimum(ort_build, tmp_path):
    report = bench.bench(ort_build, warmup=0, seconds=0.01, threads=1, out=tmp_path / "b.json", plot=False)
    s = report["results"]["onnxruntime"]["batches"]["1"]
    assert s["runs"] >= MIN_RUNS and report["settings"]["seconds"] == 0.01


class FixedClockRunner(Runner):
    """A runner that times itself (as a remote device does) and reports its own memory."""

    name = "remote"
    input_shape = [1, 28, 28]

    def __init__(self, times_ns):
        self.times_ns = times_ns

    def time_runs(self, x, *, warmup, runs, seconds, tick=None):
        return self.times_ns

    def memory(self):
        return {"peak_rss_mib": 12.0, "runner_rss_mib": 3.0, "gpu_mib": None}


def fixed_clock(times_ns):
    return FixedClockRunner(times_ns)


@pytest.mark.parametrize("isolated", [True, False])
def test_a_runner_can_bring_its_own_clock(ort_build, tmp_path, isolated):
    """The hook a remote (RPC) runner uses: its times and memory are reported as they are."""
    import functools

    times = [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    load = functools.partial(fixed_clock, times) if isolated else (lambda: FixedClockRunner(times))
    report = bench.bench(ort_build, runs=4, out=tmp_path / "b.json", load=load, plot=False)
    s = report["results"]["onnxruntime"]["batches"]["1"]
    assert (s["min_ms"], s["p50_ms"], s["max_ms"], s["mean_ms"]) == (1.0, 2.5, 4.0, 2.5)
    assert report["results"]["onnxruntime"]["runner"] == "remote"
    assert report["results"]["onnxruntime"]["memory"]["peak_rss_mib"] == 12.0


def test_fixed_batch_build_is_measured_at_its_batch_with_a_note(host_build, tmp_path):
    """As the README says: bench --batch 1,8 on a batch-1 build measures batch 1 and says why not 8."""
    r = run_cli("bench", host_build, "--batch", "1,8", "--runs", "5", "--compare", "onnxruntime",
                "--out", tmp_path / "b.json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["settings"]["batches"] == [1] and list(report["results"]["onnxruntime"]["batches"]) == ["1"]
    assert report["warnings"][0] == ("tvm: this tvm artifact is compiled for batch 1: measured at batch 1 only, not 8 "
                                     "(a build per batch: edgecnn compile MODEL.onnx --target T --batch 8)")
    assert "measured at batch 1 only, not 8" in " ".join(r.stdout.split())


@pytest.mark.parametrize("args, message", [
    (["--runs", "5", "--seconds", "1"], "error: give --runs or --seconds, not both"),
    (["--compare", "onnxrumtime"],
     "error: --compare onnxrumtime: not a reference backend (did you mean 'onnxruntime'?)"),
])
def test_cli_errors_are_one_line(ort_build, args, message):
    r = run_cli("bench", ort_build, *args)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith(message)


def test_cli_bad_batch_list_and_missing_build(tmp_path):
    r = run_cli("bench", tmp_path, "--batch", "1,x")
    assert r.returncode == 2 and "positive integers separated by commas" in r.stderr
    r = run_cli("bench", tmp_path)
    assert r.returncode == 1
    assert r.stderr == f"error: {tmp_path} is not a build directory (no manifest.json): run edgecnn compile\n"


def test_compare_names_are_checked():
    with pytest.raises(EdgecnnError, match="valid: onnxruntime, torch"):
        bench.check_compare(["tvm"], "onnxruntime")
    assert bench.check_compare(["onnxruntime", "torch", "torch"], "onnxruntime") == ["torch"]


class ThrottlingPiRunner(FixedClockRunner):
    """A runner on a (stand-in) Raspberry Pi 4 that heats up and throttles while it runs."""

    def __init__(self, root, bin_dir):
        super().__init__([2_000_000] * 4)
        self.root, self.bin_dir = Path(root), Path(bin_dir)

    def device_probe(self):
        return conditions.Probe(self.root)

    def time_runs(self, x, *, warmup, runs, seconds, tick=None):
        write(self.bin_dir / "answers", "vcgencmd-get_throttled", "throttled=0x50005")
        write(self.root, "sys/class/thermal/thermal_zone0/temp", 82500)
        return self.times_ns


def throttling_pi(root, bin_dir):
    return ThrottlingPiRunner(root, bin_dir)


def test_report_carries_the_device_state_and_warns(ort_build, tmp_path, monkeypatch):
    """The subject's own device: clocks locked and restored, state before/after, warnings in the report."""
    import functools

    root, bin_dir = tmp_path / "pi", tmp_path / "bin"
    raspberry_pi4(root, bin_dir)
    monkeypatch.setenv("PATH", path_with(bin_dir))
    report = bench.bench(ort_build, runs=4, out=tmp_path / "b.json", plot=False, lock_clocks=True, wait_cool=90,
                         load=functools.partial(throttling_pi, str(root), str(bin_dir)))
    dev = report["results"]["onnxruntime"]["device"]
    assert dev["before"]["raspberry_pi"]["throttled"]["throttled"] == "0x0"
    assert dev["after"]["raspberry_pi"]["throttled"]["now"] == ["under-voltage", "throttled"]
    assert dev["clocks"]["done"] == ["CPU governor 'performance' on 4 of 4 policies (was ondemand)"]
    assert dev["clocks"]["restored"] and (root / "sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
                                          ).read_text().strip() == "ondemand"
    assert dev["cooled"]["1"]["reached_c"] == 63.7 and not dev["cooled"]["1"]["timed_out"]
    assert "no power sensor" in dev["power"]["1"]["unavailable"]
    text = "\n".join(report["warnings"])
    assert "onnxruntime: Raspberry Pi is under-voltage, throttled now" in text
    assert "63.7 -> 82.5 C during the runs" in text
    assert report["settings"]["lock_clocks"] and report["settings"]["wait_cool_c"] == 90
    recorded = manifest.read(ort_build)["bench"]["device"]
    assert recorded["throttled"] == "0x50005" and recorded["hottest_c"] == [63.7, 82.5]
    assert recorded["cpu_governor"] == "ondemand" and recorded["warnings"] == dev["warnings"]
    lines = benchreport.device_lines(report)
    assert "CPU governor ondemand" in lines[0] and "vcgencmd throttled=0x50005" in lines[0]
    assert any(line.startswith("[yellow]warning:[/] onnxruntime: Raspberry Pi") for line in lines)


def test_cli_lock_clocks_and_wait_cool_say_what_they_could_not_do(host_build):
    r = run_cli("bench", host_build, "--runs", "5", "--warmup", "1", "--lock-clocks", "--wait-cool", "80")
    assert r.returncode == 0, r.stderr
    report = json.loads((host_build / "bench.json").read_text())
    dev = report["results"]["tvm"]["device"]
    assert set(dev["before"]) >= {"cpufreq", "thermal", "raspberry_pi", "jetson", "nvidia_smi"}
    assert dev["clocks"]["not_done"] or dev["clocks"]["done"]
    assert "device (tvm): on " in r.stdout
    if not list(Path("/sys/devices/system/cpu/cpufreq").glob("policy*")):  # this machine: a VM without cpufreq
        assert "warning: tvm: --lock-clocks: CPU governor: no cpufreq policies" in r.stdout
    if not list(Path("/sys/class/thermal").glob("thermal_zone*")):
        assert "unavailable" in dev["cooled"]["1"] and "--wait-cool 80: no temperature readable" in r.stdout


def test_int8_build_is_timed_against_ort_int8_and_the_fp32_build(lenet_int8, lenet_run, tmp_path):
    """bench of an int8 host build adds ONNX Runtime's int8 in its own form and the fp32 build found beside it."""
    from edgecnn import compiler, export
    from edgecnn.bench import baselines

    _, out = lenet_int8
    onnx_path = export.export(lenet_run, tmp_path / "model.onnx")
    fp32 = compiler.compile_model(onnx_path, "host", "fp32", tmp_path / "build-host-fp32")
    int8 = compiler.compile_model(out / "model.int8.onnx", "host", "int8", tmp_path / "build-host-int8")
    assert baselines.fp32_build(int8, manifest.read(int8)) == fp32.resolve()
    report = bench.bench(int8, warmup=1, runs=5, threads=1, compare=["onnxruntime"], plot=False)
    assert set(report["results"]) == {"tvm", "onnxruntime", baselines.ORT_INT8, baselines.FP32_BUILD}
    lines = benchreport.baseline_lines(report)
    assert any("ONNX Runtime's int8 in its own Q/DQ form" in line for line in lines)
    assert any("the fp32 build's" in line for line in lines)
    none = bench.bench(int8, warmup=1, runs=5, threads=1, compare=[], plot=False)
    assert set(none["results"]) == {"tvm"}


def test_the_tvm_runner_applies_the_builds_thread_settings_unless_the_environment_says(host_build, tmp_path):
    """compile records the thread pool settings chosen for the target; the runner sets them before TVM's pool
    starts; a variable set in the environment wins; bench records what ran."""
    import os
    import subprocess
    import sys

    from edgecnn.backends.tvm import runner

    art = manifest.read(host_build)["artifact"]
    assert art["threads"] == runner.thread_settings(art["tvm_target"]) and art["threads"]["chosen_by"]
    assert art["threads"]["env"]["TVM_NUM_THREADS"] == str(art["tvm_target"]["num-cores"])
    arm = runner.thread_settings({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4})
    assert arm["env"] == {"TVM_NUM_THREADS": "4"} and arm["chosen_by"].startswith("not measured on aarch64")
    show = f"from edgecnn.backends import load_build; print(load_build({str(host_build)!r}, None).thread_env)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TVM_")}

    def env_of(**extra):
        out = subprocess.run([sys.executable, "-c", show], env={**clean, **extra}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return eval(out.stdout.strip().splitlines()[-1])

    applied = env_of()
    assert all(applied[var] == value for var, value in art["threads"]["env"].items())
    assert env_of(TVM_BIND_THREADS="1", TVM_THREAD_POOL_SPIN_COUNT="7") == {
        **applied, "TVM_BIND_THREADS": "1", "TVM_THREAD_POOL_SPIN_COUNT": "7"}
    report = bench.bench(host_build, runs=12, warmup=1, threads=1, out=tmp_path / "b.json", plot=False)
    assert report["results"]["tvm"]["thread_env"]["TVM_NUM_THREADS"] == "1"


def test_bench_rounds_interleaves_the_build_and_its_baselines(host_build, tmp_path):
    """--rounds: the build and ONNX Runtime in one process, alternating; per-round ratios of their medians."""
    report = bench.bench(host_build, rounds=3, runs=4, warmup=1, threads=1, compare=["onnxruntime"],
                         out=tmp_path / "b.json", plot=False)
    res, rounds = report["results"], report["rounds"]
    assert set(res) == {"tvm", "onnxruntime"} and rounds["count"] == 3 and report["settings"]["rounds"] == 3
    for r in res.values():
        st = r["batches"]["1"]
        assert st["runs"] == 12 == len(st["times_ms"]) and len(st["rounds_ms"]) == 3
    per_round = [o / t for o, t in zip(res["onnxruntime"]["batches"]["1"]["rounds_ms"], res["tvm"]["batches"]["1"]["rounds_ms"])]
    ratio = rounds["ratios"]["onnxruntime"]["1"]
    assert ratio["median"] == pytest.approx(float(np.median(per_round))) and len(ratio["rounds"]) == 3
    assert res["tvm"]["device"]["before"] is not None and res["onnxruntime"]["device"] is None
    assert manifest.read(host_build)["bench"]["rounds"]["count"] == 3
    assert any("over 3 interleaved rounds" in line for line in benchreport.round_lines(report))


def test_cli_bench_rounds_prints_the_ratios_and_refuses_rpc(host_build):
    r = run_cli("bench", host_build, "--rounds", "2", "--runs", "3", "--warmup", "1", "--compare", "onnxruntime")
    assert r.returncode == 0, r.stderr
    assert "onnxruntime / tvm at batch 1" in " ".join(r.stdout.split())
    r = run_cli("bench", host_build, "--rounds", "2", "--rpc", "127.0.0.1:1")
    assert r.returncode == 1 and "--rounds" in r.stderr and "Traceback" not in r.stderr
