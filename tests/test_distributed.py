"""Data-parallel training with real processes: torchrun ranks on gloo (CPU), bad launches, QAT on two ranks."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, needs_fashion, run_cli

from edgecnn.core.errors import EdgecnnError
from edgecnn.train import distributed, launch, recipe

LIMIT = 4000  # images of each split: a few thousand


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_recipe(path, augment: str = "{}", epochs: int = 3) -> str:
    path.write_text(f"""
name: lenet5-dist
seed: 0
model: {{name: lenet5}}
augment: {augment}
optim: {{lr: 0.003, label_smoothing: 0.1}}
schedule: {{epochs: {epochs}, batch_size: 64}}
""")
    return str(path)


def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def leftovers(tmp_path, name: str) -> list[str]:
    """What a run named `name` left in tmp_path besides its partial checkpoint: a RUN_DIR or a temp dir."""
    return sorted(p.name for p in tmp_path.iterdir() if name in p.name and not p.name.endswith(".partial.pt"))


@needs_fashion
def test_two_ranks_match_one_rank_with_one_set_of_artifacts(tmp_path):
    """Same global batch (64 = 2 x 32), same shuffle: 2 gloo ranks end where 1 rank does (no augmentation,
    whose draws differ per rank by design)."""
    rec = write_recipe(tmp_path / "r.yaml")
    one = run_cli("train", rec, "--out", tmp_path / "one", "--limit", LIMIT)
    two = run_cli("train", rec, "--out", tmp_path / "two", "--limit", LIMIT, "--nproc", 2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["global_batch"] == b["global_batch"] == 64
    assert abs(a["epochs"][-1]["val_top1"] - b["epochs"][-1]["val_top1"]) <= 0.5
    assert a["epochs"][-1]["val_top1"] > 70 and b["train_images"] == LIMIT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "r.yaml", "two"]  # one RUN_DIR, no partial
    assert {p.name for p in (tmp_path / "two").iterdir()} == {"model.pt", "recipe.yaml", "metrics.json", "curves.png"}
    assert two.stdout.count("test top-1") == 1 and "on 2 ranks" in two.stdout  # rank 0 alone reports


@needs_fashion
def test_torchrun_launches_the_module_directly(tmp_path):
    """torchrun --nproc-per-node 2 -m edgecnn train: the same ranks without the --nproc wrapper."""
    rec = write_recipe(tmp_path / "r.yaml", epochs=1)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "edgecnn", "train", rec, "--out", str(tmp_path / "run"), "--limit", "1000"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert metrics(tmp_path / "run")["world_size"] == 2 and r.stdout.count("test top-1") == 1


def rank_pids(parent_pid: int) -> dict[int, int]:
    """{rank: pid} of the torchrun ranks below a launcher process."""
    import psutil

    ranks = {}
    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            if "RANK" in child.environ():
                ranks[int(child.environ()["RANK"])] = child.pid
        except psutil.Error:
            pass
    return ranks


def start_train(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgecnn", "train", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_line(proc: subprocess.Popen, prefix: str) -> list[str]:
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    pytest.fail(f"no line starting {prefix!r}: {''.join(lines)[-2000:]}")


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    """All of stderr once the process ended (subprocess.TimeoutExpired fails the test if it hangs)."""
    _, err = proc.communicate(timeout=timeout)
    return err


@needs_fashion
def test_a_rank_that_dies_ends_the_run_in_one_line(tmp_path):
    rec = write_recipe(tmp_path / "r.yaml", epochs=8)
    proc = start_train(rec, "--out", tmp_path / "run", "--limit", 2000, "--nproc", 2)
    seen = wait_for_line(proc, "epoch 1/8:")
    os.kill(rank_pids(proc.pid)[1], signal.SIGKILL)
    err = finish(proc)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 1, err[-2000:]  # finish() fails the test if it hangs
    assert last.startswith("error: rank 1") and "killed by SIGKILL" in last and "--resume" in last
    everything = "".join(seen) + err
    assert "Traceback" not in everything and everything.count("error:") == 1
    assert leftovers(tmp_path, "run") == [] and (tmp_path / "run.partial.pt").exists()


def test_a_rendezvous_that_never_forms_ends_in_one_line(tiny_recipe, tmp_path):
    """Two nodes asked for, one started: torchrun's rendezvous times out, no rank starts, nothing written."""
    r = run_cli("train", tiny_recipe, "--out", tmp_path / "run", "--nproc", 1, "--nnodes", 2,
                "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-timeout", 3, timeout=120)
    assert r.returncode == 1  # run_cli's timeout fails the test if it hangs
    assert r.stderr.count("\n") == 1 and "rendezvous at 127.0.0.1" in r.stderr and "within 3 s" in r.stderr
    assert leftovers(tmp_path, "run") == []


