"""Default CPU schedule rules for the kernels of small CNNs after LegalizeOps + FuseOps + FuseTIR.

Each rule is "parameters -> schedule": `match` analyses a PrimFunc (None when the rule does not apply),
`default` picks parameters for a target, `space` lists candidate parameter sets (for a tuner), `apply`
schedules. `schedule_func` runs the first matching rule (falling through to the next on failure).

Vectors: a channel block is `nvec` vectors of `vl` lanes (float32; float16 where the CPU computes in it:
CpuInfo.for_kernel), vl a power of two <= the register width (a 24-lane vector is 3 x 8, never one
<24 x float>: LLVM scalarises odd widths 10x slower).
"""

from contextlib import nullcontext

from tvm import s_tir
from tvm.s_tir.dlight import ScheduleRule

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
    """(scheduled PrimFunc, rule name, parameters used), by dlight's ApplyDefaultSchedule over the rules as
    ScheduleRules. `params` go to the first matching rule; a rule that fails on this function (an unexpected
    structure) gives way to the next ones, down to Fallback."""
    from tvm import IRModule
    from tvm.s_tir.dlight import ApplyDefaultSchedule
    from tvm.target import Target

    attempt = Attempt(params)
    cpu = cpu.for_kernel(func)  # float16 kernels: vectors of float16 lanes where the CPU computes in it
    passes = ApplyDefaultSchedule(*[AsScheduleRule(rule, cpu, attempt) for rule in rules or RULES])
    # dlight hands each rule the current target; edgecnn's rules read `cpu` (made from that target) instead
    with nullcontext() if Target.current(allow_none=True) else Target("llvm"):
        new = passes(IRModule({"main": func}))["main"]
    if attempt.rule == "none":
        return func, "none", {"errors": attempt.errors}
    used = attempt.used
    return new.without_attr("tirx.is_scheduled"), attempt.rule, ({**used, "errors": attempt.errors} if attempt.errors
                                                                  else used)


class Attempt:
    """One PrimFunc's way through the rules: the tuned parameters go to the first rule that matches; each rule
    that fails records why; the rule that scheduled it and the parameters it used."""

    def __init__(self, params: dict | None):
        self.params, self.first, self.errors, self.rule, self.used = params or {}, True, [], "none", {}


class AsScheduleRule(ScheduleRule):
    """An edgecnn rule (match -> parameters -> apply on a Schedule) as a dlight ScheduleRule: the schedule, or
    None where the rule does not match or fails (the next rule is tried)."""

    def __init__(self, rule, cpu: CpuInfo, attempt: Attempt):
        self.rule, self.cpu, self.attempt = rule, cpu, attempt

    def apply(self, func, target, tunable):
        sch, attempt = s_tir.Schedule(func), self.attempt
        try:
            ctx = self.rule.match(sch, func)
            if ctx is None:
                return None
            params = {**self.rule.default(ctx, self.cpu), **(attempt.params if attempt.first else {})}
            attempt.first = False
            self.rule.apply(sch, ctx, params, self.cpu)
        except Exception as e:  # noqa: BLE001 - recorded, the next rule takes over
            attempt.first = False
            msg = str(e).strip().splitlines()
            attempt.errors.append(f"{self.rule.name}: {type(e).__name__}: {msg[-1] if msg else ''}")
            return None
        attempt.rule, attempt.used = self.rule.name, params
        return sch
