"""The pytest plugin and its budgets (edgecnn.testing), in real pytest runs (pytester) of an application's
tests, with edgecnn installed (pip install --target) so the plugin comes from its pytest11 entry point."""

import shutil
import subprocess
import sys

import onnx
import pytest
from conftest import ROOT

from edgecnn import bench, verify
from edgecnn.core import manifest
from edgecnn.deploy import bundle
from edgecnn.testing import BudgetError, assert_parity, open_build

pytest_plugins = ["pytester"]
EXAMPLE = ROOT / "examples/ci/test_model.py"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """edgecnn installed into a folder (no dependencies: the environment has them) from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("installed")
    src = tmp / "src"
    shutil.copytree(ROOT / "edgecnn", src / "edgecnn", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", tmp / "site", src], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return tmp / "site"


@pytest.fixture
def app(pytester, installed, monkeypatch):
    """An application repository whose tests run in a fresh pytest process with edgecnn installed."""
    monkeypatch.setenv("PYTHONPATH", str(installed))
    monkeypatch.delenv("EDGECNN_BUILD", raising=False)
    return pytester


@pytest.fixture(scope="module")
def ort_build(lenet_builds, tmp_path_factory):
    """The ONNX Runtime build, verified and benched (so its bundle carries both summaries), and its bundle."""
    build = shutil.copytree(lenet_builds["onnxruntime-cpu"], tmp_path_factory.mktemp("app") / "ort")
    verify.verify(build, data="test")
    bench.bench(build, runs=20, warmup=2, plot=False)
    return build, bundle.pack(build)


@pytest.fixture(scope="module")
def broken_build(lenet_builds, tmp_path_factory):
    """The ONNX Runtime build with its first convolution's weights scaled (hashes refreshed): a wrong model."""
    build = shutil.copytree(lenet_builds["onnxruntime-cpu"], tmp_path_factory.mktemp("broken") / "ort")
    model = onnx.load(build / "model.onnx")
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    array = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, build / "model.onnx")
    manifest.update(build)
    return build


@pytest.mark.parametrize("kind", ["build directory", "bundle"])
def test_the_readme_example_passes(app, ort_build, kind):
    """examples/ci/test_model.py (the README's) on a build and on its bundle: parity, latency, accuracy."""
    target = ort_build[0] if kind == "build directory" else ort_build[1]
    # its p99 budget widened: a shared 2-core test machine's tail latency is no budget (p99 0.02 ms went 5.3 ms)
    example = EXAMPLE.read_text()
    assert "p99_ms=5.0" in example
    app.makepyfile(test_model=example.replace("p99_ms=5.0", "p99_ms=1000.0"))
    result = app.runpytest_subprocess("--edgecnn-build", str(target), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"edgecnn build: {target}"])
    assert not list(ort_build[0].glob("verify.json.*"))  # nothing was written into the given build


def test_a_broken_build_fails_parity_with_its_table(app, broken_build):
    app.makepyfile(test_model="""
        from edgecnn.testing import assert_parity

        def test_parity(edgecnn_build):
            assert_parity(edgecnn_build, against="torch", limit=64)
    """)
    result = app.runpytest_subprocess("--edgecnn-build", str(broken_build), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "BudgetError: lenet5 onnxruntime (onnxruntime-cpu, fp32): parity failed vs torch on logits:" in out
    assert "first divergent node" in out
    result.stdout.fnmatch_lines(["*parity: onnxruntime (onnxruntime-cpu, fp32) vs torch on idx:test x64*",
                                 "*max abs error*", "*result*FAIL*"])
    assert manifest.read(broken_build).get("verify") is None  # the scratch copy was verified, not the build


def test_a_latency_budget_failure_shows_the_latency_table(app, lenet_builds):
    app.makepyfile(test_model="""
        from edgecnn.testing import assert_latency

        def test_latency(edgecnn_build):
            assert_latency(edgecnn_build, p99_ms=0.0001, max_ratio={"onnxruntime": 1000}, runs=20, warmup=2)
    """)
    result = app.runpytest_subprocess("--edgecnn-build", str(lenet_builds["host"]), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "BudgetError: lenet5 tvm (host, fp32): latency budget not met: p99 at batch 1 " in out
    assert " ms > 0.0001 ms" in out
    result.stdout.fnmatch_lines(["*latency: lenet5 tvm (host, fp32)*", "*p99 at batch 1*<= 0.0001 ms*FAIL*",
                                 "*p50 / onnxruntime's p50*<= 1000x*pass*measured here, same run*",
                                 "*bench: lenet5 tvm (host, fp32)*", "*onnxruntime*", "*device (tvm): on *"])


def test_without_a_build_the_fixture_says_how(app):
    app.makepyfile(test_model="def test_needs_a_build(edgecnn_build):\n    pass\n")
    result = app.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no edgecnn build to test: pass --edgecnn-build PATH*"])
    result = app.runpytest_subprocess("--edgecnn-build", "/nonexistent/build", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*--edgecnn-build /nonexistent/build: /nonexistent/build does not exist*"])


def test_a_bundle_is_held_to_what_it_recorded(ort_build):
    """A bundle has no reference model beside it: parity is what edgecnn verify recorded, checked against the
    budget given here, and the table says where the numbers come from."""
    with open_build(ort_build[1]) as b:
        assert b.bundle and b.manifest["verify"]["passed"]
        assert assert_parity(b, atol=1e-3)["passed"]
        with pytest.raises(BudgetError, match=r"parity failed vs torch: max abs error .* > 1e-12") as e:
            assert_parity(b, atol=1e-12)
        assert "recorded in the bundle by edgecnn verify" in str(e.value)
        with pytest.raises(BudgetError, match="measured against torch, not onnxruntime"):
            assert_parity(b, against="onnxruntime")


def test_accuracy_on_given_images_preprocesses_as_the_manifest_says(tmp_path):
    """(images, labels) from an application go through data.preprocess, as verify and the runtime do: an NHWC
    model with a 3-value mean, a scale and BGR channels (a copy of the normalization once broke on these)."""
    import numpy as np
    import onnxruntime as ort
    from foreign_models import keras_nhwc

    from edgecnn import compiler
    from edgecnn.testing import assert_accuracy

    path = keras_nhwc(tmp_path / "keras.onnx")
    given = {"scale": "1/127.5", "mean": [0.9, 1.0, 1.1], "std": [1.0, 0.9, 0.8], "channel_order": "bgr"}
    build = compiler.compile_model(path, "onnxruntime-cpu", out=tmp_path / "ort", given=given)
    pixels = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)  # N x H x W x C, RGB
    x = (pixels[..., ::-1] / 127.5 - np.array([0.9, 1.0, 1.1])) / np.array([1.0, 0.9, 0.8])
    want = ort.InferenceSession(str(path)).run(None, {"input_1": x.astype(np.float32)})[0].argmax(1)
    assert assert_accuracy(build, 100.0, data=(pixels, want)) == 100.0
    assert assert_accuracy(build, 100.0, data=(pixels.transpose(0, 3, 1, 2), want)) == 100.0  # N x C x H x W
    with pytest.raises(Exception, match="uint8"):
        assert_accuracy(build, 0.0, data=(pixels.astype(np.float32), want))
