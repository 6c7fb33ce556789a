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
    return relax.transform.DeadCodeElimination()(relax_clip_to_minmax(mod))


def relax_clip_to_minmax(mod):
    """R.clip(x, lo, hi) (HardSwish, HardSigmoid) -> minimum(maximum(x, lo), hi): clip has no layout inference."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    def rewrite(call, _):
        x, (lo, hi) = call.args[0], (float(a.value) for a in call.args[1:3])
        dtype = str(x.ty.dtype)
        return relax.op.minimum(relax.op.maximum(x, relax.const(lo, dtype)), relax.const(hi, dtype))

    mod["main"] = rewrite_call(is_op("relax.clip")(wildcard(), varg_default_wildcard=True), rewrite, mod["main"])
    return leaky_to_maximum(mod)


def leaky_to_maximum(mod):
    """leakyrelu(x, a) with 0 <= a <= 1 (darknet's classifiers) -> maximum(x, a * x): leakyrelu has no layout
    inference, so each one sat between two transposes."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    def rewrite(call, _):
        x, alpha = call.args[0], float(call.attrs.alpha)
        if not 0.0 <= alpha <= 1.0:
            return call
        return relax.op.maximum(x, relax.op.multiply(x, relax.const(alpha, str(x.ty.dtype))))

    mod["main"] = rewrite_call(is_op("relax.nn.leakyrelu")(wildcard()), rewrite, mod["main"])
    return mod


def drop_dropout(mod):
    """dropout(x)[0] -> x: inference."""
    from tvm.relax.dpl import is_op, is_tuple_get_item, rewrite_call, wildcard

    x = wildcard()
    pattern = is_tuple_get_item(is_op("relax.nn.dropout")(x), 0)
    mod["main"] = rewrite_call(pattern, lambda _, m: m[x], mod["main"])
    return mod


def to_nhwc(mod):
    """Activations NHWC, conv weights HWIO, the weights' transposes folded. An unfolded BatchNormalization
    and a Dropout (a model from elsewhere) go first: ConvertLayout cannot carry their tuple results; N-ary
    Sum/Mean/Max/Min become binary ops (their stacked 5-D tensor is what ConvertLayout cannot carry)."""
    from tvm import relax

    mod = relax.transform.DecomposeOpsForInference()(drop_dropout(clip_to_minmax(mod)))
    mod = relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(mod))
    mod = relax.transform.DeadCodeElimination()(reduce_to_pool(nary_to_binary(mod)))
    return shuffle_in_nhwc(merge_permutes(fold_constants(convert_layout(mod))))


NHWC = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


def convert_layout(mod):
    """ConvertLayout to NHWC. Where its layout inference fails on an op (a tensor of another rank it does not
    expect), the ops touching tensors of rank != 4 are lowered first so their region stays NCHW with a layout
    change at its borders; failing that, the graph stays NCHW (TVM's default conv lowering: slower, correct)."""
    from tvm import relax

    from edgecnn.core.progress import status

    try:
        return relax.transform.ConvertLayout(NHWC)(mod)
    except Exception as e:  # tvm.error.InternalError from an op's layout inference
        first = str(e).strip().splitlines()[-1][:160]
    try:
        return relax.transform.ConvertLayout(NHWC)(lower_other_ranks(mod))
    except Exception:
        status.print(f"TVM's layout conversion failed ({first}): the graph stays NCHW (slower)",
                     markup=False, highlight=False)
        return mod


def merge_permutes(mod):
    """permute_dims(permute_dims(x)) -> one permute, or x where they cancel (tf2onnx's NHWC -> NCHW transpose
    meets ConvertLayout's NCHW -> NHWC one at the input)."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()
    inner = is_op("relax.permute_dims")(x)

    def rewrite(call, m):
        a, b = m[inner].attrs.axes, call.attrs.axes
        if a is None or b is None:
            return call
        axes = [int(a[int(i)]) for i in b]
        return m[x] if axes == sorted(axes) else relax.op.permute_dims(m[x], axes)

    mod["main"] = rewrite_call(is_op("relax.permute_dims")(inner), rewrite, mod["main"])
    return mod


def shuffle_in_nhwc(mod):
    """ShuffleNet's channel shuffle, left NCHW by ConvertLayout (reshape has no layout inference) between two
    transposes: NHWC -> NCHW, reshape N x g x C/g x H x W, swap g and C/g, reshape back, NCHW -> NHWC. The
    same shuffle on the NHWC tensor: reshape N x H x W x g x C/g, swap the last two, reshape back (one copy,
    not three)."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()
    to_nchw = is_op("relax.permute_dims")(x)
    split = is_op("relax.reshape")(to_nchw, wildcard())
    swap = is_op("relax.permute_dims")(split)
    merged = is_op("relax.reshape")(swap, wildcard())

    def axes(expr):
        return [int(a) for a in expr.attrs.axes or []]

    def rewrite(call, m):
        shape, five = _shape(m[x]), _shape(m[split])
        if axes(call) != [0, 2, 3, 1] or axes(m[to_nchw]) != [0, 3, 1, 2] or axes(m[swap]) != [0, 2, 1, 3, 4] \
                or shape is None or five is None or _shape(m[merged]) != [shape[0], shape[3], shape[1], shape[2]]:
            return call
        n, h, w, c = shape
        if five[0] != n or five[1] * five[2] != c or five[3:] != [h, w]:
            return call
        grouped = relax.op.reshape(m[x], [n, h, w, five[1], five[2]])
        return relax.op.reshape(relax.op.permute_dims(grouped, [0, 1, 2, 4, 3]), [n, h, w, c])

    mod["main"] = rewrite_call(is_op("relax.permute_dims")(merged), rewrite, mod["main"])
    return mod


