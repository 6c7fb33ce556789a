"""int8 convolution rule: int32 dot products in the instruction's shape (legalize.conv2d_nhwc_dot).

Register tile: `xb` output pixels x `nvec` blocks of L output channels (L: the instruction's int32
lanes); each step of the reduction (kh, kw, 4 input channels) is one dot-product instruction per
accumulator (VNNI `vpdpbusd`, ARM `sdot`, NEON widening multiplies; `tensorize`), or LLVM's widening
vector code where the target has none. The fused epilogue (shift compensation, rescale, bias,
activation, the next layer's quantize) runs as the tile is written, so the output is int8.
"""

from tvm.script import tirx as T

from edgecnn.backends.tvm.legalize import DOT_INTRIN
from edgecnn.backends.tvm.schedules.common import (MAX_NVEC, MAX_XB, MIN_ACCUMULATORS, RESERVED_REGISTERS,
                                                   SPARE_REGISTERS, Rule, divisors, parallel_outer, place_pad,
                                                   vectorize_tile, worth_parallel)
from edgecnn.backends.tvm.schedules.conv import prepare


def _operands(lanes: int) -> tuple:
    """The buffers of a dot-product intrinsic (its description and implementation must declare the same):
    4 uint8 inputs, `lanes` x 4 int8 weights, `lanes` int32 accumulators."""
    return (T.Buffer((4,), "uint8", offset_factor=1), T.Buffer((lanes, 4), "int8", offset_factor=1),
            T.Buffer((lanes,), "int32", offset_factor=1))


def _dot_desc(lanes: int):
    a_, b_, c_ = _operands(lanes)

    @T.prim_func(s_tir=True)
    def desc(A: a_, B: b_, C: c_) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vpdpbusd(lanes: int, byte_operands: bool):
    """C[i] += sum_k A[k] (u8) x B[i, k] (s8) in one vpdpbusd: 512-bit (AVX512-VNNI) or 256-bit (the
    same LLVM intrinsic is AVX-VNNI's VEX form where only avxvnni is on). LLVM 21+ takes the operands as
    byte vectors (TVM 0.27's dot_16x4_vnni still passes <16 x i32> and fails LLVM's verifier)."""
    ab, bb = (f"uint8x{4 * lanes}", f"int8x{4 * lanes}") if byte_operands else (f"int32x{lanes}", f"int32x{lanes}")
    name = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"
    a_, b_, c_ = _operands(lanes)

    @T.prim_func(s_tir=True)
    def impl(A: a_, B: b_, C: c_) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # operands inline, not bound to names: a named vector becomes a local buffer, which TVM 0.27
            # allocates from the workspace pool (two calls per tile: 7% of a 1x1 conv's time)
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(name), C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes), dtype=ab),
                T.reinterpret(B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=bb), dtype=f"int32x{lanes}")

    return impl


VNNI_INTRINSICS = {"edgecnn_dot_16x4_vnni": 16, "edgecnn_dot_8x4_avxvnni": 8}


def register_intrinsics(intrin: str) -> None:
    """The tensor intrinsic `intrin` registered (once): ours for x86 vpdpbusd (for this LLVM), else TVM's ARM
    dot products."""
    from tvm import s_tir
    from tvm.target.codegen import llvm_version_major

    if intrin not in VNNI_INTRINSICS:
        import_arm_intrinsics()
        return
    for name, lanes in VNNI_INTRINSICS.items():
        try:
            s_tir.TensorIntrin.get(name)
        except Exception:  # not registered yet
            s_tir.TensorIntrin.register(name, _dot_desc(lanes), _vpdpbusd(lanes, llvm_version_major() >= 21))


def import_arm_intrinsics() -> None:
    """tvm.s_tir.tensor_intrin.arm_cpu without its package's __init__, which parses every target's intrinsics
    (CUDA's hundreds) first: 26 s on a quiet 2-core machine, 146 s of a loaded LeNet-5 int8 compile, against
    1.3 s for the ARM module alone. A stand-in package holds the import; the real one loads on later use."""
    import importlib
    import importlib.util
    import sys
    import types

    package = "tvm.s_tir.tensor_intrin"
    if f"{package}.arm_cpu" in sys.modules:
        return
    if package in sys.modules:
        importlib.import_module(f"{package}.arm_cpu")
        return
    spec = importlib.util.find_spec(package)
    stand_in = types.ModuleType(package)
    stand_in.__path__, stand_in.__spec__, stand_in.__package__ = list(spec.submodule_search_locations), spec, package
    sys.modules[package] = stand_in
    try:
        importlib.import_module(f"{package}.arm_cpu")  # registers them
    finally:
        del sys.modules[package]  # a later import runs the real __init__ (arm_cpu stays imported: not twice)


