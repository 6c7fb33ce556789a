"""ARM: the aarch64 targets, cross-compilation, and parity of cross-compiled builds run under qemu.

The parity tests cross-compile for `aarch64`, run the result through the C++ app (cross-built against the
aarch64 TVM runtime) under qemu-aarch64-static, and compare with PyTorch on this host. Timings under
emulation mean nothing and are not taken.
"""

import shutil

import numpy as np
import pytest
from conftest import run_cli
from cpp_build import missing, run_app

from edgecnn import backends, compiler, data
from edgecnn.verify import compare
from edgecnn.compiler import targets
from edgecnn.core import manifest
from edgecnn.core.errors import EdgecnnError

pytestmark = pytest.mark.arm
ARM_TARGETS = ("rpi3", "rpi4", "rpi5", "jetson-cpu", "aarch64")
EM_AARCH64 = 183  # ELF e_machine of aarch64


@pytest.mark.parametrize("name", ARM_TARGETS)
def test_arm_targets_name_cpus_llvm_knows(name):
    from tvm.target import Target, codegen

    from edgecnn.backends.tvm.build import resolve_target
    from edgecnn.backends.tvm.cpu import cpu_info

    target = targets.load(name)
    spec = resolve_target(target)
    assert spec["mtriple"] == "aarch64-linux-gnu" and isinstance(spec["num-cores"], int)
    assert codegen.llvm_is_valid_cpu(spec["mcpu"], spec["mtriple"])
    features = codegen.llvm_get_cpu_features(Target(spec))
    assert all(f.lstrip("+") in features for f in spec["mattr"])
    assert target.options["cross_compiler"] == "aarch64-linux-gnu-g++"
    assert ("fp16" in target.precisions) == cpu_info(spec).fp16  # fp16 exactly where the CPU computes in it


def test_unknown_mcpu_is_refused(tmp_path):
    from edgecnn.backends.tvm.build import resolve_target

    raw = targets.load("rpi4").raw
    path = tmp_path / "t.yaml"
    path.write_text(f"name: typo\nbackend: tvm\nprecision: fp32\nprecisions: [fp32]\n"
                    f"tvm: {{kind: llvm, mtriple: {raw['tvm']['mtriple']}, mcpu: cortex-a27}}\n")
    with pytest.raises(EdgecnnError, match="does not know mcpu 'cortex-a27'.*closest: cortex-a7"):
        resolve_target(targets.load(str(path)))


def test_missing_cross_compiler_is_named(lenet_onnx, tmp_path):
    out = tmp_path / "b"
    r = run_cli("compile", lenet_onnx, "--target", "rpi4", "--out", out, env={"PATH": str(tmp_path)})
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "aarch64-linux-gnu-g++" in r.stderr and "apt-get install g++-aarch64-linux-gnu" in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".b*"))


def compile_arm(onnx_path, target, out, batch=1, precision=None):
    if not shutil.which(targets.load(target).options["cross_compiler"]):
        missing("aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu (make test-tools)")
    return compiler.compile_model(onnx_path, target, precision, out=out, batch=batch)


def test_compile_rpi4_gives_aarch64_library_and_manifest(lenet_onnx, tmp_path):
    build = compile_arm(lenet_onnx, "rpi4", tmp_path / "rpi4")
    so = (build / "model.so").read_bytes()
    assert so[:4] == b"\x7fELF" and int.from_bytes(so[18:20], "little") == EM_AARCH64
    man = manifest.read(build)
    assert man["artifact"]["tvm_target"]["mcpu"] == "cortex-a72" and man["target"]["name"] == "rpi4"
    assert man["artifact"]["cross_compiler"].startswith("aarch64-linux-gnu-g++")
    with pytest.raises(EdgecnnError, match="aarch64 build"):
        backends.require("tvm").load(build, man)


def assert_parity(got: np.ndarray, want: np.ndarray):
    """fp32 parity: 100% top-1 agreement, cosine ~1 and logits equal to float32 rounding of their size."""
    metrics = compare.compare_output(got, want)
    tol = compare.tolerance("fp32", max_abs=1e-4 * max(1.0, float(np.abs(want).max())))
    assert not compare.failures(metrics, tol), metrics
    assert metrics["top1_agreement"] == 100.0
    return metrics


def torch_reference(build, x):
    man = manifest.read(build)
    with backends.require("torch").load(build, man) as ref:
        return ref.run(x)["logits"]


