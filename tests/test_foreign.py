"""Bring your own model: ONNX files written the way other tools write them (tests/foreign_models.py) and a
PyTorch module from the user's code go through compile, quantize, verify, bench and bundle as our recipes do."""

import json
import os
import shutil
import tarfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from conftest import ROOT, run_cli
from foreign_models import (caffe_zoo, dynamic_hw, image_folder, keras_nhwc, make_tiny_resnet, squeezenet_like,
                             uint8_nhwc, upsampling_opset9)

from edgecnn import bench, compiler, export, verify
from edgecnn.core import manifest
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256
from edgecnn.deploy import bundle, runtime

TARGETS = ("host", "onnxruntime-cpu")
CLASSES = [f"class{k}" for k in range(10)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """32x32 RGB PNGs in 10 class folders (4 each), made here."""
    return image_folder(tmp_path_factory.mktemp("images") / "val", CLASSES, n=4)


def compile_and_verify(path, tmp_path, data: str, **kw) -> dict:
    """Compile for TVM host and ONNX Runtime; verify each against ONNX Runtime on the source; the reports."""
    reports = {}
    for target in TARGETS:
        build = compiler.compile_model(path, target, out=tmp_path / target, **kw)
        reports[target] = verify.verify(build, data=data)
        assert reports[target]["against"] == "onnxruntime" and reports[target]["passed"]
        for out in reports[target]["outputs"].values():
            assert out["max_abs"] <= 1e-4, (target, out)
    return reports


def test_zoo_model_ir3_opset9_initializer_inputs(tmp_path, folder):
    path = caffe_zoo(tmp_path / "caffenet.onnx")
    reports = compile_and_verify(path, tmp_path, f"imagefolder:{folder}")
    out = reports["host"]["outputs"]["prob_1"]
    assert out["samples"] == 40 and out["top1_agreement"] == 100.0 and "top1_candidate" in out
    man = json.loads((tmp_path / "host" / "manifest.json").read_text())
    assert man["source"]["opset"] == 9 and man["source"]["ir_version"] == 3
    assert man["source"]["prepared"] == ["12 initializers listed as inputs are weights (IR 3 -> 4)"]
    assert [i.name for i in onnx.load(str(tmp_path / "host" / "model.onnx")).graph.input] == ["data_0"]


def test_external_data_is_carried_with_its_checksums(tmp_path):
    src = export.from_module(make_tiny_resnet(width=32), (3, 32, 32), tmp_path / "resnet.onnx", mean=[0.5], std=[0.25])
    onnx.save(onnx.load(str(src)), str(tmp_path / "ext.onnx"), save_as_external_data=True, location="weights.bin")
    assert os.path.getsize(tmp_path / "ext.onnx") < os.path.getsize(tmp_path / "weights.bin")
    compile_and_verify(tmp_path / "ext.onnx", tmp_path, "random")
    for target in TARGETS:
        man = json.loads((tmp_path / target / "manifest.json").read_text())
        assert man["source"]["external_data"] == {"weights.bin": sha256(tmp_path / "weights.bin")}
        assert man["files"]["model.onnx.data"] == sha256(tmp_path / target / "model.onnx.data")
    packed = bundle.pack(tmp_path / "onnxruntime-cpu", tmp_path / "ext.edgecnn.tar.gz")
    assert sorted(tarfile.open(packed).getnames()) == ["README.md", "manifest.json", "model.onnx", "model.onnx.data"]
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    with runtime.load(packed) as model, runtime.load(bundle.pack(tmp_path / "host")) as host:
        np.testing.assert_allclose(model.logits(images), host.logits(images), atol=1e-4)


def test_keras_nhwc_model_with_a_dynamic_batch(tmp_path, folder):
    path = keras_nhwc(tmp_path / "keras.onnx")
    keras = {"scale": "1/127.5", "mean": [1.0], "std": [1.0]}  # x / 127.5 - 1, Keras' MobileNet preprocessing
    compile_and_verify(path, tmp_path, f"imagefolder:{folder}", given=keras)
    dyn = compiler.compile_model(path, "onnxruntime-cpu", out=tmp_path / "dynamic", batch=None, given=keras)
    man = json.loads((dyn / "manifest.json").read_text())
    assert (man["input"]["layout"], man["input"]["shape"], man["input"]["scale"]) == ("NHWC", ["unk__n", 32, 32, 3],
                                                                                      1 / 127.5)
    assert verify.verify(dyn, data=f"imagefolder:{folder}")["outputs"]["dense_1"]["max_abs"] <= 1e-4
    timed = bench.bench(dyn, batches=[1, 4], runs=3, warmup=1, threads=1, plot=False)
    assert set(timed["results"]["onnxruntime"]["batches"]) == {"1", "4"}  # the source's dynamic batch, at 32x32x3
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)  # N x H x W x C pixels
    want = ort.InferenceSession(str(path)).run(None, {"input_1": images.astype(np.float32) / 127.5 - 1})[0]
    with runtime.load(bundle.pack(dyn)) as model:
        np.testing.assert_allclose(model.logits(images), want, atol=1e-5)  # a Softmax head: probabilities
        assert [p.indices[0] for p in model.predict(images)] == want.argmax(1).tolist()
        assert np.allclose([sum(p.scores) for p in model.predict(images, k=10)], 1.0)


