"""ONNX -> Relax: TVM's frontend, given the model the way it reads it (input dims fixed, opset upgraded where
its converters would misread an older form)."""

import contextlib
import gc
import io
import os
import sys
from pathlib import Path

from edgecnn.backends.tvm.build import require_tvm
from edgecnn.core.errors import EdgecnnError, Unsupported, register_foreign

register_foreign(("tvm", "tvm_ffi"), "TVM", "another target may take it (edgecnn targets, e.g. onnxruntime-cpu); if "
                 "the model is valid, report it with the model and the --debug output")


def import_onnx(onnx_path: str | Path, batch: int | None = 1, input_shape: list | None = None):
    """ONNX file -> Relax IRModule with weights bound as constants, the batch fixed to `batch` (None: kept
    symbolic, a dynamic-batch build) and the dims after it to `input_shape` (default: the ONNX's)."""
    return from_model(frontend_model(onnx_path, batch, input_shape), Path(onnx_path).name)


def frontend_model(onnx_path: str | Path, batch: int | None = 1, input_shape: list | None = None):
    """The ONNX as TVM's frontend gets it: its input's dims set, upgraded where the frontend needs (for_frontend)."""
    import onnx

    from edgecnn.core import onnx_utils

    model = onnx.load(str(onnx_path))
    inp = onnx_utils.real_inputs(model)[0]  # before IR 4, the weights are listed as inputs too
    dims = onnx_utils.dims(inp)
    onnx_utils.set_dims(inp, [batch or dims[0], *(input_shape or dims[1:])])
    return fold_pads(for_frontend(model))


def pad_widths(node, consts: dict) -> list[int] | None:
    """A Pad node's widths when it pads zeros (constant mode, value 0) on H and W only, else None."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    mode = attrs.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant" or len(node.input) > 3 or \
            attrs.get("value", 0.0) != 0.0:
        return None
    if "pads" in attrs:  # opset < 11
        pads = list(attrs["pads"])
    elif len(node.input) > 1 and node.input[1] in consts:
        pads = [int(p) for p in numpy_helper.to_array(consts[node.input[1]]).reshape(-1)]
    else:
        return None
    value = node.input[2] if len(node.input) > 2 else ""
    if value and (value not in consts or numpy_helper.to_array(consts[value]).any()):
        return None
    ok = len(pads) == 8 and not any(pads[:2] + pads[4:6]) and min(pads) >= 0
    return pads if ok else None


def fold_pads(model):
    """Pad (zeros on H and W) whose every consumer is a Conv -> the Conv's own pads (tf2onnx writes 'same'
    padding of a strided conv so, Inception's exporters a Pad before a 5x5): TVM imports Pad as an opaque
    kernel, which would keep its region NCHW between two transposes."""
    from onnx import helper

    consts = {t.name: t for t in model.graph.initializer}
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    for pad in [n for n in model.graph.node if n.op_type == "Pad"]:
        pads, convs = pad_widths(pad, consts), users.get(pad.output[0], [])
        if pads is None or not convs or pad.output[0] in outputs or any(
                c.op_type != "Conv" or c.input[0] != pad.output[0] or
                any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in c.attribute) for c in convs):
            continue
        for conv in convs:
            attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
            old = list(attrs.get("pads", [0, 0, 0, 0]))
            new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
            kept = [a for a in conv.attribute if a.name != "pads"]
            del conv.attribute[:]
            conv.attribute.extend([*kept, helper.make_attribute("pads", new)])
            conv.input[0] = pad.input[0]
        model.graph.node.remove(pad)
    return model


def from_model(model, name: str):
    """Relax IRModule of an ONNX model (weights as constants); Unsupported naming what the frontend cannot read."""
    require_tvm()
    from tvm.relax.frontend.onnx import from_onnx

    with native_stderr_muted():
        try:
            return from_onnx(model, keep_params_in_input=False)
        except Exception as e:  # the frontend raises many types for an unsupported op or attribute
            detail = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            failed = Unsupported(f"TVM cannot import {name}: {type(e).__name__}: {detail} "
                                 "(edgecnn verify --ops shows what each backend takes; onnxruntime-cpu may)")
            del e
    raise failed from None


@contextlib.contextmanager
def native_stderr_muted():
    """What TVM's frontend prints on a failed import (its Python print of the op's inputs on stdout; its C++ log
    on file descriptor 2: "BlockBuilder destroyed with remaining blocks!" as its builder is freed) kept from
    the user's one error line; shown with EDGECNN_DEBUG=1."""
    from edgecnn.core.errors import DEBUG_ENV

    if os.environ.get(DEBUG_ENV) == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()):
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            gc.collect()  # the failed builder is freed here, while its warning goes nowhere
            os.dup2(saved, 2)
            os.close(saved)


