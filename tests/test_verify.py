import json

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from edgecnn import compiler, verify
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
    from edgecnn.compiler import manifest

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
