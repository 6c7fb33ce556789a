"""edgecnn as a user installs it: the wheel in a fresh venv, run from a folder with no checkout in sight.

The wheel is built from this tree and installed with --no-deps --no-index; its dependencies come from this
environment's site-packages (a .pth line), so the test runs offline. Slow (a few minutes): CI runs it with
`pytest -m slow tests/test_packaging.py`.
"""

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import FASHION, ROOT

# in CI (CI set) a missing dataset fails (the commands say so) rather than skipping the whole check
NO_DATA = not (FASHION / "train-images-idx3-ubyte.gz").exists() and not os.environ.get("CI")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(NO_DATA, reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")]
QUICK = ("--epochs", "1", "--limit", "256")


class User:
    """A venv with only the wheel installed and a working folder outside the checkout."""

    def __init__(self, venv: Path, folder: Path):
        self.venv, self.folder = venv, folder
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", COLUMNS="200",
                        XDG_CONFIG_HOME=str(folder / "config"))

    def run(self, *args, env=None, check=True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.venv / "bin" / args[0]), *map(str, args[1:])], capture_output=True, text=True,
                           cwd=self.folder, env={**self.env, **(env or {})}, timeout=900)
        if check:
            assert r.returncode == 0, f"{' '.join(map(str, args))}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([ROOT / ".ci/wheel", out, sys.executable], capture_output=True, text=True, check=True)
    return Path(r.stdout.split()[-1])


@pytest.fixture(scope="module")
def user(wheel, tmp_path_factory) -> User:
    venv = tmp_path_factory.mktemp("user") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "-q", "--no-deps",
                    "--no-index", wheel], check=True)
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / py / "site-packages/host-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    folder = tmp_path_factory.mktemp("work")
    return User(venv, folder)


@pytest.fixture(scope="module")
def bundle(user) -> Path:
    """train by name -> export -> compile -> verify -> bench -> bundle, each a command in the user's folder."""
    user.run("edgecnn", "train", "lenet5-fashion", *QUICK, "--out", "run")
    user.run("edgecnn", "export", "run")
    user.run("edgecnn", "compile", "run/model.onnx", "--target", "host", "--out", "build")
    user.run("edgecnn", "verify", "build", "--limit", "64")
    user.run("edgecnn", "bench", "build", "--runs", "10", "--warmup", "1")
    user.run("edgecnn", "bundle", "build", "-o", "lenet5.edgecnn.tar.gz")
    return user.folder / "lenet5.edgecnn.tar.gz"


def shipped_in(wheel: Path, kind: str) -> dict:
    with zipfile.ZipFile(wheel) as z:
        return {Path(n).stem: yaml.safe_load(z.read(n)) for n in z.namelist()
                if n.startswith(f"edgecnn/{kind}/") and n.endswith(".yaml")}


def test_the_wheel_ships_every_target_and_recipe(wheel):
    for kind in ("targets", "recipes"):
        assert set(shipped_in(wheel, kind)) == {p.stem for p in (ROOT / kind).glob("*.yaml")}


def test_the_sdist_ships_them_too(tmp_path):
    import shutil
    import tarfile

    src = tmp_path / "src"
    shutil.copytree(ROOT / "edgecnn", src / "edgecnn", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "targets", "recipes"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = subprocess.run([sys.executable, "-c", code, tmp_path], cwd=src, capture_output=True, text=True,
                          check=True).stdout.split()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        yamls = {n.split("/", 1)[1] for n in sdist.getnames() if n.endswith(".yaml")}  # without edgecnn-VERSION/
    assert yamls >= {f"edgecnn/{kind}/{p.name}" for kind in ("targets", "recipes") for p in (ROOT / kind).glob("*.yaml")}


def test_installed_version_and_targets(user, wheel):
    version = user.run("edgecnn", "--version").stdout
    assert str(user.venv) in version and "0.1.0" in version, version  # this venv's edgecnn, not the checkout's
    listed = user.run("edgecnn", "targets").stdout
    names = [raw["name"] for raw in shipped_in(wheel, "targets").values() if "alias" not in raw]
    assert names and all(f"│ {name} " in listed for name in names), listed
    assert "shipped" in listed and str(ROOT) not in listed
    assert "lenet5-fashion" in user.run("edgecnn", "recipes").stdout


def test_chain_to_a_bundle_and_the_runtime(user, bundle):
    code = ("import sys, numpy as np, edgecnn.runtime\n"
            "with edgecnn.runtime.load(sys.argv[1]) as m:\n"
            "    p = m.predict(np.zeros((2, 1, 28, 28), np.uint8))\n"
            "print(len(p), p[0].label, edgecnn.runtime.__file__)")
    out = user.run("python", "-c", code, bundle).stdout.split()
    assert out[0] == "2" and out[-1].startswith(str(user.venv)), out


def test_user_target_and_recipe(user, bundle):
    host = yaml.safe_load((ROOT / "targets/host.yaml").read_text())
    (user.folder / "myboard.yaml").write_text(yaml.safe_dump({**host, "name": "myboard"}))
    user.run("edgecnn", "compile", "run/model.onnx", "--target", "./myboard.yaml", "--out", "build-myboard")
    assert '"name": "myboard"' in (user.folder / "build-myboard/manifest.json").read_text()
    (user.folder / "boards").mkdir()
    (user.folder / "boards/edge-box.yaml").write_text(yaml.safe_dump({**host, "name": "edge-box"}))
    listed = user.run("edgecnn", "targets", env={"EDGECNN_TARGETS": "boards"}).stdout
    assert "edge-box: boards/edge-box.yaml ($EDGECNN_TARGETS)" in listed, listed

    recipe = yaml.safe_load((ROOT / "recipes/lenet5-fashion.yaml").read_text())
    (user.folder / "my.yaml").write_text(yaml.safe_dump({**recipe, "name": "mine"}))
    user.run("edgecnn", "train", "./my.yaml", *QUICK, "--out", "run-mine")
    assert (user.folder / "run-mine/model.pt").exists()
    (user.folder / "config/edgecnn/recipes").mkdir(parents=True)
    (user.folder / "config/edgecnn/recipes/lenet5-fashion.yaml").write_text(yaml.safe_dump(recipe))
    listed = user.run("edgecnn", "recipes").stdout  # the user's copy overrides the shipped one
    assert f"lenet5-fashion: {user.folder}/config/edgecnn/recipes/lenet5-fashion.yaml (user config)" in listed, listed
    r = user.run("edgecnn", "train", "lenet5-fahsion", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "did you mean 'lenet5-fashion'" in r.stderr, r.stderr


def test_the_demo_runs_outside_the_checkout(user):
    r = user.run("edgecnn", "run", "lenet5-fashion", *QUICK, "--precision", "fp32", "--out", "demo")
    assert "edgecnn run: lenet5-fashion -> host" in r.stdout
    assert list((user.folder / "demo").glob("**/*.edgecnn.tar.gz")) or list(user.folder.glob("demo*.edgecnn.tar.gz"))