def test_lenet_aarch64_under_qemu_matches_pytorch(arm_app, lenet_onnx, tiny_idx, tmp_path):
    """The app reads the IDX test images and preprocesses them itself (mean/std from manifest.json)."""
    app, emulator = arm_app
    build = compile_arm(lenet_onnx, "aarch64", tmp_path / "b")
    images = data.read_idx(tiny_idx / "t10k-images-idx3-ubyte.gz")
    (tmp_path / "images.idx").write_bytes(bytes([0, 0, 8, 3]) + b"".join(
        int(d).to_bytes(4, "big") for d in images.shape) + images.tobytes())
    r = run_app(app, build, "--idx", tmp_path / "images.idx", "--count", len(images), "--dump",
                tmp_path / "logits.f32", emulator=emulator)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "logits.f32", np.float32).reshape(len(images), -1)
    man = manifest.read(build)
    want = torch_reference(build, data.normalize(images[:, None], man["input"]["mean"], man["input"]["std"]))
    metrics = assert_parity(got, want)
    print(f"lenet5 aarch64 (qemu) vs PyTorch: {metrics['samples']} samples, top-1 agreement "
          f"{metrics['top1_agreement']:.1f}%, max abs {metrics['max_abs']:.3g}, min cosine {metrics['min_cosine']:.9f}")
    top1 = r.stdout.split("sample 0:")[1].split("#1 class ")[1].split()[0]
    assert int(top1) == int(want[0].argmax())


def test_mobilenet_aarch64_under_qemu_matches_pytorch(arm_app, mobilenet_run, tmp_path):
    """A fixed batch of 8 over 30 samples: the app's chunking and zero-padding of the last chunk."""
    from edgecnn import export

    app, emulator = arm_app
    onnx_path = export.export(mobilenet_run, tmp_path / "model.onnx", batch="dynamic")
    build = compile_arm(onnx_path, "aarch64", tmp_path / "b", batch=8)
    man = manifest.read(build)
    shape = man["input"]["shape"][1:]
    x = data.normalize(np.random.default_rng(1).integers(0, 256, (30, *shape), dtype=np.uint8),
                           man["input"]["mean"], man["input"]["std"])
    x.tofile(tmp_path / "input.f32")
    r = run_app(app, build, "--raw", tmp_path / "input.f32", "--dump", tmp_path / "logits.f32", emulator=emulator)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "logits.f32", np.float32).reshape(len(x), -1)
    metrics = assert_parity(got, torch_reference(build, x))
    print(f"mobilenet_v2 aarch64 (qemu) vs PyTorch: {metrics['samples']} samples, top-1 agreement "
          f"{metrics['top1_agreement']:.1f}%, max abs {metrics['max_abs']:.3g}, min cosine {metrics['min_cosine']:.9f}")


@pytest.fixture(scope="module")
def lenet_qdq(lenet_run, tmp_path_factory):
    from edgecnn.quantize import quantize

    return quantize(lenet_run, tmp_path_factory.mktemp("lenet-q") / "q", calib=48, sensitivity=0)["files"]["onnx"]


def disassembly(build) -> str:
    import subprocess

    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if not objdump:
        missing("aarch64-linux-gnu-objdump", "apt-get install binutils-aarch64-linux-gnu (make test-tools)")
    return subprocess.run([objdump, "-d", str(build / "model.so")], capture_output=True, text=True, check=True).stdout


def vector_ops(asm: str, op: str, arrangement: str) -> int:
    """How many `op` instructions on vectors of `arrangement` (8h: 8 x float16, 4s: 4 x float32)."""
    import re

    return len(re.findall(rf"\t{op}\tv\d+\.{arrangement}, ", asm))


def run_under_qemu(arm_app, build, x: np.ndarray, tmp_path) -> np.ndarray:
    """The build's logits for `x` from the cross-built app under qemu-aarch64."""
    app, emulator = arm_app
    x.astype(np.float32).tofile(tmp_path / "input.f32")
    r = run_app(app, build, "--raw", tmp_path / "input.f32", "--dump", tmp_path / "logits.f32", emulator=emulator)
    assert r.returncode == 0, r.stderr
    return np.fromfile(tmp_path / "logits.f32", np.float32).reshape(len(x), -1)


