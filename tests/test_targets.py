import pytest
from conftest import run_cli

from edgecnn.compiler import targets
from edgecnn.core.errors import EdgecnnError


def test_every_shipped_target_parses():
    assert {"host", "onnxruntime-cpu"} <= set(targets.names())
    for t in targets.all_targets():
        assert t.precision in t.precisions


def test_unknown_target_suggests():
    with pytest.raises(EdgecnnError, match="did you mean 'host'"):
        targets.load("hots")


def test_precision_not_allowed():
    with pytest.raises(EdgecnnError, match="does not take fp16"):
        targets.load("host").check_precision("fp16")


@pytest.mark.parametrize("text,message", [("name: x\nbackend: tvm\n", "missing field"),
                                          ("name: x\nbackend: tvm\nprecision: fp8\nprecisions: [fp8]\n", "fp8"),
                                          ("name: x\nbackend: [\n", "bad YAML"),
                                          ("name: x\nbackend: tvm\nprecision: fp32\nprecisions: [fp32]\ncpu: a72\n",
                                           "unknown target field 'cpu'")])
def test_bad_target_files(tmp_path, text, message):
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(EdgecnnError, match=message):
        targets.load(str(tmp_path / "t.yaml"))


def test_targets_command_lists_them():
    r = run_cli("targets")
    assert r.returncode == 0 and "host" in r.stdout and "onnxruntime-cpu" in r.stdout