def test_nk11_output_is_class_scores(tmp_path, folder):
    reports = compile_and_verify(squeezenet_like(tmp_path / "squeezenet.onnx"), tmp_path, f"imagefolder:{folder}")
    out = reports["host"]["outputs"]["pool10"]
    assert out["top1_agreement"] == 100.0 and out["top1_candidate"] == out["top1_reference"]
    with runtime.load(bundle.pack(tmp_path / "host")) as model:
        assert model.logits(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 10)


def test_uint8_and_dynamic_hw_inputs(tmp_path):
    u8 = uint8_nhwc(tmp_path / "u8.onnx")
    compile_and_verify(u8, tmp_path / "u8", "random")
    man = json.loads((tmp_path / "u8" / "host" / "manifest.json").read_text())
    assert man["input"]["dtype"] == "uint8" and "x = pixel (uint8" in bundle.readme({**man, "files": {}})
    pixels = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    want = np.concatenate([ort.InferenceSession(str(u8)).run(None, {"image": p[None]})[0] for p in pixels])
    with runtime.load(bundle.pack(tmp_path / "u8" / "host")) as model:
        np.testing.assert_allclose(model.logits(pixels), want, atol=1e-4)
    assert bench.bench(tmp_path / "u8" / "host", runs=3, warmup=1, threads=1, plot=False)["results"]["tvm"]
    fcn = dynamic_hw(tmp_path / "fcn.onnx")
    r = run_cli("compile", fcn, "--target", "host", "--out", tmp_path / "fcn")
    assert r.returncode == 1 and "--input-shape" in r.stderr and r.stderr.count("\n") == 1
    compile_and_verify(fcn, tmp_path / "fcn", "random", given={"input_shape": "x:1x3x40x40"})
    with pytest.raises(EdgecnnError, match="fixes its batch at 1 .*: compile it with --batch 1"):
        compiler.compile_model(u8, "host", out=tmp_path / "none", batch=None)


def test_opset9_model_for_tensorrt_targets(tmp_path):
    """Compile prepares the ONNX TensorRT parses (no TensorRT needed): opset 9 is kept for the Orin (9..20) and
    the Nano (7..13); opset 8 is raised to 9 for the Orin, computing the same (ONNX Runtime on both)."""
    zoo9, zoo8 = caffe_zoo(tmp_path / "zoo9.onnx"), caffe_zoo(tmp_path / "zoo8.onnx", opset=8)
    for target, src, want in (("jetson", zoo9, "unchanged"), ("jetson-nano", zoo9, "unchanged"),
                              ("jetson", zoo8, "raised by onnx.version_converter")):
        build = compiler.compile_model(src, target, precision="fp32", out=tmp_path / f"{target}-{src.stem}")
        man = json.loads((build / "manifest.json").read_text())
        prepared = onnx.load(str(build / "model.onnx"))
        assert man["artifact"]["opset"]["how"] == want and onnx_opset(prepared) == 9
        assert [i.name for i in prepared.graph.input] == ["data_0"]
        assert man["artifact"]["profile"]["min"] == [1, 3, 32, 32]
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        got, want_out = (ort.InferenceSession(str(p)).run(None, {"data_0": x})[0] for p in (build / "model.onnx", src))
        np.testing.assert_allclose(got, want_out, atol=1e-6)
    compile_and_verify(zoo9, tmp_path / "cpu", "random")


def test_old_opset_is_upgraded_where_tvm_needs_it(tmp_path):
    """TVM reads Upsample (opset <= 9) and Slice (<= 9) in their newer forms: compile upgrades the graph it
    imports (onnx's converter, Resize's coordinates kept), so the build matches ONNX Runtime on the source."""
    path = upsampling_opset9(tmp_path / "fpn.onnx")
    from edgecnn.backends.tvm import frontend as tvm_frontend

    assert tvm_frontend.needed_opset("Upsample", 9) == 10 and tvm_frontend.needed_opset("Slice", 9) == 10
    assert tvm_frontend.needed_opset("Conv", 9) == 9 and tvm_frontend.needed_opset("BatchNormalization", 9) == 9
    assert onnx_opset(tvm_frontend.for_frontend(onnx.load(str(path)))) == 11  # Upsample -> Resize 10 -> 11
    compile_and_verify(path, tmp_path, "random")


