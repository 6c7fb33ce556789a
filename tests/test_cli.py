import pytest
from conftest import run_cli

from edgecnn.cli import COMMANDS


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    r = run_cli(name, "-h")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


def test_unknown_command_suggests():
    r = run_cli("trian")
    assert r.returncode == 2 and "did you mean 'train'" in r.stderr


def test_import_is_light():
    """`import edgecnn` and the CLI's entry point pull in no heavy backend."""
    import subprocess
    import sys

    code = "import sys, edgecnn, edgecnn.cli; print(sorted(m for m in ('tvm', 'tensorrt', 'onnxruntime', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- bad input, tried through the CLI: one line naming the problem, exit 1, nothing half-written ----

def one_line_error(r, *needles):
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr[-2000:]
    for needle in needles:
        assert needle in r.stderr, r.stderr


def image_model(path, shape, elem_type=1):
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", elem_type, shape)],
                              [helper.make_tensor_value_info("logits", elem_type, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.parametrize("case", ["truncated", "garbage", "external_data_missing", "rank_3", "int64_input"])
def test_bad_onnx_is_refused_in_one_line(lenet_onnx, tmp_path, case):
    import os

    import onnx

    path = tmp_path / "model.onnx"
    if case == "truncated":
        path.write_bytes(lenet_onnx.read_bytes()[: len(lenet_onnx.read_bytes()) // 2])
        needles = ["is not a valid ONNX model"]
    elif case == "garbage":
        path.write_bytes(os.urandom(4096))
        needles = ["is not a valid ONNX model"]
    elif case == "external_data_missing":
        onnx.save(onnx.load(str(lenet_onnx)), str(path), save_as_external_data=True, location="model.data",
                  size_threshold=0)
        (tmp_path / "model.data").unlink()
        needles = ["its weights are stored in", "model.data, which is missing", "keep the external data"]
    elif case == "rank_3":
        image_model(path, [1, 28, 28])
        needles = ["[1, 28, 28]) is not an image batch", "N x C x H x W"]
    else:
        image_model(path, [1, 1, 28, 28], onnx.TensorProto.INT64)
        needles = ["is not an image batch", "N x C x H x W"]
    commands = [("compile", path, "--target", "onnxruntime-cpu", "--out", tmp_path / "build")]
    if case not in ("rank_3", "int64_input"):  # info describes any model, whatever its input
        commands.append(("info", path))
    for args in commands:
        one_line_error(run_cli(*args), *needles)
    assert not (tmp_path / "build").exists() and not list(tmp_path.glob(".build*"))


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.pop("input"), "'input' is missing"),
    (lambda m: m.update(precision=8), "'precision' should be a str, not int"),
    (lambda m: m.update(outputs="logits"), "'outputs' should be a list, not str"),
    (lambda m: m["input"].pop("shape"), "'input.shape' is missing"),
    (lambda m: m.update(precision="int4"), "precision 'int4' is not one of fp32, fp16, int8"),
    (lambda m: m.clear() or m.update(format="edgecnn.build", version=1), "'precision' is missing"),
])
def test_hand_edited_manifest_is_refused_in_one_line(lenet_builds, tmp_path, edit, needle):
    import json
    import shutil

    build = tmp_path / "b"
    shutil.copytree(lenet_builds["onnxruntime-cpu"], build)
    man = json.loads((build / "manifest.json").read_text())
    edit(man)
    (build / "manifest.json").write_text(json.dumps(man))
    before = (build / "manifest.json").read_bytes()
    for args in (("verify", build, "--data", "random", "--limit", "4"), ("bundle", build, "-o", tmp_path / "b.tgz"),
                 ("bench", build, "--runs", "2")):
        one_line_error(run_cli(*args), needle, "recompile")
    assert (build / "manifest.json").read_bytes() == before and not (build / "verify.json").exists()
    assert not list(tmp_path.glob("b.tgz*")) and not (build / "bench.json").exists()


def test_target_yaml_with_an_unknown_key_is_refused_in_one_line(lenet_onnx, tmp_path):
    import yaml

    from conftest import ROOT

    raw = yaml.safe_load((ROOT / "targets" / "onnxruntime-cpu.yaml").read_text())
    raw["optoins"] = raw.pop("options")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**raw, "name": "mine"}))
    r = run_cli("compile", lenet_onnx, "--target", tmp_path / "t.yaml", "--out", tmp_path / "build")
    one_line_error(r, "unknown target field 'optoins'", "did you mean 'options'")
    assert not (tmp_path / "build").exists()
