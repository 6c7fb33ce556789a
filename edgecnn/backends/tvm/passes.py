"""Relax graph rewrites edgecnn applies before TVM lowers a model (compile and tune alike, so a tuning
database's kernels match).

The schedule rules want NHWC activations and HWIO weights (output channels innermost, vectorized).
The ONNX frontend turns Clip (ReLU6 in the MobileNets) into opaque `call_tir(maximum|minimum)` kernels,
which ConvertLayout cannot see through: an NHWC graph got a transpose pair around every ReLU6 (175 in
MobileNet v2). Rewritten to `R.maximum` / `R.minimum`, which have layout inference, NHWC flows from the
first conv to the last. Then the kernels a small model pays for by the call are removed: a permute that
moves only size-1 axes is a reshape, the classifier's flatten permute is folded into its weights.
"""

import numpy as np

# Symmetric Q/DQ convs as real int8 convs (int8.py, legalize.conv2d_nhwc_dot, schedules/int8.py): measured
# not slower than the float fake-quant build (benchmarks/int8.py; MobileNet v2 224 ~0.4x, LeNet-5 ~0.9x)
INT8_CONV_DEFAULT = True


def graph_options(target) -> dict:
    """The target options that change the graph (and so the kernels a tuning database holds)."""
    options = target.options or {}
    return {"int8_conv": bool(options.get("int8_conv", INT8_CONV_DEFAULT))}


def prepare(mod, target):
    """Q/DQ convs to real int8 convs (target option `int8_conv`), NHWC, fewer kernels, constants folded."""
    if graph_options(target)["int8_conv"]:
        from edgecnn.backends.tvm.int8 import qdq_to_int8_conv

        mod = qdq_to_int8_conv(mod)
    mod = to_nhwc(mod)
    return fold_constants(merge_reshapes(fold_flatten_permute(unit_permute_to_reshape(mod))))


def _numpy_ops():
    def permute(call, x):
        axes = call.attrs.axes
        return np.transpose(x, None if axes is None else [int(a) for a in axes])

    def reshape(call, x):
        return x.reshape([int(d) for d in call.ty.shape])

    return {"relax.isnan": (1, lambda call, x: np.isnan(x)),
            "relax.where": (3, lambda call, c, a, b: np.where(c, a, b)),
            "relax.permute_dims": (1, permute),
            "relax.reshape": (1, reshape)}


def fold_constants(mod):
    """Ops on constants evaluated with numpy: the frontend's NaN guards on Clip bounds, ConvertLayout's
    weight transposes. Relax's FoldConstant took 25 of MobileNet v2's 30 s compile (it builds and runs a
    kernel per op); this takes 0.5 s. What else is constant is folded after legalization (build.lower)."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    for name, (nargs, fn) in _numpy_ops().items():
        shape = [wildcard()] if name == "relax.reshape" else []  # the target shape is not a tensor
        pattern = is_op(name)(*[is_const() for _ in range(nargs)], *shape)

        def rewrite(call, _, fn=fn, nargs=nargs):
            out = fn(call, *[a.value.numpy() for a in call.args[:nargs]])
            return relax.const(out.astype(str(call.ty.dtype)))

        mod["main"] = rewrite_call(pattern, rewrite, mod["main"])
    return mod


def clip_to_minmax(mod):
    """call_tir(maximum|minimum, x, bound) from the ONNX Clip converter -> R.maximum / R.minimum."""
    from tvm import relax
    from tvm.relax.dpl import is_call_tir, rewrite_call, wildcard

    mod = fold_constants(mod)  # the frontend's NaN guards on the bounds become constants
    for name, op in (("maximum", relax.op.maximum), ("minimum", relax.op.minimum)):
        x, bound = wildcard(), wildcard()
        pattern = is_call_tir(name, [x, bound])  # a regex search: maximum, maximum1, ...
        mod["main"] = rewrite_call(pattern, lambda _, m, op=op, x=x, b=bound: op(m[x], m[b]), mod["main"])
    return relax.transform.DeadCodeElimination()(mod)


def drop_dropout(mod):
    """dropout(x)[0] -> x: inference."""
    from tvm.relax.dpl import is_op, is_tuple_get_item, rewrite_call, wildcard

    x = wildcard()
    pattern = is_tuple_get_item(is_op("relax.nn.dropout")(x), 0)
    mod["main"] = rewrite_call(pattern, lambda _, m: m[x], mod["main"])
    return mod


def to_nhwc(mod):
    """Activations NHWC, conv weights HWIO, the weights' transposes folded. An unfolded BatchNormalization
    and a Dropout (a model from elsewhere) go first: ConvertLayout cannot carry their tuple results."""
    from tvm import relax

    mod = relax.transform.DecomposeOpsForInference()(drop_dropout(clip_to_minmax(mod)))
    mod = relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(mod))
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
    return fold_constants(mod)


def _shape(expr) -> list[int] | None:
    """A tensor's static shape (None for a symbolic one, e.g. a dynamic batch: the rewrites leave it)."""
    dims = getattr(expr.ty, "shape", None)
    try:
        return [int(d) for d in dims]
    except (TypeError, ValueError):
        return None


def unit_permute_to_reshape(mod):
    """A permute_dims that moves only size-1 axes (NCHW -> NHWC of a 1-channel image) is a reshape: no kernel."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()

    def rewrite(call, m):
        shape, axes = _shape(m[x]), [int(a) for a in call.attrs.axes or []]
        if shape is None or not axes:
            return call
        moved = [a for a in axes if shape[a] != 1]
        return call if moved != sorted(moved) else relax.op.reshape(m[x], [shape[a] for a in axes])

    mod["main"] = rewrite_call(is_op("relax.permute_dims")(x), rewrite, mod["main"])
    return mod


def fold_flatten_permute(mod):
    """matmul(flatten(permute NHWC -> NCHW of x), W) -> matmul(flatten(x), W with its rows permuted)."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, w = wildcard(), is_const()
    perm = is_op("relax.permute_dims")(x)
    flat = is_op("relax.reshape")(perm, wildcard())

    def rewrite(call, m):
        if _shape(m[x]) is None or len(_shape(m[x])) != 4:
            return call
        n, h, wd, c = _shape(m[x])
        weight = m[w].value.numpy()
        if [int(a) for a in m[perm].attrs.axes] != [0, 3, 1, 2] or _shape(m[flat]) != [n, c * h * wd] \
                or weight.shape[0] != c * h * wd:
            return call
        # row (c, h, w) of the NCHW flatten goes to row (h, w, c) of the NHWC one
        rows = weight.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)
        return relax.op.matmul(relax.op.reshape(m[x], [n, h * wd * c]), relax.const(np.ascontiguousarray(rows)),
                               out_dtype=call.attrs.out_dtype)

    mod["main"] = rewrite_call(is_op("relax.matmul")(flat, w), rewrite, mod["main"])
    return mod


def merge_reshapes(mod):
    """reshape(reshape(x)) -> reshape(x) (two of them fuse into a kernel the VM cannot elide)."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()
    pattern = is_op("relax.reshape")(is_op("relax.reshape")(x, wildcard()), wildcard())
    def rewrite(call, m):
        return call if _shape(call) is None else relax.op.reshape(m[x], _shape(call))

    mod["main"] = rewrite_call(pattern, rewrite, mod["main"])
    return mod