def test_tvm_converter_versions_are_read_from_tvms_private_map():
    """frontend._impl_versions reads TVM's private `_get_convert_map`: a TVM release that renames it, or drops
    the versioned converters of the ops edgecnn upgrades, fails here rather than silently importing old forms."""
    from tvm.relax.frontend.onnx import onnx_frontend

    from edgecnn.backends.tvm import frontend as tvm_frontend

    convert_map = onnx_frontend._get_convert_map()
    for op in ("Slice", "Resize", "Upsample", "BatchNormalization", "Conv", "Split", "Pad"):
        assert op in convert_map and tvm_frontend._impl_versions(op), op
    assert tvm_frontend._impl_versions("Slice")[0] >= 10  # Slice's oldest converter reads opset 10's inputs


def onnx_opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_from_module_then_quantize_with_a_folder_compile_verify(tmp_path, folder):
    """A torchvision-style ResNet from the user's code: export, int8 PTQ calibrated on a folder, both compiled."""
    labels = CLASSES[:5]
    path = export.from_module(make_tiny_resnet(), "1x3x32x32", tmp_path / "resnet.onnx", mean=[0.485, 0.456, 0.406],
                              std=[0.229, 0.224, 0.225], labels=labels)
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert meta["edgecnn.format"] == "edgecnn.onnx/1" and meta["edgecnn.classes"] == labels
    assert meta["edgecnn.model"]["name"] == "TinyResNet" and meta["edgecnn.input"]["shape"] == [3, 32, 32]
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    r = run_cli("quantize", path, "--calib", folder, "--calib-images", 32, "--sensitivity", 0)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "resnet.quant.json").read_text())
    assert report["calibration"]["images"] == 32 and report["accuracy"]["agreement"] >= 75.0
    assert report["tensorrt_lint"] == []
    compile_and_verify(path, tmp_path / "fp32", f"imagefolder:{folder}")
    for target in TARGETS:
        build = compiler.compile_model(tmp_path / "resnet.int8.onnx", target, out=tmp_path / f"int8-{target}")
        rep = verify.verify(build, data=f"imagefolder:{folder}")
        assert rep["against"] == "fakequant" and rep["passed"]
        assert rep["fp32"]["against"] == "onnxruntime (fp32 ONNX)" and rep["fp32"]["top1_agreement"] >= 75.0
        assert json.loads((build / "manifest.json").read_text())["labels"] == labels


