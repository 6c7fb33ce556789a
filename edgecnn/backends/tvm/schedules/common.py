"""Helpers shared by the rules: block queries, vector splits, register tiles, epilogues, padding."""

from tvm.s_tir.dlight import SBlockInfo, try_inline
from tvm.s_tir.dlight.analysis import get_sblock_info

from edgecnn.backends.tvm.legalize import KIND
from edgecnn.backends.tvm.cpu import CpuInfo

# The rules' constants. "Measured" means: untuned builds timed against ONNX Runtime with
# benchmarks/tvm_vs_ort.py on a 2-core AMD Zen 5 (AVX-512) when the rules were written (commit 8648766); the
# parameters a tuner searches (schedules' space()) start from them and `edgecnn tune` measures around them.

# estimated single-thread work below which a kernel runs on one thread: a fork-join costs ~2-3 us on an
# idle machine and much more on a busy one (measured: thresholds of 8, 20 and 60 us gave the same model times)
PARALLEL_MIN_NS = 20_000
# the work estimate's rate: multiply-adds per ns per float32 lane, ~3 GHz x one vector FMA a cycle (a rough
# count, not measured on its own: PARALLEL_MIN_NS was measured through it)
MACS_PER_LANE_NS = 3
# the narrowest vector split off: 4 float32 lanes, 128 bits (SSE, NEON); the rules try lanes, lanes/2, lanes/4
MIN_VL = 4
# vectors in one conv register tile's channel block at most (4 x 16 lanes = 64 channels on AVX-512): more
# leave too few registers for a row of pixels; a bound on the search space, not measured on its own
MAX_NVEC = 4
# vectors of a register tile unrolled at its write-out at most: LLVM keeps a tile up to this size in
# registers; not measured on its own (no default tile reaches it: registers <= 32)
MAX_UNROLL = 64

# Register tiles (the conv rules, int8's too, and the GEMV's vector count)
# registers a conv tile keeps free beside its accumulators and weight vectors: the broadcast input value and
# one temporary (not measured on its own)
SPARE_REGISTERS = 2
# pixels in a register tile at most: the pixel loop is unrolled, and 32 covers a 28-wide row; a bound on
# code size and the search space, not measured on its own
MAX_XB = 32
# registers the default leaves out of the accumulator count (the weight vectors, the broadcast input): more
# accumulators gain nothing once FMA latency x ports (8-10 on AVX-512) is covered; measured best 14 pixels x
# 2 vectors = 28 = 32 - 4 on AVX-512
RESERVED_REGISTERS = 4
# the search skips tiles with fewer accumulators: they cannot hide the FMA latency (see RESERVED_REGISTERS)
MIN_ACCUMULATORS = 4


def top_blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def block_kind(sch, b):
    kind = sch.get(b).annotations.get(KIND)
    return str(kind) if kind is not None else None


def iter_kinds(sch, b) -> str:
    """dlight's iteration kinds of the block, one letter an iter_var: "SSSR" (S spatial, R reduction)."""
    return get_sblock_info(sch, b).dom_kind()


def iter_extents(sch, b):
    return [int(iv.dom.extent) for iv in sch.get(b).iter_vars]


def extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def divisors(n: int):
    return [d for d in range(1, n + 1) if n % d == 0]


def largest_divisor(n: int, limit: int) -> int:
    return max(d for d in divisors(n) if d <= max(1, limit))


def prod(xs):
    out = 1
    for x in xs:
        out *= int(x)
    return out


