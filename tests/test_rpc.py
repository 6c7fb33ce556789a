"""The device farm on loopback: TVM's own RPC tracker and an RPC server (the "board") on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_cli
from device_trees import path_with, raspberry_pi4

from edgecnn import backends, compiler
from edgecnn.core import manifest
from edgecnn.backends.tvm import rpc
from edgecnn.core.errors import EdgecnnError

KEY = "loopback"
BOARD_KEY = "loopback-edgecnn"  # a board running python -m edgecnn.rpc_server
# what a board does not have: only Python, numpy and the TVM wheel are installed there
NOT_ON_A_BOARD = ("torch", "onnx", "onnxruntime", "onnxscript", "yaml", "rich", "click", "matplotlib", "PIL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for(check, procs, seconds=90.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{' '.join(p.args[2:4])} exited: {p.stderr.read()[-2000:]}")
        try:
            if check():
                return
        except EdgecnnError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the loopback device farm did not come up within {seconds:g} s")


def stop(procs) -> None:
    """Terminate the processes and everything they started (an RPC server forks a worker per session)."""
    import psutil

    for p in reversed(procs):
        try:
            family = [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]
        except psutil.NoSuchProcess:
            family = []
        for q in family:
            try:
                q.terminate()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=20)
        for q in family:
            if q.is_running():
                q.kill()
        p.wait(timeout=30)


@pytest.fixture(scope="module")
def farm():
    """A tracker and two RPC servers (the boards) registered as KEY, all python -m tvm.exec.* on free loopback
    ports: (tracker HOST:PORT, first server's port, both servers' ports)."""
    port, server_ports = free_port(), [free_port(), free_port()]
    tracker = start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end",
                    str(port + 1), "--silent")
    procs = [tracker]
    try:
        wait_for(lambda: rpc.probe_tracker("127.0.0.1", port, 1.0) is None, procs)
        for server_port in server_ports:
            procs.append(start("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                               "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{port}", "--key", KEY))
        wait_for(lambda: rpc.count_boards(f"127.0.0.1:{port}", KEY, 1.0)["free"] == 2, procs)
        yield f"127.0.0.1:{port}", server_ports[0], server_ports
    finally:
        stop(procs)


@pytest.fixture(scope="module")
def edgecnn_board(farm, tmp_path_factory):
    """python -m edgecnn.rpc_server registered as BOARD_KEY, in a board's environment: torch, ONNX, PyYAML,
    rich, click, matplotlib and Pillow cannot be imported, and a Raspberry Pi's vcgencmd is on its PATH
    (only its PATH: the state in a report can only have come from the server)."""
    import tvm

    tmp = tmp_path_factory.mktemp("board")
    raspberry_pi4(tmp / "pi", tmp / "bin", throttled="0x50000")
    (tmp / "site").mkdir()
    (tmp / "site/sitecustomize.py").write_text(f"import sys\nfor m in {NOT_ON_A_BOARD}:\n    sys.modules[m] = None\n")
    env = {**os.environ, "PATH": path_with(tmp / "bin"), "PYTHONPATH": os.pathsep.join([str(tmp / "site"), str(ROOT)])}
    port = free_port()
    proc = start("edgecnn.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1),
                 "--tracker", farm[0], "--key", BOARD_KEY, env=env)
    try:
        host, tracker_port = rpc.parse_address(farm[0])
        wait_for(lambda: rpc.board_keys(tvm.rpc.connect_tracker(host, tracker_port)).get(BOARD_KEY), [proc])
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def host_build(lenet_onnx, tmp_path_factory):
    return compiler.compile_model(lenet_onnx, "host", out=tmp_path_factory.mktemp("rpc") / "build-host")


def test_remote_run_matches_local_run(farm, host_build):
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    man = manifest.read(host_build)
    with backends.require("tvm").load(host_build, man) as local:
        want = local.run(x)["logits"]
    with rpc.RemoteRunner(host_build, farm[0], KEY, timeout=5, threads=1) as remote:
        got = remote.run(x)["logits"]
        times = remote.time_runs(x[:1], warmup=2, runs=7, seconds=None)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert len(times) == 7 and all(t > 0 for t in times)


def test_remote_timing_sends_the_model_s_input_dtype(farm, tmp_path):
    """A uint8-input model (it normalizes its pixels itself) is timed on the board with uint8 input."""
    from foreign_models import uint8_nhwc

    build = compiler.compile_model(uint8_nhwc(tmp_path / "u8.onnx"), "host", out=tmp_path / "build")
    pixels = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    with rpc.RemoteRunner(build, farm[0], KEY, timeout=5, threads=1) as remote:
        assert remote.input_dtype == "uint8"
        times = remote.time_runs(pixels, warmup=1, runs=3, seconds=None)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_bench_through_the_tracker(farm, host_build, tmp_path):
    """edgecnn bench --rpc: per-run timings from the board's clock; the board is free again afterwards."""
    out = tmp_path / "bench.json"
    r = run_cli("bench", host_build, "--rpc", farm[0], "--key", KEY, "--runs", 20, "--warmup", 2, "--out", out)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    result = report["results"]["tvm"]
    assert report["system"]["remote"] and KEY in report["system"]["cpu"] and "cpu" in report["system"]["host"]
    assert KEY in result["runner"] and result["batches"]["1"]["runs"] == 20
    assert all(t > 0 for t in result["batches"]["1"]["times_ms"]) and result["batches"]["1"]["p50_ms"] > 0
    plain = "runs TVM's plain rpc_server, which cannot read its state: start it with python -m edgecnn.rpc_server"
    assert plain in result["device"]["before"]["unavailable"] and plain in result["device"]["power"]["1"]["unavailable"]
    assert "state not read: the board" in r.stdout
    with rpc.RemoteRunner(host_build, farm[0], KEY, timeout=5) as again:  # a second session gets the board
        assert again.run(np.zeros((1, 1, 28, 28), np.float32))["logits"].shape == (1, 4)


