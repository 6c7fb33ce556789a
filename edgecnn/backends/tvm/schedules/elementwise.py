"""Elementwise / injective kernels and the fallback that leaves no kernel as plain loops."""

from edgecnn.backends.tvm.schedules.common import (MIN_VL, Rule, extent, inline_all, iter_extents,
                                                   iter_kinds, parallel_outer, prod, top_blocks, worth_parallel)

# worth_parallel's efficiency of a copy (a transpose, a concatenation, an add): memory-bound, about a quarter of a
# conv's multiply-add rate; of the Fallback's plain loop nests: a tenth (rough counts, not measured on their own)
COPY_EFFICIENCY, LOOPS_EFFICIENCY = 0.25, 0.1
# an odd innermost extent up to this many vectors is one short vector (DenseNet's concatenations); longer, it is
# split into vectors of 8, 4 or 2 lanes (not measured on its own)
SHORT_VECTOR_MAX_VECTORS = 2


class Injective(Rule):
    """Elementwise / injective kernels (transposes, concatenation, pads, adds): producers inlined, the
    output loops fused, vectorized by whole vectors, parallel over the rest when big enough."""

    name = "injective"

    def match(self, sch, func):
        blocks = top_blocks(sch)
        if not blocks or any("R" in iter_kinds(sch, b) for b in blocks):
            return None
        return {"work": max(prod(iter_extents(sch, b)) for b in blocks)}

    def default(self, ctx, cpu):
        return {"inline": True}

    def apply(self, sch, ctx, p, cpu):
        blocks = top_blocks(sch)
        left = inline_all(sch, blocks[:-1]) if p["inline"] else blocks[:-1]
        for b in left + [blocks[-1]]:
            schedule_elementwise(sch, b, cpu)


def schedule_elementwise(sch, block, cpu):
    """Vectorize the innermost output axis by whole vectors (fusing the loops flat would turn a
    transpose's channel axis of 3 into per-lane div/mod gathers: 20x slower); when it is shorter than a
    vector, vectorize the next axis across it; fuse and parallelise the outer loops when big enough."""
    loops = sch.get_loops(block)
    if not loops:
        return
    work = prod([extent(sch, lp) for lp in loops])
    inner = loops[-1]
    e = extent(sch, inner)
    vl = next((v for v in (cpu.lanes, cpu.lanes // 2, MIN_VL) if v >= MIN_VL and e % v == 0), None)
    if vl is None and e >= MIN_VL:  # an odd channel count (DenseNet's concatenations): one short vector, or pairs
        vl = e if e <= SHORT_VECTOR_MAX_VECTORS * cpu.lanes else next((v for v in (8, 4, 2) if e % v == 0), None)
    outer = loops[:-1]
    if vl:
        if e > vl:
            o, inner = sch.split(inner, [None, vl])
            outer.append(o)
        sch.vectorize(inner)
    elif e < MIN_VL and outer and extent(sch, outer[-1]) % cpu.lanes == 0:
        wo, wi = sch.split(outer[-1], [None, cpu.lanes])
        sch.reorder(wo, inner, wi)
        sch.unroll(inner)
        sch.vectorize(wi)
        outer = outer[:-1] + [wo]
    if outer and worth_parallel(work, cpu, COPY_EFFICIENCY):
        parallel_outer(sch, outer[:2] if len(outer) > 2 else outer, True)


class Fallback(Rule):
    """Anything else: injective blocks inlined where possible, every block left gets its spatial loops
    fused and parallel (reductions serial inside), so that no kernel stays plain loops."""

    name = "fallback"

    def match(self, sch, func):
        return {"blocks": len(top_blocks(sch))}

    def default(self, ctx, cpu):
        return {}

    def apply(self, sch, ctx, p, cpu):
        blocks = top_blocks(sch)
        left = inline_all(sch, blocks[:-1]) + [blocks[-1]]
        for b in left:
            kinds = iter_kinds(sch, b)
            if "R" not in kinds:
                schedule_elementwise(sch, b, cpu)
                continue
            loops = sch.get_loops(b)
            sp = [lp for lp, k in zip(loops, kinds) if k == "S"][:kinds.index("R")]
            if sp and len(loops) == len(kinds):
                parallel_outer(sch, sp, worth_parallel(prod(iter_extents(sch, b)), cpu, LOOPS_EFFICIENCY))