# TVM 0.27 keeps a "global" buffer under 1 KB on the stack (LowerTVMBuiltin's kMaxStackAlloca), where LLVM keeps
# it in registers; a larger one, and any "local" one, comes from the workspace pool: two runtime calls per tile
# (22% of the 112x112 1x1 expand conv's time, single thread)
STACK_TILE_BYTES = 1024


class DotConv2D(Rule):
    """int8 conv (groups 1) in the dot-product form; parallel over (channel block, row, pixel block)."""

    name = "conv2d_nhwc_dot"
    kind = "conv2d_nhwc_dot"

    def match_anchor(self, sch, conv, extents, blk):
        n, oh, ow, oc, kh, kw, icq, _ = extents
        lanes = int(blk.reads[-1].source.shape[-1 if not blk.annotations[DOT_INTRIN] else -2])
        return {"n": n, "oh": oh, "ow": ow, "oc": oc, "lanes": lanes, "intrin": str(blk.annotations[DOT_INTRIN]),
                "macs": n * oh * ow * oc * kh * kw * icq * 4}

    def _tiles(self, ctx, cpu):
        """(nvec, xb): xb * nvec accumulators + nvec weight vectors + SPARE_REGISTERS (common.py), the int32
        tile under STACK_TILE_BYTES."""
        blocks, vec_bytes = ctx["oc"] // ctx["lanes"], ctx["lanes"] * 4
        return [(nv, xb) for nv in divisors(blocks) if nv <= MAX_NVEC for xb in divisors(ctx["ow"])
                if xb * nv + nv + SPARE_REGISTERS <= cpu.registers and xb <= MAX_XB
                and xb * nv * vec_bytes < STACK_TILE_BYTES]

    def default(self, ctx, cpu):
        cap = cpu.registers - RESERVED_REGISTERS
        nvec, xb = max(self._tiles(ctx, cpu), key=lambda t: (min(t[0] * t[1], cap), t[0]))
        # int8 dot products do ~4x the multiply-adds of fp32 FMAs per instruction
        return {"nvec": nvec, "xb": xb, "parallel": worth_parallel(ctx["macs"], cpu, 4.0)}

    def space(self, ctx, cpu):
        return [{"nvec": nv, "xb": xb, "parallel": par} for nv, xb in self._tiles(ctx, cpu) if nv * xb >= MIN_ACCUMULATORS
                for par in ((False, True) if cpu.cores > 1 else (False,))]

    def apply(self, sch, ctx, p, cpu):
        if ctx["intrin"]:
            register_intrinsics(ctx["intrin"])
        conv, pads, out = prepare(sch, self.kind)
        n, y, x, o, kh, kw, rco, rci = sch.get_loops(conv)
        xo, xi = sch.split(x, [None, p["xb"]])
        oo, ov, oi = sch.split(o, [None, p["nvec"], ctx["lanes"]])
        inner = [oi, rci] if ctx["intrin"] else [rci, oi]
        sch.reorder(n, oo, y, xo, kh, kw, rco, xi, ov, *inner)
        outer = parallel_outer(sch, [n, oo, y, xo], p["parallel"])
        for lp in (xi, ov):
            sch.unroll(lp)
        # the accumulator tile stays "global" (the intrinsics' buffers are), under `outer` before tensorize
        out = sch.cache_write(conv, 0, "global") if out is None else out
        sch.reverse_compute_at(out, outer, preserve_unit_loops=True)
        if not ctx["intrin"]:  # vectorize while it is still a reduction block
            sch.unroll(rci)
            sch.vectorize(oi)
        init = sch.decompose_reduction(conv, kh)
        vectorize_tile(sch, init, 1, ctx["lanes"])
        if ctx["intrin"]:
            sch.tensorize(oi, ctx["intrin"])
        vectorize_tile(sch, out, 1, cpu.lanes)
        place_pad(sch, pads, outer, mode="full", cpu=cpu, parallel=p["parallel"])
