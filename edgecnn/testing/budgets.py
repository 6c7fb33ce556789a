"""assert_parity, assert_latency, assert_accuracy: a build's budgets as test assertions.

Each measures on this machine what it can (a bundle carries the artifact but not the model it was compared
with: its parity, and its latency ratio to other backends, come from the verify and bench summaries it
carries, and the table says so), and raises BudgetError with the table when a budget is not met.
"""

import functools
import io

from edgecnn.core.errors import EdgecnnError
from edgecnn.testing.builds import inputs, load_runner, open_build


class BudgetError(AssertionError):
    """A budget not met; the message holds the parity, latency or accuracy table."""


def render(*tables) -> str:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    for table in tables:  # rich Tables, or lines in rich markup
        if hasattr(table, "min_width"):  # the title on one line
            table.min_width = min(120, max(table.min_width or 0, len(str(table.title or "")) + 4))
        console.print(table)
    return out.getvalue().rstrip()


def budget_table(title: str, rows: list[tuple]):
    """rows: (what, measured, budget, passed, where it comes from)."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("budget", "measured", "limit", "result", "source"):
        t.add_column(col, justify="left" if col in ("budget", "source") else "right")
    for what, measured, limit, ok, source in rows:
        t.add_row(what, measured, limit, "pass" if ok else "FAIL", source)
    return t


def _opened(build):
    """(Build, whether we opened it and so close it)."""
    opened = open_build(build)
    return opened, opened is not build


def assert_parity(build, against: str | None = None, *, data="test", limit: int | None = None,
                  atol: float | None = None, min_agreement: float | None = None,
                  min_cosine: float | None = None) -> dict:
    """The build's outputs against a reference (edgecnn verify: torch, onnxruntime or fakequant; the default
    by precision), within atol / min_agreement (%) / min_cosine (default: the precision's tolerances).
    Returns the parity report."""
    __tracebackhide__ = True
    b, ours = _opened(build)
    try:
        if b.bundle:
            return _recorded_parity(b, against, atol=atol, min_agreement=min_agreement, min_cosine=min_cosine)
        from edgecnn import verify
        from edgecnn.verify.tables import parity_table

        try:
            return verify.verify(b.scratch(), against, data=data, limit=limit,
                                 report_path=b.temp() / "verify.json", max_abs=atol, min_agreement=min_agreement,
                                 min_cosine=min_cosine)
        except verify.ParityError as e:
            raise BudgetError(f"{b.name}: {e}\n{render(parity_table(e.report))}") from None
    finally:
        if ours:
            b.close()


def _recorded_parity(b, against, **tol) -> dict:
    __tracebackhide__ = True
    from edgecnn.verify import compare
    from edgecnn.verify.tables import parity_table

    v = b.manifest.get("verify")
    if not v:
        raise BudgetError(f"{b.path}: the bundle carries no parity result: run edgecnn verify on the build before "
                          "edgecnn bundle, or test the build directory")
    if against and against != v["against"]:
        raise BudgetError(f"{b.path}: the bundle's parity was measured against {v['against']}, not {against}: "
                          f"test the build directory to compare it with {against}")
    tolerance = compare.tolerance(b.manifest["precision"], max_abs=tol["atol"], min_agreement=tol["min_agreement"],
                                  min_cosine=tol["min_cosine"])
    metrics = {k: v[k] for k in ("max_abs", "min_cosine", "top1_agreement", "top1_candidate", "top1_reference")
               if k in v}
    reasons = compare.failures(metrics, tolerance) + ([] if v["passed"] else ["edgecnn verify recorded a failure"])
    output = b.manifest["outputs"][0]["name"]
    report = {"backend": b.manifest["backend"], "target": b.manifest["target"]["name"],
              "precision": b.manifest["precision"], "against": v["against"],
              "data": f"{v['data']} (recorded in the bundle by edgecnn verify)", "outputs": {output: metrics},
              "failures": {output: reasons} if reasons else {}, "passed": not reasons}
    if reasons:
        raise BudgetError(f"{b.name}: parity failed vs {v['against']}: {'; '.join(reasons)}\n"
                          f"{render(parity_table(report))}")
    return report


def assert_accuracy(build, min_top1: float, *, data="test", limit: int | None = None,
                    threads: int | None = None) -> float:
    """Top-1 (%) of the build itself on labelled data (verify's data names, or (uint8 images, labels)),
    at least min_top1. Returns the top-1."""
    __tracebackhide__ = True
    from edgecnn.backends import CHUNK, run_batches
    from edgecnn.verify.compare import top1

    b, ours = _opened(build)
    try:
        x, labels, described = inputs(b, data, limit)
        if labels is None:
            raise EdgecnnError(f"data {data!r} has no labels: give a labelled split (test, val) or (images, labels)")
        with load_runner(str(b.folder), threads) as runner:
            logits = next(iter(run_batches(runner.run, x, CHUNK).values()))
        got = top1(logits, labels)
        if not got >= min_top1:
            table = budget_table(f"accuracy: {b.name}", [("top-1 %", f"{got:.2f}", f">= {min_top1:g}", False,
                                                          f"measured here on {described}")])
            raise BudgetError(f"{b.name}: top-1 {got:.2f}% < {min_top1:g}% on {described}\n{render(table)}")
        return got
    finally:
        if ours:
            b.close()


def assert_latency(build, *, p99_ms: float | None = None, p50_ms: float | None = None,
                   max_ratio: dict | None = None, runs: int = 200, warmup: int = 10, batch: int | None = None,
                   threads: int | None = None) -> dict:
    """Latency (one run() call, edgecnn bench) at most p99_ms / p50_ms, and at most max_ratio times another
    backend's p50 on the same model ({"onnxruntime": 1.2}: no more than 1.2x ONNX Runtime's).
    Returns {"batch", "p50_ms", "p99_ms", "ratios", "warnings", "report"}."""
    __tracebackhide__ = True
    b, ours = _opened(build)
    try:
        plan = {"batches": [batch] if batch else None, "warmup": warmup, "runs": runs, "seconds": None}
        measured = _bundle_latency(b, plan, threads) if b.bundle else \
            _build_latency(b, plan, threads, list(max_ratio or {}))
        rows = [(f"p{q} at batch {measured['batch']}", f"{measured[f'p{q}_ms']:.3f} ms", f"<= {limit:g} ms",
                 measured[f"p{q}_ms"] <= limit, "measured here") for q, limit in ((99, p99_ms), (50, p50_ms))
                if limit is not None]
        for name, limit in (max_ratio or {}).items():
            ratio, source = _ratio(b, measured, name)
            rows.append((f"p50 / {name}'s p50", f"{ratio:.2f}x", f"<= {limit:g}x", ratio <= limit, source))
            measured["ratios"][name] = ratio
        failed = [r for r in rows if not r[3]]
        if failed:
            tables = [budget_table(f"latency: {b.name}", rows)] + measured.pop("tables")
            text = "; ".join(f"{what} {got} > {limit[3:]}" for what, got, limit, _, _ in failed)
            raise BudgetError(f"{b.name}: latency budget not met: {text}\n{render(*tables)}")
        measured.pop("tables")
        return measured
    finally:
        if ours:
            b.close()


def _build_latency(b, plan: dict, threads: int | None, compare: list) -> dict:
    from edgecnn import bench
    from edgecnn.bench.report import device_lines, table

    compare = bench.check_compare(compare, b.manifest["backend"])  # an unknown name: EdgecnnError, did you mean
    report = bench.bench(b.scratch(), batches=plan["batches"], warmup=plan["warmup"], runs=plan["runs"],
                         threads=threads, compare=compare, out=b.temp() / "bench.json", plot=False)
    key = str(report["settings"]["batches"][0])
    s = report["results"][report["backend"]]["batches"][key]
    return {"batch": int(key), "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "ratios": {}, "report": report,
            "warnings": report["warnings"], "tables": [table(report), *device_lines(report)]}


def _bundle_latency(b, plan: dict, threads: int | None) -> dict:
    from edgecnn import bench
    from edgecnn.bench.report import device_lines

    result = bench.run_subject(b.manifest["backend"], functools.partial(load_runner, str(b.folder), threads), plan)
    key, s = next(iter(result["batches"].items()))
    lines = device_lines({"results": {b.manifest["backend"]: result}, "warnings": result["device"]["warnings"]})
    return {"batch": int(key), "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "ratios": {}, "report": result,
            "warnings": result["device"]["warnings"], "tables": lines}


def _ratio(b, measured: dict, name: str) -> tuple[float, str]:
    """The build's p50 over `name`'s at the measured batch: measured here (a build), or recorded (a bundle)."""
    __tracebackhide__ = True
    key = str(measured["batch"])
    if name == b.manifest["backend"]:
        return 1.0, "the build is this backend"
    if b.bundle:
        recorded = (b.manifest.get("bench") or {}).get("ratios", {}).get(name, {}).get(key)
        if not recorded:
            raise BudgetError(f"{b.path}: the bundle records no {name} comparison at batch {key}: run edgecnn "
                              f"bench --compare {name} on the build before edgecnn bundle, or test the build directory")
        return 1 / recorded["p50"], f"recorded in the bundle (bench on {b.manifest['bench']['cpu']})"
    return 1 / measured["report"]["ratios"][name][key]["p50"], "measured here, same run"
