"""`make demo`, timed: the Makefile's demo command as written (its RUN_DIR in a temporary folder), its wall and
CPU seconds, the 1-minute load average, and what it reached; writes benchmarks/results/demo.json and README.md's
demo block.

    .venv/bin/python benchmarks/demo.py                # as long as make demo takes
    .venv/bin/python benchmarks/demo.py --table-only   # regenerate the README block from the JSON

CPU seconds are the run's user + system time, all its threads and child processes: about what a quiet machine
needs (a 2-thread stage on 2 quiet cores can take less wall time). On a machine other jobs load the wall time is
not the demo's: the JSON keeps it with the load, the block shows the CPU seconds and the load.
"""

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

from edgecnn.bench import system
from edgecnn.core.fileio import write_json
from edgecnn.core.progress import console
from readme import replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo.json"
MARKERS = ("<!-- demo:start -->", "<!-- demo:end -->")
QUIET_LOAD = 1.5  # 1-minute load average before the run at most for its wall time to count (2 cores: one left)


def demo_command(makefile: Path = ROOT / "Makefile") -> list[str]:
    """The `edgecnn run ...` line of the Makefile's demo target, as arguments after `edgecnn`."""
    match = re.search(r"^demo:.*\n\t\$\(VENV\)/bin/edgecnn (run .*)$", makefile.read_text(), re.M)
    if not match:
        raise SystemExit(f"{makefile}: no `$(VENV)/bin/edgecnn run ...` line under demo:")
    return match.group(1).split()


def epochs_of(args: list[str]) -> int:
    """The epochs the demo trains: its --epochs, else the recipe's."""
    if "--epochs" in args:
        return int(args[args.index("--epochs") + 1])
    from edgecnn.train import recipe

    return recipe.load(ROOT / args[1]).schedule.epochs


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_demo(args: list[str], run_dir: Path) -> dict:
    """Run it (cwd: the checkout, as make does) and read what it wrote into run_dir."""
    import subprocess

    edgecnn = Path(sys.executable).parent / "edgecnn"
    load, cpu, t0 = os.getloadavg()[0], children_cpu(), time.perf_counter()
    subprocess.run([str(edgecnn), *args, "--out", str(run_dir)], cwd=ROOT, check=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu
    metrics = json.loads((run_dir / "metrics.json").read_text())
    builds = {}
    for precision in ("fp32", "int8"):
        man = json.loads((run_dir / f"build-host-{precision}" / "manifest.json").read_text())
        results = man["bench"]["results"]
        builds[precision] = {"top1": man["verify"]["top1_candidate"], "parity": man["verify"]["passed"],
                             "p50_ms": {name: r["batches"]["1"]["p50_ms"] for name, r in results.items()}}
    return {"command": "edgecnn " + " ".join(args), "epochs": epochs_of(args), "wall_s": wall, "cpu_s": cpu,
            "load_before": load, "load_after": os.getloadavg()[0], "cpu": system.system_info()["cpu"],
            "cores": len(os.sched_getaffinity(0)), "train_seconds": metrics["train_seconds"],
            "test_top1": metrics["test_top1"], "builds": builds}


def markdown(r: dict) -> str:
    """The README block: what make demo runs and reaches, and how long it took where."""
    fp32, int8 = r["builds"]["fp32"], r["builds"]["int8"]
    return (f"`make demo` runs `{r['command']}`: {r['epochs']} epochs, test top-1 {r['test_top1']:.2f}% (PyTorch), "
            f"{fp32['top1']:.2f}% for the TVM host fp32 build and {int8['top1']:.2f}% for int8. Measured by "
            f"`benchmarks/demo.py` on {r['cpu']} ({r['cores']} cores): {r['cpu_s']:.0f} s of CPU in all (every "
            f"thread and child process: about the wall time a quiet machine needs)" + (
                f", {r['wall_s']:.0f} s of wall time on the quiet machine (1-minute load average "
                f"{r['load_before']:.1f} before, {r['load_after']:.1f} after; the venv's set-up not counted)."
                if r["load_before"] <= QUIET_LOAD else
                f". Other jobs loaded that machine (1-minute load average {r['load_before']:.1f} to "
                f"{r['load_after']:.1f}), so the run's wall time is not the demo's: it is only in the results, "
                "`benchmarks/results/demo.json`."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table-only", action="store_true", help="rewrite the README block from the JSON only")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    if not args.table_only:
        with tempfile.TemporaryDirectory(prefix="edgecnn-demo-") as tmp:
            result = run_demo(demo_command(), Path(tmp) / "run")
        write_json(RESULTS, result)
        console.print(f"wrote {RESULTS}")
    replace_block(args.readme, MARKERS, markdown(json.loads(RESULTS.read_text())))
    console.print(f"wrote the {MARKERS[0]} block of {args.readme}")


if __name__ == "__main__":
    main()
