import json
import shutil

import numpy as np
import onnx
import pytest
import torch
import yaml
from conftest import run_cli
from onnx import TensorProto, numpy_helper

from edgecnn.models import checkpoint
from edgecnn import compiler, models, verify
from edgecnn.core import onnx_utils
from edgecnn.core.errors import EdgecnnError
from edgecnn.quantize import quantize
from edgecnn.qdq.ptq import mse_threshold

FAST = {"calib": 32, "sensitivity": 0}


def consts(model) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def weight_dqs(model):
    """(weighted node, DQ node of its weight) pairs."""
    prod = producers(model)
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and n.input[1] in prod and prod[n.input[1]].op_type == "DequantizeLinear":
            yield n, prod[n.input[1]]


def axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def copy_run(run, tmp_path, **data):
    """A copy of a RUN_DIR whose recipe.yaml data section is updated with `data`."""
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    rec = yaml.safe_load((dst / "recipe.yaml").read_text())
    rec["data"].update(data)
    (dst / "recipe.yaml").write_text(yaml.safe_dump(rec))
    return dst


@pytest.fixture(scope="module")
def mnv2_run(mobilenet_run, tiny_idx, tmp_path_factory):
    """The random MobileNet v2 fixture with a recipe on the tiny data (residual Adds, folded BatchNorm)."""
    dst = tmp_path_factory.mktemp("mnv2q") / "run"
    shutil.copytree(mobilenet_run, dst)
    (dst / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "mnv2", "model": {"name": "mobilenet_v2", "alpha": 0.35},
        "data": {"dataset": "idx", "root": str(tiny_idx), "val_size": 100, "mean": [0.2], "std": [0.3]},
        "schedule": {"epochs": 1, "batch_size": 32}}))
    return dst


def test_per_channel_qdq_follows_tensorrt_rules(lenet_int8):
    rep, out = lenet_int8
    model = onnx.load(str(out / "model.int8.onnx"))
    c, prod = consts(model), producers(model)
    pairs = list(weight_dqs(model))
    assert len(pairs) == 5  # 2 Conv + 3 Gemm, all quantized
    for node, dq in pairs:
        w, scale, zp = (c[i] for i in dq.input)
        out_channels = w.shape[0]
        assert w.dtype == np.int8 and w.min() >= -127 and w.max() <= 127
        assert scale.shape == (out_channels,) and axis(dq) == 0
        assert zp.dtype == np.int8 and not zp.any()
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):
        assert c[q.input[1]].size == 1 and c[q.input[2]] == 0  # activations: per tensor, symmetric
    for relu in (n for n in model.graph.node if n.op_type == "Relu"):
        assert prod[relu.input[0]].op_type in ("Conv", "Gemm")  # no Q/DQ between a layer and its ReLU
    assert model.opset_import[0].version == 17
    meta = onnx_utils.read_meta(model)
    assert meta["precision"] == "int8" and meta["quantization"]["per_channel"] and meta["checkpoint"]
    saved = json.loads((out / "quant.json").read_text())
    assert saved["accuracy"]["int8"] == rep["accuracy"]["int8"] > 60
    assert abs(saved["accuracy"]["drop"]) <= 5 and not saved["tensorrt_lint"]
    assert [r["layer"] for r in saved["sensitivity"]["layers"]] == \
        ["features.0.0", "features.1.0", "features.3.0", "features.4.0", "head"]
    assert (out / "quant-sensitivity.png").stat().st_size > 1000


def test_per_tensor_weights(lenet_run, tmp_path):
    quantize(lenet_run, tmp_path, per_channel=False, **FAST)
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    c = consts(model)
    assert all(c[dq.input[1]].size == 1 and not c[dq.input[2]].any() for _, dq in weight_dqs(model))


def test_onnxruntime_form_is_ort_cpu_recipe(lenet_run, tmp_path):
    rep = quantize(lenet_run, tmp_path, form="onnxruntime", reduce_range=False, **FAST)  # the same on every CPU
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    c = consts(model)
    zero_points = [c[q.input[2]] for q in model.graph.node if q.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)
    assert not any(n.op_type == "Relu" for n in model.graph.node)  # folded into the uint8 ranges
    assert any("symmetric" in v for v in rep["tensorrt_lint"]) and rep["accuracy"]["agreement"] > 95
    with pytest.raises(EdgecnnError, match="tensorrt form only"):
        quantize(lenet_run, tmp_path, method="qat", form="onnxruntime")


