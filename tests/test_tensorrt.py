"""TensorRT: targets, builder settings and trtexec per TensorRT generation, build directories made without a
GPU, and (marked gpu/tensorrt, skipped without one) engines built, verified and refused on a real GPU."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_cli
from test_qdqlint import fp32_onnx, good  # noqa: F401 (fixtures)

from edgecnn import compiler
from edgecnn.compiler import targets
from edgecnn.core import manifest
from edgecnn.backends import tensorrt
from edgecnn.backends.tensorrt import compat as trt_compat, device, onnx as trt_onnx
from edgecnn.core import onnx_utils
from edgecnn.core.errors import EdgecnnError

TRT_MISSING = tensorrt.backend.available()


def needs_trt(test):
    """A test that builds or runs an engine: needs TensorRT and an NVIDIA GPU."""
    for mark in (pytest.mark.gpu, pytest.mark.tensorrt,
                 pytest.mark.skipif(TRT_MISSING is not None, reason=f"needs TensorRT and a GPU: {TRT_MISSING}")):
        test = mark(test)
    return test


@pytest.fixture(scope="session")
def lenet_qdq(lenet_run, tmp_path_factory):
    """LeNet-5 quantized by edgecnn in TensorRT's form (symmetric, per channel, Q/DQ on the inputs of Conv/Gemm),
    at opset 18 so the targets of older TensorRT versions lower it."""
    from edgecnn.quantize import quantize

    return Path(quantize(lenet_run, tmp_path_factory.mktemp("lenet_qdq"), calib=48, sensitivity=0, opset=18)
                ["files"]["onnx"])


def builds_here(target: str) -> bool:
    """Whether compile would build the target's engine on this machine (TensorRT and that very device here)."""
    if TRT_MISSING is not None:
        return False
    cfg = device.target_config(targets.load(target).raw)
    return device.mismatch(cfg, target, device.local_device(device.require_trt())) is None


def not_the_device(target: str):
    """A test of what compile prepares without the device: it runs with or without TensorRT installed."""
    return pytest.mark.skipif(builds_here(target), reason=f"this machine is a {target}: compile builds the engine")


# ---- lazy import and the missing-dependency message ----

def test_imports_lazily_and_says_what_to_install():
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "import edgecnn.backends.tensorrt as t, edgecnn.backends.tensorrt.compat, edgecnn.cli.compile\n"
            "from edgecnn.core.errors import MissingDependency\n"
            "assert 'tensorrt' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print(t.backend.available())\n"
            "try:\n    t.backend.load('x', {'artifact': {}})\nexcept MissingDependency as e:\n    print('load:', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert "tensorrt is not installed: pip install 'edgecnn[tensorrt]'" in first
    assert second == "load: tensorrt is not installed: pip install 'edgecnn[tensorrt]'"


@pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT and a GPU are present")
def test_require_names_the_extra():
    from edgecnn import backends

    with pytest.raises(EdgecnnError, match="backend 'tensorrt' is not usable here"):
        backends.require("tensorrt")


# ---- targets ----

def test_jetson_is_an_alias_of_orin_and_listed_once():
    assert targets.load("jetson") == targets.load("jetson-orin")
    names = [t.name for t in targets.all_targets()]
    assert len(names) == len(set(names)) and "jetson-orin" in names and "jetson" not in names


@pytest.mark.parametrize("name,version,sm,max_opset,precisions,dla_cores", [
    ("jetson-nano", "8.2", "5.3", 13, ["fp32", "fp16"], None),
    ("jetson-xavier", "8.5", "7.2", 17, ["fp32", "fp16", "int8"], 2),
    ("jetson-orin", "10.3", "8.7", 20, ["fp32", "fp16", "int8"], 2),
    ("nvidia-gpu", "local", "local", 20, ["fp32", "fp16", "int8"], None)])
