from conftest import run_cli

from edgecnn.verify import opcheck


def test_operator_matrix_api():
    matrix = opcheck.run_matrix(["relu6", "lp_pool_onnx", "depthwise_conv"], ["onnxruntime", "tvm", "tensorrt"])
    for op, row in matrix.items():
        for backend in ("onnxruntime", "tvm"):
            assert row[backend]["status"] == "pass" and row[backend]["max_abs"] < 1e-4, (op, backend, row)
        if row["tensorrt"]["status"] == "unavailable":
            assert "tensorrt" in row["tensorrt"]["detail"]
    assert matrix["lp_pool_onnx"]["onnx"] == ["LpPool"] and matrix["relu6"]["onnx"] == ["Clip"]


def test_unsupported_op_is_reported_not_hidden(tmp_path):
    """A backend that cannot take an op gets 'unsupported' with the backend's reason."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ConvInteger", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.UINT8, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.INT32, [1, 1, 2, 2])],
                              [onnx.numpy_helper.from_array(np.ones((1, 1, 3, 3), np.uint8), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "op.onnx"))
    (tmp_path / "tvm").mkdir()
    x = np.ones((1, 1, 4, 4), np.uint8)
    result = opcheck.check("tvm", tmp_path / "op.onnx", x, np.full((1, 1, 2, 2), 9, np.int32), work=tmp_path / "tvm")
    assert result["status"] == "unsupported" and "ConvInteger" in result["detail"]


def test_cli_ops_matrix_passes_on_onnxruntime_and_tvm():
    """The whole matrix, through the CLI: every operator passes on ONNX Runtime and TVM host."""
    r = run_cli("verify", "--ops")
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == set(opcheck.OPS) | set(opcheck.NATIVE)
    for op, line in rows.items():
        cells = [c.strip() for c in line.split("│")[3:5]]  # onnxruntime, tvm
        assert all(c.startswith("pass") for c in cells), (op, cells)
