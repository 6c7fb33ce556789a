"""Relax graph rewrites edgecnn applies before TVM lowers a model (used by compile and tune alike).

The ONNX frontend turns Clip (ReLU6 in the MobileNets) into opaque `call_tir(maximum)` /
`call_tir(minimum)` kernels. ConvertLayout cannot see through those, so an NHWC graph got a pair of
transposes around every ReLU6 (175 in MobileNet v2). Rewriting them back to the high-level
`R.maximum` / `R.minimum` ops, which have layout inference, lets NHWC flow from the first conv to the
last: 2 transposes are left (the input and the classifier).
"""

INT8_CONV_DEFAULT = False
LAYOUTS = {"NCHW": None, "NHWC": ["NHWC", "HWIO"]}  # HWIO: output channels innermost, as the GEMM wants


def graph_options(target) -> dict:
    """The target options that change the graph (and so the kernels a tuning database holds)."""
    options = target.options or {}
    return {"layout": options.get("layout", "NCHW"), "int8_conv": bool(options.get("int8_conv", INT8_CONV_DEFAULT))}


def prepare(mod, target):
    """What edgecnn does to an imported graph for a TVM target (compile and tune alike, so a tuning
    database's workloads match): Q/DQ convs to real int8 convs (option `int8_conv`), then the layout."""
    graph = graph_options(target)
    if graph["int8_conv"]:
        from edgecnn.backends.tvm.int8 import qdq_to_int8_conv

        mod = qdq_to_int8_conv(mod)
    return convert_layout(mod, graph["layout"])


def clip_to_minmax(mod):
    """call_tir(maximum|minimum, x, bound) from the ONNX Clip converter -> R.maximum / R.minimum."""
    from tvm import relax
    from tvm.relax.dpl import is_call_tir, rewrite_call, wildcard

    mod = relax.transform.FoldConstant()(mod)  # the frontend's NaN guards on the bounds become constants
    for name, op in (("maximum", relax.op.maximum), ("minimum", relax.op.minimum)):
        x, bound = wildcard(), wildcard()
        pattern = is_call_tir(name, [x, bound])  # a regex search: maximum, maximum1, ...
        mod["main"] = rewrite_call(pattern, lambda _, m, op=op, x=x, b=bound: op(m[x], m[b]), mod["main"])
    return relax.transform.DeadCodeElimination()(mod)


def convert_layout(mod, layout: str):
    """Convolutions (and every layout-agnostic op between them) in `layout`; weights folded to match."""
    from tvm import relax

    from edgecnn.core.errors import EdgecnnError

    if layout not in LAYOUTS:
        raise EdgecnnError(f"layout '{layout}' is not one of {', '.join(LAYOUTS)} (target option 'layout')")
    mod = clip_to_minmax(mod)
    if LAYOUTS[layout] is None:
        return mod
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": LAYOUTS[layout]})(mod)
    return relax.transform.FoldConstant()(mod)