def test_unregistered_key_lists_the_registered_ones(farm, host_build):
    """Without --key the build's target name is the key: 'host' is not registered, KEY is."""
    r = run_cli("bench", host_build, "--rpc", farm[0], "--runs", 5)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "no board with key 'host'" in r.stderr and KEY in r.stderr and "--key host" in r.stderr
    assert "python -m edgecnn.rpc_server --tracker" in r.stderr  # the server that reports the board's state


def test_silent_tracker_times_out_quickly():
    """A port that accepts connections but never answers: refused after --rpc-timeout, not TVM's 60 s retry."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(EdgecnnError, match="did not answer within 0.5 s"):
            rpc.request_session(f"127.0.0.1:{silent.getsockname()[1]}", KEY, timeout=0.5)


def wait_idle(farm, seconds=60.0) -> bool:
    """True once both boards are free again (a server re-registers with the tracker when its session ends)."""
    deadline = time.monotonic() + seconds
    while rpc.count_boards(farm[0], KEY, 5)["free"] < 2:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_no_tracker_and_not_a_tracker(farm):
    assert wait_idle(farm)  # a server in a session does not answer new connections at all
    with pytest.raises(EdgecnnError, match="not reachable .*python -m edgecnn.rpc_tracker"):
        rpc.request_session(f"127.0.0.1:{free_port()}", KEY, timeout=2)
    with pytest.raises(EdgecnnError, match="is not a TVM RPC tracker"):
        rpc.request_session(f"127.0.0.1:{farm[1]}", KEY, timeout=2)  # the RPC server's own port


def test_bad_rpc_options(host_build):
    for args, message in ((["--rpc", "nohost:"], "HOST:PORT"), (["--key", KEY], "--rpc HOST:PORT"),
                          (["--rpc", "127.0.0.1:9", "--compare", "onnxruntime"], "--compare")):
        r = run_cli("bench", host_build, *args)
        assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_bench_records_the_boards_own_state(edgecnn_board, farm, host_build, tmp_path):
    """The board reads its own state and power (edgecnn.rpc_server): vcgencmd is only on the server's PATH."""
    out = tmp_path / "bench.json"
    r = run_cli("bench", host_build, "--rpc", farm[0], "--key", BOARD_KEY, "--runs", 10, "--warmup", 1,
                "--out", out)
    assert r.returncode == 0, r.stderr
    dev = json.loads(out.read_text())["results"]["tvm"]["device"]
    for state in (dev["before"], dev["after"]):
        assert state["reader"] == "edgecnn.rpc_server" and state["pid"] != os.getpid()
        assert state["raspberry_pi"]["throttled"] == {"throttled": "0x50000", "now": [],
                                                      "since_boot": ["under-voltage", "throttled"]}
        assert state["raspberry_pi"]["arm_mhz"] == 1800.5
    assert "no power sensor readable" in dev["power"]["1"]["unavailable"] and dev["warnings"] == []
    assert "device (tvm): on " in r.stdout and "vcgencmd throttled=0x50000" in r.stdout


