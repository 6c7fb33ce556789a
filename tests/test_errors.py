"""The one error boundary (edgecnn.cli.main, edgecnn.core.errors.one_line): whatever fails, the user reads one
line that says what failed, where and what to do, exit 1; --debug or EDGECNN_DEBUG=1 adds the traceback."""

import contextlib
import io

import pytest
from conftest import run_cli
from corpus_models import old_exporter, squeeze_excite

from edgecnn.cli import main
from edgecnn.core.errors import DEBUG_ENV, one_line


def run(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture
def model(tmp_path):
    return squeeze_excite(tmp_path / "se.onnx", size=8)


def broken_describe(*_, **__):
    return {}["input"]  # a bug of ours: KeyError


def test_a_bug_of_ours_is_one_line_naming_where_and_where_to_report(model, monkeypatch):
    from edgecnn.export import info

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setattr(info, "describe", broken_describe)
    code, err = run("info", model)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: info: internal error in edgecnn") and "KeyError: 'input'" in err
    assert "test_errors.broken_describe" not in err and "edgecnn.cli.export.info_cmd" in err
    assert "report it to" in err and "--debug" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(model, monkeypatch, how):
    from edgecnn.export import info

    monkeypatch.setattr(info, "describe", broken_describe)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    if how == "env":
        monkeypatch.setenv(DEBUG_ENV, "1")
    code, err = run("info", model, *(["--debug"] if how == "flag" else []))
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: info: internal error")


def test_an_os_error_names_the_path_and_writes_nothing(model, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    code, err = run("compile", model, "--target", "onnxruntime-cpu", "--out", "/proc/edgecnn-nowhere/build")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: compile: No such file or directory: /proc/edgecnn-nowhere")
    assert "check the path" in err


def test_an_exception_raised_inside_tvm_is_named_as_tvms():
    tvm = pytest.importorskip("tvm")
    import edgecnn.backends.tvm  # noqa: F401  (the backend names its packages)

    with pytest.raises(Exception) as caught:
        tvm.ir.Op.get("edgecnn.no_such_op")
    line = one_line(caught.value, "compile")
    assert line.startswith("compile: TVM failed") and "no_such_op" in line and "onnxruntime-cpu" in line


def test_onnx_runtime_failing_at_run_time_names_the_node(tmp_path, monkeypatch):
    """A model ONNX Runtime loads but cannot run (the old exporter's flatten, Reshape to a computed shape, fed
    the map before the pool: the Gemm's weight no longer fits, which no shape inference sees): verify's one
    line names ONNX Runtime and the node."""
    import onnx

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    path = old_exporter(tmp_path / "old.onnx", size=8)
    model = onnx.load(str(path))
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    flatten = next(n for n in model.graph.node if n.op_type == "Reshape" and n.input[0] == pool.output[0])
    flatten.input[0] = pool.input[0]
    onnx.save(model, str(path))
    assert run("compile", path, "--target", "onnxruntime-cpu", "--out", tmp_path / "b")[0] == 0
    r = run_cli("verify", tmp_path / "b", "--data", "random", "--limit", 2, "--no-localize")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "[E:onnxruntime" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]  # after verify's progress line
    assert errors == [r.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("error: verify: ONNX Runtime failed") and "Gemm node" in errors[0]


def test_the_command_line_prints_one_line_for_a_file_that_is_not_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07not a model")
    for args in (["info", bad], ["compile", bad, "--target", "host", "--out", tmp_path / "b"]):
        r = run_cli(*args)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert "not a valid ONNX model" in r.stderr
    assert not (tmp_path / "b").exists() and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