def assert_decisive(build, got: np.ndarray, x: np.ndarray, what: str) -> dict:
    """The qemu outputs judged as `edgecnn verify` judges this build (verify.judge_outputs): int8 against its
    fake-quant graph, fp16 against the fp32 model; every decisive sample agrees."""
    from edgecnn import verify

    judged = verify.judge_outputs(build, {"logits": got}, x)
    m = judged["outputs"]["logits"]
    assert not judged["failures"], judged
    assert m["decisive_agreement"] == 100.0 and m["decisive_share"] >= 50.0, m
    print(f"{what} (qemu): {m['decisive_samples']} of {m['samples']} samples decisive (margin > "
          f"{m['margin_bound']:.3g}), decisive agreement {m['decisive_agreement']:.1f}%, raw "
          f"{m['top1_agreement']:.1f}%, max abs {m['max_abs']:.3g}, min cosine {m['min_cosine']:.6f}")
    return m


@pytest.fixture(scope="module")
def mobilenet_onnx(mobilenet_run, tmp_path_factory):
    """The small MobileNet v2 (alpha 0.35, 28x28, 1 channel, 10 classes) exported at batch 1."""
    from edgecnn import export

    return export.export(mobilenet_run, tmp_path_factory.mktemp("mnv2-onnx") / "model.onnx")


def test_fp16_is_refused_where_the_cpu_has_no_float16_arithmetic(lenet_onnx, tmp_path):
    """rpi4 (Cortex-A72) and the host: one line naming the targets that take fp16; a target YAML that lists
    fp16 for a CPU without +fullfp16: one line naming the feature. Nothing is written."""
    import yaml

    for target in ("rpi4", "host"):
        r = run_cli("compile", lenet_onnx, "--target", target, "--precision", "fp16", "--out", tmp_path / target)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"target '{target}' does not take fp16" in r.stderr and "fp16 on tvm: jetson-cpu, rpi5" in r.stderr
    raw = targets.load("aarch64").raw
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**raw, "name": "generic16", "precisions": ["fp32", "fp16"]}))
    with pytest.raises(EdgecnnError, match=r"fp16 on TVM needs float16 arithmetic \(\+fullfp16 .*generic \+neon lacks"):
        compile_arm(lenet_onnx, str(tmp_path / "a.yaml"), tmp_path / "g", precision="fp16")
    assert not [p.name for p in tmp_path.iterdir() if p.name != "a.yaml"]


@pytest.mark.parametrize("model", ["lenet5", "mobilenet_v2"])
def test_fp16_rpi5_build_computes_in_float16_vectors_and_agrees_under_qemu(model, arm_app, request, tmp_path):
    """An fp16 rpi5 build: float16 model (float32 input and output), its kernels multiply-add 8 x float16
    (fmla v.8h), and under qemu every decisive sample agrees with the fp32 model (PyTorch)."""
    onnx_path = request.getfixturevalue("lenet_onnx" if model == "lenet5" else "mobilenet_onnx")
    build = compile_arm(onnx_path, "rpi5", tmp_path / "b", precision="fp16", batch=8)
    man = manifest.read(build)
    assert man["precision"] == "fp16" and man["input"]["dtype"] == "float32"
    assert man["artifact"]["fp16"]["vector_lanes"] == 8 and man["artifact"]["fp16"]["io"] == "float32"
    asm = disassembly(build)
    counts = {f"fmla.{a}": vector_ops(asm, "fmla", a) for a in ("8h", "4h", "4s")}
    assert counts["fmla.8h"] >= 16 and counts["fmla.4s"] == 0, counts
    shape = man["input"]["shape"][1:]
    images = np.random.default_rng(3).integers(0, 256, (16, *shape), dtype=np.uint8)
    x = data.normalize(images, man["input"]["mean"], man["input"]["std"])
    m = assert_decisive(build, run_under_qemu(arm_app, build, x, tmp_path), x, f"{model} fp16 rpi5")
    assert m["min_cosine"] >= 0.999
    print(f"{model} fp16 rpi5 kernels: {counts}")