def test_ranks_that_never_meet_time_out_in_one_line(tiny_recipe, tmp_path):
    """An env:// launch (srun, mpirun) whose second rank never comes: rank 0 gives up after the timeout."""
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), distributed.TIMEOUT_ENV: "3"}
    r = run_cli("train", tiny_recipe, "--out", tmp_path / "run", env=env, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "did not meet" in r.stderr and "within 3 s" in r.stderr and not (tmp_path / "run").exists()


def test_batch_scaling_rules():
    cfg = recipe.DistributedCfg()
    assert distributed.rank_batch(128, 0.01, cfg, 1) == (128, 0.01)
    assert distributed.rank_batch(128, 0.01, cfg, 4) == (32, 0.01)
    assert distributed.rank_batch(128, 0.01, recipe.DistributedCfg(scaling="linear"), 4) == (128, 0.04)
    with pytest.raises(EdgecnnError, match="does not split over 3 ranks"):
        distributed.rank_batch(128, 0.01, cfg, 3)


def test_sync_bn_needs_cuda_ranks():
    import torch

    world = distributed.World(rank=0, size=2)
    with pytest.raises(EdgecnnError, match="SyncBatchNorm needs CUDA"):
        world.wrap(torch.nn.BatchNorm2d(3), sync_bn=True)


def test_torchrun_command_line():
    args = launch.torchrun_args(["train", "r.yaml"], nproc=2)
    assert args[:3] == ["--nproc-per-node=2", "--nnodes=1", "--max-restarts=0"] and "--standalone" in args
    assert args[-4:] == ["-m", "edgecnn", "train", "r.yaml"]
    multi = launch.torchrun_args(["train", "r.yaml"], nproc=8, nnodes=2, rdzv_endpoint="head:29400", rdzv_timeout=30)
    assert "--rdzv-endpoint=head:29400" in multi and "--rdzv-conf=join_timeout=30" in multi
    with pytest.raises(EdgecnnError, match="needs --rdzv-endpoint"):
        launch.torchrun_args(["train"], nproc=1, nnodes=2)


def test_nproc_refused_for_methods_that_do_not_train(lenet_run):
    r = run_cli("quantize", lenet_run, "--method", "ptq", "--nproc", 2)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--method ptq does not train" in r.stderr


@needs_fashion
def test_qat_on_two_ranks(tmp_path):
    """quantize --method qat --nproc 2: both ranks fine-tune, rank 0 writes the one set of files."""
    rec = write_recipe(tmp_path / "r.yaml", epochs=2)
    assert run_cli("train", rec, "--out", tmp_path / "run", "--limit", 2000).returncode == 0
    r = run_cli("quantize", tmp_path / "run", "--method", "qat", "--limit", 1000, "--sensitivity", 0,
                "--nproc", 2, "--out", tmp_path / "qat")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "qat" / "quant.json").read_text())
    assert rep["method"] == "qat" and len(rep["qat"]["history"]) == 1 and rep["accuracy"]["int8"] > 60
    assert sorted(p.name for p in (tmp_path / "qat").iterdir()) == ["model.int8.onnx", "model.qat.pt", "quant.json"]
    assert r.stdout.count("wrote ") == 1
