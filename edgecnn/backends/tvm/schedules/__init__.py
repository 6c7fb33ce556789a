"""Default CPU schedule rules for the kernels of small CNNs after LegalizeOps + FuseOps + FuseTIR.

Each rule is "parameters -> schedule": `match` analyses a PrimFunc (None when the rule does not apply),
`default` picks parameters for a target, `space` lists candidate parameter sets (for a tuner), `apply`
schedules. `schedule_func` runs the first matching rule (falling through to the next on failure).

Vectors: a channel block is `nvec` vectors of `vl` lanes (float32; float16 where the CPU computes in it:
CpuInfo.for_kernel), vl a power of two <= the register width (a 24-lane vector is 3 x 8, never one
<24 x float>: LLVM scalarises odd widths 10x slower).
"""

from tvm import s_tir

from edgecnn.backends.tvm.cpu import CpuInfo
from edgecnn.backends.tvm.schedules.conv import Conv2D, Depthwise
from edgecnn.backends.tvm.schedules.elementwise import Fallback, Injective
from edgecnn.backends.tvm.schedules.int8 import DotConv2D
from edgecnn.backends.tvm.schedules.reduce import InnerSpatialReduction

RULES = [DotConv2D(), Conv2D(), Depthwise(), InnerSpatialReduction(), Injective(), Fallback()]


def func_key(func) -> str:
    """A workload key for per-kernel parameters: the structural hash of the unscheduled PrimFunc."""
    from tvm_ffi import structural_hash

    return "%016x" % (structural_hash(func) & (1 << 64) - 1)


def analyse(func, rules=None):
    """(rule, ctx) of the first rule that matches `func`, on a fresh schedule."""
    for rule in rules or RULES:
        try:
            ctx = rule.match(s_tir.Schedule(func), func)
        except Exception:  # an unexpected block structure: the next rule
            ctx = None
        if ctx is not None:
            return rule, ctx
    return None, None


def schedule_func(func, cpu: CpuInfo, params: dict | None = None, rules=None):
    """(scheduled PrimFunc, rule name, parameters used). `params` go to the first matching rule; a rule
    that fails on this function (an unexpected structure) gives way to the next ones, down to Fallback."""
    errors = []
    first = True
    cpu = cpu.for_kernel(func)  # float16 kernels: vectors of float16 lanes where the CPU computes in it
    for rule in rules or RULES:
        sch = s_tir.Schedule(func)
        try:
            ctx = rule.match(sch, func)
            if ctx is None:
                continue
            p = {**rule.default(ctx, cpu), **(params or {})} if first else rule.default(ctx, cpu)
            first = False
            rule.apply(sch, ctx, p, cpu)
            return sch.mod["main"], rule.name, ({**p, "errors": errors} if errors else p)
        except Exception as e:  # noqa: BLE001 - recorded, the next rule takes over
            first = False
            msg = str(e).strip().splitlines()
            errors.append(f"{rule.name}: {type(e).__name__}: {msg[-1] if msg else ''}")
    return func, "none", {"errors": errors}
