"""Layer-wise localisation (Polygraphy's `--onnx-outputs mark all`, for every backend).

Mark every intermediate float tensor as a graph output, rebuild the build's graph the way the build was
made and run it on its backend, run the reference graph the way verify runs the reference, and report the
first node (in graph order) whose output diverges. The rebuild replays the manifest: its target as
recorded (a target given as a YAML path, or since edited, is the one that was tested), its compile options
(a TVM tuning database among them) and its batch. Against torch the reference graph is a fresh export of
the checkpoint, so a build whose graph or artifact drifted from the trained model is caught; otherwise it is
the reference's own ONNX (reference.py).
"""

import tempfile
from pathlib import Path

import numpy as np

from edgecnn import backends, compiler
from edgecnn.backends import reference
from edgecnn.compiler import targets
from edgecnn.core import manifest, tolerance


def constant_tensors(graph) -> set[str]:
    """Tensors computed from initializers alone (a weight's DequantizeLinear): weights, not activations."""
    const = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(not i or i in const for i in node.input)):
            const.update(node.output)
    return const


def mark_all_outputs(model):
    """A copy of `model` whose every float intermediate activation is also a graph output (a changed weight
    shows at the node that uses it)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    existing = {o.name for o in marked.graph.output} | constant_tensors(model.graph)
    for node in marked.graph.node:
        for name in node.output:
            if name and name not in existing and types.get(name) == onnx.TensorProto.FLOAT:
                marked.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                existing.add(name)
    return marked


def _reference_graph(man: dict, ref: reference.Reference, tmp: Path):
    """The graph of the reference verify compared with: its ONNX, or for torch a fresh export of the checkpoint."""
    import onnx

    from edgecnn import export

    if ref.against == "torch" and ref.checkpoint:
        batch = man["input"]["shape"][0]
        path = export.export(ref.checkpoint, tmp / "reference.onnx", batch=batch if isinstance(batch, int) else "dynamic")
        return onnx.load(str(path))
    return onnx.load(str(ref.onnx))


def replay_options(man: dict, build_dir: Path) -> dict:
    """The compile options the manifest recorded, as build_into takes them again."""
    opts = dict(man.get("options") or {})
    if opts.get("tune_db"):  # the database was checked against the source model, not the marked copy
        opts["tune_db"] = str(manifest.source_path(build_dir, opts["tune_db"]))
        opts["db_model"] = str(manifest.source_path(build_dir, man.get("source", {}).get("onnx")))
    return opts


def _run_candidate(man: dict, marked, x: np.ndarray, tmp: Path, *, build_dir: Path,
                   board: dict | None = None) -> tuple[dict, dict]:
    """The marked graph built as the build was (target, options, batch from the manifest) and run where the
    build ran: here or on the board."""
    import onnx

    path = tmp / "candidate.onnx"
    onnx.save(marked, str(path))
    out_dir = tmp / "candidate"
    out_dir.mkdir()
    batch = man["input"]["shape"][0]
    opts = replay_options(man, build_dir)
    built = compiler.build_into(out_dir, path, targets.from_manifest(man), man["precision"],
                                batch=batch if isinstance(batch, int) else None, **opts)
    with backends.load_runner(out_dir, built, board) as runner:
        outputs = runner.run(x)
    replay = {"target": built["target"]["name"], "options": {k: v for k, v in opts.items() if k != "db_model"},
              "batch": built["input"]["shape"][0]}
    if built["artifact"].get("tuning"):
        scheduled = built["artifact"].get("schedules", {})
        replay["tuning"] = {"db": built["artifact"]["tuning"]["db"], "kernels": scheduled.get("kernels"),
                            "kernels_from_db": scheduled.get("tuned")}
    return outputs, replay


def divergence(got: np.ndarray, want: np.ndarray, limit: float, noise: float = 0.0) -> dict | None:
    """How one tensor diverges (None when it does not): by more than `limit` of its magnitude plus twice the
    float noise measured on it; a NaN/Inf on either side always does."""
    for side, a in (("reference", want), ("candidate", got)):
        if not np.isfinite(a).all():
            return {"max_abs": float("inf"), "nonfinite": side, "reference_max": float("nan")}
    err, scale = tolerance.max_abs(got, want), tolerance.magnitude(want)
    if tolerance.within(err, limit, scale, noise):
        return None
    return {"max_abs": err, "reference_max": scale, "noise": noise}


def tensor_noise(ref: reference.Reference, marked: Path, x: np.ndarray, want: dict) -> dict:
    """Per tensor, how far the reference's float-equivalent twins (int8: ONNX Runtime's float optimisations)
    move it: a candidate that differs by no more than that is not where a defect is."""
    noise: dict[str, float] = {}
    for twin in reference.twins(ref):
        with reference.load_graph(twin, marked) as runner:
            for name, value in runner.run(x).items():
                if name in want and value.shape == want[name].shape and np.isfinite(value).all():
                    noise[name] = max(noise.get(name, 0.0), float(np.abs(value - want[name]).max()))
    return noise


def localize(build_dir: str | Path, man: dict, against: str, x: np.ndarray, *, tol, board: dict | None = None) -> dict:
    """First node whose output differs by more than tol.max_abs (scaled by the tensor's magnitude; 1e-2 when
    unbounded, int8) beyond twice the float noise the reference's twins show on it."""
    import onnx

    build_dir = Path(build_dir)
    ref = reference.reference(build_dir, man, against)
    limit = tol.max_abs if np.isfinite(tol.max_abs) else 1e-2
    with tempfile.TemporaryDirectory(prefix="edgecnn-localize-") as tmp:
        tmp = Path(tmp)
        cand_graph = mark_all_outputs(onnx.load(str(build_dir / "model.onnx")))
        onnx.save(mark_all_outputs(_reference_graph(man, ref, tmp)), str(tmp / "reference-marked.onnx"))
        with reference.load_graph(ref, tmp / "reference-marked.onnx") as runner:
            want = runner.run(x)
        noise = tensor_noise(ref, tmp / "reference-marked.onnx", x, want)
        got, replay = _run_candidate(man, cand_graph, x, tmp, build_dir=build_dir, board=board)
    replay["reference"] = {"against": against, "onnx": str(ref.onnx or "a fresh export of the checkpoint"),
                           "level": ref.level}
    checked = 0
    for node in cand_graph.graph.node:
        for name in node.output:
            if name in got and name in want and got[name].shape == want[name].shape:
                checked += 1
                found = divergence(got[name], want[name], limit, noise.get(name, 0.0))
                if found:
                    return {"node": node.name, "op": node.op_type, "output": name, **found,
                            "checked_tensors": checked, "replay": replay}
    return {"node": None, "checked_tensors": checked, "replay": replay,
            "note": "no intermediate tensor diverged: the difference arises at the outputs"}
