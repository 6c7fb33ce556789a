"""edgecnn's lowering of relax.nn.conv2d (NHWC data, HWIO weights) to TE, with blocks the rules recognise.

The conv block carries `edgecnn.kind` ("conv2d_nhwc" | "depthwise_nhwc") so a rule finds it after
FuseOps/FuseTIR whatever the fused function is called. Other layouts go to TVM's default lowering.
"""

import numpy as np

KIND = "edgecnn.kind"
GROUP_OC = "edgecnn.group_oc"  # output channels per group: a vector must not straddle two groups


def _ints(xs):
    return [int(x) for x in xs]


def _pad(data, pads):
    from tvm import topi

    pt, pl, pb, pr = pads
    if not any(pads):
        return data
    return topi.nn.pad(data, [0, pt, pl, 0], [0, pb, pr, 0], name="pad")


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
            lambda b, y, x, o: te.sum(x_[b, y * sh + kh * dh, x * sw + kw * dw, o] * weight[kh, kw, 0, o],
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
        lambda b, y, x, o: te.sum(x_[b, y * sh + kh * dh, x * sw + kw * dw, chan(o)] * w(o), axis=[kh, kw, rc]),
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


def legalize_conv2d(bb, call, lanes: int = 0):
    import tvm
    from tvm import relax
    from tvm.ir.expr import Constant
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    a = call.attrs
    dtype = str(a.out_dtype) if a.out_dtype is not None else ""
    static = all(isinstance(d, tvm.tirx.IntImm) for arg in call.args for d in arg.ty.shape)
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


def legalize_map(lanes: int = 0) -> dict:
    """Our lowerings; `lanes` (float32 lanes of the target's vectors) enables output-channel padding and
    weight packing."""
    return {"relax.nn.conv2d": lambda bb, call: legalize_conv2d(bb, call, lanes)}


