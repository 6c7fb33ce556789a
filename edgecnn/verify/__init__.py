"""edgecnn verify: run a build and a reference on the same inputs, compare every output.

    compare.py   the comparators (parity metrics and tolerances)
    localize.py  the first node whose output diverges, on a failure
    opcheck.py   the operator coverage matrix
    tables.py    the parity table
"""

from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgecnn import backends
from edgecnn.backends import reference, run_batches
from edgecnn.compiler import manifest as manifest_mod
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import write_json
from edgecnn.core.progress import progress_bar
from edgecnn.data import DataCfg, load_split, normalize
from edgecnn.verify import compare

CHUNK = 256


class ParityError(EdgecnnError):
    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def load_inputs(man: dict, data: str = "test", limit: int | None = None, seed: int = 0):
    """-> (float32 NCHW inputs normalized as the model expects, labels or None, description)."""
    shape = [d for d in man["input"]["shape"][1:]]
    mean, std = man["input"].get("mean", [0.0]), man["input"].get("std", [1.0])
    if data == "random":
        n = limit or 64
        images = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
        return normalize(images, mean, std), None, f"random uint8 images x{n}"
    dataset, _, split = data.rpartition(":")
    if split not in ("train", "val", "test"):
        raise EdgecnnError(f"--data {data}: use test, val, DATASET:test (e.g. fashion-mnist:test) or random")
    cfg = DataCfg(**(man.get("data") or {}))
    if dataset:
        cfg.dataset = dataset
    ds = load_split(cfg, split)
    if limit:
        ds = ds.subset(slice(0, limit))
    if list(ds.images.shape[1:]) != shape:
        raise EdgecnnError(f"data {data} has images {list(ds.images.shape[1:])}, the model takes {shape}")
    return normalize(ds.images, mean, std), ds.labels, f"{cfg.dataset}:{split} x{len(ds)}"


def versus_fp32(build_dir: Path, man: dict, x: np.ndarray, *, labels, got: dict) -> dict:
    """An int8 build against the fp32 model (PyTorch): reported with the accuracy drop, not pass/fail."""
    try:
        ref = reference.load_for(build_dir, man, "torch")
    except EdgecnnError as e:
        return {"error": str(e)}
    with ref:
        want = run_batches(ref.run, x, CHUNK)
    name = next(iter(got))
    m = compare.compare_output(got[name], want.get(name, next(iter(want.values()))), labels)
    if "top1_candidate" in m:
        m["top1_drop"] = m["top1_reference"] - m["top1_candidate"]
    return {"against": "torch (fp32)", **m}


def run_both(candidate, ref, x: np.ndarray, what: str) -> tuple[dict, dict]:
    """(candidate outputs, reference outputs) on the same inputs, with one progress bar."""
    with progress_bar() as bar:
        task = bar.add_task(f"verify {what}", total=2 * len(x), info="")

        def advance(n):
            bar.update(task, advance=n)

        return run_batches(candidate.run, x, CHUNK, advance), run_batches(ref.run, x, CHUNK, advance)


def verify(build_dir: str | Path, against: str | None = None, *, data: str = "test", limit: int | None = None,
           report_path: str | Path | None = None, localize: bool = True, board: dict | None = None,
           **tol_overrides) -> dict:
    """Return the parity report; raise ParityError (carrying the report) when a tolerance fails.

    `against` defaults to torch, or to fakequant for int8 builds (which also get an fp32 comparison).
    `board` ({"rpc": HOST:PORT, "key": KEY}) runs the build on a board of that RPC tracker, the reference here."""
    build_dir = Path(build_dir)
    man = manifest_mod.read(build_dir)
    against = against or reference.default_against(man["precision"])
    tol = compare.tolerance(man["precision"], **tol_overrides)
    x, labels, described = load_inputs(man, data, limit)
    with backends.load_runner(build_dir, man, board) as cand, reference.load_for(build_dir, man, against) as ref:
        got, want = run_both(cand, ref, x, described)
        where = {"board": cand.board} if cand.board else {}
    outputs = {name: compare.compare_output(got[name], want.get(name, got[name] * np.nan), labels)
               for name in got}
    problems = {name: compare.failures(m, tol) for name, m in outputs.items()}
    report = {"build": str(build_dir), "backend": man["backend"], "target": man["target"]["name"],
              "precision": man["precision"], "against": against, "data": described, **where,
              "tolerance": asdict(tol), "outputs": outputs, "passed": not any(problems.values()),
              "failures": {k: v for k, v in problems.items() if v}}
    if man["precision"] == "int8" and against != "torch":
        report["fp32"] = versus_fp32(build_dir, man, x, labels=labels, got=got)
    if not report["passed"] and localize:
        from edgecnn.verify.localize import localize as find_divergence

        name, m = next((k, outputs[k]) for k in report["failures"])
        report["localization"] = find_divergence(build_dir, man, against, x[m.get("worst_sample", 0):][:1], tol=tol,
                                                 board=board)
    write_json(Path(report_path) if report_path else build_dir / "verify.json", report)
    manifest_mod.update(build_dir, verify=summary(report))
    if not report["passed"]:
        raise ParityError(failure_message(report), report)
    return report


def summary(report: dict) -> dict:
    """The part of a report a manifest or bundle carries."""
    first = next(iter(report["outputs"].values()))
    keys = ("max_abs", "min_cosine", "top1_agreement", "top1_candidate", "top1_reference")
    fp32 = {k: v for k, v in (report.get("fp32") or {}).items() if k in (*keys, "top1_drop")}
    return {"passed": report["passed"], "against": report["against"], "data": report["data"],
            **{k: first[k] for k in keys if k in first}, **({"fp32": fp32} if fp32 else {}),
            **({"board": report["board"]} if report.get("board") else {})}


def fp32_line(report: dict) -> str | None:
    """One line for an int8 build's comparison with the fp32 model."""
    m = report.get("fp32")
    if not m:
        return None
    if "error" in m:
        return f"vs fp32: not compared ({m['error']})"
    line = f"vs fp32 (PyTorch): top-1 agreement {m.get('top1_agreement', float('nan')):.2f}%"
    if "top1_drop" in m:
        line += (f", top-1 {m['top1_reference']:.2f}% -> {m['top1_candidate']:.2f}% "
                 f"(drop {m['top1_drop']:.2f} points)")
    return line


def failure_message(report: dict) -> str:
    name, reasons = next(iter(report["failures"].items()))
    worst = report["outputs"][name].get("worst_sample")
    msg = f"parity failed vs {report['against']} on {name}: {'; '.join(reasons)} (worst sample {worst})"
    loc = report.get("localization") or {}
    if loc.get("node"):
        msg += f"; first divergent node: {loc['node']} ({loc['op']}), max abs error {loc['max_abs']:.3g}"
    return msg