def test_cli_exports_a_factory_from_the_users_code(tmp_path):
    (tmp_path / "mynets.py").write_text("import sys\nsys.path.insert(0, %r)\nfrom foreign_models import make_tiny_resnet\n"
                                        "def build(classes=5):\n    return make_tiny_resnet(classes)\n" % str(ROOT / "tests"))
    (tmp_path / "labels.txt").write_text("ant\nbee\ncat\n")
    trained = make_tiny_resnet(3)
    for p in trained.parameters():  # weights the factory does not make: they must come from --weights
        p.data.mul_(1.25)
    torch.save(trained.state_dict(), tmp_path / "best.pt")
    r = run_cli("export", "mynets:build", "--arg", "classes=3", "--weights", "best.pt", "--input-shape", "1x3x32x32",
                "--mean", "0.5", "--std", "0.5", "--labels", "labels.txt", "--out", "net.onnx", cwd=tmp_path,
                env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "matches PyTorch" in r.stdout
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "net.onnx")).metadata_props}
    assert meta["edgecnn.classes"] == ["ant", "bee", "cat"] and meta["edgecnn.input"]["mean"] == [0.5]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        want = trained.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort.InferenceSession(str(tmp_path / "net.onnx")).run(None, {"input": x})[0], want,
                               atol=1e-4)
    r = run_cli("export", "mynets:nothing", "--input-shape", "1x3x32x32", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 1 and "cannot import mynets:nothing" in r.stderr and r.stderr.count("\n") == 1
    # a shape the module does not take, an argument the factory does not know: one line each, nothing written
    for args, says in ((["--input-shape", "1x1x32x32"], "does not take a 1x1x32x32 input"),
                       (["--input-shape", "1x3x32x32", "--arg", "depth=3"], "mynets:build(depth=3) failed: TypeError")):
        r = run_cli("export", "mynets:build", *args, "--out", "bad.onnx", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
        assert r.returncode == 1 and says in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "bad.onnx").exists()


def test_bundle_with_labels_predicts_what_onnxruntime_does(tmp_path, folder):
    """A zoo model with Caffe preprocessing (BGR, mean in pixel units) and --labels: the runtime's top-1 on PNG
    files is ONNX Runtime's on the same images preprocessed by hand."""
    from PIL import Image

    path = caffe_zoo(tmp_path / "caffenet.onnx")
    (tmp_path / "synset.txt").write_text("\n".join(CLASSES) + "\n")
    mean = [103.94, 116.78, 123.68]
    r = run_cli("compile", path, "--target", "host", "--labels", tmp_path / "synset.txt", "--scale", "1", "--mean",
                ",".join(map(str, mean)), "--std", "58.0", "--channel-order", "bgr", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert run_cli("verify", tmp_path / "b", "--data", f"imagefolder:{folder}").returncode == 0
    assert run_cli("bundle", tmp_path / "b").returncode == 0
    files = sorted(folder.glob("*/*.png"))
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # N x H x W x RGB
    x = ((pixels[..., ::-1].astype(np.float32) - np.float32(mean)) / 58.0).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(path))  # batch 1, as the zoo's models
    want = np.concatenate([session.run(None, {"data_0": x[i:i + 1]})[0] for i in range(len(x))])
    with runtime.load(tmp_path / "b.edgecnn.tar.gz") as model:
        preds = model.predict(files)
        assert [p.label for p in preds] == [CLASSES[k] for k in want.argmax(1)]
        np.testing.assert_allclose([p.score for p in preds], want.max(1), atol=1e-5)
    readme = tarfile.open(tmp_path / "b.edgecnn.tar.gz").extractfile("README.md").read().decode()
    assert "channels BGR" in readme and "(pixel[c] * 1 - mean[c])" in readme and "a Softmax head" in readme


def test_info_describes_a_foreign_model(tmp_path):
    r = run_cli("info", caffe_zoo(tmp_path / "caffenet.onnx"), "--json")
    d = json.loads(r.stdout)
    assert (d["opset"], d["ir_version"], d["input"], d["layout"]) == (9, 3, [1, 3, 32, 32], "NCHW")
    assert d["prepared"] == ["12 initializers listed as inputs are weights (IR 3 -> 4)"]
    r = run_cli("info", dynamic_hw(tmp_path / "fcn.onnx"), "--input-shape", "1x3x64x64", "--json")
    assert json.loads(r.stdout)["input"] == [1, 3, 64, 64] and json.loads(r.stdout)["macs"] > 0


def test_preprocessing_and_labels_given_to_compile_reach_quantize(tmp_path, folder):
    """The README's "Your own model" order: compile with --mean/--std/--labels writes model.yaml beside
    model.onnx; quantize model.onnx then calibrates with them and model.int8.onnx carries them."""
    labels = CLASSES[:5]
    model = onnx.load(str(export.from_module(make_tiny_resnet(), "1x3x32x32", tmp_path / "x.onnx")))
    model.ClearField("metadata_props")  # a model from elsewhere: nothing in it says its preprocessing
    onnx.save(model, str(tmp_path / "model.onnx"))
    shutil.copy(tmp_path / "model.onnx", tmp_path / "bare.onnx")
    (tmp_path / "synset.txt").write_text("\n".join(labels) + "\n")
    mean, std = "0.485,0.456,0.406", "0.229,0.224,0.225"
    r = run_cli("compile", tmp_path / "model.onnx", "--target", "onnxruntime-cpu", "--mean", mean, "--std", std,
                "--labels", tmp_path / "synset.txt")
    assert r.returncode == 0, r.stderr
    written = yaml.safe_load((tmp_path / "model.yaml").read_text())
    assert written == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "labels": labels}
    r = run_cli("quantize", tmp_path / "model.onnx", "--calib", folder, "--calib-images", 16, "--sensitivity", 0)
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "model.quant.json").is_file() and not (tmp_path / "quant.json").exists()
    man = manifest.read(compiler.compile_model(tmp_path / "model.int8.onnx", "onnxruntime-cpu"))
    assert man["input"]["mean"] == written["mean"] and man["input"]["std"] == written["std"] and man["labels"] == labels
    r = run_cli("quantize", tmp_path / "bare.onnx", "--calib", folder, "--calib-images", 16, "--sensitivity", 0)
    assert r.returncode == 0 and "warning: nothing gives bare.onnx's preprocessing" in " ".join(r.stdout.split())