@pytest.fixture(scope="module")
def mobilenet_qdq(mobilenet_onnx):
    """The small MobileNet v2 quantized (per channel, TVM's Q/DQ form) on random calibration data, as
    benchmarks/int8.py does."""
    from edgecnn.qdq import ptq

    out = mobilenet_onnx.parent / "model.int8.onnx"
    scheme = ptq.Scheme(per_channel=True, form="tensorrt", reduce_range=False)
    x = np.random.default_rng(1).standard_normal((32, 1, 28, 28)).astype(np.float32)
    ranges = ptq.calibrate(mobilenet_onnx, x, algo="minmax", work=out.parent, form=scheme.placement)
    return ptq.quantize_onnx(mobilenet_onnx, out, ranges, scheme, work=out.parent)


@pytest.fixture(scope="module")
def int8_builds(lenet_qdq, mobilenet_qdq, tmp_path_factory):
    """int8 builds (batch 8) by (model, target), made on first use and shared (read-only)."""
    made = {}

    def build(model: str, target: str):
        if (model, target) not in made:
            qdq = lenet_qdq if model == "lenet5" else mobilenet_qdq
            made[model, target] = compile_arm(qdq, target, tmp_path_factory.mktemp(f"{model}-{target}") / "b",
                                              batch=8, precision="int8")
        return made[model, target]

    return build


def dot_convs(qdq) -> int:
    """The convs of a Q/DQ graph that become dot-product kernels: groups 1 and at least MIN_DOT_IC input
    channels (fewer: the stem stays float; depthwise convs take NEON's widening multiplies)."""
    import onnx

    from edgecnn.backends.tvm.legalize import MIN_DOT_IC

    graph = onnx.load(str(qdq)).graph
    dims = {i.name: list(i.dims) for i in graph.initializer}
    made = {o: n for n in graph.node for o in n.output}

    def input_channels(weight: str) -> int:
        node = made.get(weight)
        return dims[node.input[0] if node is not None and node.op_type == "DequantizeLinear" else weight][1]

    return sum(n.op_type == "Conv" and next((a.i for a in n.attribute if a.name == "group"), 1) == 1
               and input_channels(n.input[1]) >= MIN_DOT_IC for n in graph.node)


# the instruction each target's int8 convs are built with (cpu.int8_path): sdot where +dotprod, else NEON's
# widening multiply and pairwise add
INT8_INSTRUCTIONS = {"rpi5": "sdot", "jetson-cpu": "sdot", "rpi4": "smull"}


@pytest.mark.parametrize("model", ["lenet5", "mobilenet_v2"])
@pytest.mark.parametrize("name", list(INT8_INSTRUCTIONS))
def test_int8_arm_builds_use_the_targets_dot_product(name, model, int8_builds, request):
    """Every int8 conv of groups 1 (MobileNet v2: 1x1 expand and project, the strided 3x3 ones) is a dot-product
    kernel, and the build, disassembled with the cross binutils, computes with the target's instruction."""
    build = int8_builds(model, name)
    asm = disassembly(build)
    counts = {i: asm.count(f"\t{i}\t") for i in ("sdot", "smull", "saddlp")}
    want = INT8_INSTRUCTIONS[name]
    assert counts[want] >= 16, counts
    assert (counts["sdot"] == 0) == (want != "sdot"), counts
    rules = manifest.read(build)["artifact"]["schedules"]["rules"]
    qdq = request.getfixturevalue("lenet_qdq" if model == "lenet5" else "mobilenet_qdq")
    assert rules.get("conv2d_nhwc_dot", 0) == dot_convs(qdq) >= 1, rules
    print(f"{model} int8 {name}: {rules.get('conv2d_nhwc_dot', 0)} dot-product conv kernels, {counts}")


@pytest.mark.parametrize("name,model", [("aarch64", "lenet5"), ("rpi5", "lenet5"), ("rpi5", "mobilenet_v2")])
def test_int8_arm_build_agrees_with_fake_quant_under_qemu(name, model, int8_builds, arm_app, tmp_path):
    """An int8 build (int8 convs by default: sdot on rpi5, NEON's widening multiplies on generic aarch64) under
    qemu: every decisive sample agrees with the Q/DQ graph run op by op (ONNX Runtime: no CPU-dependent int8
    kernel), judged as `edgecnn verify` judges int8."""
    build = int8_builds(model, name)
    assert manifest.read(build)["artifact"]["int8_conv"]
    x = np.random.default_rng(2).standard_normal((16, 1, 28, 28)).astype(np.float32)
    assert_decisive(build, run_under_qemu(arm_app, build, x, tmp_path), x, f"{model} int8 {name}")
