import numpy as np
import onnx
import pytest
import torch

from edgecnn.models import checkpoint
from edgecnn import export
from edgecnn.core import onnx_utils
from edgecnn.backends.onnxruntime import OrtRunner
from edgecnn.core.errors import EdgecnnError


def test_lenet_export_metadata_and_dynamic_batch(lenet_run, lenet_onnx):
    model = onnx.load(str(lenet_onnx))
    onnx.checker.check_model(model, full_check=True)
    meta = onnx_utils.read_meta(model)
    assert meta["model"]["name"] == "lenet5" and meta["input"]["shape"] == [1, 28, 28]
    assert meta["input"]["mean"] == [0.2] and meta["classes"] == ["0", "1", "2", "3"]
    assert meta["checkpoint"] == str((lenet_run / "model.pt").resolve())
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    torch_model, _ = checkpoint.load(lenet_run)
    x = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    got = OrtRunner(lenet_onnx).run(x)["logits"]
    assert np.abs(got - torch_model(torch.from_numpy(x)).detach().numpy()).max() < 1e-4


def test_mobilenet_export_folds_batchnorm(mobilenet_run, tmp_path):
    path = export.export(mobilenet_run, tmp_path / "m.onnx", batch=2)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 52 and "Clip" in ops
    runner = OrtRunner(path)
    assert runner.batch == 2 and runner.input_shape == [1, 28, 28]


def test_export_refuses_unloadable_checkpoint(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(EdgecnnError, match="not a loadable checkpoint"):
        export.export(tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_export_check_catches_a_mismatch(lenet_run, lenet_onnx):
    model, spec = checkpoint.load(lenet_run)
    with torch.no_grad():
        model.head.bias += 1.0
    with pytest.raises(EdgecnnError, match="differs from PyTorch"):
        export.check_against_torch(model, lenet_onnx, spec)


def test_lower_opset_is_really_written(mobilenet_run, tmp_path):
    """Below 18 the dynamo exporter may keep opset 18; export falls back so the file has what was asked."""
    path = export.export(mobilenet_run, tmp_path / "m13.onnx", opset=13)
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}


def test_an_export_is_reproducible_and_found_again(lenet_run, tmp_path):
    """export.exported: RUN_DIR/model.onnx is reused (by quantize) only when a new export would write the same
    bytes: the same checkpoint and export's defaults."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.pt", "recipe.yaml"):
        shutil.copyfile(lenet_run / name, run / name)
    assert export.exported(run) is None  # nothing exported yet
    first = export.export(run)
    assert export.exported(run) == first
    assert export.export(run, tmp_path / "again.onnx").read_bytes() == first.read_bytes()
    export.export(run, batch=1)  # not the default batch: a new export would differ
    assert export.exported(run) is None
    export.export(run)
    torch.save({**torch.load(run / "model.pt", weights_only=True), "extra": 1}, run / "model.pt")
    assert export.exported(run) is None  # another checkpoint
