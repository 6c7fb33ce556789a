"""Convolution rules: direct NHWC conv (1x1 as a GEMM over pixels) and depthwise."""

from edgecnn.backends.tvm.legalize import GROUP_OC
from edgecnn.backends.tvm.schedules.common import (MAX_XB, MIN_ACCUMULATORS, MIN_VL, RESERVED_REGISTERS,
                                                   SPARE_REGISTERS, Rule, accumulate_in_registers, anchor_block,
                                                   divisors, epilogue_of, flatten_pixels, inline_all,
                                                   parallel_outer, place_pad, split_pads, split_vectors,
                                                   vector_choices, vectorize_tile, worth_parallel)

# Conv tiles (see common.py for what "measured" means here).
# input channels up to which the search also tries the reduction loops unrolled (stems: 1-3 channels); the
# default keeps them rolled: unrolling the 3x3x3 stem was 2x slower (measured)
UNROLL_K_MAX_IC = 8
# depthwise: up to 8 pixels a tile, one vector of channels where a vector has 8+ lanes, two on 4-lane CPUs
# (measured on Zen 5, with the channel blocks outermost: Depthwise.default)
DEPTHWISE_MAX_XB, DEPTHWISE_NVEC_WIDE, DEPTHWISE_NVEC_NARROW = 8, 1, 2
# a depthwise multiply-add loads its own weight: about half a conv's rate (worth_parallel's efficiency)
DEPTHWISE_EFFICIENCY = 0.5


class Conv2D(Rule):
    """Direct NHWC convolution (any kernel size, stride; groups when a vector stays in one group).

    Register tile: `xb` output pixels x `nvec` vectors of `vl` output channels; each input value is
    broadcast, the reduction (kh, kw, ic) runs outside the tile, whose accumulators stay in registers;
    the fused epilogue (bias, activation, residual) is applied as the tile is written. Parallel over
    (oc block, row, pixel block). 1x1 stride-1 convs run over flattened pixels (a GEMM).
    """

    name = "conv2d_nhwc"
    kind = "conv2d_nhwc"

    def match_anchor(self, sch, conv, ext, blk):
        pads, _ = split_pads(sch, conv)
        n, oh, ow, oc, kh, kw = ext[:6]
        ic = ext[6] if len(ext) > 6 else 1
        src = blk.reads[0].source
        ctx = {"n": n, "oh": oh, "ow": ow, "oc": oc, "kh": kh, "kw": kw, "ic": ic, "has_pad": bool(pads),
               "in_w": int(src.shape[2]), "macs": n * oh * ow * oc * kh * kw * ic}
        ctx["flat"] = kh == kw == 1 and not pads and ctx["in_w"] == ow
        ctx["group_oc"] = int(blk.annotations.get(GROUP_OC, oc))
        return ctx

    def _width(self, ctx):
        return ctx["oh"] * ctx["ow"] if ctx["flat"] else ctx["ow"]

    def _tiles(self, ctx, cpu):
        """(vl, nvec, xb) register tiles that fit: xb * nvec accumulators + nvec weights + 2 spare."""
        out = []
        for vl, nvec in vector_choices(ctx["oc"], cpu.lanes, group=ctx.get("group_oc", ctx["oc"])):
            for xb in divisors(self._width(ctx)):
                if xb * nvec + nvec + SPARE_REGISTERS <= cpu.registers and xb <= MAX_XB:
                    out.append((vl, nvec, xb))
        return out

    def default(self, ctx, cpu):
        # full vectors first (a half vector doubles the FMAs), then the most accumulators that fit
        # (FMA latency x ports needs >= 8-10; measured best: 14 x 2 on AVX-512), then more vectors;
        # reduction loops stay rolled (unrolling the 3x3x3 stem: 2x slower)
        cap = cpu.registers - RESERVED_REGISTERS
        vl, nvec, xb = max(self._tiles(ctx, cpu), key=lambda t: (t[0], min(t[1] * t[2], cap), t[1]))
        return {"vl": vl, "nvec": nvec, "xb": xb, "pad": "tile", "parallel": worth_parallel(ctx["macs"], cpu),
                "unroll_k": False}

    def space(self, ctx, cpu):
        pads = ("tile", "inline", "full") if ctx["has_pad"] else ("tile",)
        return [{"vl": vl, "nvec": nv, "xb": xb, "pad": pad, "unroll_k": uk, "parallel": par}
                for vl, nv, xb in self._tiles(ctx, cpu) if nv * xb >= MIN_ACCUMULATORS
                for pad in pads for uk in ((False, True) if ctx["ic"] <= UNROLL_K_MAX_IC else (False,))
                for par in ((False, True) if cpu.cores > 1 else (False,))]

    def apply(self, sch, ctx, p, cpu):
        conv, pads, out = prepare(sch, self.kind)
        if out is None:
            out = sch.cache_write(conv, 0, "local")
        n, chunk, mid, xi, o, kh, kw, rc = self._pixel_loops(sch, conv, out, ctx, p=p)
        oo, tile = split_vectors(sch, o, p["vl"], p["nvec"])
        par = [n, oo, *chunk]
        sch.reorder(*par, *mid, kh, kw, rc, xi, *tile)
        outer = parallel_outer(sch, par + mid, p["parallel"])
        sch.unroll(xi)
        for lp in (kh, kw, rc) if p.get("unroll_k") else ():
            sch.unroll(lp)
        out = accumulate_in_registers(sch, conv, out, outer)
        init = sch.decompose_reduction(conv, kh)
        vectorize_tile(sch, init, 1, p["vl"])
        vectorize_tile(sch, out, 1, p["vl"])
        place_pad(sch, pads, outer, mode=p["pad"], cpu=cpu, parallel=p["parallel"])

    @staticmethod
    def _pixel_loops(sch, conv, out, ctx, *, p):
        """(n, chunk loops, mid loops, xi, o, kh, kw, rc): pixels split into register tiles of `xb`, in
        rows (chunk = y), or flattened (1x1) into one run of tiles."""
        if not ctx["flat"]:
            n, y, x, o, kh, kw, rc = sch.get_loops(conv)
            xo, xi = sch.split(x, [None, p["xb"]])
            return n, [y], [xo], xi, o, kh, kw, rc
        flatten_pixels(sch, conv, out, ctx["ow"])
        n, x, o, kh, kw, rc = sch.get_loops(conv)
        chunk, xi = sch.split(x, [None, p["xb"]])
        return n, [chunk], [], xi, o, kh, kw, rc


