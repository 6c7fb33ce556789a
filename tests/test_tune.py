"""edgecnn tune: a real (tiny) MetaSchedule run on LeNet-5, its database reapplied by compile --tune-db."""

import json
import shutil

import pytest
from conftest import run_cli
from test_rpc import KEY, farm  # noqa: F401,F811  (the loopback tracker + RPC server fixture)

from edgecnn import compiler, verify
from edgecnn.compiler import manifest
from edgecnn.backends.tvm import tune, tunedb
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256

TRIALS = 8


@pytest.fixture(scope="module")
def tuned(lenet_onnx, tmp_path_factory):
    """LeNet-5 tuned for the host with a handful of trials, through the CLI (one run for the module)."""
    db = tmp_path_factory.mktemp("tune") / "db"
    result = run_cli("tune", lenet_onnx, "--target", "host", "--trials", TRIALS, "--db", db)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"database {db}" in " ".join(result.stdout.split())
    return db


def test_database_records_cpu_target_model_and_trials(tuned, lenet_onnx):
    import tvm

    record = json.loads((tuned / tunedb.RECORD).read_text())
    assert record["cpu"] == tunedb.host_cpu() and record["measured_on"] == "local"
    assert record["cpu"]["llvm_cpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert record["target"]["name"] == "host" and record["target"]["tvm"]["mcpu"] == record["cpu"]["llvm_cpu"]
    assert record["model"] == {"sha256": sha256(lenet_onnx), "batch": 1}
    assert record["tvm"]["apache-tvm"].startswith("0.27")
    assert TRIALS <= record["trials"] <= TRIALS + 8 and record["sessions"][0]["failed"] < record["trials"]
    assert len((tuned / "database_tuning_record.json").read_text().splitlines()) >= record["sessions"][0]["kernels"]


def test_compile_applies_database_and_build_keeps_parity(tuned, lenet_onnx, tmp_path):
    out = tmp_path / "build"
    result = run_cli("compile", lenet_onnx, "--target", "host", "--tune-db", tuned, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    tuning = manifest.read(out)["artifact"]["tuning"]
    assert tuning["db"] == str(tuned.resolve()) and tuning["trials"] >= TRIALS
    assert tuning["kernels_from_db"] == tuning["kernels"] > 0  # every kernel got its tuned schedule
    summary = verify.summary(verify.verify(out, "torch", data="test", limit=64))
    assert summary["passed"] and summary["top1_agreement"] == 100.0


def edited_copy(db, tmp_path, edit):
    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    record = json.loads((copy / tunedb.RECORD).read_text())
    edit(record)
    (copy / tunedb.RECORD).write_text(json.dumps(record))
    return copy


@pytest.mark.parametrize("edit, reason", [
    (lambda r: r["cpu"].update(model_name="Other CPU 9000", llvm_cpu="znver1"), "was tuned on another CPU"),
    (lambda r: r["target"]["tvm"].update(mcpu="skylake"), "another TVM target (mcpu skylake vs"),
    (lambda r: r["model"].update(sha256="0" * 64), "was tuned for another model"),
    (lambda r: r["tvm"].update({"apache-tvm": "0.26.0"}), "was tuned with"),
])
def test_mismatched_database_is_refused_without_a_build(tuned, lenet_onnx, tmp_path, edit, reason):
    db = edited_copy(tuned, tmp_path, edit)
    with pytest.raises(EdgecnnError, match="re-tune") as error:
        compiler.compile_model(lenet_onnx, "host", out=tmp_path / "build", tune_db=db)
    assert str(error.value).startswith(f"tuning database {db} was tuned ")
    assert reason in str(error.value) and not (tmp_path / "build").exists()


def test_cli_refuses_another_cpus_database_in_one_line(tuned, lenet_onnx, tmp_path):
    db = edited_copy(tuned, tmp_path, lambda r: r["cpu"].update(model_name="Other CPU 9000"))
    result = run_cli("compile", lenet_onnx, "--target", "host", "--tune-db", db, "--out", tmp_path / "b")
    assert result.returncode == 1 and not (tmp_path / "b").exists()
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: tuning database {db} was tuned on another CPU (Other CPU 9000")


def test_not_a_database_is_refused(lenet_onnx, tmp_path):
    with pytest.raises(EdgecnnError, match="is not an edgecnn tuning database"):
        compiler.compile_model(lenet_onnx, "host", out=tmp_path / "b", tune_db=tmp_path)


def test_tune_refuses_what_it_cannot_tune(lenet_onnx, tmp_path):
    with pytest.raises(EdgecnnError, match="edgecnn tune tunes TVM targets"):
        tune.tune(lenet_onnx, "onnxruntime-cpu", trials=4, db=tmp_path / "db")
    with pytest.raises(EdgecnnError, match="tuned on the board itself: pass --rpc"):
        tune.tune(lenet_onnx, "rpi4", trials=4, db=tmp_path / "db")
    with pytest.raises(EdgecnnError, match="no ONNX model"):
        tune.tune(tmp_path / "missing.onnx", "host", trials=4)
    assert not (tmp_path / "db").exists()


def test_missing_search_dependency_names_the_extra(lenet_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "xgboost", None)  # `import xgboost` now fails
    with pytest.raises(EdgecnnError, match=r"xgboost .*pip install 'edgecnn\[tvm\]'"):
        tune.tune(lenet_onnx, "host", trials=4, db=tmp_path / "db")


def test_budget_gives_every_kernel_a_first_round():
    assert tune.budget(1500, 34, 64) == (64, 45)
    assert tune.budget(8, 8, None) == (2, 1)
    per_task, per_round = tune.budget(100, 3, None)
    assert per_round <= 64 and per_task >= per_round


def test_tuning_measures_on_a_board_through_the_rpc_tracker(farm,  # noqa: F811
                                                             lenet_onnx, tmp_path):
    """The loopback device farm of test_rpc (two boards): MetaSchedule's RPCRunner measures every candidate
    there, on both boards (one runner worker per free board), and the database's log says which."""
    db, record = tune.tune(lenet_onnx, "host", trials=6, db=tmp_path / "db", rpc=farm[0], key=KEY)
    assert record["measured_on"] == {"rpc": farm[0], "key": KEY} and record["cpu"]["board_key"] == KEY
    session = record["sessions"][0]
    assert session["trials"] == 6 and session["failed"] == 0 and session["estimate_ms"] > 0
    assert set(session["boards"]) == {f"127.0.0.1:{p}" for p in farm[2]} and sum(session["boards"].values()) == 6
    assert sorted((db / "logs" / "boards.log").read_text().split()) == sorted(
        b for b, n in session["boards"].items() for _ in range(n))
    with pytest.raises(EdgecnnError, match=f"no board with key '{KEY}x'"):
        tune.tune(lenet_onnx, "host", trials=4, db=tmp_path / "db2", rpc=farm[0], key=KEY + "x")
    assert not (tmp_path / "db2").exists()
