"""edgecnn verify: run a build and a reference on the same inputs, compare every output.

    compare.py   the comparators (parity metrics and tolerances)
    noise.py     how far float rounding alone moves an int8 reference (the decisive-agreement bound)
    localize.py  the first node whose output diverges, on a failure
    opcheck.py   the operator coverage matrix
    tables.py    the parity table
"""

from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgecnn import backends
from edgecnn.backends import CHUNK, reference, run_batches
from edgecnn.core import manifest as manifest_mod
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import write_json
from edgecnn.core.progress import progress_bar
from edgecnn.data import load_images, preprocess, relabel
from edgecnn.verify import compare, noise as noise_bound



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
    if limit and limit < len(ds):
        described = f"{described.rpartition(' x')[0]} x{limit} (the first {limit} of {len(ds)})"
        ds = ds.subset(slice(0, limit))
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
    fp32 = manifest_mod.source_path(build_dir, man.get("source", {}).get("fp32_onnx"))
    if not man.get("source", {}).get("checkpoint") and fp32 and fp32.is_file():
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


def run_all(runners: list, x: np.ndarray, what: str) -> list[dict]:
    """The outputs of each runner on the same inputs, with one progress bar."""
    with progress_bar() as bar:
        task = bar.add_task(f"verify {what}", total=len(runners) * len(x), info="")

        def advance(n):
            bar.update(task, advance=n)

        return [run_batches(r.run, x, CHUNK, advance) for r in runners]


def compare_outputs(got: dict, want: dict, labels, *, noise: list[dict], against: str, steps: dict) -> dict:
    """Metrics per output name of either side; an output one side lacks is an error, never filled in."""
    outputs = {}
    for name in dict.fromkeys([*got, *want]):
        if name not in want:
            outputs[name] = {"error": f"output '{name}' is missing from the reference ({against} gives "
                                      f"{', '.join(want)})"}
        elif name not in got:
            outputs[name] = {"error": f"output '{name}' of the reference is missing from the build (it gives "
                                      f"{', '.join(got)})"}
        else:
            twins = [n[name] for n in noise if name in n]
            outputs[name] = compare.compare_output(got[name], want[name], labels, noise=twins or None,
                                                   step=steps.get(name, 0.0))
    return outputs


def output_steps(ref: reference.Reference, want: dict) -> dict:
    """One output quantization step per output of the reference graph (verify/noise.py)."""
    import onnx

    model = onnx.load(str(ref.onnx))
    return {name: noise_bound.output_step(model, name) for name in want}


