import json
import math

import pytest
import torch
from conftest import run_cli

from edgecnn import train
from edgecnn.models import checkpoint
from edgecnn.train import distributed, engine, recipe
from edgecnn.core.errors import EdgecnnError


@pytest.fixture
def tiny_run(tiny_recipe, tmp_path):
    rec = recipe.load(tiny_recipe)
    metrics = train.train(rec, tmp_path / "run", epochs=1)
    return tmp_path / "run", rec, metrics


def test_one_epoch_smoke_loss_falls(tiny_run):
    run, rec, metrics = tiny_run
    torch.manual_seed(rec.seed)
    untrained, _, _ = train.build(rec, 4, list("abcd"))
    data = train.load_data(rec)
    before = engine.evaluate(untrained, data.test, rec.data.mean, rec.data.std, device=torch.device("cpu"))
    assert metrics["test_loss"] < before["loss"] - 0.3
    assert metrics["test_top1"] > 60.0
    assert {p.name for p in run.iterdir()} == {"model.pt", "recipe.yaml", "metrics.json", "curves.png"}
    saved = json.loads((run / "metrics.json").read_text())
    assert len(saved["epochs"]) == 1 and saved["test_top1"] == metrics["test_top1"]


def test_checkpoint_roundtrip_weights_only(tiny_run):
    run, _, metrics = tiny_run
    raw = torch.load(run / "model.pt", weights_only=True)
    assert raw["model"]["name"] == "lenet5" and raw["input"]["shape"] == [1, 28, 28]
    model, spec = checkpoint.load(run)
    x = torch.randn(3, 1, 28, 28)
    again = checkpoint.build_model(spec)
    again.load_state_dict(raw["state_dict"])
    assert torch.equal(model(x), again.eval()(x))
    assert math.isclose(train.eval_run(run)["top1"], metrics["test_top1"])


def test_training_is_deterministic(tiny_recipe, tmp_path):
    rec = recipe.load(tiny_recipe)
    train.train(rec, tmp_path / "a", epochs=1)
    train.train(rec, tmp_path / "b", epochs=1)
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=True)["state_dict"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgecnnError, match="not a loadable checkpoint"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("mode,last_n", [("classifier", 1), ("last_n", 2), ("all", 1)])
def test_finetune_modes_freeze_what_they_say(tiny_run, tiny_recipe, mode, last_n):
    run, _, _ = tiny_run
    rec = recipe.load(tiny_recipe)
    rec.finetune = recipe.FinetuneCfg(run=str(run), mode=mode, last_n=last_n)
    model, _, new = train.build(rec, 7, list("abcdefg"))  # 7 classes: a new head
    assert new == ["head.bias", "head.weight"]
    blocks = list(model.features)
    trainable_blocks = {"classifier": 0, "last_n": last_n, "all": len(blocks)}[mode]
    for i, block in enumerate(blocks):
        want = i >= len(blocks) - trainable_blocks
        assert all(p.requires_grad == want for p in block.parameters()), (mode, i)
    assert all(p.requires_grad for p in model.head.parameters())
    source, _ = checkpoint.load(run)
    assert torch.equal(model.features[0][0].weight, source.features[0][0].weight)


def test_finetune_trains_only_unfrozen(tiny_run, tiny_recipe, tmp_path):
    run, _, _ = tiny_run
    rec = recipe.load(tiny_recipe)
    rec.finetune = recipe.FinetuneCfg(run=str(run), mode="classifier")
    train.train(rec, tmp_path / "ft", epochs=1)
    before, _ = checkpoint.load(run)
    after, _ = checkpoint.load(tmp_path / "ft")
    assert torch.equal(before.features[0][0].weight, after.features[0][0].weight)
    assert not torch.equal(before.head.weight, after.head.weight)


def test_finetune_other_model_refused(tiny_run, tiny_recipe):
    run, _, _ = tiny_run
    rec = recipe.load(tiny_recipe)
    rec.model = recipe.ModelCfg("mobilenet_v2")
    rec.finetune = recipe.FinetuneCfg(run=str(run))
    with pytest.raises(EdgecnnError, match="holds a lenet5"):
        train.build(rec, 4, list("abcd"))


def test_cli_train_and_eval(tiny_recipe, tmp_path):
    r = run_cli("train", tiny_recipe, "--out", tmp_path / "run", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "test top-1" in r.stdout
    r = run_cli("eval", tmp_path / "run")
    assert r.returncode == 0 and r.stdout.startswith("test top-1")


def test_cuda_device_refused_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(EdgecnnError, match="no CUDA device"):
        distributed.pick_device("cuda")


def test_tiny_limit_trains(tiny_recipe, tmp_path):
    """A --limit so small that one-cycle has no warm-up step still trains (constant rate)."""
    metrics = train.train(recipe.load(tiny_recipe), tmp_path / "run", epochs=1, limit=40)
    assert metrics["train_images"] == 40 and len(metrics["epochs"]) == 1


def test_bad_model_option_is_one_line(tiny_recipe, tmp_path):
    text = tiny_recipe.read_text().replace("model: {name: lenet5}", "model: {name: lenet5, pool: median}")
    (tmp_path / "bad.yaml").write_text(text)
    r = run_cli("train", tmp_path / "bad.yaml", "--out", tmp_path / "run")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "pool 'median'" in r.stderr


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_torch_threads_wait_passively_unless_the_user_says(given, expected):
    """Importing edgecnn (before torch loads libgomp) sets OMP_WAIT_POLICY=PASSIVE: spinning threads made
    LeNet-5 training 9-10x slower on a machine other jobs load. A value of the user's stands."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import edgecnn.cli, os, sys; assert 'torch' not in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
