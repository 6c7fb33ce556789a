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


def test_onnxruntime_without_a_kernel_is_unsupported(tmp_path):
    """ONNX Runtime's CPU provider has no float64 Conv (valid ONNX): unsupported, in its words."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.DOUBLE, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.DOUBLE, [1, 1, 2, 2])],
                              [onnx.numpy_helper.from_array(np.ones((1, 1, 3, 3)), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "op.onnx"))
    (tmp_path / "ort").mkdir()
    result = opcheck.check("onnxruntime", tmp_path / "op.onnx", np.ones((1, 1, 4, 4)), np.full((1, 1, 2, 2), 9.0),
                           work=tmp_path / "ort")
    assert result["status"] == "unsupported" and "Could not find an implementation for Conv" in result["detail"]


def test_a_backend_refusing_the_build_is_refused_not_unsupported(tmp_path):
    """The op is fine, the backend refuses for a stated reason (an aarch64 build does not run on this host)."""
    import numpy as np

    from edgecnn.verify.opcheck import export_op

    (tmp_path / "tvm").mkdir()
    x, want = export_op("relu", tmp_path / "op.onnx")
    result = opcheck.check("tvm", tmp_path / "op.onnx", x, want, work=tmp_path / "tvm", target="aarch64")
    assert result["status"] == "refused", result
    assert "aarch64" in result["detail"] and np.isfinite(want).all()
    table = opcheck.matrix_table({"relu": {"onnx": ["Relu"], "tvm": result}})
    assert table.row_count == 1
