"""edgecnn tune: a real (tiny) search over the schedule rules' parameters for LeNet-5, its database reapplied
by compile --tune-db; the budget in minutes is kept."""

import json
import shutil

import pytest
from conftest import run_cli
from test_rpc import KEY, farm  # noqa: F401,F811  (the loopback tracker + RPC server fixture)

from edgecnn import compiler, verify
from edgecnn.compiler import targets
from edgecnn.core import manifest
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
    said = " ".join(result.stdout.split())
    assert f"database {db}" in said and "whole model: " in said
    return db


def test_database_records_cpu_target_model_and_trials(tuned, lenet_onnx):
    import tvm

    record = json.loads((tuned / tunedb.RECORD).read_text())
    assert record["cpu"] == tunedb.host_cpu() and record["measured_on"] == "local"
    assert record["cpu"]["llvm_cpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert record["target"]["name"] == "host" and record["target"]["tvm"]["mcpu"] == record["cpu"]["llvm_cpu"]
    assert record["model"] == {"sha256": sha256(lenet_onnx), "batch": 1}
    assert record["tvm"]["apache-tvm"].startswith("0.27")
    session = record["sessions"][0]
    assert TRIALS <= record["trials"] <= TRIALS + tune.BATCH and session["failed"] < record["trials"]
    assert session["estimate_ms"]["end"] <= session["estimate_ms"]["start"]
    best = json.loads((tuned / tunedb.SCHEDULES).read_text())
    assert len(best) == session["kernels"]  # every kernel timed, its parameters kept
    assert all(v["us"] <= v["default_us"] and v["rule"] != "none" for v in best.values())


def test_compile_applies_database_and_build_keeps_parity(tuned, lenet_onnx, tmp_path):
    out = tmp_path / "build"
    result = run_cli("compile", lenet_onnx, "--target", "host", "--tune-db", tuned, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    artifact = manifest.read(out)["artifact"]
    tuning = artifact["tuning"]
    assert tuning["db"] == str(tuned.resolve()) and tuning["trials"] >= TRIALS
    assert artifact["schedules"]["tuned"] == artifact["schedules"]["kernels"] > 0  # every kernel's from the db
    summary = verify.summary(verify.verify(out, "torch", data="test", limit=64))
    assert summary["passed"] and summary["top1_agreement"] == 100.0


def test_localisation_replays_the_tuned_build(tuned, lenet_onnx, lenet_run, tmp_path):
    import onnx
    import torch

    from edgecnn.models import checkpoint

    build = compiler.compile_model(lenet_onnx, "host", out=tmp_path / "build", tune_db=tuned)
    model, spec = checkpoint.load(lenet_run)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        first_conv.weight[0] += 0.5  # the trained model now differs from what the build computes at its first conv
    checkpoint.save(tmp_path / "model.pt", model, spec)
    man = manifest.read(build)
    manifest.update(build, source={**man["source"], "checkpoint": str(tmp_path / "model.pt")})
    with pytest.raises(verify.ParityError) as err:
        verify.verify(build, "torch", data="test", limit=16)
    loc = err.value.report["localization"]
    assert loc["op"] == "Conv" and loc["node"] == next(n.name for n in onnx.load(str(lenet_onnx)).graph.node
                                                       if n.op_type == "Conv")
    assert loc["replay"]["options"]["tune_db"] == str(tuned.resolve()) == loc["replay"]["tuning"]["db"]
    assert loc["replay"]["tuning"]["kernels_from_db"] > 0  # the rebuilt graph ran tuned schedules


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
        tune.tune(lenet_onnx, targets.load("onnxruntime-cpu"), trials=4, db=tmp_path / "db")
    with pytest.raises(EdgecnnError, match="tuned on the board itself: pass --rpc"):
        tune.tune(lenet_onnx, targets.load("rpi4"), trials=4, db=tmp_path / "db")
    with pytest.raises(EdgecnnError, match="no ONNX model"):
        tune.tune(tmp_path / "missing.onnx", targets.load("host"), trials=4)
    assert not (tmp_path / "db").exists()


def test_the_budget_in_minutes_is_kept(lenet_onnx, tmp_path):
    _, record = tune.tune(lenet_onnx, targets.load("host"), minutes=0.15, db=tmp_path / "db")
    session = record["sessions"][0]
    assert session["requested"] == {"trials": None, "minutes": 0.15}
    # it searched until the deadline or until no candidate was left (a wall-clock bound is no unit test's)
    assert session["trials"] > 0 and (session["minutes"] >= 0.15 or session["left"] == 0)


def test_a_budget_is_required(lenet_onnx, tmp_path):
    with pytest.raises(EdgecnnError, match="give the tuning budget: --minutes M and/or --trials N"):
        tune.tune(lenet_onnx, targets.load("host"), db=tmp_path / "db")


def test_a_second_session_adds_to_the_database(tuned, lenet_onnx, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned, db)
    _, record = tune.tune(lenet_onnx, targets.load("host"), trials=4, db=db)
    assert len(record["sessions"]) == 2 and record["trials"] == sum(s["trials"] for s in record["sessions"])
    before = json.loads((tuned / tunedb.SCHEDULES).read_text())
    after = json.loads((db / tunedb.SCHEDULES).read_text())
    assert all(after[k]["us"] <= before[k]["us"] * 1.0001 for k in before if before[k]["params"] != after[k]["params"])


def test_tuning_measures_on_a_board_through_the_rpc_tracker(farm,  # noqa: F811
                                                             lenet_onnx, tmp_path):
    """The loopback device farm of test_rpc (two boards): every kernel and candidate is timed on a board,
    the two boards sharing each batch, and the record says which board timed how many."""
    db, record = tune.tune(lenet_onnx, targets.load("host"), trials=4, db=tmp_path / "db", rpc=farm[0], key=KEY)
    assert record["measured_on"] == {"rpc": farm[0], "key": KEY} and record["cpu"]["board_key"] == KEY
    session = record["sessions"][0]
    assert session["trials"] == 4 and session["failed"] == 0 and session["estimate_ms"]["start"] > 0
    assert set(session["boards"]) == {f"127.0.0.1:{p}" for p in farm[2]}
    assert sum(session["boards"].values()) == session["kernels"] + 4 and min(session["boards"].values()) > 0
    with pytest.raises(EdgecnnError, match=f"no board with key '{KEY}x'"):
        tune.tune(lenet_onnx, targets.load("host"), trials=4, db=tmp_path / "db2", rpc=farm[0], key=KEY + "x")
    assert not (tmp_path / "db2").exists()


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory):
    """A tiny model one 3x3 conv dominates (about 1 ms on 2 cores): a bad schedule for it shows in the model."""
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(16, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 32, 1),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10)).eval()
    path = tmp_path_factory.mktemp("conv") / "model.onnx"
    torch.onnx.export(model, torch.randn(1, 16, 56, 56), str(path), dynamo=True, opset_version=18)
    return path