def run_references(build_dir: Path, man: dict, against: str, x: np.ndarray, *, described: str,
                   board: dict | None = None, half: Path | None = None):
    """(build outputs, reference outputs, [outputs of each twin of the reference], the reference used,
    {"board": the board the build ran on} or {}). half: an fp16 build's float16 graph (reference.twins)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        cand = stack.enter_context(backends.load_runner(build_dir, man, board))
        where = {"board": cand.board} if cand.board else {}
        ref, runners = reference_runners(stack, build_dir, man, against, half=half)
        got, want, *noise = (class_outputs(man, out) for out in run_all([cand, *runners], x, described))
    return got, want, noise, ref, where


def judged_by(build_dir: Path, man: dict, against: str | None, overrides: dict | None = None) -> tuple:
    """(against, the fp16 build's float16 graph for its twin or None, the tolerance): what a build is held to."""
    against = against or reference.default_against(man["precision"], man)
    half = reference.half_graph(build_dir, man) if against != "fakequant" else None
    return against, half, compare.tolerance(man["precision"], decisive=half is not None, **(overrides or {}))


def reference_runners(stack, build_dir: Path, man: dict, against: str, *, half: Path | None = None) -> tuple:
    """(the reference, [its runner, then its twins' runners]) entered on the ExitStack `stack`."""
    ref = reference.reference(build_dir, man, against)
    return ref, [stack.enter_context(reference.fit_input(reference.load(r), man))
                 for r in [ref, *reference.twins(ref, half)]]


def judge_outputs(build_dir: str | Path, got: dict, x: np.ndarray, *, against: str | None = None) -> dict:
    """Outputs the build gave elsewhere (under an emulator, on a board) for inputs `x`, judged as verify judges
    them: {"outputs": metrics per output, "failures": reasons per failing output, "tolerance"}."""
    import contextlib

    build_dir = Path(build_dir)
    man = manifest_mod.read(build_dir)
    against, half, tol = judged_by(build_dir, man, against)
    with contextlib.ExitStack() as stack:
        ref, runners = reference_runners(stack, build_dir, man, against, half=half)
        want, *noise = (class_outputs(man, out) for out in run_all(runners, x, "references"))
    steps = output_steps(ref, want) if noise and ref.against == "fakequant" else {}
    outputs = compare_outputs(class_outputs(man, got), want, None, noise=noise, against=against, steps=steps)
    failures = {k: v for k, v in ((n, compare.failures(m, tol)) for n, m in outputs.items()) if v}
    return {"outputs": outputs, "failures": failures, "tolerance": asdict(tol)}


def verify(build_dir: str | Path, against: str | None = None, *, data: str = "test", limit: int | None = None,
           report_path: str | Path | None = None, localize: bool = True, board: dict | None = None,
           **tol_overrides) -> dict:
    """Return the parity report; raise ParityError (carrying the report) when a tolerance fails.

    `against` defaults to torch, or to fakequant for int8 builds (which also get an fp32 comparison).
    `board` ({"rpc": HOST:PORT, "key": KEY}) runs the build on a board of that RPC tracker, the reference here."""
    build_dir = Path(build_dir)
    man = manifest_mod.read(build_dir)
    against, half, tol = judged_by(build_dir, man, against, tol_overrides)
    x, labels, described = load_inputs(man, data, limit)
    got, want, noise, ref, where = run_references(build_dir, man, against, x, described=described, board=board,
                                                  half=half)
    steps = output_steps(ref, want) if noise and ref.against == "fakequant" else {}
    outputs = compare_outputs(got, want, labels, noise=noise, against=against, steps=steps)
    problems = {name: compare.failures(m, tol) for name, m in outputs.items()}
    report = {"build": str(build_dir), "backend": man["backend"], "target": man["target"]["name"],
              "precision": man["precision"], "against": against, "data": described, **where,
              "reference": {"onnx": str(ref.onnx) if ref.onnx else None, "level": ref.level,
                            "checkpoint": str(ref.checkpoint) if ref.checkpoint else None},
              "tolerance": asdict(tol), "outputs": outputs, "passed": not any(problems.values()),
              "failures": {k: v for k, v in problems.items() if v}}
    backend = backends.get(man["backend"])
    notes = backend.notes(build_dir, man) if isinstance(backend, backends.RunNotes) else []
    if notes:
        report["notes"] = notes
    if noise and half is not None:
        report["noise"] = ("each logit may move by the noise spread: the largest logit difference between the "
                           "reference and the build's float16 graph run by ONNX Runtime (float16 between ops) and "
                           "compiled for this CPU by TVM (float16 arithmetic in another order); samples whose "
                           "reference margin exceeds twice that are decisive")
    elif noise:
        report["noise"] = ("each logit may move by the larger of the noise spread (the largest logit difference "
                           "between the reference's Q/DQ graph run op by op and run with ONNX Runtime's float "
                           "optimisations, basic and full without int8 kernels) and one output quantization step; "
                           "samples whose reference margin exceeds twice that are decisive")
    if man["precision"] == "int8" and against != "torch":
        report["fp32"] = versus_fp32(build_dir, man, x, labels=labels, got=got)
    if not report["passed"] and localize:
        from edgecnn.verify.localize import localize as find_divergence

        sample = failing_sample(outputs[next(iter(report["failures"]))])
        report["localization"] = find_divergence(build_dir, man, against, x[sample:][:1], tol=tol, board=board)
    record(build_dir, man, report, data=data, report_path=report_path, tol_overrides=tol_overrides)
    if not report["passed"]:
        raise ParityError(failure_message(report), report)
    return report


def record(build_dir: Path, man: dict, report: dict, *, data: str, report_path, tol_overrides: dict) -> None:
    """Write the report; its summary goes into the manifest (what bundles and budgets carry) for a run of the
    recorded data with the default tolerances and report; a partial run (--limit, random inputs) only where no
    full run is recorded, marked partial. report["recorded"] says what happened."""
    overridden = [k for k, v in tol_overrides.items() if v is not None]
    partial = "random inputs" if data == "random" else report["data"] if " (the first " in report["data"] else None
    previous = man.get("verify") or {}
    if report_path:
        report["recorded"] = "not in manifest.json: --report writes the report elsewhere"
        write_json(Path(report_path), report)
        return
    if overridden:
        report["recorded"] = (f"not in manifest.json: tolerances overridden ({', '.join(overridden)}); "
                              "the manifest keeps the default tolerances' result")
    elif partial and previous and not previous.get("partial"):
        report["recorded"] = f"not in manifest.json: a partial run ({partial}) never replaces the full one recorded"
    else:
        report["recorded"] = "manifest.json" + (f" (marked partial: {partial})" if partial else "")
    write_json(build_dir / "verify.json", report)  # the last run's details; the file hashes follow it
    if report["recorded"].startswith("not"):
        manifest_mod.update(build_dir)
    else:
        manifest_mod.update(build_dir, verify={**summary(report), **({"partial": partial} if partial else {})})


def failing_sample(m: dict) -> int:
    """The sample localisation replays: the first non-finite one, else the first decisive disagreement, else
    the one with the largest error."""
    for nf in (m.get("nonfinite_candidate"), m.get("nonfinite_reference")):
        if nf:
            return nf["first_sample"]
    if m.get("decisive_disagreements"):
        return m["first_decisive_disagreement"]
    return m.get("worst_sample", 0)


def summary(report: dict) -> dict:
    """The part of a report a manifest or bundle carries."""
    first = next(iter(report["outputs"].values()))
    keys = ("max_abs", "min_cosine", "top1_agreement", "decisive_agreement", "decisive_samples", "margin_bound",
            "top1_candidate", "top1_reference")
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
    by = "PyTorch" if m.get("against", "torch").startswith("torch") else "ONNX Runtime"
    line = f"vs fp32 ({by}): top-1 agreement {m.get('top1_agreement', float('nan')):.2f}%"
    if "top1_drop" in m:
        line += (f", top-1 {m['top1_reference']:.2f}% -> {m['top1_candidate']:.2f}% "
                 f"(drop {m['top1_drop']:.2f} points)")
    return line


def decisive_line(report: dict) -> str | None:
    """One line for int8: raw top-1 agreement and the agreement on the decisive samples."""
    m = next((m for m in report["outputs"].values() if "decisive_samples" in m), None)
    if m is None:
        return None
    return (f"top-1 agreement {m['top1_agreement']:.2f}% raw ({m['disagreements']} of {m['samples']} differ); "
            f"{m['decisive_agreement']:.2f}% on the {m['decisive_samples']} decisive samples "
            f"({m['decisive_share']:.1f}%: reference margin > {m['margin_bound']:.3g} = 2 x max(noise spread "
            f"{m['noise_spread']:.3g} measured on the reference, output step {m['output_step']:.3g}))")


def failure_message(report: dict) -> str:
    name, reasons = next(iter(report["failures"].items()))
    worst = report["outputs"][name].get("worst_sample")
    msg = f"parity failed vs {report['against']} on {name}: {'; '.join(reasons)} (worst sample {worst})"
    loc = report.get("localization") or {}
    if loc.get("node"):
        msg += f"; first divergent node: {loc['node']} ({loc['op']}), max abs error {loc['max_abs']:.3g}"
    return msg
