"""edgecnn run: the whole chain for one recipe and target, with one summary at the end."""

import time
from pathlib import Path

from edgecnn import recipe as recipe_mod
from edgecnn.progress import console


class Stages:
    """Runs named stages, prints a header for each, and records how long each took."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - t0
        return result


def run(recipe_path: str | Path, target: str = "host", precision: str = "fp32", out: str | Path | None = None,
        epochs: int | None = None, limit: int | None = None, reuse: bool = False) -> dict:
    """train -> export -> compile -> verify; returns the summary (also printed as a table)."""
    from edgecnn import checkpoint, compile as compile_mod, export, train, verify

    rec = recipe_mod.load(recipe_path)
    run_dir = Path(out or f"runs/{rec.name}")
    stage = Stages()
    if reuse and checkpoint.resolve(run_dir).exists():
        console.print(f"reusing the trained model in {run_dir}")
        metrics = {"test_top1": train.eval_run(run_dir, limit)["top1"]}
    else:
        metrics = stage("train", train.train, rec, run_dir, epochs=epochs, limit=limit)
    onnx_path = stage("export", export.export, run_dir)
    build = stage("compile", compile_mod.compile, onnx_path, target, precision,
                  run_dir / f"build-{target}-{precision}")
    report = stage("verify", verify.verify, build, "torch", "test", limit)
    summary = {"recipe": rec.name, "model": rec.model.name, "run_dir": str(run_dir), "build": str(build),
               "target": target, "precision": precision, "test_top1": metrics["test_top1"],
               "parity": verify.summary(report), "seconds": stage.seconds}
    console.print(summary_table(summary))
    return summary


def summary_table(s: dict):
    from rich.table import Table

    from edgecnn.tables import fmt

    p = s["parity"]
    t = Table(title=f"edgecnn run: {s['recipe']} -> {s['target']} ({s['precision']})", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("test top-1 (PyTorch)", f"{s['test_top1']:.2f}%")
    t.add_row(f"test top-1 ({s['target']})", f"{p.get('top1_candidate', float('nan')):.2f}%")
    t.add_row("parity vs PyTorch", f"{'pass' if p['passed'] else 'FAIL'}: max abs {fmt(p['max_abs'])}, "
                                   f"top-1 agreement {p.get('top1_agreement', 0):.2f}% on {p['data']}")
    t.add_row("build", s["build"])
    t.add_row("stage times", ", ".join(f"{k} {v:.0f} s" for k, v in s["seconds"].items()))
    return t
