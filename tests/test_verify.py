import json

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from edgecnn import compiler, verify
from edgecnn.core import manifest
from edgecnn.core.errors import EdgecnnError


@pytest.mark.parametrize("target", ["host", "onnxruntime-cpu"])
def test_parity_passes_and_is_recorded(lenet_onnx, tmp_path, target):
    build = compiler.compile_model(lenet_onnx, target, out=tmp_path / "b")
    report = verify.verify(build, "torch", data="test")
    out = report["outputs"]["logits"]
    assert report["passed"] and out["samples"] == 200
    assert out["max_abs"] <= 1e-4 and out["top1_agreement"] == 100.0
    assert out["top1_candidate"] == out["top1_reference"] > 60
    assert json.loads((build / "verify.json").read_text())["passed"]
    assert json.loads((build / "manifest.json").read_text())["verify"]["top1_agreement"] == 100.0


def perturb(onnx_path, out_path, conv_index=1, delta=0.5):
    """Copy of the model with one Conv's weight shifted; returns the perturbed node's name."""
    model = onnx.load(str(onnx_path))
    node = [n for n in model.graph.node if n.op_type == "Conv"][conv_index]
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(out_path))
    return node.name


@pytest.mark.parametrize("target", ["host", "onnxruntime-cpu"])
def test_broken_artifact_fails_and_localiser_names_the_node(lenet_onnx, tmp_path, target):
    bad_node = perturb(lenet_onnx, tmp_path / "perturbed.onnx")
    build = compiler.compile_model(tmp_path / "perturbed.onnx", target, out=tmp_path / "b")
    with pytest.raises(verify.ParityError) as err:
        verify.verify(build, "torch", data="test")
    loc = err.value.report["localization"]
    assert loc["node"] == bad_node and loc["op"] == "Conv"
    assert bad_node in str(err.value) and "worst sample" in str(err.value)
    assert not json.loads((build / "verify.json").read_text())["passed"]


def test_cli_verify_failure_exits_nonzero(lenet_onnx, tmp_path):
    perturb(lenet_onnx, tmp_path / "perturbed.onnx", conv_index=0)
    build = compiler.compile_model(tmp_path / "perturbed.onnx", "onnxruntime-cpu", out=tmp_path / "b")
    r = run_cli("verify", build, "--report", tmp_path / "r.json")
    assert r.returncode == 1 and "parity failed" in r.stderr and "FAIL" in r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["localization"]["op"] == "Conv"


def test_tolerance_override(lenet_onnx, tmp_path):
    perturb(lenet_onnx, tmp_path / "p.onnx", delta=1e-3)
    build = compiler.compile_model(tmp_path / "p.onnx", "onnxruntime-cpu", out=tmp_path / "b")
    with pytest.raises(verify.ParityError):
        verify.verify(build, "torch", data="random", limit=16, localize=False)
    assert verify.verify(build, "torch", data="random", limit=16, max_abs=1.0, min_cosine=0.9)["passed"]


def test_wrong_input_shape(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "host", out=tmp_path / "b")
    from edgecnn import backends
    from edgecnn.core import manifest

    man = manifest.read(build)
    with backends.require("tvm").load(build, man) as runner, pytest.raises(EdgecnnError, match="does not fit"):
        runner.run(np.zeros((1, 3, 32, 32), np.float32))


def test_non_image_model_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "m.onnx"))
    r = run_cli("compile", tmp_path / "m.onnx", "-t", "onnxruntime-cpu", "--out", tmp_path / "b")
    assert r.returncode == 1 and "N x C x H x W" in r.stderr and not (tmp_path / "b").exists()


def test_against_onnxruntime_and_random_data(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "host", out=tmp_path / "b")
    report = verify.verify(build, "onnxruntime", data="random", limit=8)
    assert report["passed"] and report["outputs"]["logits"]["samples"] == 8
    assert "top1_candidate" not in report["outputs"]["logits"]


def test_bad_data_spec(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "onnxruntime-cpu", out=tmp_path / "b")
    with pytest.raises(EdgecnnError, match="--data"):
        verify.verify(build, data="fashion-mnist:everything")


# ---- non-finite values and missing outputs never pass ----

def edited(src, dst, edit):
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def rename_output(model, new):
    old = model.graph.output[0].name
    producer = next(n for n in model.graph.node if old in n.output)
    producer.output[list(producer.output).index(old)] = new
    model.graph.output[0].name = new


