"""What the schedule rules read off a TVM target: float32 lanes per vector register, register count, cores."""

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuInfo:
    lanes: int  # float32 lanes in one vector register
    registers: int  # architectural vector registers
    cores: int
    arch: str  # "avx512", "avx2", "neon", "generic"


def cpu_info(target) -> CpuInfo:
    import tvm
    from tvm.target.codegen import target_has_features

    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    cores = int(target.attrs.get("num-cores", 0) or 0) or 1
    triple = str(target.attrs.get("mtriple", "") or "")
    with target:
        # llvm_get_vector_width says 512 for znver3: ask for the features instead
        if triple.startswith(("aarch64", "arm64")) or _has(target_has_features, "neon", target):
            return CpuInfo(4, 32, cores, "neon")
        if _has(target_has_features, "avx512f", target):
            return CpuInfo(16, 32, cores, "avx512")
        if _has(target_has_features, "avx2", target) or _has(target_has_features, "avx", target):
            return CpuInfo(8, 16, cores, "avx2")
    return CpuInfo(4, 16, cores, "generic")


def _has(fn, feature, target) -> bool:
    try:
        return bool(fn(feature, target))
    except Exception:  # an unknown feature name for this architecture
        return False