def slowest_alone(onnx_path, tmp_path):
    """The dominant kernel of the model's profile and its slowest candidate alone, among a few serial ones with
    short vectors: (kernel, parameters, their time alone, the default's time alone)."""
    from edgecnn.backends.tvm import build
    from edgecnn.backends.tvm.cpu import cpu_info
    from edgecnn.compiler import targets

    tgt = targets.load("host")
    spec = build.resolve_target(tgt)
    mod = tune.lowered(onnx_path, tgt, spec, 1)
    found = tune.kernels(mod, spec)
    profile = tune.ModelTimer(mod, spec, found).profile({})
    kernel = max(found, key=lambda k: profile.get(k["name"], 0.0))
    timer, cpu = tune.Timer(spec), cpu_info(spec)
    # serial, the shortest vectors, few accumulators: several times the default alone on every x86 CPU
    worst = sorted(kernel["space"], key=lambda c: (c["parallel"], c["vl"], c["nvec"] * c["xb"], c["pad"] != "full"))[:3]
    alone = [(timer.seconds(tune.scheduled(kernel, {**kernel["default"], **c}, cpu)), c) for c in worst]
    seconds, params = max(alone, key=lambda t: t[0])
    default_s = timer.seconds(tune.scheduled(kernel, kernel["default"], cpu))
    return kernel, {**kernel["default"], **params}, seconds, default_s