def append_sqrt(model):
    """logits -> Sqrt(logits): NaN wherever a logit is negative."""
    out = model.graph.output[0].name
    rename_output(model, "before_sqrt")
    model.graph.output[0].name = out
    model.graph.node.append(onnx.helper.make_node("Sqrt", ["before_sqrt"], [out], name="nan_maker"))


def claim_source(build, onnx_path):
    """The build now says it was compiled from `onnx_path`: a build that computes something else."""
    from edgecnn.core import manifest
    from edgecnn.core.fileio import sha256

    man = manifest.read(build)
    manifest.update(build, source={**man["source"], "onnx": str(onnx_path), "onnx_sha256": sha256(onnx_path)})


def test_nan_in_the_build_fails_naming_count_first_sample_and_node(lenet_onnx, tmp_path):
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.core import manifest

    src = edited(lenet_onnx, tmp_path / "nan.onnx", append_sqrt)
    build = compiler.compile_model(src, "onnxruntime-cpu", out=tmp_path / "b")
    with pytest.raises(verify.ParityError) as err:
        verify.verify(build, "torch")
    direct = OrtRunner(src).run(verify.load_inputs(manifest.read(build))[0])["logits"]
    bad_rows = np.flatnonzero(np.isnan(direct).any(1))
    nf = err.value.report["outputs"]["logits"]["nonfinite_candidate"]
    assert nf["count"] == np.isnan(direct).sum() > 0 and nf["first_sample"] == bad_rows[0]
    assert f"holds {nf['count']} non-finite value(s)" in str(err.value) and f"first in sample {bad_rows[0]}" in str(err.value)
    loc = err.value.report["localization"]
    assert (loc["node"], loc["op"], loc["nonfinite"]) == ("nan_maker", "Sqrt", "candidate")


def test_nan_in_the_reference_is_a_reference_problem(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "onnxruntime-cpu", out=tmp_path / "b")
    claim_source(build, edited(lenet_onnx, tmp_path / "nan.onnx", append_sqrt))
    with pytest.raises(verify.ParityError, match="the reference output holds .* a reference problem") as err:
        verify.verify(build, "onnxruntime", localize=False)
    m = err.value.report["outputs"]["logits"]
    assert "nonfinite_reference" in m and "nonfinite_candidate" not in m


def test_missing_output_is_an_error_not_filled_in(lenet_onnx, tmp_path):
    src = edited(lenet_onnx, tmp_path / "scores.onnx", lambda m: rename_output(m, "scores"))
    build = compiler.compile_model(src, "onnxruntime-cpu", out=tmp_path / "b")
    claim_source(build, lenet_onnx)
    with pytest.raises(verify.ParityError, match="output 'scores' is missing from the reference") as err:
        verify.verify(build, "onnxruntime", localize=False)
    outputs = err.value.report["outputs"]
    assert outputs == {"scores": {"error": "output 'scores' is missing from the reference (onnxruntime gives logits)"},
                       "logits": {"error": "output 'logits' of the reference is missing from the build (it gives "
                                           "scores)"}}


# ---- localisation replays the tested build ----

def test_localisation_replays_a_target_given_as_a_yaml_path(lenet_onnx, tmp_path):
    import yaml
    from conftest import ROOT

    raw = yaml.safe_load((ROOT / "targets" / "host.yaml").read_text())
    path = tmp_path / "edge-box.yaml"
    path.write_text(yaml.safe_dump({**raw, "name": "edge-box", "description": "a YAML outside targets/"}))
    bad_node = perturb(lenet_onnx, tmp_path / "perturbed.onnx")
    build = compiler.compile_model(tmp_path / "perturbed.onnx", str(path), out=tmp_path / "b")
    path.write_text("name: edge-box\nbackend: nothere\n")  # edited since: the recorded target is the tested one
    with pytest.raises(verify.ParityError) as err:
        verify.verify(build, "torch")
    loc = err.value.report["localization"]
    assert loc["node"] == bad_node and loc["replay"]["target"] == "edge-box"


# ---- int8: decisive agreement ----

