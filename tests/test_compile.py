import json

import pytest
from conftest import run_cli

from edgecnn import compiler
from edgecnn.core import manifest
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256


@pytest.mark.parametrize("target,artifact", [("host", "model.so"), ("onnxruntime-cpu", "model.onnx")])
def test_build_directory_and_manifest(lenet_onnx, tmp_path, target, artifact):
    build = compiler.compile_model(lenet_onnx, target, out=tmp_path / "b")
    man = json.loads((build / "manifest.json").read_text())
    assert man["format"] == "edgecnn.build" and man["precision"] == "fp32" and man["target"]["name"] == target
    assert man["artifact"]["file"] == artifact and man["input"]["shape"] == [1, 1, 28, 28]
    assert man["input"]["mean"] == [0.2] and man["labels"] == ["0", "1", "2", "3"]
    assert man["source"]["onnx_sha256"] == sha256(lenet_onnx) and "onnx" in man["tools"]
    assert set(man["files"]) == {p.name for p in build.iterdir()} - {"manifest.json"}
    assert all(sha256(build / f) == h for f, h in man["files"].items())
    if target == "host":
        assert man["artifact"]["tvm_target"]["mcpu"] not in ("auto", "")
        assert "apache-tvm" in man["tools"]


def test_tampered_build_is_refused(lenet_onnx, tmp_path):
    build = compiler.compile_model(lenet_onnx, "onnxruntime-cpu", out=tmp_path / "b")
    data = bytearray((build / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (build / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(EdgecnnError, match="sha256 mismatch"):
        manifest.read(build)


@pytest.mark.parametrize("case", ["corrupt_onnx", "missing_onnx", "unknown_target", "bad_precision"])
def test_bad_input_one_line_error_and_no_build_dir(lenet_onnx, tmp_path, case):
    onnx_path, target, extra = lenet_onnx, "host", []
    if case == "corrupt_onnx":
        onnx_path = tmp_path / "model.onnx"
        onnx_path.write_bytes(lenet_onnx.read_bytes()[:500])
    elif case == "missing_onnx":
        onnx_path = tmp_path / "nope.onnx"
    elif case == "unknown_target":
        target = "raspberry"
    else:
        extra = ["--precision", "fp16"]
    out = tmp_path / "build"
    r = run_cli("compile", onnx_path, "--target", target, "--out", out, *extra)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert not out.exists() and not list(tmp_path.glob(".build*"))


def test_unsupported_op_is_named_and_leaves_nothing(tmp_path):
    """TVM's ONNX frontend lacks Celu (ONNX Runtime has it): the error names it, no build directory remains."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Celu", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "m.onnx"))
    r = run_cli("compile", tmp_path / "m.onnx", "--target", "host", "--out", tmp_path / "b")
    assert r.returncode == 1 and "Celu" in r.stderr and r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert run_cli("compile", tmp_path / "m.onnx", "--target", "onnxruntime-cpu", "--out", tmp_path / "b").returncode == 0


def test_dynamic_batch_tvm_build_is_refused_and_fixed_batches_are_scheduled(lenet_onnx, tmp_path):
    """A dynamic-batch TVM build would run unscheduled loops: refused with the measured cost; a build per batch
    has every kernel scheduled by a rule."""
    import numpy as np

    from edgecnn import backends

    r = run_cli("compile", lenet_onnx, "--target", "host", "--batch", "dynamic", "--out", tmp_path / "dyn")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and not (tmp_path / "dyn").exists()
    assert "TVM builds need a fixed batch" in r.stderr and "--batch 8" in r.stderr
    build = compiler.compile_model(lenet_onnx, "host", out=tmp_path / "b8", batch=8)
    man = manifest.read(build)
    assert man["artifact"]["batch"] == 8 and "none" not in man["artifact"]["schedules"]["rules"]
    with backends.require("tvm").load(build, man) as runner:
        assert runner.run(np.zeros((8, 1, 28, 28), np.float32))["logits"].shape == (8, 4)