def lower_other_ranks(mod):
    """Every op that reads or makes a tensor of rank != 4 lowered now to its call_tir (its usual legalization,
    the one LegalizeOps would give it later): ConvertLayout does not look inside a call_tir and gives it NCHW
    inputs, so a stacked 5-D tensor or a shuffle keeps its region NCHW instead of failing layout inference."""
    import tvm
    from tvm import relax

    def rank(expr):
        return getattr(getattr(expr, "ty", None), "ndim", -1)

    @relax.expr_functor.mutator
    class Lower(relax.PyExprMutator):
        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name == "relax.nn.conv2d":
                return call
            legalize = call.op.get_attr("FLegalize")
            tensors = [a for a in call.args if rank(a) > 0]
            if legalize is None or all(rank(t) == 4 for t in [*tensors, call]):
                return call
            return legalize(self.builder_, call)

    lower = Lower(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            lower.builder_.update_func(gv, lower.visit_expr(func))
    return lower.builder_.get()


def reduce_to_pool(mod):
    """Global pooling written as a reduce (ReduceMean/ReduceMax over H and W of NCHW, or over H and W after
    tf2onnx's transpose to NHWC) -> adaptive_avg_pool2d / max_pool2d over the whole map: pools have layout
    inference and a schedule rule; a reduce over the outer axes of NHWC fell to the slow fallback rule."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    bound = relax.analysis.get_var2val(mod["main"])

    def pool_input(call):
        """The NCHW tensor the reduce pools over H and W, or None."""
        x, axes = call.args[0], sorted(int(a) % 4 for a in call.attrs.axis or [])
        if getattr(x.ty, "ndim", -1) != 4 or _shape(x) is None:
            return None
        if axes == [2, 3]:
            return x
        value = bound.get(x)
        is_nhwc = isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.permute_dims" \
            and [int(a) for a in value.attrs.axes or []] == [0, 2, 3, 1]
        return value.args[0] if axes == [1, 2] and is_nhwc and _shape(value.args[0]) is not None else None

    def rewrite(call, _):
        x = pool_input(call)
        if x is None:
            return call
        n, c, h, w = _shape(x)
        pooled = relax.op.nn.adaptive_avg_pool2d(x, [1, 1]) if call.op.name == "relax.mean" \
            else relax.op.nn.max_pool2d(x, pool_size=[h, w])
        return relax.op.reshape(pooled, _shape(call))

    for name in ("relax.mean", "relax.max"):
        mod["main"] = rewrite_call(is_op(name)(wildcard()), rewrite, mod["main"])
    return mod


def nary_to_binary(mod):
    """sum|mean|max|min(stack(broadcast_to(x_i)...), axis=0), the ONNX frontend's Sum/Mean/Max/Min of N inputs,
    -> a chain of binary ops (they broadcast): ConvertLayout cannot carry the stacked 5-D tensor."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    binary = {"relax.sum": relax.op.add, "relax.mean": relax.op.add, "relax.max": relax.op.maximum,
              "relax.min": relax.op.minimum}
    bound = relax.analysis.get_var2val(mod["main"])

    def unwrap(expr):
        value = bound.get(expr, expr)
        is_broadcast = isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.broadcast_to"
        return value.args[0] if is_broadcast else expr

    def rewrite(call, _):
        stacked = bound.get(call.args[0], call.args[0])
        if not (isinstance(stacked, relax.Call) and getattr(stacked.op, "name", "") == "relax.stack") \
                or int(stacked.attrs.axis) != 0 or [int(a) for a in call.attrs.axis or []] != [0] \
                or call.attrs.keepdims:
            return call
        fields = bound.get(stacked.args[0], stacked.args[0])
        if not isinstance(fields, relax.Tuple):
            return call
        terms = [unwrap(f) for f in fields.fields]
        out = terms[0]
        for term in terms[1:]:
            out = binary[call.op.name](out, term)
        if call.op.name == "relax.mean":
            out = relax.op.divide(out, relax.const(len(terms), str(call.ty.dtype)))
        shapes = [_shape(t) for t in terms]
        if len(terms) == 1 or None in shapes or list(np.broadcast_shapes(*shapes)) != _shape(call):
            out = relax.op.broadcast_to(out, call.ty.shape)
        return out

    for name in binary:
        mod["main"] = rewrite_call(is_op(name)(wildcard()), rewrite, mod["main"])
    return mod


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
