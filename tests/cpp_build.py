"""Build the C++ app examples/cpp/tvm (edgecnn-tvm-run) with CMake for tests: for this host, or for aarch64."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "cpp" / "tvm"
AARCH64_RUNTIME = Path(os.environ.get("EDGECNN_AARCH64_TVM", ROOT / ".cache" / "aarch64-tvm"))


def missing(what: str, fix: str):
    """Skip where a tool is absent; in CI (CI=true) fail instead, so a broken set-up cannot pass as skipped."""
    message = f"{what} missing: {fix}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def cmake_build(out: Path, *defines: str) -> Path:
    """Configure and build the app into `out`; returns the executable."""
    if not shutil.which("cmake"):
        missing("cmake", "apt-get install cmake")
    for cmd in (["cmake", "-S", str(SOURCE), "-B", str(out), f"-DPython3_EXECUTABLE={sys.executable}", *defines],
                ["cmake", "--build", str(out), "-j", "2"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return out / "edgecnn-tvm-run"


def cross_build(out: Path, compiler: str) -> Path:
    """The app cross-built with `compiler` against the aarch64 TVM runtime `make test-tools` unpacks."""
    if not shutil.which(compiler):
        missing(compiler, "apt-get install g++-aarch64-linux-gnu (make test-tools)")
    if not (AARCH64_RUNTIME / "VERSIONS").is_file():
        missing(f"the aarch64 TVM runtime in {AARCH64_RUNTIME}", "make test-tools")
    return cmake_build(out, "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
                       f"-DCMAKE_CXX_COMPILER={compiler}", f"-DTVM_RUNTIME_DIR={AARCH64_RUNTIME}")


def run_app(app: Path, build_dir: Path, *args, emulator: list[str] | None = None, timeout: int = 300):
    """Run the app (under `emulator`, e.g. qemu-aarch64-static -L SYSROOT, with the aarch64 libraries)."""
    env = dict(os.environ)
    if emulator:
        env["LD_LIBRARY_PATH"] = str(AARCH64_RUNTIME / "lib")
    cmd = [*(emulator or []), str(app), str(build_dir), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
