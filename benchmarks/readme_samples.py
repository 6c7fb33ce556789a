"""The README's sample outputs, from real runs: `edgecnn bench` with the device-state options, and the
BudgetError an application's latency budget raises.

    .venv/bin/python benchmarks/readme_samples.py RUN_DIR     # e.g. runs/lenet5-fashion (its build-host-fp32)

Writes README.md's bench-sample and budget-sample blocks (benchmarks/readme.py).
"""

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from readme import replace_block  # noqa: E402

BENCH = ("<!-- bench-sample:start -->", "<!-- bench-sample:end -->")
BUDGET = ("<!-- budget-sample:start -->", "<!-- budget-sample:end -->")
# an application's test with budgets the build cannot meet (p99 of 1 us), as pytest prints its failure
BUDGET_TEST = """
from edgecnn.testing import assert_latency


def test_fast_enough(edgecnn_build):
    assert_latency(edgecnn_build, p99_ms=0.001, max_ratio={"onnxruntime": 1.2}, runs=200)
"""


def bench_sample(build: Path) -> str:
    args = ["bench", str(build), "--runs", "200", "--compare", "onnxruntime", "--lock-clocks", "--wait-cool", "70"]
    r = subprocess.run([sys.executable, "-m", "edgecnn", *args], capture_output=True, text=True,
                       env={"COLUMNS": "140", "PATH": "/usr/bin:/bin"})
    if r.returncode:
        raise SystemExit(r.stderr)
    shown = " ".join(["edgecnn", *args]).replace(str(build), "runs/lenet5-fashion/build-host-fp32")
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("report ")]
    return "```\n$ " + shown + "\n" + "\n".join(lines) + "\n```"


def budget_sample(build: Path, work: Path) -> str:
    (work / "test_budget.py").write_text(BUDGET_TEST)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(work / "test_budget.py"),
                        "--edgecnn-build", str(build)], capture_output=True, text=True, cwd=work,
                       env={"COLUMNS": "140", "PATH": "/usr/bin:/bin"})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("E   ")]
    if r.returncode != 1 or not lines:
        raise SystemExit(f"the budget test did not fail as expected:\n{r.stdout[-3000:]}")
    return "```\n" + "\n".join(lines) + "\n```"


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a RUN_DIR with build-host-fp32 (edgecnn run RECIPE --target host)")
    args = ap.parse_args()
    build = (args.run / "build-host-fp32").resolve()
    replace_block(ROOT / "README.md", BENCH, bench_sample(build))
    with tempfile.TemporaryDirectory() as tmp:
        replace_block(ROOT / "README.md", BUDGET, budget_sample(build, Path(tmp)))
    print("wrote README.md's bench-sample and budget-sample blocks")


if __name__ == "__main__":
    main()