def test_board_probe_methods(edgecnn_board, farm, host_build):
    """Every method of the board's reader answers over RPC, and an unknown one is refused there."""
    with rpc.RemoteRunner(host_build, farm[0], BOARD_KEY, timeout=5) as runner:
        probe = runner.device_probe()
        assert probe.note is None and probe.state()["cpufreq"]
        probe.meter_start()
        assert "unavailable" in probe.meter_stop()
        record = probe.lock_clocks()
        assert record["not_done"] and probe.restore_clocks(record) == {"restored": [], "failed": []}
        with pytest.raises(Exception, match="unknown method 'shutdown'"):
            probe.call("shutdown")


def boards(farm) -> set[str]:
    return {f"127.0.0.1:{p}" for p in farm[2]}


def test_verify_runs_the_parity_check_on_the_board(farm, host_build, tmp_path):
    out = tmp_path / "verify.json"
    r = run_cli("verify", host_build, "--rpc", farm[0], "--key", KEY, "--limit", 64, "--report", out)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["passed"] and report["board"] in boards(farm) and report["outputs"]["logits"]["samples"] == 64
    assert "on board 127.0.0.1" in " ".join(r.stdout.split())


def test_verify_on_the_board_fails_a_broken_build_and_localises_there(farm, lenet_onnx, tmp_path):
    from test_verify import perturb

    bad_node = perturb(lenet_onnx, tmp_path / "perturbed.onnx")
    build = compiler.compile_model(tmp_path / "perturbed.onnx", "host", out=tmp_path / "b")
    r = run_cli("verify", build, "--rpc", farm[0], "--key", KEY, "--limit", 64)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last.startswith("error: parity failed") and r.stderr.count("error:") == 1, r.stderr
    report = json.loads((build / "verify.json").read_text())
    assert not report["passed"] and report["board"] in boards(farm)
    assert report["localization"]["node"] == bad_node


def test_bench_on_two_boards_reports_each_and_the_spread(farm, host_build, tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("bench", host_build, "--rpc", farm[0], "--key", KEY, "--boards", 2, "--runs", 20, "--warmup", 2,
                "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {b["board"] for b in report["boards"]} == boards(farm)
    assert all(b["batches"]["1"]["runs"] == 20 and b["batches"]["1"]["p50_ms"] > 0 for b in report["boards"])
    spread = report["spread"]["1"]
    assert set(spread["p50_ms"]) == boards(farm) and spread["min_ms"] <= spread["median_ms"] <= spread["max_ms"]
    assert spread["spread_pct"] >= 0 and all(b in r.stdout for b in boards(farm)) and "spread" in r.stdout
    assert report["results"]["tvm"] == report["boards"][0]  # what the manifest and bundle carry
    assert wait_idle(farm)  # both boards released


def test_more_boards_than_the_key_has_is_refused(farm, host_build):
    r = run_cli("bench", host_build, "--rpc", farm[0], "--key", KEY, "--boards", 3, "--runs", 5)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"has 2 '{KEY}' board(s)" in r.stderr and "--boards 2" in r.stderr
    r = run_cli("bench", host_build, "--boards", 2, "--runs", 5)
    assert r.returncode == 1 and "--rpc HOST:PORT" in r.stderr


@pytest.mark.parametrize("module", ["edgecnn.rpc_server", "edgecnn.rpc_tracker"])
def test_sigterm_stops_the_server_and_its_worker(module):
    """TVM's server and tracker serve from a popen_worker child: SIGTERM to edgecnn's process stops it too."""
    import signal

    import psutil

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port),
                             "--port-end", str(port + 1)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(module.replace(".", " ")), proc.stderr.read()[-2000:]
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert any("popen_worker" in " ".join(w.cmdline()) for w in workers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
        gone, alive = psutil.wait_procs(workers, timeout=30)  # a liveness wait: a loaded 2-core machine took over 10 s
        assert not alive, [w.cmdline() for w in alive]
    finally:
        stop([proc])