def vector_choices(c: int, lanes: int, max_nvec: int = MAX_NVEC, group: int = 0):
    """(vl, nvec) with vl * nvec dividing c: full vectors first, then half and quarter ones; a channel
    count that no 4-lane vector divides (1, 3, 6, 10) is one short vector of c lanes. With `group` (grouped
    conv: output channels per group), vl divides it, so that a vector reads one input channel: 1x1 with
    groups of 8 channels ran at 4 GFLOP/s with 16-lane vectors gathering across groups."""
    group = group if group and group < c else 0
    out = [(vl, k) for vl in (lanes, lanes // 2, lanes // 4) if vl >= MIN_VL and c % vl == 0
           and (not group or group % vl == 0)
           for k in range(1, max_nvec + 1) if c % (vl * k) == 0]
    return out or [(c, 1)] if c <= lanes else out or [(largest_divisor(c, lanes), 1)]


def split_vectors(sch, loop, vl, nvec):
    """loop -> outer, tile loops [vector index (unrolled)], lanes (vectorized)]."""
    outer, block = sch.split(loop, [None, vl * nvec])
    tile = [block]
    if nvec > 1:
        tile = list(sch.split(block, [nvec, vl]))
        sch.unroll(tile[0])
    if vl > 1:
        sch.vectorize(tile[-1])
    return outer, tile


def vectorize_tile(sch, block, depth, vl, *, max_unroll: int = MAX_UNROLL):
    """The loops of `block` below `depth` form a register tile: vectorize the innermost by `vl`,
    unroll the loops around it up to `max_unroll` vectors (so that LLVM keeps the tile in registers)."""
    loops = sch.get_loops(block)[depth:]
    if not loops:
        return
    inner = loops[-1]
    n = extent(sch, inner)
    rest = list(loops[:-1])
    vl = next((v for v in (vl, vl // 2, vl // 4) if v >= MIN_VL and n % v == 0), n)
    if n > vl:
        o, inner = sch.split(inner, [None, vl])
        rest.append(o)
    total = 1
    for lp in reversed(rest):
        total *= extent(sch, lp)
        if total > max_unroll:
            break
        sch.unroll(lp)
    if n > 1:
        sch.vectorize(inner)


def worth_parallel(macs: int, cpu: CpuInfo, efficiency: float = 1.0) -> bool:
    """A thread-pool launch costs ~2-3 us (fork-join, more on a busy machine): worth it from PARALLEL_MIN_NS
    (20 us) of single-thread work, estimated at `efficiency` x lanes x MACS_PER_LANE_NS multiply-adds per ns
    (`efficiency`: the kernel's rate against a register-tiled conv's, 1.0)."""
    return cpu.cores > 1 and macs / (cpu.lanes * MACS_PER_LANE_NS * efficiency) > PARALLEL_MIN_NS


def parallel_outer(sch, loops, parallel: bool):
    """Fuse `loops`; run them on the thread pool when asked and there are at least 2 iterations."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if parallel and extent(sch, fused) >= 2:
        sch.parallel(fused)
    return fused


def inline_all(sch, blocks):
    """dlight's try_inline: compute_inline (else reverse_compute_inline) each block that allows it, until none
    does; returns the blocks left (a reduction, an output) in their order."""
    infos = [SBlockInfo(sch.get(b).name_hint, [], b) for b in blocks]
    return [info.block_rv for info in try_inline(sch, infos)]


def blocks_around(sch, anchor):
    blocks = top_blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    i = names.index(sch.get(anchor).name_hint)
    return blocks[:i], blocks[i + 1:]


def split_pads(sch, anchor):
    """(pad blocks, other producers) before `anchor`. A pad block by structure (dlight's is_data_pad): spatial,
    one buffer read into one of the same rank, not elementwise, an if_then_else in its body (the bounds test;
    int8's shifted pad adds 128 around it). A concatenation reads two or more."""
    before, _ = blocks_around(sch, anchor)
    pads = [get_sblock_info(sch, b).is_data_pad(sch) for b in before]
    return [b for b, p in zip(before, pads) if p], [b for b, p in zip(before, pads) if not p]


def epilogue_of(sch, anchor):
    """Inline the elementwise chain after `anchor` (bias, activation, residual add) into its last block,
    which is returned (None when the anchor writes the output itself)."""
    _, after = blocks_around(sch, anchor)
    if not after:
        return None
    for b in after[:-1]:
        sch.compute_inline(b)
    last = after[-1]
    if "R" in iter_kinds(sch, last):
        raise ValueError("reduction after the anchor")
    return last


def accumulate_in_registers(sch, anchor, epilogue, at_loop):
    """The accumulator tile lives in a local buffer under `at_loop`; the epilogue writes it out there."""
    if epilogue is None:
        epilogue = sch.cache_write(anchor, 0, "local")
    else:
        sch.set_scope(anchor, 0, "local")
    sch.reverse_compute_at(epilogue, at_loop, preserve_unit_loops=True)
    return epilogue


def flatten_pixels(sch, conv, out, w):
    """(y, x) -> one pixel axis in the conv, its accumulator buffer and the epilogue, so that a tile of
    pixels may span rows and still be one rectangular region (a 1x1 conv is a GEMM over pixels)."""
    sch.transform_layout(conv, ("write", 0), lambda n, y, x, c: (n, y * w + x, c))
    sch.transform_block_layout(conv, lambda n, y, x, o, kh, kw, rc: (n, y * w + x, o, kh, kw, rc))
    sch.transform_block_layout(out, lambda n, y, x, c: (n, y * w + x, c))


def anchor_block(sch, kind):
    found = [b for b in top_blocks(sch) if block_kind(sch, b) == kind]
    return found[0] if len(found) == 1 else None


def anchor(sch, kind):
    """(the function's one `kind` block, its iteration extents, the block itself), or None without one."""
    block = anchor_block(sch, kind)
    return None if block is None else (block, iter_extents(sch, block), sch.get(block))


def place_pad(sch, pads, at_loop, *, mode, cpu, parallel):
    """Padding: "inline" (bounds test in the inner loop), "tile" (the padded input window of a tile
    copied under `at_loop`), "full" (the whole padded input first, parallel)."""
    for pad in pads:
        if mode == "inline":
            sch.compute_inline(pad)
        elif mode == "tile":
            sch.compute_at(pad, at_loop, preserve_unit_loops=True)
            sch.set_scope(pad, 0, "local")
            vectorize_copy(sch, pad, cpu)
        else:
            parallel_outer(sch, sch.get_loops(pad)[:2], parallel)
            vectorize_copy(sch, pad, cpu)


def vectorize_copy(sch, block, cpu):
    loops = sch.get_loops(block)
    inner = loops[-1]
    if extent(sch, inner) < cpu.lanes and len(loops) >= 2:  # few channels: vectorize (x, c) together
        inner = sch.fuse(loops[-2], inner)
    n = extent(sch, inner)
    for vl in (cpu.lanes, cpu.lanes // 2, MIN_VL):
        if n >= vl and n % vl == 0:
            _, inner = sch.split(inner, [None, vl])
            sch.vectorize(inner)
            return


class Rule:
    name = "rule"
    kind = ""  # a kernel kind (legalize.KIND): the rule matches functions with one block of that kind

    def match(self, sch, func):
        """An analysis dict when this rule schedules `func`, else None."""
        found = anchor(sch, self.kind) if self.kind else None
        return None if found is None else self.match_anchor(sch, *found)

    def match_anchor(self, sch, block, extents, sblock):
        """match, given the function's anchor block: its iteration extents and the block itself."""
        raise NotImplementedError

    def default(self, ctx, cpu: CpuInfo) -> dict:
        raise NotImplementedError

    def space(self, ctx, cpu: CpuInfo) -> list[dict]:
        return [self.default(ctx, cpu)]

    def apply(self, sch, ctx, params: dict, cpu: CpuInfo) -> None:
        raise NotImplementedError