def prepare(sch, kind):
    """(anchor conv, its pad blocks, its epilogue block): other producers and the elementwise chain
    after the conv (bias, activation, residual) are inlined."""
    conv = anchor_block(sch, kind)
    pads, others = split_pads(sch, conv)
    inline_all(sch, others)
    return conv, pads, epilogue_of(sch, conv)


class Depthwise(Conv2D):
    """Depthwise NHWC convolution, vectorized over channels: register tile `xb` pixels x `nvec`
    vectors of `vl` channels, the kernel window unrolled around it, parallel over output rows."""

    name = "depthwise_nhwc"
    kind = "depthwise_nhwc"

    def _tiles(self, ctx, cpu):
        return [(vl, nvec, xb) for vl, nvec in vector_choices(ctx["oc"], cpu.lanes)
                for xb in divisors(ctx["ow"]) if xb * nvec + RESERVED_REGISTERS <= cpu.registers and xb <= MAX_XB]

    def default(self, ctx, cpu):
        # measured (Zen 5): one full vector of channels x up to 8 pixels, channel blocks outermost (2x
        # faster on 576-960 channels, never slower), the padding test inline
        tiles = self._tiles(ctx, cpu)
        want = DEPTHWISE_NVEC_WIDE if cpu.lanes >= 2 * MIN_VL else DEPTHWISE_NVEC_NARROW
        vl, nvec, xb = max(tiles, key=lambda t: (t[0], -abs(t[1] - want),
                                                 t[2] if t[2] <= DEPTHWISE_MAX_XB else -t[2]))
        return {"vl": vl, "nvec": nvec, "xb": xb, "pad": "inline", "c_outer": True,
                "parallel": worth_parallel(ctx["macs"], cpu, DEPTHWISE_EFFICIENCY)}

    def space(self, ctx, cpu):
        pads = ("tile", "inline", "full") if ctx["has_pad"] else ("tile",)
        return [{"vl": vl, "nvec": nv, "xb": xb, "pad": pad, "c_outer": co, "parallel": par}
                for vl, nv, xb in self._tiles(ctx, cpu) for pad in pads for co in (True, False)
                for par in ((False, True) if cpu.cores > 1 else (False,))]

    def apply(self, sch, ctx, p, cpu):
        conv, pads, out = prepare(sch, self.kind)
        n, y, x, c, kh, kw = sch.get_loops(conv)
        xo, xi = sch.split(x, [None, p["xb"]])
        co, tile = split_vectors(sch, c, p["vl"], p["nvec"])
        if p.get("c_outer"):  # a channel block sweeps all rows: its 3 input rows stay in L1
            sch.reorder(n, co, y, xo, kh, kw, xi, *tile)
            outer = parallel_outer(sch, [n, co, y], p["parallel"])
            at = xo
        else:
            sch.reorder(n, y, xo, co, kh, kw, xi, *tile)
            outer = parallel_outer(sch, [n, y], p["parallel"])
            at = sch.fuse(xo, co)
        for lp in (kh, kw, xi):
            sch.unroll(lp)
        out = accumulate_in_registers(sch, conv, out, at)
        init = sch.decompose_reduction(conv, kh)
        vectorize_tile(sch, init, 2, p["vl"])
        vectorize_tile(sch, out, 2, p["vl"])
        place_pad(sch, pads, at if p["pad"] == "tile" else outer, mode=p["pad"], cpu=cpu, parallel=p["parallel"])
