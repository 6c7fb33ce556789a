"""Reductions whose innermost spatial axis is contiguous: pooling, global mean, matmul / dense."""

from tvm import tirx

from edgecnn.backends.tvm.schedules.common import (RESERVED_REGISTERS, Rule, accumulate_in_registers, blocks_around,
                                                   epilogue_of, inline_all, iter_extents, iter_kinds, parallel_outer,
                                                   prod, split_vectors, top_blocks, vector_choices, vectorize_tile,
                                                   worth_parallel)

# a GEMV's output block up to this many vectors wide: it streams its weight rows (measured: 1000 outputs in
# 200-wide blocks ran 3x faster than 8-wide)
MAX_BLOCK_VECTORS = 16
# reductions of up to this many elements are unrolled (a 2x2 or 3x3 pool window, not a global mean; not
# measured on its own)
UNROLL_REDUCTION_MAX = 16
# a pool or a mean is memory-bound: a quarter of a conv's multiply-add rate (worth_parallel; a rough count)
REDUCE_EFFICIENCY = 0.25


class InnerSpatialReduction(Rule):
    """A reduction whose innermost spatial axis is also the innermost axis of what it reads, or absent
    from it (NHWC pooling, global mean over H and W, matmul with [K, N] weights): that axis is vectorized
    (`nvec` vectors of `vl`), the reductions run outside it, the other spatial axes are fused and
    parallel."""

    name = "inner_spatial_reduction"

    def match(self, sch, func):
        reds = [b for b in top_blocks(sch) if "R" in iter_kinds(sch, b)]
        if len(reds) != 1:
            return None
        kinds = iter_kinds(sch, reds[0])
        nsp = kinds.find("R")
        if nsp <= 0 or set(kinds[nsp:]) != {"R"}:
            return None
        blk = sch.get(reds[0])
        inner_var = blk.iter_vars[nsp - 1].var
        if not all(contiguous_or_broadcast(r, inner_var) for r in blk.reads):
            return None
        ext = iter_extents(sch, reds[0])
        return {"nsp": nsp, "inner": ext[nsp - 1], "work": prod(ext), "red": prod(ext[nsp:])}

    def default(self, ctx, cpu):
        cands = vector_choices(ctx["inner"], cpu.lanes, cpu.registers - RESERVED_REGISTERS)
        vl, nvec = max(cands, key=lambda t: (min(t[0] * t[1], MAX_BLOCK_VECTORS * cpu.lanes), t[0]))
        return {"vl": vl, "nvec": nvec, "parallel": worth_parallel(ctx["work"], cpu, REDUCE_EFFICIENCY)}

    def space(self, ctx, cpu):
        return [{"vl": vl, "nvec": nv, "parallel": par}
                for vl, nv in vector_choices(ctx["inner"], cpu.lanes, cpu.registers - RESERVED_REGISTERS)
                for par in ((False, True) if cpu.cores > 1 else (False,))]

    def apply(self, sch, ctx, p, cpu):
        red = [b for b in top_blocks(sch) if "R" in iter_kinds(sch, b)][0]
        before, _ = blocks_around(sch, red)
        inline_all(sch, before)
        out = epilogue_of(sch, red)
        loops = sch.get_loops(red)
        sp, rd = loops[:ctx["nsp"]], loops[ctx["nsp"]:]
        vo, tile = split_vectors(sch, sp[-1], p["vl"], p["nvec"])
        sch.reorder(*sp[:-1], vo, *rd, *tile)
        outer = parallel_outer(sch, [*sp[:-1], vo], p["parallel"])
        if ctx["red"] <= UNROLL_REDUCTION_MAX:
            for r in rd:
                sch.unroll(r)
        out = accumulate_in_registers(sch, red, out, outer)
        init = sch.decompose_reduction(red, rd[0])
        vectorize_tile(sch, init, 1, p["vl"])
        vectorize_tile(sch, out, 1, p["vl"])


def contiguous_or_broadcast(region, var) -> bool:
    """`var` indexes only the innermost dimension of this read (unit stride), or none (a broadcast)."""
    idx = [r.min for r in region.region]
    uses = [any(v.same_as(var) for v in tirx.analysis.undefined_vars(i)) for i in idx]
    if not any(uses):
        return True
    return not any(uses[:-1]) and isinstance(idx[-1], tirx.Var) and idx[-1].same_as(var)
