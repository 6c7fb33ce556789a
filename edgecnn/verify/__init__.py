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
from edgecnn.data import load_images, preprocess, relabel
from edgecnn.verify import compare

CHUNK = 256


class ParityError(EdgecnnError):
    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def load_inputs(man: dict, data: str = "test", limit: int | None = None, seed: int = 0):
    """-> (inputs preprocessed as the model expects (edgecnn.data.preprocess), labels as the model's class
    indices or None, description)."""
    spec = man["input"]
    channels, height, width = preprocess.geometry(spec)
    if data == "random":
        n = limit or 64
        images = np.random.default_rng(seed).integers(0, 256, (n, channels, height, width), dtype=np.uint8)
        return preprocess.preprocess(images, spec), None, f"random uint8 images x{n}"
    if height != width:
        raise EdgecnnError(f"the model takes {height}x{width} images: edgecnn reads datasets as square images; "
                           "use --data random")
    ds, described = load_images(data, man.get("data"), size=height, channels=channels)
    if limit:
        ds = ds.subset(slice(0, limit))
        described = f"{described.rpartition(' x')[0]} x{len(ds)}"
    labels, how = relabel(ds, man.get("labels"))
    if labels is not None and how != "labels by class index":
        described += f" ({how})"
    return preprocess.preprocess(ds.images, spec), labels, described


def class_outputs(man: dict, outputs: dict) -> dict:
    """Class-score outputs (N x K x 1 x 1 ...) as N x K, so top-1 applies; the others as they are."""
    scores = {o["name"] for o in man["outputs"] if o.get("classes")}
    return {k: preprocess.class_scores(v) if k in scores else v for k, v in outputs.items()}


def fp32_model(build_dir: Path, man: dict):
    """(the runner of the fp32 model an int8 build came from, what it is): the checkpoint by PyTorch, or for a
    model from elsewhere its fp32 ONNX by ONNX Runtime."""
    fp32 = man.get("source", {}).get("fp32_onnx")
    if not man.get("source", {}).get("checkpoint") and fp32 and Path(fp32).is_file():
        from edgecnn.backends.onnxruntime import OrtRunner

        return OrtRunner(fp32), "onnxruntime (fp32 ONNX)"
    return reference.load_for(build_dir, man, "torch"), "torch (fp32)"


def versus_fp32(build_dir: Path, man: dict, x: np.ndarray, *, labels, got: dict) -> dict:
    """An int8 build against the fp32 model: reported with the accuracy drop, not pass/fail."""
    try:
        ref, what = fp32_model(build_dir, man)
    except EdgecnnError as e:
        return {"error": str(e)}
    with ref:
        want = class_outputs(man, run_batches(ref.run, x, CHUNK))
    name = next(iter(got))
    m = compare.compare_output(got[name], want.get(name, next(iter(want.values()))), labels)
    if "top1_candidate" in m:
        m["top1_drop"] = m["top1_reference"] - m["top1_candidate"]
    return {"against": what, **m}


def run_both(candidate, ref, x: np.ndarray, what: str) -> tuple[dict, dict]:
    """(candidate outputs, reference outputs) on the same inputs, with one progress bar."""
    with progress_bar() as bar:
        task = bar.add_task(f"verify {what}", total=2 * len(x), info="")

        def advance(n):
            bar.update(task, advance=n)

        return run_batches(candidate.run, x, CHUNK, advance), run_batches(ref.run, x, CHUNK, advance)


def verify(build_dir: str | Path, against: str | None = None, *, data: str = "test", limit: int | None = None,
           report_path: str | Path | None = None, localize: bool = True, **tol_overrides) -> dict:
    """Return the parity report; raise ParityError (carrying the report) when a tolerance fails.

    `against` defaults to torch, or to fakequant for int8 builds (which also get an fp32 comparison)."""
    build_dir = Path(build_dir)
    man = manifest_mod.read(build_dir)
    against = against or reference.default_against(man["precision"], man)
    tol = compare.tolerance(man["precision"], **tol_overrides)
    x, labels, described = load_inputs(man, data, limit)
    with backends.require(man["backend"]).load(build_dir, man) as cand, \
            reference.load_for(build_dir, man, against) as ref:
        got, want = (class_outputs(man, out) for out in run_both(cand, ref, x, described))
    outputs = {name: compare.compare_output(got[name], want.get(name, got[name] * np.nan), labels)
               for name in got}
    problems = {name: compare.failures(m, tol) for name, m in outputs.items()}
    report = {"build": str(build_dir), "backend": man["backend"], "target": man["target"]["name"],
              "precision": man["precision"], "against": against, "data": described,
              "tolerance": asdict(tol), "outputs": outputs, "passed": not any(problems.values()),
              "failures": {k: v for k, v in problems.items() if v}}
    if man["precision"] == "int8" and against != "torch":
        report["fp32"] = versus_fp32(build_dir, man, x, labels=labels, got=got)
    if not report["passed"] and localize:
        from edgecnn.verify.localize import localize as find_divergence

        name, m = next((k, outputs[k]) for k in report["failures"])
        report["localization"] = find_divergence(build_dir, man, against, x[m.get("worst_sample", 0):][:1], tol=tol)
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
            **{k: first[k] for k in keys if k in first}, **({"fp32": fp32} if fp32 else {})}


def fp32_line(report: dict) -> str | None:
    """One line for an int8 build's comparison with the fp32 model."""
    m = report.get("fp32")
    if not m:
        return None
    if "error" in m:
        return f"vs fp32: not compared ({m['error']})"
    by = "PyTorch" if m.get("against", "torch").startswith("torch") else "ONNX Runtime"
    line = f"vs fp32 ({by}): top-1 agreement {m.get('top1_agreement', float('nan')):.2f}%"
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
