import pytest
from conftest import ROOT, run_cli

from edgecnn.train import recipe
from edgecnn.core.errors import EdgecnnError


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    rec = recipe.load(path)
    assert rec.name == path.stem


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,message", [
    ("model: {name: resnet999}", "unknown model 'resnet999'"),
    ("model: {name: lenet5}\noptim: {lr: [1}", "bad YAML at line 2"),
    ("data: {input_size: 28}", "missing the 'model:' section"),
    ("model: {act: relu}", "missing field model.name"),
    ("model: {name: lenet5}\nfinetune: {mode: all}", "missing field finetune.run"),
    ("model: {name: lenet5}\noptim: {lr: fast}", "optim.lr must be float"),
    ("model: {name: lenet5}\noptim: {learning_rate: 0.1}", "unknown recipe field optim.learning_rate"),
    ("model: {name: lenet5}\nschedual: {}", "did you mean 'schedule'"),
    ("model: {name: lenet5}\nschedule: {name: linear}", "must be one of onecycle, cosine, constant"),
    ("model: {name: lenet5}\ndata: {channels: 3}", "one value per channel"),
    ("- just a list", "must be a YAML mapping"),
])
def test_bad_recipes(tmp_path, text, message):
    with pytest.raises(EdgecnnError, match=message):
        recipe.load(write(tmp_path, text))


def test_cli_bad_recipe_is_one_line_and_nonzero(tmp_path):
    r = run_cli("train", write(tmp_path, "model: {name: resnet999}"), "--out", tmp_path / "run")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "unknown model 'resnet999'" in r.stderr
    assert not (tmp_path / "run").exists()


def test_missing_recipe_file(tmp_path):
    with pytest.raises(EdgecnnError, match="recipe not found"):
        recipe.load(tmp_path / "nope.yaml")


def test_roundtrip_of_resolved_recipe(tmp_path):
    import yaml

    rec = recipe.load(ROOT / "recipes" / "mobilenet_v2-fashion.yaml")
    again = recipe.parse(yaml.safe_load(yaml.safe_dump(rec.to_dict())))
    assert again == rec
