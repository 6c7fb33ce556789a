"""edgecnn's lowering of relax.nn.conv2d (NHWC data, HWIO weights) to TE, with blocks the rules recognise.

The conv block carries `edgecnn.kind` ("conv2d_nhwc" | "depthwise_nhwc") so a rule finds it after
FuseOps/FuseTIR whatever the fused function is called. Other layouts go to TVM's default lowering.
"""

import numpy as np

KIND = "edgecnn.kind"
GROUP_OC = "edgecnn.group_oc"  # output channels per group: a vector must not straddle two groups
DOT_INTRIN = "edgecnn.dot_intrin"  # the tensor intrinsic an int8 conv's rule tensorizes with ("" none)


def _ints(xs):
    return [int(x) for x in xs]


def _pad(data, pads):
    from tvm import topi

    pt, pl, pb, pr = pads
    if not any(pads):
        return data
    return topi.nn.pad(data, [0, pt, pl, 0], [0, pb, pr, 0], name="pad")


def _mul(a, b):
    """a * b, int8 operands widened to int32 (the accumulator's type: exact)."""
    if a.dtype in ("int8", "uint8"):
        return a.astype("int32") * b.astype("int32")
    return a * b


def conv2d_nhwc(data, weight, *, strides, padding, dilation, groups, oc_out=None):
    """out[n,y,x,o] = sum_{kh,kw,rc} pad[n, y*sh+kh*dh, x*sw+kw*dw, g(o)*ICg+rc] * w[kh,kw,rc,o];
    `oc_out` < the weight's output channels: the weight was zero-padded, the result is sliced."""
    from tvm import te

    n, h, w, c = _ints(data.shape)
    kh_, kw_, icg = _ints(weight.shape)[-4:-1] if len(weight.shape) == 4 else _ints(weight.shape)[1:4]
    oc = _ints(weight.shape)[3] if len(weight.shape) == 4 else int(weight.shape[0] * weight.shape[4])
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, padding, dilation
    oh = (h + pt + pb - (kh_ - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw_ - 1) * dw - 1) // sw + 1
    x_ = _pad(data, (pt, pl, pb, pr))
    kh = te.reduce_axis((0, kh_), "kh")
    kw = te.reduce_axis((0, kw_), "kw")
    if groups == c and icg == 1 and oc == c:
        return te.compute(
            (n, oh, ow, oc),
            lambda b, y, x, o: te.sum(_mul(x_[b, y * sh + kh * dh, x * sw + kw * dw, o], weight[kh, kw, 0, o]),
                                      axis=[kh, kw]),
            name="dwconv", attrs={KIND: "depthwise_nhwc"})
    rc = te.reduce_axis((0, icg), "rc")
    ocg = oc // groups

    def chan(o):
        return rc if groups == 1 else (o // ocg) * icg + rc

    def w(o):
        if len(weight.shape) == 5:  # packed [OC / pb, KH, KW, IC, pb]
            pb = int(weight.shape[4])
            return weight[o // pb, kh, kw, rc, o % pb]
        return weight[kh, kw, rc, o]

    out = te.compute(
        (n, oh, ow, oc),
        lambda b, y, x, o: te.sum(_mul(x_[b, y * sh + kh * dh, x * sw + kw * dw, chan(o)], w(o)), axis=[kh, kw, rc]),
        name="conv", attrs={KIND: "conv2d_nhwc", GROUP_OC: ocg})
    if oc_out is None or oc_out == oc:
        return out
    return te.compute((n, oh, ow, oc_out), lambda b, y, x, o: out[b, y, x, o], name="oc_slice")


def prepare_weight(w: np.ndarray, ocp: int, pb: int) -> np.ndarray:
    """HWIO weights, output channels zero-padded to `ocp` and packed [OC / pb, KH, KW, IC, pb]: a tile's
    weights are read sequentially (with HWIO rows of 1024 channels, each input channel is a new 4 KB
    page: a 7x7 1024 -> 1024 conv ran at 64 GFLOP/s)."""
    kh, kw, ic, oc = w.shape
    w = np.pad(w, [(0, 0)] * 3 + [(0, ocp - oc)])
    if pb and ocp % pb == 0 and ocp > pb:
        w = w.reshape(kh, kw, ic, ocp // pb, pb).transpose(3, 0, 1, 2, 4)
    return np.ascontiguousarray(w)


def padded_oc(oc: int, lanes: int) -> int:
    """Output channels to compute: whole vectors when a few (24 -> 32 on AVX-512: 75% of the lanes busy
    instead of 50% with 8-lane vectors; 6 -> 8), else as is."""
    if oc % lanes == 0 or oc > 4 * lanes:
        return oc
    if oc > lanes:
        return -(-oc // lanes) * lanes
    p = 4
    while p < oc:
        p *= 2
    return p


def conv2d_nhwc_dot(data, weight, comp, *, strides, padding, dilation, oc_out, shift, intrin):
    """The int8 conv (groups 1) in a dot-product instruction's shape: weights packed
    [OC / L, KH, KW, ICp / 4, L, 4], the input copied once with its padding and its channels padded to
    ICp (a multiple of 4), + 128 as uint8 when `shift` (then `comp` = 128 x each channel's weight sum is
    subtracted), so that every (L output channels x 4 input channels) step is one instruction."""
    from tvm import te, tirx

    n, h, w, c = _ints(data.shape)
    ocb, kh_, kw_, icq = _ints(weight.shape)[:4]
    lanes = _ints(weight.shape)[4 if intrin else 5]
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, padding, dilation
    oh = (h + pt + pb - (kh_ - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw_ - 1) * dw - 1) // sw + 1

    def padded(b, y, x, ch):
        inside = tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl, ch < c)
        v = tirx.if_then_else(inside, data[b, y - pt, x - pl, tirx.min(ch, c - 1)], tirx.const(0, "int8"))
        return (v.astype("int32") + 128).astype("uint8") if shift else v

    def w_(o, kh, kw, rc):  # rc = (group of 4 input channels, one of them); [.., L, 4] for an instruction,
        rco, rci = rc       # [.., 4, L] for LLVM's vectors
        if intrin:
            return weight[o // lanes, kh, kw, rco, o % lanes, rci]
        return weight[o // lanes, kh, kw, rco, rci, o % lanes]

    x_ = te.compute((n, h + pt + pb, w + pl + pr, icq * 4), padded, name="pad_dot")
    kh = te.reduce_axis((0, kh_), "kh")
    kw = te.reduce_axis((0, kw_), "kw")
    rco = te.reduce_axis((0, icq), "rco")
    rci = te.reduce_axis((0, 4), "rci")
    acc = te.compute(
        (n, oh, ow, ocb * lanes),
        lambda b, y, x, o: te.sum(_mul(x_[b, y * sh + kh * dh, x * sw + kw * dw, rco * 4 + rci],
                                       w_(o, kh, kw, (rco, rci))), axis=[kh, kw, rco, rci]),
        name="conv", attrs={KIND: "conv2d_nhwc_dot", DOT_INTRIN: intrin or ""})
    if shift:
        return te.compute((n, oh, ow, oc_out), lambda b, y, x, o: acc[b, y, x, o] - comp[o], name="unshift")
    return te.compute((n, oh, ow, oc_out), lambda b, y, x, o: acc[b, y, x, o], name="oc_slice")


def pack_dot_weight(w: np.ndarray, lanes: int, lanes_inner: bool = False) -> np.ndarray:
    """HWIO int8 -> [OC / lanes, KH, KW, ICp / 4, lanes, 4] (or [.., 4, lanes]), zero-padded to whole blocks."""
    kh, kw, ic, oc = w.shape
    icp, ocp = -(-ic // 4) * 4, -(-oc // lanes) * lanes
    w = np.pad(w, [(0, 0), (0, 0), (0, icp - ic), (0, ocp - oc)])
    order = (4, 0, 1, 2, 3, 5) if lanes_inner else (4, 0, 1, 2, 5, 3)
    return np.ascontiguousarray(w.reshape(kh, kw, icp // 4, 4, ocp // lanes, lanes).transpose(*order))


MIN_DOT_IC = 4  # fewer input channels: the int8 rewrite leaves such a conv (a stem) float (int8.py)


def legalize_int8_conv2d(bb, call, path):
    """int8 x int8 -> int32 conv2d: groups 1 in the dot-product shape of `path` (cpu.Int8Path), grouped
    and depthwise ones as the float lowering with widening multiplies."""
    from tvm import relax
    from tvm.ir.expr import Constant

    a, weight = call.attrs, call.args[1]
    conv = dict(strides=_ints(a.strides), padding=_ints(a.padding), dilation=_ints(a.dilation))
    ic = int(weight.ty.shape[2])
    if int(a.groups) != 1 or not isinstance(weight, Constant) or path is None or ic < MIN_DOT_IC:
        return bb.call_te(conv2d_nhwc, call.args[0], weight, groups=int(a.groups), **conv,
                          primfunc_name_hint="conv2d_int8")
    w = weight.value.numpy()
    comp = (128 * w.astype(np.int32).sum(axis=(0, 1, 2))).astype(np.int32)
    return bb.call_te(conv2d_nhwc_dot, call.args[0], relax.const(pack_dot_weight(w, path.lanes, not path.intrin)),
                      relax.const(comp), **conv, oc_out=int(w.shape[3]), shift=path.shift, intrin=path.intrin,
                      primfunc_name_hint="conv2d_int8")


def legalize_conv2d(bb, call, lanes: int = 0, int8=None):
    import tvm
    from tvm import relax
    from tvm.ir.expr import Constant
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    a = call.attrs
    dtype = str(a.out_dtype) if a.out_dtype is not None else ""
    static = all(isinstance(d, tvm.tirx.IntImm) for arg in call.args for d in arg.ty.shape)
    nhwc = (a.data_layout, a.kernel_layout, a.out_layout) == ("NHWC", "HWIO", "NHWC")
    if nhwc and static and dtype == "int32" and all(str(x.ty.dtype) == "int8" for x in call.args):
        return legalize_int8_conv2d(bb, call, int8)
    if (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC") or dtype not in ("", "float32") \
            or not static:  # TVM's own lowering (plain loops the fallback rule schedules)
        return _nn_conv2d(bb, call)
    weight = call.args[1]
    oc = int(weight.ty.shape[3])
    if lanes and int(a.groups) == 1 and isinstance(weight, Constant):  # prepared at compile time
        ocp = padded_oc(oc, lanes)
        pb = next((v for v in (lanes, lanes // 2, lanes // 4) if v >= 4 and ocp % v == 0), 0)
        weight = relax.const(prepare_weight(weight.value.numpy(), ocp, pb))
    return bb.call_te(conv2d_nhwc, call.args[0], weight, strides=_ints(a.strides),
                      padding=_ints(a.padding), dilation=_ints(a.dilation), groups=int(a.groups),
                      oc_out=oc, primfunc_name_hint="conv2d")


def legalize_map(lanes: int = 0, int8=None) -> dict:
    """Our lowerings; `lanes` (float32 lanes of the target's vectors) enables output-channel padding and
    weight packing, `int8` (cpu.Int8Path) the int8 convs' dot-product form."""
    return {"relax.nn.conv2d": lambda bb, call: legalize_conv2d(bb, call, lanes, int8)}


