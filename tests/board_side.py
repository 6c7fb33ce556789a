"""The board side, run by a board's Python (.ci/board310: Python 3.10 with `edgecnn[board]` only, no torch, no
onnx): the bundle runtime predicts as the host did, `python -m edgecnn.rpc_server` serves `edgecnn bench --rpc`
over loopback, `edgecnn bench` runs a build here, and `edgecnn verify` says what its reference needs.

    python tests/board_side.py BUILD_DIR BUNDLE IMAGES.npy LOGITS.npy --host-python PYTHON [--trt-build DIR]
        [--with-onnxruntime]

Not collected by pytest (it runs outside the checkout's environment); exits non-zero on the first failure.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST_ONLY = ("torch", "onnx", "onnxscript", "matplotlib")  # never installed with edgecnn[board]
KEY = "board310"


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"\n{detail[-2000:]}" if detail and not ok else ""), flush=True)
    if not ok:
        sys.exit(1)


def loaded(names=HOST_ONLY + ("onnxruntime",)) -> list[str]:
    return sorted(m for m in names if m in sys.modules)


def edgecnn_cmd(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("edgecnn")), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


# what `edgecnn build/verify/bench` load for a TensorRT or a TVM build
DEVICE_MODULES = ("edgecnn.cli.compile", "edgecnn.cli.verify", "edgecnn.cli.bench", "edgecnn.backends.tensorrt",
                  "edgecnn.backends.tensorrt.runner", "edgecnn.backends.tvm.runner", "edgecnn.verify", "edgecnn.bench")


def check_environment() -> None:
    import importlib
    import importlib.util

    import edgecnn

    check(sys.version_info >= (3, 10), f"Python {sys.version.split()[0]}")
    check(Path(sys.prefix) in Path(edgecnn.__file__).resolve().parents, f"edgecnn from this venv ({edgecnn.__file__})")
    missing = [m for m in HOST_ONLY if importlib.util.find_spec(m) is None]
    check(missing == list(HOST_ONLY), f"none of the host packages is installed here ({', '.join(HOST_ONLY)})")
    for name in DEVICE_MODULES:
        importlib.import_module(name)
    check(loaded() == [], f"the modules of edgecnn build/verify/bench import without torch/onnx ({loaded()})")


def check_runtime(bundle: str, images: str, logits: str) -> None:
    import numpy as np

    import edgecnn.runtime

    x, want = np.load(images), np.load(logits)
    with edgecnn.runtime.load(bundle) as model:
        got = model.logits(x)
        classes = [p.indices[0] for p in model.predict(x)]
    check(np.allclose(got, want, atol=1e-4), f"the bundle's logits match the host's (max diff {abs(got - want).max():.2e})")
    check(classes == want.argmax(1).tolist(), f"predict: the host's classes for all {len(x)} images ({classes[:8]}...)")
    check(loaded() == [], f"edgecnn.runtime loaded no torch/onnx/onnxruntime ({loaded()})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_board(tracker: str, procs, seconds=60.0) -> None:
    from edgecnn.backends.tvm import rpc

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                check(False, f"{' '.join(p.args[2:3])} exited with code {p.returncode}")
        try:
            if rpc.count_boards(tracker, KEY, 1.0)["free"] >= 1:
                return
        except Exception:  # the tracker is still starting: any refusal means try again
            pass
        time.sleep(0.5)
    check(False, f"the board registered with the tracker within {seconds:g} s")


def check_rpc_bench(build: str, work: Path, host_python: str) -> None:
    """The tracker runs on the host (its tornado is no board package), the RPC server here."""
    import edgecnn.rpc_server  # noqa: F401

    check(loaded() == [], f"edgecnn.rpc_server loaded no torch/onnx/onnxruntime ({loaded()})")
    port = free_port()
    tracker = f"127.0.0.1:{port}"
    start = lambda python, *args: subprocess.Popen([python, "-m", *args], stdout=subprocess.DEVNULL)  # noqa: E731
    procs = [start(host_python, "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1),
                   "--silent")]
    try:
        time.sleep(1)
        server = free_port()
        procs.append(start(sys.executable, "edgecnn.rpc_server", "--host", "127.0.0.1", "--port", str(server), "--port-end",
                           str(server + 1), "--tracker", tracker, "--key", KEY, "--silent"))
        wait_for_board(tracker, procs)
        out = work / "bench-rpc.json"
        r = edgecnn_cmd("bench", build, "--rpc", tracker, "--key", KEY, "--runs", 10, "--warmup", 1, "--out", out)
        check(r.returncode == 0, "edgecnn bench --rpc through python -m edgecnn.rpc_server", r.stderr)
        result = json.loads(out.read_text())["results"]["tvm"]
        check(result["batches"]["1"]["runs"] == 10 and result["batches"]["1"]["p50_ms"] > 0,
              f"10 runs timed on the board, p50 {result['batches']['1']['p50_ms']:.3f} ms")
        check(result["device"]["before"].get("reader") == "edgecnn.rpc_server", "the board read its own state")
    finally:
        stop(procs)


def stop(procs) -> None:
    """End the tracker and the server with the workers they started (TVM's popen pool outlives its parent)."""
    import psutil

    family = []
    for p in procs:
        try:
            family += [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]
        except psutil.NoSuchProcess:
            pass
    for q in family:
        try:
            q.terminate()
        except psutil.NoSuchProcess:
            pass
    for q in psutil.wait_procs(family, timeout=20)[1]:
        q.kill()


def check_trt_build(build: str) -> None:
    """A TensorRT build compiled on the host: building its engine here asks for TensorRT, in one line."""
    r = edgecnn_cmd("build", build)
    check(r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "tensorrt is not installed" in r.stderr,
          f"edgecnn build of a TensorRT build says what it needs: {r.stderr.strip()}", r.stderr)


def check_local_commands(build: str, work: Path, with_onnxruntime: bool) -> None:
    r = edgecnn_cmd("bench", build, "--runs", 10, "--warmup", 1, "--out", work / "bench.json")
    check(r.returncode == 0, "edgecnn bench here", r.stderr)
    r = edgecnn_cmd("verify", build, "--data", "random", "--limit", 16, "--report", work / "verify.json")
    if with_onnxruntime:
        report = json.loads((work / "verify.json").read_text()) if r.returncode == 0 else {}
        check(report.get("passed") and report.get("against") == "onnxruntime",
              "edgecnn verify against ONNX Runtime on the recorded ONNX", r.stderr)
    else:
        check(r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "pip install onnxruntime" in r.stderr,
              f"edgecnn verify says what its reference needs: {r.stderr.strip()}", r.stderr)


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("build", "bundle", "images", "logits"):
        p.add_argument(name)
    p.add_argument("--host-python", required=True, help="the host's Python (with TVM's tracker)")
    p.add_argument("--with-onnxruntime", action="store_true", help="ONNX Runtime was added: verify runs")
    p.add_argument("--trt-build", help="a build for a TensorRT target, compiled on the host")
    args = p.parse_args()
    paths = [str(Path(a).resolve()) for a in (args.build, args.bundle, args.images, args.logits)]
    check_environment()
    check_runtime(*paths[1:])
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # nothing of the checkout on the path
        if not args.with_onnxruntime:
            check_rpc_bench(paths[0], Path(tmp), args.host_python)
        if args.trt_build:
            check_trt_build(args.trt_build)
        check_local_commands(paths[0], Path(tmp), args.with_onnxruntime)


if __name__ == "__main__":
    main()
