"""What the schedule rules read off a TVM target: float32 lanes per vector register, register count, cores."""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CpuInfo:
    lanes: int  # float32 lanes in one vector register (for_kernel: lanes of the kernel's own float type)
    registers: int  # architectural vector registers
    cores: int
    arch: str  # "avx512", "avx2", "neon", "generic"
    fp16: bool = False  # float16 arithmetic in the vector unit (ARM +fullfp16): a register holds 2 x lanes

    def for_kernel(self, func) -> "CpuInfo":
        """The CPU as a kernel sees it: where it computes float16 natively, a float16 kernel (its output
        buffer float16) gets twice the float32 lanes (8 on NEON: fmla v.8h), else the float32 view."""
        if self.fp16 and func.params and str(func.params[-1].dtype) == "float16":
            return replace(self, lanes=2 * self.lanes)
        return self


def cpu_info(target) -> CpuInfo:
    import tvm
    from tvm.target.codegen import target_has_features

    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    cores = int(target.attrs.get("num-cores", 0) or 0) or 1
    triple = str(target.attrs.get("mtriple", "") or "")
    with target:
        # llvm_get_vector_width says 512 for znver3: ask for the features instead
        if triple.startswith(("aarch64", "arm64")) or _has(target_has_features, "neon", target):
            return CpuInfo(4, 32, cores, "neon", _has(target_has_features, "fullfp16", target))
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


@dataclass(frozen=True)
class Int8Path:
    """How an int8 conv computes its int32 dot products on a target: `lanes` output channels per
    instruction (weights packed [OC / lanes, KH, KW, IC / 4, lanes, 4]), `shift`: activations + 128 as
    uint8 (x86 VNNI multiplies u8 by s8; a per-channel constant removes the shift), `intrin`: the tensor
    intrinsic (None: LLVM's widening vector code, exact in int32)."""

    name: str
    lanes: int
    shift: bool
    intrin: str | None


# The AVX-512 VPMADDUBSW path (TVM's dot_16x4_avx512) is not used: its int16 pair sums saturate for
# u8 x s8 (255 x 127 x 2 > 32767), so it is not exact on full-range weights; without VNNI the widening
# path (products and sums in int32) runs instead.
INT8_PATHS = {
    "avx512_vnni": Int8Path("avx512_vnni", 16, True, "edgecnn_dot_16x4_vnni"),
    "avx_vnni": Int8Path("avx_vnni", 8, True, "edgecnn_dot_8x4_avxvnni"),
    "sdot": Int8Path("sdot", 4, False, "dot_4x4_i8i8s32_sdot"),
    "neon": Int8Path("neon", 4, False, "dot_4x4_i8i8s32_neon"),
    "avx512": Int8Path("avx512", 16, False, None),
    "avx2": Int8Path("avx2", 8, False, None),
    "generic": Int8Path("generic", 4, False, None),
}


def int8_path(target) -> Int8Path:
    """The int8 dot-product instructions of `target`, from its LLVM features (as for fp32 lanes)."""
    import tvm
    from tvm.target.codegen import target_has_features

    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    with target:
        for feature, name in (("avx512vnni", "avx512_vnni"), ("avxvnni", "avx_vnni"), ("dotprod", "sdot")):
            if _has(target_has_features, feature, target):
                return INT8_PATHS[name]
    arch = cpu_info(target).arch
    return INT8_PATHS[arch if arch in INT8_PATHS else "generic"]
