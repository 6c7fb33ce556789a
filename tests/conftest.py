import contextlib
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ("qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu")  # Debian qemu-user-static, aarch64 sysroot
FASHION = Path(os.environ.get("EDGECNN_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

SESSION = "EDGECNN_TEST_SESSION"  # marks what this test run started (other runs may share the machine)


def leftover_processes(before: set) -> list:
    """Processes this test run started (they carry its SESSION mark) that are still alive: this Python running
    TVM's workers, RPC servers, trackers or edgecnn itself (a finished test must stop what it started)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["pid"] in before or not cmd or cmd[0] != sys.executable:
            continue
        if not any(part.startswith(("tvm.exec", "edgecnn")) for part in cmd[1:3]):
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(SESSION) == os.environ[SESSION]:
                found.append(proc)
    return found


def pytest_sessionstart(session):
    os.environ[SESSION] = f"{os.getpid()}-{id(session)}"
    try:
        import psutil
    except ImportError:  # the tvm extra brings psutil; without it there are no TVM workers either
        return
    session.config.pids_before = set(psutil.pids())


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves no process running: fail the run, name what was left and stop it."""
    if not hasattr(session.config, "pids_before"):
        return
    import psutil

    left = leftover_processes(session.config.pids_before)
    if left:
        names = "; ".join(f"{p.pid}: {' '.join(p.info['cmdline'][1:4])}" for p in left)
        print(f"\nprocesses left running by the tests (stopped now): {names}", file=sys.stderr)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                                   reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")


def run_cli(*args, cwd=None, env=None, timeout=900):
    """Run `python -m edgecnn ARGS` in a subprocess; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "edgecnn", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def write_idx(path: Path, array: np.ndarray, compress=True) -> Path:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture(scope="session")
def tiny_idx(tmp_path_factory) -> Path:
    """An MNIST-format folder of 600 train / 200 test 28x28 images whose class is a bright square's position."""
    root = tmp_path_factory.mktemp("tiny_idx")
    rng = np.random.default_rng(0)
    for split, n, (img_name, lbl_name) in (("train", 600, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
                                            ("test", 200, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))):
        labels = rng.integers(0, 4, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            y, x = divmod(int(c), 2)
            images[i, 4 + 12 * y: 12 + 12 * y, 4 + 12 * x: 12 + 12 * x] = 230
        write_idx(root / (img_name + ".gz"), images)
        write_idx(root / (lbl_name + ".gz"), labels)
    return root


@pytest.fixture
def tiny_recipe(tiny_idx, tmp_path) -> Path:
    """A LeNet-5 recipe on `tiny_idx` that trains in a second."""
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
seed: 0
model: {{name: lenet5}}
data: {{dataset: idx, root: {tiny_idx}, val_size: 100, mean: [0.2], std: [0.3]}}
optim: {{lr: 0.01}}
schedule: {{epochs: 2, batch_size: 32}}
""")
    return path


@pytest.fixture(scope="session")
def has_tool():
    return lambda name: shutil.which(name) is not None


@pytest.fixture(scope="session")
def lenet_run(tiny_idx, tmp_path_factory) -> Path:
    """A LeNet-5 RUN_DIR trained for 2 epochs on `tiny_idx` (shared, read-only)."""
    from edgecnn.train import recipe
    from edgecnn import train

    root = tmp_path_factory.mktemp("lenet_run")
    rec = recipe.parse({"name": "tiny", "model": {"name": "lenet5"}, "optim": {"lr": 0.01},
                        "data": {"dataset": "idx", "root": str(tiny_idx), "val_size": 100, "mean": [0.2], "std": [0.3]},
                        "schedule": {"epochs": 2, "batch_size": 32}})
    train.train(rec, root / "run")
    return root / "run"


@pytest.fixture(scope="session")
def lenet_onnx(lenet_run, tmp_path_factory) -> Path:
    from edgecnn import export

    return export.export(lenet_run, tmp_path_factory.mktemp("lenet_onnx") / "model.onnx", batch="dynamic")


@pytest.fixture(scope="session")
def lenet_int8(lenet_run, tmp_path_factory):
    """(quant.json report, folder) of `lenet_run` quantized by edgecnn (per channel, TensorRT's form)."""
    from edgecnn.quantize import quantize

    out = tmp_path_factory.mktemp("lenet_int8")
    return quantize(lenet_run, out, calib=48, sensitivity=50, algo="minmax"), out


@pytest.fixture(scope="session")
def mobilenet_run(tmp_path_factory) -> Path:
    """An untrained MobileNet v2 (alpha 0.35) checkpoint with random BatchNorm statistics, so BN folding is visible."""
    import torch

    from edgecnn.models import checkpoint
    from edgecnn.train import recipe

    root = tmp_path_factory.mktemp("mnv2")
    rec = recipe.parse({"name": "mnv2", "model": {"name": "mobilenet_v2", "alpha": 0.35}})
    spec = checkpoint.model_spec(rec, 10, [str(i) for i in range(10)])
    torch.manual_seed(0)
    model = checkpoint.build_model(spec)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    (root / "run").mkdir()
    checkpoint.save(root / "run" / "model.pt", model, spec)
    return root / "run"


@pytest.fixture(scope="session")
def lenet_builds(lenet_onnx, tmp_path_factory) -> dict:
    """Builds of `lenet_onnx` by target: 'host' (TVM, batch 1) and 'onnxruntime-cpu' (shared: copy to modify)."""
    from edgecnn import compiler

    root = tmp_path_factory.mktemp("lenet_builds")
    return {t: compiler.compile_model(lenet_onnx, t, out=root / t) for t in ("host", "onnxruntime-cpu")}


@pytest.fixture(scope="session")
def arm_app(tmp_path_factory):
    """edgecnn-tvm-run cross-built for aarch64 (the aarch64 target's cross compiler), and the emulator."""
    from cpp_build import cross_build, missing

    from edgecnn.compiler import targets

    options = targets.load("aarch64").options
    emulator = list(EMULATOR)
    if not shutil.which(emulator[0]):
        missing(emulator[0], "apt-get install qemu-user-static (make test-tools)")
    return cross_build(tmp_path_factory.mktemp("cpp-aarch64"), options["cross_compiler"]), emulator