def test_tensorrt_targets_state_their_platform(name, version, sm, max_opset, precisions, dla_cores):
    t = targets.load(name)
    cfg = device.target_config(t.raw)
    assert (t.backend, t.device, t.precisions) == ("tensorrt", "cuda", precisions)
    assert (str(cfg["version"]), str(cfg["sm"]), cfg["max_opset"]) == (version, sm, max_opset)
    assert (cfg["dla"] or {}).get("cores") == dla_cores and cfg["workspace_mib"] > 0
    assert "builder_optimization_level" in cfg and cfg["dynamic_batch"]["min"] <= cfg["dynamic_batch"]["max"]


@pytest.mark.parametrize("files,message", [
    ({"a.yaml": "alias: b\n", "b.yaml": "alias: a\n"}, "alias loop a -> b -> a"),
    ({"a.yaml": "alias: host\nbackend: tvm\n"}, "an alias file holds only 'alias: TARGET', not 'backend'"),
    ({"a.yaml": "alias: nothere\n"}, "unknown target 'nothere'")])
def test_bad_alias_files(tmp_path, monkeypatch, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("EDGECNN_TARGETS", str(tmp_path))
    with pytest.raises(EdgecnnError, match=message):
        targets.load("a")


# ---- what each TensorRT generation has, its builder settings and its trtexec command ----

@pytest.mark.parametrize("version,batch_flag,precision_flags,pool,level,skip", [
    ("8.2.1.8", True, True, False, False, "--buildOnly"),
    ("8.5.2.2", True, True, True, False, "--buildOnly"),
    ("8.6.1", True, True, True, True, "--skipInference"),
    ("10.3.0.30", False, True, True, True, "--skipInference"),
    ("11.1.0", False, False, True, True, "--skipInference")])
def test_generation_table(version, batch_flag, precision_flags, pool, level, skip):
    g = trt_compat.generation(version)
    assert (g.explicit_batch_flag, g.precision_flags, g.memory_pool, g.optimization_level,
            g.skip_inference_flag) == (batch_flag, precision_flags, pool, level, skip)


@pytest.mark.parametrize("version", ["8.0.1", "7.2", "ten"])
def test_old_or_bad_versions_refused(version):
    with pytest.raises(EdgecnnError, match="too old|not a TensorRT version"):
        trt_compat.generation(version)


def settings(target, precision, version=None, batch=1, dla_core=None):
    cfg = targets.load(target).raw["tensorrt"]
    profile = trt_compat.profile_shapes("input", [1, 28, 28], batch, dynamic_batch=cfg["dynamic_batch"],
                                        dynamic_input=True)
    return trt_compat.settings_for(version or cfg["version"], cfg, target_name=target, precision=precision,
                                   profile=profile, dla_core=dla_core, timing_cache="t.cache")


def command(target, precision, version=None, batch=1, dla_core=None):
    return trt_compat.trtexec_command(settings(target, precision, version, batch, dla_core))[3:]


def test_nano_trt82_fp16():
    s = settings("jetson-nano", "fp16")
    assert (s["flags"], s["builder_optimization_level"], s["onnx"], s["strongly_typed"]) == (["FP16"], None,
                                                                                          "model.onnx", False)
    assert command("jetson-nano", "fp16") == ["--fp16", "--workspace=256", "--shapes=input:1x1x28x28",
                                              "--timingCacheFile=t.cache", "--buildOnly"]


def test_xavier_trt85_int8_on_dla_with_gpu_fallback():
    assert settings("jetson-xavier", "int8", dla_core=1)["dla"] == {"core": 1, "gpu_fallback": True}
    assert command("jetson-xavier", "int8", batch=None, dla_core=1) == [
        "--int8", "--fp16", "--memPoolSize=workspace:1024", "--useDLACore=1", "--allowGPUFallback",
        "--minShapes=input:1x1x28x28", "--optShapes=input:8x1x28x28", "--maxShapes=input:32x1x28x28",
        "--timingCacheFile=t.cache", "--buildOnly"]


def test_orin_trt103_fp32_dynamic():
    assert command("jetson", "fp32", batch=None) == [
        "--memPoolSize=workspace:1024", "--builderOptimizationLevel=3", "--minShapes=input:1x1x28x28",
        "--optShapes=input:8x1x28x28", "--maxShapes=input:32x1x28x28", "--timingCacheFile=t.cache",
        "--skipInference"]


@pytest.mark.parametrize("precision,onnx_file,flags", [("fp32", "model.onnx", []), ("fp16", "model.fp16.onnx", []),
                                                       ("int8", "model.onnx", [])])
def test_trt11_is_strongly_typed(precision, onnx_file, flags):
    s = settings("nvidia-gpu", precision, version="11.1.0")
    assert (s["onnx"], s["flags"], s["strongly_typed"], s["fp16_onnx"]) == (onnx_file, flags, True,
                                                                          precision == "fp16")
    cmd = trt_compat.trtexec_command(s)
    assert cmd[1] == f"--onnx={onnx_file}" and not {"--fp16", "--int8", "--best"} & set(cmd)
    assert "--memPoolSize=workspace:4096" in cmd and "--builderOptimizationLevel=3" in cmd


def test_trt10_on_the_local_gpu_uses_precision_flags():
    assert settings("nvidia-gpu", "int8", version="10.13.2")["flags"] == ["INT8", "FP16"]
    assert settings("nvidia-gpu", "fp16", version="10.13.2")["onnx"] == "model.onnx"


@pytest.mark.parametrize("target,precision,core,message", [
    ("jetson-orin", "fp32", 0, "DLA runs FP16 and INT8 only"),
    ("jetson-xavier", "fp16", 2, "has 2 DLA core.s.; DLA core 2 does not exist"),
    ("jetson-nano", "fp16", 0, "has no DLA core")])
def test_dla_requests_checked(target, precision, core, message):
    with pytest.raises(EdgecnnError, match=message):
        settings(target, precision, dla_core=core)


def test_shell_join_keeps_home_for_the_shell():
    assert trt_compat.shell_join(["trtexec", "--timingCacheFile=$HOME/a b.cache", "--onnx=m.onnx"]) == \
        "trtexec '--timingCacheFile=$HOME/a b.cache' --onnx=m.onnx"
    assert trt_compat.shell_join(["--timingCacheFile=$HOME/x.cache"]) == "--timingCacheFile=$HOME/x.cache"


# ---- engines are tied to TensorRT version and GPU (pure checks) ----

ORIN = {"tensorrt": "10.3.0.30", "gpu": "Orin", "sm": "8.7"}


@pytest.mark.parametrize("target,local,message", [
    ("jetson-orin", ORIN, None),
    ("jetson-orin", {"tensorrt": "10.7.0", "gpu": "Orin", "sm": "8.7"}, None),
    ("jetson-orin", {"tensorrt": "10.3.0.30", "gpu": "NVIDIA H100 80GB HBM3", "sm": "9.0"}, "is sm_87"),
    ("jetson-orin", {"tensorrt": "8.6.2", "gpu": "Orin", "sm": "8.7"}, "is TensorRT 10.3, this machine has"),
    ("nvidia-gpu", {"tensorrt": "8.6.1", "gpu": "NVIDIA A10", "sm": "8.6"}, "takes TensorRT 10 or 11"),
    ("nvidia-gpu", {"tensorrt": "11.1.0", "gpu": "NVIDIA H100", "sm": "9.0"}, None)])
def test_which_machine_can_build_a_target(target, local, message):
    reason = device.mismatch(targets.load(target).raw["tensorrt"], target, local)
    assert (reason is None) if message is None else message in reason


def test_engine_from_another_tensorrt_or_gpu_is_refused():
    device.check_engine(dict(ORIN), dict(ORIN))
    for change in ({"tensorrt": "10.3.1"}, {"sm": "7.2"}):
        with pytest.raises(EdgecnnError, match="not portable. Rebuild it here: edgecnn build BUILD_DIR --force"):
            device.check_engine({**ORIN, **change}, ORIN)


# ---- build directories made here, without a GPU ----

def compile_cli(onnx_path, target, out, *extra):
    r = run_cli("compile", onnx_path, "--target", target, "--out", out, *extra)
    return r, (json.loads((out / "manifest.json").read_text()) if r.returncode == 0 else None)


def model_chw(model) -> list[int]:
    return onnx_utils.input_info(model)[1]


def check_build_dir(out: Path, man: dict, precision: str, max_opset: int):
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert onnx_utils.opset_of(model) <= max_opset
    assert man["backend"] == "tensorrt" and man["precision"] == precision
    assert man["target"]["tensorrt"]["max_opset"] == max_opset
    assert man["input"]["shape"][1:] == model_chw(model) and man["labels"] and man["input"]["mean"]
    art = man["artifact"]
    assert art["file"] == "model.engine" and art["settings"] == "trt_settings.json" and art["precision"] == precision
    assert set(man["files"]) == {"model.onnx", "trt_settings.json"}
    manifest.read(out)  # every sha256 matches
    s = json.loads((out / "trt_settings.json").read_text())
    assert s["trtexec"] == art["trtexec"] and s["precision"] == precision
    return model, art, s


@not_the_device("jetson")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_compile_for_jetson_without_the_device(lenet_onnx, lenet_qdq, tmp_path, precision):
    src = lenet_qdq if precision == "int8" else lenet_onnx
    r, man = compile_cli(src, "jetson", tmp_path / "b", "--precision", precision)
    assert r.returncode == 0, r.stderr
    model, art, s = check_build_dir(tmp_path / "b", man, precision, 20)
    assert man["target"]["name"] == "jetson-orin" and art["engine"] is None
    assert s["flags"] == (["FP16"] if precision == "fp16" else ["INT8", "FP16"])
    assert "engine: not built on this machine" in r.stdout and "trtexec --onnx=model.onnx" in r.stdout
    assert ("QuantizeLinear" in {n.op_type for n in model.graph.node}) == (precision == "int8")
    assert art["lint"] == [] and art["opset"]["how"] == "unchanged"


@not_the_device("jetson-nano")
def test_nano_gets_opset_13(lenet_onnx, mobilenet_run, tmp_path):
    from edgecnn import export

    for name, src in (("lenet", lenet_onnx), ("mnv2", export.export(mobilenet_run, tmp_path / "mnv2.onnx"))):
        r, man = compile_cli(src, "jetson-nano", tmp_path / name, "--precision", "fp16")
        assert r.returncode == 0, r.stderr
        model, art, s = check_build_dir(tmp_path / name, man, "fp16", 13)
        assert onnx_utils.opset_of(model) == 13 and art["opset"]["source"] == 18
        assert "--workspace=256" in s["trtexec"] and "--buildOnly" in s["trtexec"]
        trt_onnx.same_outputs(onnx.load(str(src)), model, "test")


@not_the_device("jetson-xavier")
def test_xavier_int8_lowers_the_qdq_model_to_17(lenet_qdq, tmp_path):
    r, man = compile_cli(lenet_qdq, "jetson-xavier", tmp_path / "b", "--precision", "int8")
    assert r.returncode == 0, r.stderr
    model, art, _ = check_build_dir(tmp_path / "b", man, "int8", 17)
    assert art["opset"] == {"source": 18, "prepared": 17, "how": "onnx.version_converter"}


@pytest.mark.parametrize("case,message", [
    ("nano_int8", "target 'jetson-nano' does not take int8; it takes fp32, fp16"),
    ("int8_without_qdq", "has no Q/DQ nodes: TensorRT builds int8 only from a Q/DQ model"),
    ("qdq_as_fp16", "int8.? model[:;] compile it with --precision int8"),
    ("asymmetric", "breaks TensorRT's Q/DQ rules .2 error.s..: .symmetric.")])
def test_refusals_are_one_line_and_leave_nothing(lenet_onnx, lenet_qdq, tmp_path, case, message):
    src, target, precision = {"nano_int8": (lenet_qdq, "jetson-nano", "int8"),
                              "int8_without_qdq": (lenet_onnx, "jetson", "int8"),
                              "qdq_as_fp16": (lenet_qdq, "jetson", "fp16"),
                              "asymmetric": (tmp_path / "asym.onnx", "jetson", "int8")}[case]
    if case == "asymmetric":
        model = onnx.load(str(lenet_qdq))
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        zp = next(i for i in model.graph.initializer if i.name == q.input[2])
        zp.CopyFrom(onnx.numpy_helper.from_array(np.array(5, np.int8), zp.name))
        onnx.save(model, str(src))
    r, _ = compile_cli(src, target, tmp_path / "b", "--precision", precision)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert __import__("re").search(message, r.stderr), r.stderr
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_qdq_mobilenet_block_lowers_to_17(good):
    lowered, how = trt_onnx.lower_opset(good, 17, "m.onnx")
    assert how == {"source": 18, "prepared": 17, "how": "onnx.version_converter"} and qdqlint_clean(lowered, 17)


def qdqlint_clean(model, max_opset) -> bool:
    from edgecnn.backends.tensorrt import qdqlint

    return qdqlint.lint(model, max_opset) == []


def test_unlowerable_model_names_the_fix(lenet_onnx):
    """onnx's converter has no Relu 14 -> 13 adapter; without its checkpoint the model cannot be re-exported."""
    model = onnx.load(str(lenet_onnx))
    del model.metadata_props[:]
    with pytest.raises(EdgecnnError, match=r"m.onnx is opset 18 .* takes opset <= 13; lowering failed "
                                           r"\(onnx.version_converter: .*; re-exported from the checkpoint: its "
                                           r"checkpoint \(none recorded\) is missing .*\): export at opset 13"):
        trt_onnx.lower_opset(model, 13, "m.onnx")


def test_fp16_onnx_for_tensorrt_11_keeps_fp32_io(lenet_onnx):
    half = onnx_utils.to_fp16(onnx.load(str(lenet_onnx)))
    onnx.checker.check_model(half, full_check=True)
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    want, got = (ort.InferenceSession(m.SerializeToString()).run(None, {"input": x})[0]
                 for m in (onnx.load(str(lenet_onnx)), half))
    assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-2 * max(1.0, np.abs(want).max())
    assert onnx_utils.is_fp16(half) and half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT and a GPU are present")
def test_build_and_verify_say_what_is_missing(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "jetson", out=tmp_path / "b")
    for args in (("build", build), ("verify", build, "--data", "random", "--limit", "4")):
        r = run_cli(*args)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "pip install 'edgecnn[tensorrt]'" in r.stderr
    host = compiler.compile_model(lenet_onnx, "onnxruntime-cpu", out=tmp_path / "h")
    r = run_cli("build", host)
    assert r.returncode == 1 and "is a onnxruntime build: only TensorRT builds" in r.stderr


# ---- the C++ app ----

def tensorrt_headers() -> Path | None:
    roots = [os.environ.get("TENSORRT_ROOT", ""), "/usr", "/usr/local/tensorrt", "/opt/tensorrt"]
    for root in filter(None, roots):
        for sub in ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu"):
            if (Path(root) / sub / "NvInferVersion.h").is_file():
                return Path(root) / sub
    return None


@pytest.mark.tensorrt
@pytest.mark.skipif(tensorrt_headers() is None or shutil.which("cmake") is None,
                    reason="TensorRT headers (NvInferVersion.h) not found: examples/cpp/tensorrt is built where "
                           "TensorRT is installed (set TENSORRT_ROOT)")
def test_cpp_app_builds(tmp_path):
    r = subprocess.run(["cmake", "-S", ROOT / "examples/cpp/tensorrt", "-B", tmp_path], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", tmp_path, "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "edgecnn-trt-run").is_file()


# ---- on a GPU with TensorRT ----

@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_build_and_verify(lenet_onnx, lenet_qdq, tmp_path, precision):
    from edgecnn import verify

    src = lenet_qdq if precision == "int8" else lenet_onnx
    build = compiler.compile_model(src, "nvidia-gpu", precision, tmp_path / "b", batch=None)
    man = manifest.read(build)
    record = man["artifact"]["engine"]
    assert record["tensorrt"] and record["sm"] and (build / "model.engine").is_file() and "model.engine" in man["files"]
    report = verify.verify(build, against="onnxruntime", data="test")
    assert report["passed"] and report["outputs"]["logits"]["samples"] == 200


@needs_trt
def test_gpu_edgecnn_build_records_and_reuses(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "nvidia-gpu", "fp16", tmp_path / "b", batch=None)
    art = manifest.read(build)["artifact"]
    (build / "model.engine").unlink()
    manifest.update(build, artifact={**art, "engine": None})
    env = {"EDGECNN_CACHE": str(tmp_path / "cache")}
    r = run_cli("build", build, env=env)
    assert r.returncode == 0 and "trtexec --onnx=model.onnx" in r.stdout, r.stderr
    assert list((tmp_path / "cache" / "tensorrt").glob("*.timing"))
    assert run_cli("build", build, env=env).stdout.count("is up to date") == 1
    r = run_cli("build", build, "--force", env=env)
    assert r.returncode == 0 and manifest.read(build)["artifact"]["engine"]["tensorrt"]


@needs_trt
def test_gpu_foreign_engine_never_reaches_the_deserializer(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "nvidia-gpu", "fp32", tmp_path / "b")
    art = manifest.read(build)["artifact"]
    (build / "model.engine").write_bytes(b"not an engine")  # the deserializer would fail differently
    manifest.update(build, artifact={**art, "engine": {**art["engine"], "tensorrt": "8.2.1.8"}})
    with pytest.raises(EdgecnnError, match="TensorRT engines are not portable"):
        tensorrt.backend.load(build, manifest.read(build))


@needs_trt
def test_gpu_dynamic_batch_runner_matches_onnxruntime(lenet_onnx, tmp_path):
    from edgecnn.backends.onnxruntime import OrtRunner

    build = compiler.compile_model(lenet_onnx, "nvidia-gpu", "fp32", tmp_path / "b", batch=None)
    x = np.random.default_rng(0).standard_normal((300, 1, 28, 28)).astype(np.float32)  # > profile max 256
    with tensorrt.backend.load(build, manifest.read(build)) as runner:
        got = runner.run(x)["logits"]
    assert np.abs(got - OrtRunner(lenet_onnx).run(x)["logits"]).max() < 1e-3


@needs_trt
def test_gpu_operator_matrix():
    from edgecnn.verify import opcheck

    matrix = opcheck.run_matrix(backend_names=["tensorrt"])
    assert set(matrix) == {*opcheck.OPS, *opcheck.NATIVE}
    for op, row in matrix.items():  # every op matches PyTorch, or says why TensorRT does not take it
        result = row["tensorrt"]
        assert result["status"] == "pass" or (result["status"] in ("unsupported", "refused") and result["detail"]), \
            (op, result)
    for op in ("conv", "conv_stride2_pad1", "depthwise_conv", "pointwise_conv", "max_pool", "avg_pool",
               "global_avg_pool"):  # what every CNN edgecnn ships is made of
        assert matrix[op]["tensorrt"]["status"] == "pass", (op, matrix[op])