def _impl_versions(op: str) -> list[int]:
    """The opset versions TVM's ONNX converter for `op` implements ([] for an op it lacks or maps directly).
    TVM has no public route to them: its private `_get_convert_map` is read as is, so a TVM that renames it
    fails here (an internal error) instead of turning the opset upgrades off; tests/test_foreign.py checks
    the map and the converters of the ops upgraded."""
    from tvm.relax.frontend.onnx import onnx_frontend

    converter = onnx_frontend._get_convert_map().get(op)
    return sorted(int(n[len("_impl_v"):]) for n in dir(converter) if n.startswith("_impl_v")) \
        if isinstance(converter, type) else []


def reads(op: str, opset: int) -> bool:
    """Whether TVM's converter reads `op` as the ONNX at `opset` defines it. It picks its newest version <=
    opset, else falls back to its oldest, written for a newer form: right only where that form has the same
    inputs (or as many) and no attribute the model's form lacks. A deprecated op reads wrong (Upsample)."""
    from onnx import defs

    impls = _impl_versions(op)
    try:
        have, latest = defs.get_schema(op, opset), defs.get_schema(op, defs.onnx_opset_version())
    except Exception:  # onnx.defs.SchemaError: not a standard op, nothing to compare
        return True
    if latest.deprecated:
        return False
    if not impls or any(v <= opset for v in impls):
        return True
    newer = defs.get_schema(op, impls[0])
    names, new_names = [i.name for i in have.inputs], [i.name for i in newer.inputs]
    return newer.since_version == have.since_version or (
        set(have.attributes) <= set(newer.attributes)
        and (new_names[:len(names)] == names or len(new_names) == len(names)))


def needed_opset(op: str, opset: int) -> int:
    """The lowest opset >= `opset` at which TVM reads `op` (`opset` when none does: the import will say)."""
    from onnx import defs

    latest = defs.get_schema(op, defs.onnx_opset_version()) if defs.has(op) else None
    if latest is not None and latest.deprecated:  # the version converter replaces it there (Upsample -> Resize)
        return max(opset, latest.since_version)
    versions = sorted({s.since_version for s in defs.get_all_schemas_with_history() if s.name == op and s.domain == ""})
    return next((v for v in [opset, *versions] if v >= opset and reads(op, v)), opset)


def for_frontend(model):
    """The model upgraded (onnx's version converter) to the opset where TVM's frontend reads all its ops as
    the model means them; unchanged when it already does. EdgecnnError names an op the converter blocks on."""
    from edgecnn.core import onnx_utils
    from edgecnn.core.progress import status

    for _ in range(3):  # an upgrade can bring new ops (Upsample -> Resize) with needs of their own
        opset = onnx_utils.opset_of(model)
        ops = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
        want = max([opset, *(needed_opset(op, opset) for op in ops)])
        if want == opset:
            return model
        why = sorted(op for op in ops if needed_opset(op, opset) == want)
        status.print(f"TVM's ONNX frontend reads {', '.join(why)} as opset {want} defines it: upgrading the model "
                     f"from opset {opset} (onnx's version converter)", markup=False, highlight=False)
        try:
            model = onnx_utils.convert_opset(model, want)
        except EdgecnnError as e:
            raise EdgecnnError(f"TVM needs opset {want} for {', '.join(why)}; {e}") from None
    return model
