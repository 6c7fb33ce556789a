import json

import numpy as np
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from edgecnn.models import checkpoint
from edgecnn.train import recipe
from edgecnn import export
from edgecnn.export import macs
from edgecnn.core.errors import EdgecnnError

# LeNet-5 on 28x28 with 4 classes: conv 6@5x5 (padded to 28x28), conv 16@5x5 (10x10), fc 400-120-84-4
LENET_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 4


def test_mobilenet_v2_224_matches_the_published_300M(tmp_path):
    """The paper and torchvision (0.30 GFLOPS, which are multiply-adds) give ~300 M for 1.0-224."""
    rec = recipe.parse({"name": "mnv2", "model": {"name": "mobilenet_v2"},
                        "data": {"input_size": 224, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}})
    spec = checkpoint.model_spec(rec, 1000, [str(i) for i in range(1000)])
    (tmp_path / "run").mkdir()
    checkpoint.save(tmp_path / "run" / "model.pt", checkpoint.build_model(spec), spec)
    counted = macs.count(export.export(tmp_path / "run"))
    assert abs(counted.macs / 300e6 - 1) < 0.01
    assert counted.macs == 300_774_272 and counted.by_op["Gemm"] == 1280 * 1000
    assert counted.input_shape == [1, 3, 224, 224]


def test_lenet5_export(lenet_onnx):
    counted = macs.count(lenet_onnx)
    assert counted.macs == LENET_MACS
    assert counted.pool_ops == 6 * 14 * 14 * 4 + 16 * 5 * 5 * 4  # two 2x2 max pools
    assert counted.elementwise_ops == 6 * 28 * 28 + 16 * 10 * 10 + 120 + 84  # the ReLUs


def const(name, shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def test_counting_rules_on_a_hand_built_graph():
    """Grouped conv, strided conv, ConvTranspose, Gemm (transB), batched MatMul; bias adds not counted."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], group=4, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], strides=[2, 2]),
             helper.make_node("ConvTranspose", ["c2", "w3"], ["c3"], strides=[2, 2]),
             helper.make_node("Relu", ["c3"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w4"], ["g"], transB=1),
             helper.make_node("Reshape", ["g", "shape"], ["g3"]),
             helper.make_node("MatMul", ["g3", "w5"], ["y"])]
    inits = [const("w1", [8, 1, 3, 3]), const("b1", [8]), const("w2", [16, 8, 1, 1]),
             const("w3", [16, 4, 2, 2]), const("w4", [10, 4 * 16 * 16]), const("w5", [2, 3]),
             numpy_helper.from_array(np.array([1, 5, 2], np.int64), "shape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    counted = macs.count(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    want = {"Conv": 8 * 32 * 32 * 9 + 16 * 16 * 16 * 8, "ConvTranspose": 16 * 16 * 16 * 4 * 2 * 2,
            "Gemm": 10 * 1024, "MatMul": 5 * 3 * 2}
    assert counted.by_op == want and counted.macs == sum(want.values())
    assert counted.pool_ops == 4 * 16 * 16 * 4 and counted.elementwise_ops == 4 * 32 * 32
    assert counted.weights == 72 + 8 + 128 + 256 + 10240 + 6 and counted.input_shape == [1, 4, 32, 32]


def test_missing_shape_is_a_clear_error():
    nodes = [helper.make_node("Mystery", ["x"], ["m"], domain="vendor"),
             helper.make_node("Conv", ["m", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [const("w", [2, 1, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vendor", 1)])
    with pytest.raises(EdgecnnError, match=r"no inferred shape for 'y' \(Conv\)"):
        macs.count(model)


def test_cli_info(lenet_onnx):
    r = run_cli("info", lenet_onnx)
    assert r.returncode == 0 and f"{LENET_MACS:,}" in r.stdout and "lenet5" in r.stdout
    facts = json.loads(run_cli("info", lenet_onnx.parent, "--json").stdout)  # a directory: DIR/model.onnx
    assert facts["macs"] == LENET_MACS and facts["operators"]["Conv"] == 2 and facts["input"] == [1, 1, 28, 28]


def test_cli_info_bad_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    for path in (tmp_path / "bad.onnx", tmp_path / "none.onnx"):
        r = run_cli("info", path)
        assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_human():
    assert macs.human(300_774_272) == "300.77 M" and macs.human(1.81e9) == "1.81 G" and macs.human(12) == "12"
