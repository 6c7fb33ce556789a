"""Targets and recipes by name: shipped package data, then the user's folders, a user's file winning by name."""

import re

import pytest
from conftest import run_cli

from edgecnn.compiler import targets
from edgecnn.core import catalog
from edgecnn.core.errors import EdgecnnError
from edgecnn.train import recipe

HOST = "name: {name}\nbackend: tvm\nprecision: fp32\nprecisions: [fp32]\ntvm: {{kind: llvm}}\n"


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """Two EDGECNN_TARGETS folders and a user config folder, all empty; no real user config leaks in."""
    first, second, config = tmp_path / "first", tmp_path / "second", tmp_path / "config"
    for folder in (first, second, config / "edgecnn/targets", config / "edgecnn/recipes"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("EDGECNN_TARGETS", f"{first}:{second}")
    monkeypatch.delenv("EDGECNN_RECIPES", raising=False)
    return first, second, config / "edgecnn"


def test_shipped_ones_are_package_data():
    shipped = catalog.shipped("targets")
    assert shipped.parent.name == "edgecnn" and (shipped / "host.yaml").is_file()
    assert {e.origin for e in catalog.entries("recipes").values()} >= {"shipped"}


def test_user_files_override_shipped_ones_first_folder_first(folders):
    first, second, config = folders
    (config / "targets/host.yaml").write_text(HOST.format(name="host") + "description: my config's host\n")
    (second / "host.yaml").write_text(HOST.format(name="host") + "description: the second folder's\n")
    (second / "edge-box.yml").write_text(HOST.format(name="edge-box"))
    (first / "host.yaml").write_text(HOST.format(name="host") + "description: the first folder's\n")
    found = catalog.entries("targets")
    assert found["host"].path == first / "host.yaml" and found["host"].origin == "$EDGECNN_TARGETS"
    assert targets.load("host").description == "the first folder's"
    assert targets.load("edge-box").name == "edge-box" and found["rpi5"].origin == "shipped"
    (first / "host.yaml").unlink()
    (second / "host.yaml").unlink()
    assert targets.load("host").description == "my config's host"
    assert catalog.overrides("targets") == [f"edge-box: {second / 'edge-box.yml'} ($EDGECNN_TARGETS)",
                                            f"host: {config / 'targets/host.yaml'} (user config)"]


def test_recipes_by_name_and_by_path(folders, tmp_path, monkeypatch):
    _, _, config = folders
    (config / "recipes/mine.yaml").write_text("model: {name: lenet5}\n")
    assert recipe.load("mine").name == "mine" and recipe.load("lenet5-fashion").model.name == "lenet5"
    (tmp_path / "other.yaml").write_text("model: {name: lenet5}\nname: other\n")
    monkeypatch.chdir(tmp_path)
    assert recipe.load("other.yaml").name == "other" and recipe.load("./other.yaml").name == "other"


@pytest.mark.parametrize("load,name,message", [
    (targets.load, "rpi-4", "unknown target 'rpi-4' (did you mean 'rpi4'?); valid: aarch64, host, "),
    (recipe.load, "lenet5-fahsion", "unknown recipe 'lenet5-fahsion' (did you mean 'lenet5-fashion'?); valid: "),
    (recipe.load, "recipes/gone.yaml", "recipe not found: recipes/gone.yaml (edgecnn recipes lists"),
    (recipe.load, "/elsewhere/recipes/lenet5-fashion.yaml", "is named without a path: lenet5-fashion")])
def test_unknown_names_say_what_is_known(load, name, message):
    with pytest.raises(EdgecnnError, match=re.escape(message)):
        load(name)


def test_listings_say_where_each_comes_from(folders):
    first, _, config = folders
    (first / "edge-box.yaml").write_text(HOST.format(name="edge-box"))
    (config / "recipes/broken.yaml").write_text("model: [\n")
    env = {"EDGECNN_TARGETS": str(first), "XDG_CONFIG_HOME": str(config.parent)}
    r = run_cli("targets", env=env)
    assert r.returncode == 0 and f"edge-box: {first / 'edge-box.yaml'} ($EDGECNN_TARGETS)" in r.stdout, r.stderr
    r = run_cli("recipes", env=env)  # a broken file of the user's is listed, not fatal
    assert r.returncode == 0 and "broken" in r.stdout and "lenet5-fashion" in r.stdout and "shipped" in r.stdout
    assert f"broken: {config / 'recipes/broken.yaml'} (user config)" in r.stdout


def test_version_says_which_edgecnn():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("edgecnn 0.1.0 (Python ") and "edgecnn)" in r.stdout
