"""Helpers shared by the rules: block queries, vector splits, register tiles, epilogues, padding."""

from tvm.tirx import IterVar

from edgecnn.backends.tvm.legalize import KIND
from edgecnn.backends.tvm.cpu import CpuInfo

SPATIAL, REDUCE = IterVar.DataPar, IterVar.CommReduce  # the iteration kinds of a block's iter_vars
# estimated single-thread ns below which a kernel runs on one thread: a fork-join costs ~2-3 us on an
# idle machine and much more on a busy one (thresholds of 8, 20 and 60 us measured the same)
PARALLEL_MIN_NS = 20000


def top_blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def block_kind(sch, b):
    kind = sch.get(b).annotations.get(KIND)
    return str(kind) if kind is not None else None


def iter_kinds(sch, b):
    return [int(iv.iter_type) for iv in sch.get(b).iter_vars]


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


def vector_choices(c: int, lanes: int, max_nvec: int = 4, group: int = 0):
    """(vl, nvec) with vl * nvec dividing c: full vectors first, then half and quarter ones; a channel
    count that no 4-lane vector divides (1, 3, 6, 10) is one short vector of c lanes. With `group` (grouped
    conv: output channels per group), vl divides it, so that a vector reads one input channel: 1x1 with
    groups of 8 channels ran at 4 GFLOP/s with 16-lane vectors gathering across groups."""
    group = group if group and group < c else 0
    out = [(vl, k) for vl in (lanes, lanes // 2, lanes // 4) if vl >= 4 and c % vl == 0
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


def vectorize_tile(sch, block, depth, vl, *, max_unroll: int = 64):
    """The loops of `block` below `depth` form a register tile: vectorize the innermost by `vl`,
    unroll the loops around it up to `max_unroll` vectors (so that LLVM keeps the tile in registers)."""
    loops = sch.get_loops(block)[depth:]
    if not loops:
        return
    inner = loops[-1]
    n = extent(sch, inner)
    rest = list(loops[:-1])
    vl = next((v for v in (vl, vl // 2, vl // 4) if v >= 4 and n % v == 0), n)
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
    """A thread-pool launch costs ~2-3 us (fork-join, more on a busy machine): worth it from PARALLEL_MIN_NS of
    single-thread work, estimated at `efficiency` x (lanes x 3) multiply-adds per ns."""
    return cpu.cores > 1 and macs / (cpu.lanes * 3 * efficiency) > PARALLEL_MIN_NS


def parallel_outer(sch, loops, parallel: bool):
    """Fuse `loops`; run them on the thread pool when asked and there are at least 2 iterations."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if parallel and extent(sch, fused) >= 2:
        sch.parallel(fused)
    return fused


def inline_all(sch, blocks):
    """compute_inline each block that allows it; returns the blocks left."""
    left = []
    for b in blocks:
        try:
            sch.compute_inline(b)
        except Exception:  # a reduction, or an output: stays a loop nest
            left.append(b)
    return left


def blocks_around(sch, anchor):
    blocks = top_blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    i = names.index(sch.get(anchor).name_hint)
    return blocks[:i], blocks[i + 1:]


def split_pads(sch, anchor):
    """(pad blocks, other producers) before `anchor` (block RVs compare by identity: go by name)."""
    before, _ = blocks_around(sch, anchor)
    is_pad = [sch.get(b).name_hint.startswith("pad") for b in before]
    return [b for b, p in zip(before, is_pad) if p], [b for b, p in zip(before, is_pad) if not p]


def epilogue_of(sch, anchor):
    """Inline the elementwise chain after `anchor` (bias, activation, residual add) into its last block,
    which is returned (None when the anchor writes the output itself)."""
    _, after = blocks_around(sch, anchor)
    if not after:
        return None
    for b in after[:-1]:
        sch.compute_inline(b)
    last = after[-1]
    if REDUCE in iter_kinds(sch, last):
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
    for vl in (cpu.lanes, cpu.lanes // 2, 4):
        if n >= vl and n % vl == 0:
            _, inner = sch.split(inner, [None, vl])
            sch.vectorize(inner)
            return


class Rule:
    name = "rule"

    def match(self, sch, func):
        """An analysis dict when this rule schedules `func`, else None."""
        raise NotImplementedError

    def default(self, ctx, cpu: CpuInfo) -> dict:
        raise NotImplementedError

    def space(self, ctx, cpu: CpuInfo) -> list[dict]:
        return [self.default(ctx, cpu)]

    def apply(self, sch, ctx, params: dict, cpu: CpuInfo) -> None:
        raise NotImplementedError
