"""ONNX -> Relax: TVM's frontend, given the model the way it reads it (input dims fixed, opset upgraded where
its converters would misread an older form)."""

import contextlib
import gc
import io
import os
import sys
from pathlib import Path

from edgecnn.backends.tvm.build import require_tvm
from edgecnn.core.errors import EdgecnnError, Unsupported


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
    return for_frontend(model)


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
    """The opset versions TVM's ONNX converter for `op` implements ([] for an op it lacks or maps directly)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    converter = getattr(onnx_frontend, "_get_convert_map", dict)().get(op)
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