def test_a_candidate_that_wins_alone_and_loses_in_the_model_is_dropped(conv_onnx, tmp_path):
    """The database says one kernel's slowest candidate won alone (1 us): the whole-model check times the model
    with it against the defaults, reverts it, and compile --tune-db builds the defaults and says so."""
    db, _ = tune.tune(conv_onnx, targets.load("host"), trials=1, db=tmp_path / "db")
    kernel, bad, bad_s, default_s = slowest_alone(conv_onnx, tmp_path)
    assert bad_s > 1.3 * default_s  # really worse (the lie below makes it win alone)
    best = json.loads((db / tunedb.SCHEDULES).read_text())
    # the bad candidate is the only choice in the database (the other kernels are timed again at their defaults)
    best = {kernel["key"]: {**best[kernel["key"]], "params": bad, "us": 1.0, "kept": True}}
    (db / tunedb.SCHEDULES).write_text(json.dumps(best))

    _, record = tune.tune(conv_onnx, targets.load("host"), trials=1, db=db)
    check = record["sessions"][-1]["model_check"]
    assert check["tuned_ms"] > check["default_ms"]  # it lost in the model ...
    assert kernel["name"] in [r["name"] for r in check["reverted"]]  # ... and was dropped
    assert check["final_ms"] <= check["final_default_ms"]
    after = json.loads((db / tunedb.SCHEDULES).read_text())
    assert after[kernel["key"]]["kept"] is False and after[kernel["key"]]["params"] == bad

    out = tmp_path / "build"
    result = run_cli("compile", conv_onnx, "--target", "host", "--tune-db", db, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    artifact = manifest.read(out)["artifact"]
    assert kernel["key"] not in [k for k, v in after.items() if v.get("kept", True)]
    assert artifact["tuning"]["kernels_kept"] == sum(v.get("kept", True) for v in after.values())
    if check["lost"]:
        said = [line for line in result.stderr.splitlines() if "slower than the defaults" in line]
        assert len(said) == 1 and said[0].endswith("compiling the default schedules")
        assert artifact["tuning"]["model_check"]["lost"] is True


def test_on_a_board_the_whole_model_check_runs_there_and_drops_the_loser(farm,  # noqa: F811
                                                                         conv_onnx, tmp_path):
    """Tuned through the tracker, the whole-model check builds both models, runs them on a board (its clock)
    and reverts the candidate that won alone (the database's lie) and loses in the model."""
    db, _ = tune.tune(conv_onnx, targets.load("host"), trials=1, db=tmp_path / "db", rpc=farm[0], key=KEY)
    kernel, bad, bad_s, default_s = slowest_alone(conv_onnx, tmp_path)
    assert bad_s > 1.3 * default_s
    best = json.loads((db / tunedb.SCHEDULES).read_text())
    (db / tunedb.SCHEDULES).write_text(json.dumps({kernel["key"]: {**best[kernel["key"]], "params": bad, "us": 1.0,
                                                                   "kept": True}}))
    _, record = tune.tune(conv_onnx, targets.load("host"), trials=1, db=db, rpc=farm[0], key=KEY)
    check = record["sessions"][-1]["model_check"]
    assert check["measured_on"] in {f"127.0.0.1:{p}" for p in farm[2]}
    assert check["tuned_ms"] > check["default_ms"] > 0 and check["builds"] >= 2
    assert kernel["name"] in [r["name"] for r in check["reverted"]]
    assert json.loads((db / tunedb.SCHEDULES).read_text())[kernel["key"]]["kept"] is False


def test_the_search_starts_with_the_kernels_that_dominate_the_model(conv_onnx, tmp_path):
    _, record = tune.tune(conv_onnx, targets.load("host"), trials=4, db=tmp_path / "db")
    session = record["sessions"][0]
    profile = session["profile_us"]
    assert list(profile)[0].startswith("fused_conv2d") and len(profile) >= 3  # the conv first, then the rest
    assert session["trials_per_kernel"] == {list(profile)[0]: 4}  # one batch, all of it on the dominant kernel
    best = json.loads((tmp_path / "db" / tunedb.SCHEDULES).read_text())
    assert all("kept" in v for v in best.values())


def test_tuned_build_goes_beside_the_untuned_one(tuned, lenet_onnx, tmp_path):
    """compile --tune-db without --out never replaces the untuned build the README compares it with."""
    import shutil

    onnx_path = shutil.copy(lenet_onnx, tmp_path / "model.onnx")
    untuned = compiler.compile_model(onnx_path, "host")
    tuned_build = compiler.compile_model(onnx_path, "host", tune_db=tuned)
    assert (untuned.name, tuned_build.name) == ("build-host-fp32", "build-host-fp32-tuned")
    assert "tuning" not in manifest.read(untuned)["artifact"]
    assert manifest.read(tuned_build)["artifact"]["tuning"]["db"] == str(tuned.resolve())