def test_reduce_range_keeps_weights_in_7_bits_and_is_recorded(lenet_run, tmp_path):
    rep = quantize(lenet_run, tmp_path, form="onnxruntime", reduce_range=True, **FAST)
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    weights = [consts(model)[dq.input[0]] for _, dq in weight_dqs(model)]
    assert weights and all(np.abs(w.astype(int)).max() <= 64 for w in weights)
    assert rep["config"]["reduce_range"] and onnx_utils.read_meta(model)["quantization"]["reduce_range"]


def test_mobilenet_residual_adds_and_depthwise_scales(mnv2_run, tmp_path):
    quantize(mnv2_run, tmp_path, **FAST)
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    c, prod = consts(model), producers(model)
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert adds and all(prod[i].op_type == "DequantizeLinear" for a in adds for i in a.input)
    for clip in (n for n in model.graph.node if n.op_type == "Clip"):
        assert prod[clip.input[0]].op_type == "Conv"
    depthwise = [(n, dq) for n, dq in weight_dqs(model) if next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
    assert depthwise
    for node, dq in depthwise:
        assert c[dq.input[1]].shape == (c[dq.input[0]].shape[0],) and axis(dq) == 0


@pytest.mark.parametrize("target", ["host", "onnxruntime-cpu"])
def test_int8_build_verifies_against_fakequant_and_fp32(lenet_int8, tmp_path, target):
    _, out = lenet_int8
    build = compiler.compile_model(out / "model.int8.onnx", target, "int8", tmp_path / "b")
    report = verify.verify(build)
    m = report["outputs"]["logits"]
    assert report["passed"] and report["against"] == "fakequant" and m["decisive_agreement"] == 100.0
    assert report["fp32"]["against"] == "torch (fp32)" and "top1_drop" in report["fp32"]
    assert "drop" in verify.fp32_line(report)
    assert json.loads((build / "manifest.json").read_text())["verify"]["fp32"]["top1_agreement"] > 90


def test_fp16_keeps_float32_io_or_not(lenet_run, tmp_path):
    rep = quantize(lenet_run, tmp_path / "a", method="fp16")
    model = onnx.load(str(tmp_path / "a" / "model.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert abs(rep["accuracy"]["drop"]) < 1 and rep["accuracy"]["agreement"] >= 99
    build = compiler.compile_model(tmp_path / "a" / "model.fp16.onnx", "onnxruntime-cpu", out=tmp_path / "b")
    assert verify.verify(build)["passed"]
    quantize(lenet_run, tmp_path / "c", method="fp16", keep_io_fp32=False)
    model = onnx.load(str(tmp_path / "c" / "model.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_qat_smoke_exports_the_model_it_trained(mnv2_run, tmp_path):
    rep = quantize(mnv2_run, tmp_path, method="qat", epochs=1, limit=64, skip=["features.2.conv.2"], **FAST)
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 10
    assert rep["qat"]["history"][0]["epoch"] == 1 and "ptq_int8" in rep["accuracy"]
    assert rep["config"]["fp32_layers"] == ["features.2.conv.2.0"]
    assert rep["qat"]["fakequant_vs_qdq_agreement"] >= 99  # the fx fake-quant model is the Q/DQ model
    tuned, _ = checkpoint.load(tmp_path / "model.qat.pt")
    original, _ = checkpoint.load(mnv2_run)
    assert not torch.equal(tuned.features[0][0].weight, original.features[0][0].weight)


def test_auto_keeps_the_sensitive_layer_in_fp32(lenet_run, tmp_path):
    model, spec = checkpoint.load(lenet_run)
    conv = model.features[0][0]
    with torch.no_grad():  # a dead channel with a huge weight: per-tensor scales then crush the others
        conv.weight[0] = 1000.0
        conv.bias[0] = -1e9
    run = copy_run(lenet_run, tmp_path)
    checkpoint.save(run / "model.pt", model, spec)
    rep = quantize(run, tmp_path / "q", per_channel=False, calib=48, sensitivity=50, auto=True, max_drop=1.0)
    assert rep["sensitivity"]["layers"][0]["drop"] > 10
    assert rep["config"]["fp32_layers"] == ["features.0.0"] and rep["auto"][-1]["drop"] <= 1.0
    assert rep["accuracy"]["drop"] < 5 and len(rep["auto"]) == 2


def test_calibration_set_empty_or_too_small(lenet_run, tmp_path):
    with pytest.raises(EdgecnnError, match="is empty"):
        quantize(copy_run(lenet_run, tmp_path / "a", val_size=0), tmp_path / "a", **FAST)
    with pytest.raises(EdgecnnError, match="fewer than 16"):
        quantize(copy_run(lenet_run, tmp_path / "b", val_size=5), tmp_path / "b", **FAST)
    with pytest.raises(EdgecnnError, match="at least 16"):
        quantize(lenet_run, tmp_path / "c", calib=4)
    assert not list(tmp_path.glob("*/model.int8.onnx"))


def test_nan_in_calibration_data(lenet_run, tmp_path):
    x = np.zeros((32, 1, 28, 28), np.float32)
    x[3, 0, 5, 5] = np.nan
    with pytest.raises(EdgecnnError, match="NaN or inf in 1 images"):
        quantize(lenet_run, tmp_path, calib_data=x, **FAST)
    model, spec = checkpoint.load(lenet_run)
    with torch.no_grad():
        model.features[1][0].weight[0, 0, 0, 0] = float("nan")
    run = copy_run(lenet_run, tmp_path)
    checkpoint.save(run / "model.pt", model, spec)
    with pytest.raises(EdgecnnError, match="NaN or inf in tensor"):
        quantize(run, tmp_path / "q", **FAST)


class PoolOnly(torch.nn.Module):
    """A 'model' with nothing to quantize: average pooling to 2 x 2, four outputs."""

    def __init__(self, num_classes=4, in_channels=1, **_):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        self.head = torch.nn.Identity()

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def no_weights_model():
    def test_pool_only(**cfg):
        return PoolOnly(**cfg)

    models.register(test_pool_only)
    yield "test_pool_only"
    models.registry._REGISTRY.pop("test_pool_only")


def test_model_without_quantizable_layer(lenet_run, tmp_path, no_weights_model):
    run = copy_run(lenet_run, tmp_path)
    _, spec = checkpoint.load(lenet_run)
    spec["model"] = {"name": no_weights_model, "num_classes": 4, "in_channels": 1}
    checkpoint.save(run / "model.pt", models.create(no_weights_model), spec)
    with pytest.raises(EdgecnnError, match="no quantizable layer"):
        quantize(run, tmp_path / "q", **FAST)


def test_skip_names_layers(lenet_run, tmp_path):
    with pytest.raises(EdgecnnError, match="did you mean 'features.1.0'"):
        quantize(lenet_run, tmp_path, skip=["features.1.1"], **FAST)
    with pytest.raises(EdgecnnError, match="nothing left"):
        quantize(lenet_run, tmp_path, skip=["features", "head"], **FAST)
    rep = quantize(lenet_run, tmp_path, skip=["features.0"], **FAST)
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    assert rep["config"]["fp32_layers"] == ["features.0.0"] and len(list(weight_dqs(model))) == 4


def test_mse_threshold_clips_outliers():
    edges = np.linspace(0, 10, 2049, dtype=np.float32)
    hist = np.zeros(2048, np.int64)
    hist[:40] = 10_000  # 400k values below 0.2 and one at 10: by hand, the squared error
    hist[-1] = 1  # 400k * (t/127)^2 / 12 + (10 - t)^2 is smallest near t = 3.3
    assert 2.5 < mse_threshold(hist, edges) < 4.5
    assert mse_threshold(np.full(2048, 100, np.int64), edges) > 9  # no outliers: keep the range


def test_cli_errors_are_one_line_and_leave_nothing(lenet_run, tmp_path):
    r = run_cli("quantize", lenet_run, "--calib", "3", "--out", tmp_path)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: --calib 3")
    r = run_cli("quantize", lenet_run, "--skip", "nope", "--sensitivity", "0", "--out", tmp_path)
    assert r.returncode == 1 and "no such layer" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("quantize", lenet_run, "--algo", "kl", "--out", tmp_path)
    assert r.returncode == 2 and "kl" in r.stderr
    assert not list(tmp_path.iterdir())


def test_cli_quantize_prints_the_table(lenet_run, tmp_path):
    r = run_cli("quantize", lenet_run, "--calib", "32", "--sensitivity", "40", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "int8 PTQ" in r.stdout and "most sensitive layers" in r.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"model.int8.onnx", "quant.json", "quant-sensitivity.png"}


def test_run_builds_int8_beside_the_targets_precision():
    from edgecnn.pipeline import precision_list

    assert precision_list(None, "host") == ["fp32", "int8"]
    assert precision_list("int8", "host") == ["int8"] and precision_list("fp32, int8,fp32", "host") == ["fp32", "int8"]
    with pytest.raises(EdgecnnError, match="--precision int4"):
        precision_list("int4", "host")


def fakequant_logits(path, x):
    """The op-by-op fake-quant reference's logits (what verify holds int8 builds to)."""
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.backends.reference import FAKEQUANT_LEVEL

    runner = OrtRunner(path, level=FAKEQUANT_LEVEL)
    return next(iter(runner.run(x).values()))


def test_evaluation_graph_folds_weights_bit_for_bit_and_predicts_as_fakequant(lenet_int8, lenet_run):
    import onnxruntime as ort
    from onnx import helper

    from edgecnn.quantize import data
    from edgecnn.qdq import forms

    rep, out = lenet_int8
    model = onnx.load(str(out / "model.int8.onnx"))
    folded = consts(forms.evaluation_graph(model))
    inits = {i.name: i for i in model.graph.initializer}
    for dq in forms._constant_dqs(model):  # ONNX Runtime's own DequantizeLinear on the same initializers
        g = helper.make_graph([dq], "dq", [], [helper.make_tensor_value_info(dq.output[0], TensorProto.FLOAT, None)],
                              [inits[i] for i in dq.input if i])
        one = helper.make_model(g, opset_imports=model.opset_import)
        one.ir_version = model.ir_version
        assert np.array_equal(ort.InferenceSession(one.SerializeToString()).run(None, {})[0], folded[dq.output[0]])
    test = data.load(data.recipe(lenet_run).data, checkpoint.load(lenet_run)[1], "test")
    fast, ref = data.predict(out / "model.int8.onnx", test.x), fakequant_logits(out / "model.int8.onnx", test.x)
    assert np.array_equal(fast.argmax(1), ref.argmax(1))
    assert rep["accuracy"]["int8"] == pytest.approx(100.0 * float((ref.argmax(1) == test.labels).mean()))


def test_mobilenet_fast_evaluation_predicts_as_fakequant(mnv2_run, tmp_path):
    from edgecnn.quantize import data

    rep = quantize(mnv2_run, tmp_path, **FAST)
    x = data.load(data.recipe(mnv2_run).data, checkpoint.load(mnv2_run)[1], "test").x
    fast, ref = data.predict(tmp_path / "model.int8.onnx", x), fakequant_logits(tmp_path / "model.int8.onnx", x)
    assert np.array_equal(fast.argmax(1), ref.argmax(1)) and rep["accuracy"]["agreement"] > 0
    assert np.abs(fast - ref).max() < 0.1 * np.abs(ref).max()


def qdq_activation_types(model) -> set:
    """The integer types activations are quantized to (the QuantizeLinear zero points' types)."""
    c = consts(model)
    return {c[n.input[2]].dtype.name for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}


def test_compile_converts_to_the_targets_form_and_verifies(lenet_int8, tmp_path):
    from edgecnn.core import manifest

    _, out = lenet_int8
    build = tmp_path / "b"
    r = run_cli("compile", out / "model.int8.onnx", "--target", "onnxruntime-cpu", "--out", build)
    assert r.returncode == 0, r.stderr
    assert "model.int8.onnx: tensorrt Q/DQ form -> onnxruntime" in r.stdout  # said in one line
    man = manifest.read(build)
    assert man["source"]["converted"]["from"] == "tensorrt" and man["source"]["converted"]["to"] == "onnxruntime"
    assert man["source"]["converted"]["onnx"] == str((out / "model.int8.onnx").resolve())
    assert man["quantization"]["form"] == "onnxruntime"
    assert qdq_activation_types(onnx.load(str(build / "model.onnx"))) == {"uint8"}  # ONNX Runtime's own form
    assert qdq_activation_types(onnx.load(str(out / "model.int8.onnx"))) == {"int8"}  # the user's file unchanged
    report = verify.verify(build)
    assert report["passed"] and report["outputs"]["logits"]["decisive_agreement"] == 100.0
    assert report["fp32"]["top1_agreement"] > 90


def test_convert_back_to_the_symmetric_form_keeps_the_fp32_layers(lenet_run, tmp_path):
    from edgecnn.qdq import forms

    quantize(lenet_run, tmp_path, form="onnxruntime", skip=["head"], **FAST)
    src = onnx.load(str(tmp_path / "model.int8.onnx"))
    forms.convert(tmp_path / "model.int8.onnx", tmp_path / "sym.onnx", "tensorrt")
    sym = onnx.load(str(tmp_path / "sym.onnx"))
    assert qdq_activation_types(src) == {"uint8"} and qdq_activation_types(sym) == {"int8"}
    assert forms.fp32_nodes(sym) == forms.fp32_nodes(src) != []
    assert onnx_utils.read_meta(sym)["quantization"]["converted"]["from"] == "onnxruntime"
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    a, b = fakequant_logits(tmp_path / "model.int8.onnx", x), fakequant_logits(tmp_path / "sym.onnx", x)
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.9  # two quantizations of one model


def test_compile_refuses_a_slow_form_it_cannot_convert(lenet_int8, tmp_path):
    from edgecnn.qdq.forms import CALIBRATION_KEY

    _, out = lenet_int8
    model = onnx.load(str(out / "model.int8.onnx"))
    kept = [p for p in model.metadata_props if not p.key.endswith(CALIBRATION_KEY)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "model.int8.onnx"))
    with pytest.raises(EdgecnnError, match="quantize it again with --form onnxruntime"):
        compiler.compile_model(tmp_path / "model.int8.onnx", "onnxruntime-cpu", "int8", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_algo_auto_keeps_the_most_accurate_within_the_budget(lenet_run, tmp_path):
    from edgecnn.quantize import report

    rep = quantize(lenet_run, tmp_path, algo="auto", calib=32, sensitivity=0, max_drop=100)
    choice = rep["algo_auto"]
    assert [r["algo"] for r in choice["rows"]] == ["minmax", "percentile", "entropy", "mse"]
    best = max(choice["rows"], key=lambda r: (r["top1"], r["agreement"]))
    assert choice["chosen"] == best["algo"] == rep["config"]["algo"] and choice["within_budget"]
    assert onnx_utils.read_meta(onnx.load(str(tmp_path / "model.int8.onnx")))["quantization"]["algo"] == best["algo"]
    assert "sensitivity" not in rep
    assert report.algo_table(rep).row_count == 4


@pytest.mark.parametrize("model", ["lenet", "mobilenet"])
def test_sensitivity_merged_variants_give_each_variant_s_own_logits(model, lenet_onnx, mobilenet_run, tmp_path):
    """Sensitivity runs the one-layer models as one graph (the fp32 prefix once): bit for bit the logits of
    each model run alone, residual Adds included."""
    from edgecnn import export
    from edgecnn.qdq import ptq
    from edgecnn.quantize.data import predict, predict_variants
    from edgecnn.quantize.sensitivity import one_layer_models

    fp32 = lenet_onnx if model == "lenet" else export.export(mobilenet_run, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((70, 1, 28, 28)).astype(np.float32)  # 64 + a partial batch
    scheme = ptq.Scheme(per_channel=True)
    ranges = ptq.calibrate(fp32, x[:32], algo="minmax", work=tmp_path, form=scheme.placement)
    layers = ptq.layers(onnx.load(str(fp32)))
    layers = [lay for i, lay in enumerate(layers) if i % 6 == 0 or lay.op != "Conv"]  # every kind, quickly
    assert model == "lenet" or {"Conv", "Add", "Gemm"} <= {lay.op for lay in layers}
    paths = one_layer_models(fp32, ranges, layers, scheme=scheme, work=tmp_path)
    for path, merged in zip(paths, predict_variants(fp32, paths, x), strict=True):
        assert np.array_equal(merged, predict(path, x)), path.name
