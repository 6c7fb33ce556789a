"""Real int8 convolutions from a Q/DQ (QuantizeLinear/DequantizeLinear) graph, as a Relax rewrite.

TVM's ONNX frontend keeps Q/DQ as `R.quantize` / `R.dequantize`, so a quantized conv runs as float
fake-quant: `conv2d(dequantize(x_int8), dequantize(w_int8))`, more work than fp32. With symmetric
scales (zero points 0) the same value is

    conv2d(x_int8, w_int8, out_dtype=int32) * (scale_x * scale_w[c])

an int8 x int8 -> int32 convolution and one float multiply per output (the requantization; the bias
add, activation and the next QuantizeLinear follow in float and fuse into the same kernel). Convs
with a non-zero zero point or a per-channel activation scale are left as they are.
"""

import functools

import numpy as np

# A conv with fewer input channels (the 1- or 3-channel stem) stays float fake-quant: padded to the dot
# products' 4 channels it did 4x the work, and LeNet-5's 1-channel conv ran 3x slower in int8 than in float.
MIN_INT8_IC = 4


def _const(expr):
    from tvm.ir import GenericConst  # a Relax constant in TVM 0.27

    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def _int8_conv(call, x_int8, x_dq, w_dq):
    """The int32-accumulating conv and its per-output-channel float rescale, or None to keep `call`."""
    from tvm import relax

    attrs = call.attrs
    w, w_scale, w_zero = (_const(a) for a in w_dq.args)
    x_scale, x_zero = (_const(a) for a in x_dq.args[1:])
    if any(v is None for v in (w, w_scale, w_zero, x_scale, x_zero)) or x_scale.size != 1:
        return None
    if w.dtype != np.int8 or x_int8.ty.dtype != "int8" or np.any(w_zero) or np.any(x_zero):
        return None
    if (attrs.data_layout, attrs.kernel_layout) != ("NCHW", "OIHW") or w_dq.attrs.axis not in (0, -4):
        return None
    if int(attrs.groups) == 1 and w.shape[1] < MIN_INT8_IC:
        return None
    acc = relax.op.nn.conv2d(x_int8, relax.const(w), attrs.strides, attrs.padding, attrs.dilation,
                             attrs.groups, "NCHW", "OIHW", "NCHW", "int32")
    scale = (np.broadcast_to(w_scale, (w.shape[0],)) * x_scale.reshape(())).astype(np.float32)
    return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale.reshape(1, -1, 1, 1)))


def _scalar_qparams(call):
    """(scale, zero point) of a per-tensor quantize/dequantize with constant parameters, else None."""
    scale, zero = (_const(a) for a in call.args[1:])
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        return None
    return float(scale.reshape(())), int(zero.reshape(()))


def _quantize(call):
    """quantize(x) as round, add, clamp, cast: elementwise ops that layout conversion sees through."""
    from tvm import relax

    params = _scalar_qparams(call)
    if params is None:
        return call
    dtype, info = call.attrs.out_dtype, np.iinfo(call.attrs.out_dtype)
    # x * (1 / scale), not x / scale: a vector division costs ~10x a multiply and every quantized activation
    # passes here (2,311 vdivps in MobileNet v2 224's int8 build); the two differ by at most one rounding
    # of the float value, so a quantized value moves by one step only where x / scale lies within that of .5
    inverse = np.float32(1) / np.float32(params[0])
    q = relax.op.round(relax.op.multiply(call.args[0], relax.const(inverse, "float32")))
    if params[1]:
        q = relax.op.add(q, relax.const(float(params[1]), "float32"))
    q = relax.op.minimum(relax.op.maximum(q, relax.const(float(info.min), "float32")),
                         relax.const(float(info.max), "float32"))
    return relax.op.astype(q, dtype)


def _dequantize(call):
    from tvm import relax

    params = _scalar_qparams(call)
    if params is None or call.attrs.out_dtype != "float32":
        return call
    x = relax.op.astype(call.args[0], "float32")
    if params[1]:
        x = relax.op.subtract(x, relax.const(float(params[1]), "float32"))
    return relax.op.multiply(x, relax.const(params[0], "float32"))


@functools.cache
def vector_rounding() -> None:
    """Let TIR vectorize `nearbyint` (the quantize's round half to even), once: TVM 0.27 does not mark it
    vectorizable, so every requantizing epilogue was scalarized and LLVM re-vectorized it at its preferred
    256 bits on AVX-512. llvm.nearbyint on a vector is exact (vrndscaleps, ARM frintx)."""
    import tvm

    tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)


def qdq_to_elementwise(mod):
    """Per-tensor quantize/dequantize as plain elementwise ops (R.quantize has no layout inference:
    an NHWC int8 graph otherwise gets a transpose pair around every Q/DQ)."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    vector_rounding()
    for name, rewrite in (("relax.quantize", _quantize), ("relax.dequantize", _dequantize)):
        pattern = is_op(name)(wildcard(), is_const(), is_const())
        mod["main"] = rewrite_call(pattern, lambda call, _, f=rewrite: f(call), mod["main"])
    return relax.transform.DeadCodeElimination()(mod)


def qdq_to_int8_conv(mod):
    """Rewrite every symmetric Q/DQ conv2d of `main` into an int8 conv (see the module docstring)."""
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x_int8 = wildcard()
    x_dq = is_op("relax.dequantize")(x_int8, is_const(), is_const())
    w_dq = is_op("relax.dequantize")(is_const(), is_const(), is_const())
    conv = is_op("relax.nn.conv2d")(x_dq, w_dq)

    def rewrite(call, matches):
        new = _int8_conv(call, matches[x_int8], matches[x_dq], matches[w_dq])
        return call if new is None else new

    mod["main"] = rewrite_call(conv, rewrite, mod["main"])
    return qdq_to_elementwise(mod)


def count_int8_convs(mod) -> int:
    """How many conv2d of `main` take int8 inputs."""
    import re

    return len(re.findall(r'R\.nn\.conv2d\([^\n]*out_dtype="int32"', mod["main"].script()))
