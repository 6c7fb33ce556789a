"""Resumable runs: a run killed after an epoch continues with `edgecnn train --resume` and ends exactly as
the uninterrupted run does (CPU is deterministic), on one rank and on two."""

import json
import os
import signal

import pytest
import torch
from conftest import needs_fashion, run_cli
from test_distributed import finish, leftovers, start_train, wait_for_line, write_recipe

from edgecnn.core.errors import EdgecnnError
from edgecnn.train import resume

AUGMENT = "{hflip: true, crop_padding: 2}"  # random draws on every step: the generators must be restored


def comparable(run_dir) -> dict:
    """metrics.json without the timings and the resume record."""
    m = json.loads((run_dir / "metrics.json").read_text())
    m["epochs"] = [{k: v for k, v in e.items() if k != "seconds"} for e in m["epochs"]]
    return {k: v for k, v in m.items() if k not in ("train_seconds", "resumed_at")}


def weights(run_dir) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def kill_after_first_epoch(tmp_path, rec, sig, *extra) -> None:
    proc = start_train(rec, "--out", tmp_path / "killed", *extra)
    wait_for_line(proc, "epoch 1/4:")  # printed once the epoch's checkpoint is on disk
    os.kill(proc.pid, sig)
    finish(proc)
    assert proc.returncode != 0 and leftovers(tmp_path, "killed") == []
    state = torch.load(resume.partial_path(tmp_path / "killed"), weights_only=True)
    assert 1 <= state["epoch"] < 4 and len(state["rng"]) == state["world_size"]


@needs_fashion
@pytest.mark.parametrize("ranks", [1, 2])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, ranks):
    rec = write_recipe(tmp_path / "r.yaml", augment=AUGMENT, epochs=4)
    launch = ["--nproc", 2] if ranks == 2 else []
    # one rank: SIGKILL, nothing runs after it; two: SIGTERM to the launcher, which stops its ranks
    kill_after_first_epoch(tmp_path, rec, signal.SIGKILL if ranks == 1 else signal.SIGTERM, "--limit", 2000, *launch)
    r = run_cli("train", "--resume", tmp_path / "killed")  # as many ranks as the run had, by itself
    assert r.returncode == 0, r.stderr[-2000:]
    assert run_cli("train", rec, "--out", tmp_path / "whole", "--limit", 2000, *launch).returncode == 0
    assert comparable(tmp_path / "killed") == comparable(tmp_path / "whole")
    a, b = weights(tmp_path / "killed"), weights(tmp_path / "whole")
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert m["world_size"] == ranks and m["resumed_at"] and not resume.partial_path(tmp_path / "killed").exists()


def test_nothing_to_resume(tiny_recipe, tmp_path):
    r = run_cli("train", "--resume", tmp_path / "none")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no interrupted run" in r.stderr
    assert run_cli("train", tiny_recipe, "--out", tmp_path / "done", "--epochs", 1).returncode == 0
    r = run_cli("train", "--resume", tmp_path / "done")
    assert r.returncode == 1 and "finished run: nothing to resume" in r.stderr
    r = run_cli("train", tiny_recipe, "--resume", tmp_path / "done")
    assert r.returncode == 1 and "give no RECIPE.yaml" in r.stderr


def test_partial_checkpoint_loads_weights_only_and_refuses_junk(tiny_recipe, tmp_path):
    from edgecnn import train
    from edgecnn.train import recipe

    rec = recipe.load(tiny_recipe)
    train.train(rec, tmp_path / "run", epochs=1)
    assert not resume.partial_path(tmp_path / "run").exists()  # removed once the run completed
    resume.partial_path(tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgecnnError, match="not a loadable checkpoint"):
        resume.load(tmp_path / "junk")


def test_rng_state_roundtrip():
    gen = torch.Generator().manual_seed(3)
    state = resume.rng_state(gen, torch.device("cpu"))
    want = (torch.rand(4), torch.rand(4, generator=gen))
    resume.set_rng_state(state, gen, torch.device("cpu"))
    assert all(torch.equal(w, g) for w, g in zip(want, (torch.rand(4), torch.rand(4, generator=gen))))
