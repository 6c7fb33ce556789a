"""Layer-wise localisation (Polygraphy's `--onnx-outputs mark all`, for every backend).

Mark every intermediate float tensor as a graph output, run the build's graph on its own backend and
the reference graph on ONNX Runtime, and report the first node (in graph order) whose output diverges.
Against torch, the reference graph is a fresh export of the checkpoint, so a build whose graph or
artifact drifted from the trained model is caught; against onnxruntime it is the source ONNX.
"""

import tempfile
from pathlib import Path

import numpy as np

from edgecnn import backends, compiler
from edgecnn.backends import reference
from edgecnn.compiler import targets


def mark_all_outputs(model):
    """A copy of `model` whose every float intermediate tensor is also a graph output."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    existing = {o.name for o in marked.graph.output}
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


def _run_candidate(man: dict, marked, x: np.ndarray, tmp: Path, *, board: dict | None = None) -> dict:
    import onnx

    path = tmp / "candidate.onnx"
    onnx.save(marked, str(path))
    out_dir = tmp / "candidate"
    out_dir.mkdir()
    target = targets.load(man["target"]["name"])
    built = compiler.build_into(out_dir, path, target, man["precision"], batch=man["input"]["shape"][0])
    with backends.load_runner(out_dir, built, board) as runner:  # where the build ran: here or on the board
        return runner.run(x)


def localize(build_dir: str | Path, man: dict, against: str, x: np.ndarray, *, tol, board: dict | None = None) -> dict:
    """First node whose output differs by more than tol.max_abs (scaled by the tensor's magnitude)."""
    import onnx

    from edgecnn.backends.onnxruntime import OrtRunner

    build_dir = Path(build_dir)
    ref = reference.reference(build_dir, man, against)
    limit = tol.max_abs if np.isfinite(tol.max_abs) else 1e-2
    with tempfile.TemporaryDirectory(prefix="edgecnn-localize-") as tmp:
        tmp = Path(tmp)
        cand_graph = mark_all_outputs(onnx.load(str(build_dir / "model.onnx")))
        onnx.save(mark_all_outputs(_reference_graph(man, ref, tmp)), str(tmp / "reference-marked.onnx"))
        want = OrtRunner(tmp / "reference-marked.onnx", level=ref.level).run(x)
        got = _run_candidate(man, cand_graph, x, tmp, board=board)
    checked = 0
    for node in cand_graph.graph.node:
        for name in node.output:
            if name in got and name in want and got[name].shape == want[name].shape:
                checked += 1
                err = float(np.abs(got[name] - want[name]).max())
                scale = max(1.0, float(np.abs(want[name]).max()))
                if err > limit * scale:
                    return {"node": node.name, "op": node.op_type, "output": name, "max_abs": err,
                            "reference_max": scale, "checked_tensors": checked}
    return {"node": None, "checked_tensors": checked,
            "note": "no intermediate tensor diverged: the difference arises at the outputs"}