def scale_conv_weights(model, conv_index: int, factor: float = 1.5) -> str:
    """One Q/DQ conv's weights times `factor` (its weight DequantizeLinear scale); returns the conv's name."""
    conv = [n for n in model.graph.node if n.op_type == "Conv"][conv_index]
    dq = next(n for n in model.graph.node if conv.input[1] in n.output)
    scale = next(i for i in model.graph.initializer if i.name == dq.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    return conv.name


@pytest.mark.parametrize("target", ["onnxruntime-cpu", "host"])
def test_int8_decisive_agreement_passes_a_good_build_and_fails_a_scaled_conv(lenet_int8, tmp_path, target):
    from edgecnn import backends
    from edgecnn.compiler import targets
    from edgecnn.qdq import forms

    src = lenet_int8[1] / "model.int8.onnx"
    form = backends.get(targets.load(target).backend).int8_form
    if form != "tensorrt":  # in the target's own form already, so compile builds both models as they are
        forms.convert(src, tmp_path / "src.onnx", form)
        src = tmp_path / "src.onnx"
    # the test images: on random ones the small LeNet of the fixtures gives one class with a huge margin
    good_build = compiler.compile_model(src, target, "int8", tmp_path / "good")
    if target == "host":  # the int8 path (real int8 convs), not the float fake-quant one
        assert manifest.read(good_build)["artifact"]["schedules"]["rules"].get("conv2d_nhwc_dot", 0) >= 1
    good = verify.verify(good_build, data="test", limit=1000, against="fakequant")
    m = good["outputs"]["logits"]
    assert good["passed"] and m["samples"] == 200
    assert m["decisive_agreement"] == 100.0 and m["margin_bound"] > 0 and m["decisive_share"] > 90
    assert abs(m["top1_candidate"] - m["top1_reference"]) <= 0.1
    assert "decisive samples" in verify.decisive_line(good)
    names = []
    scaled = edited(src, tmp_path / "scaled.onnx", lambda model: names.append(scale_conv_weights(model, 1)))
    build = compiler.compile_model(scaled, target, "int8", tmp_path / "b")
    claim_source(build, src)  # the build computes that conv 1.5x too large: what a miscompiled conv does
    with pytest.raises(verify.ParityError, match="decisive top-1 agreement") as err:
        verify.verify(build, data="test", limit=1000)
    assert err.value.report["localization"]["node"] == names[0]


def test_a_moved_or_copied_run_verifies_against_its_own_checkpoint(lenet_run, tmp_path):
    """Paths beside the build are recorded relative to it: a moved run still finds its model.pt, a copied run
    uses its own."""
    import shutil

    from edgecnn import export
    from edgecnn.core import manifest

    run = shutil.copytree(lenet_run, tmp_path / "run")
    export.export(run, run / "model.onnx")
    compiler.compile_model(run / "model.onnx", "onnxruntime-cpu")
    assert manifest.read(run / "build-onnxruntime-cpu-fp32")["source"]["checkpoint"] == "../model.pt"
    moved = shutil.move(run, tmp_path / "moved")
    copied = shutil.copytree(moved, tmp_path / "copied")
    for folder in (moved, copied):
        report = verify.verify(folder / "build-onnxruntime-cpu-fp32", "torch", data="test", limit=20)
        assert report["passed"] and report["reference"]["checkpoint"] == str(folder / "build-onnxruntime-cpu-fp32" /
                                                                              ".." / "model.pt")


def test_only_a_full_default_run_replaces_the_recorded_summary(lenet_onnx, tmp_path):
    from edgecnn.core import manifest

    build = compiler.compile_model(lenet_onnx, "onnxruntime-cpu", out=tmp_path / "b")
    verify.verify(build, "torch", data="test", limit=20)
    first = manifest.read(build)["verify"]
    assert first["partial"] == first["data"] and "the first 20 of 200" in first["data"]
    full = verify.verify(build, "torch", data="test")
    assert full["recorded"] == "manifest.json" and "partial" not in manifest.read(build)["verify"]
    recorded = manifest.read(build)["verify"]
    assert "not in manifest.json" in verify.verify(build, "torch", data="test", limit=20)["recorded"]
    with pytest.raises(verify.ParityError):
        verify.verify(build, "torch", data="test", max_abs=1e-30, min_cosine=1.0 + 1e-9)
    verify.verify(build, "torch", data="random", report_path=tmp_path / "elsewhere.json")
    assert manifest.read(build)["verify"] == recorded
    r = run_cli("verify", build, "--limit", "10")
    assert r.returncode == 0 and "a partial run" in r.stdout


def test_no_checkpoint_names_verify_and_bench_options():
    """A model from elsewhere has no checkpoint: the message says so and names each command's own option."""
    from edgecnn.backends import pytorch, reference

    for load in (lambda: pytorch.checkpoint_runner(None), lambda: reference.load(reference.Reference("torch", None))):
        with pytest.raises(EdgecnnError) as err:
            load()
        assert "None" not in str(err.value) and "--against onnxruntime" in str(err.value)
        assert "bench it with --compare onnxruntime" in str(err.value)
