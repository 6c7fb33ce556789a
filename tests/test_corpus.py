"""The corpus of classifier graph patterns (tests/corpus_models.py): each compiles untuned for the host and
verifies against ONNX Runtime on the source ONNX (max abs <= 1e-4, every top-1 the same), and cross-compiles
for the Raspberry Pi 4 (`arm`: the aarch64 cross compiler; all but one also `slow`)."""

import json

import onnx
import pytest
from corpus_models import CORPUS

from edgecnn import compiler, verify
from edgecnn.backends.tvm import frontend, passes

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return {name: make(root / f"{name}.onnx") for name, make in CORPUS.items()}


@pytest.mark.parametrize("name", CORPUS)
def test_compiles_for_host_and_matches_onnxruntime(name, corpus, tmp_path):
    build = compiler.compile_model(corpus[name], "host", out=tmp_path / "host")
    report = verify.verify(build, data="random", limit=8)
    assert report["against"] == "onnxruntime" and report["passed"], report["failures"]
    (out,) = report["outputs"].values()
    assert out["max_abs"] <= 1e-4 and out["top1_agreement"] == 100.0, out
    assert json.loads((build / "manifest.json").read_text())["target"]["name"] == "host"


# one cross build in the default run; the rest are `slow` (5-11 s each on the loaded 2-core machine)
CROSS = [pytest.param(name, marks=() if name == "old-exporter" else pytest.mark.slow) for name in CORPUS]


@pytest.mark.arm
@pytest.mark.parametrize("name", CROSS)
def test_cross_compiles_for_rpi4(name, corpus, tmp_path):
    build = compiler.compile_model(corpus[name], "rpi4", out=tmp_path / "rpi4")
    man = json.loads((build / "manifest.json").read_text())
    assert man["target"]["name"] == "rpi4"
    so = next(build.glob("*.so"))
    assert so.read_bytes()[:4] == b"\x7fELF" and so.read_bytes()[18] == 183  # e_machine EM_AARCH64


@pytest.mark.parametrize("name", CORPUS)
def test_every_conv_runs_nhwc(name, corpus):
    """The layout rewrite carries every conv to NHWC: no region of the corpus falls back to NCHW."""
    model = frontend.frontend_model(corpus[name])
    mod = passes.to_nhwc(frontend.from_model(model, name))
    script = mod["main"].script()
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(corpus[name])).graph.node)
    assert script.count('data_layout="NHWC"') == convs and 'data_layout="NCHW"' not in script


def test_a_region_layout_inference_fails_on_stays_nchw(corpus):
    """Where ConvertLayout's inference fails (the frontend's N-ary Sum: a stacked 5-D tensor, without the
    rewrite that removes it), the ops on other ranks are lowered first and their region stays NCHW between
    transposes: the other convs still go NHWC, and the result is ONNX Runtime's."""
    import numpy as np
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgecnn.backends.tvm import build
    from edgecnn.compiler import targets

    path = corpus["old-exporter"]
    mod = frontend.from_model(frontend.frontend_model(path), "old-exporter")
    mod = relax.transform.CanonicalizeBindings()(relax.transform.DecomposeOpsForInference()(mod))  # as to_nhwc
    with pytest.raises(Exception, match="SLayout|out of bounds"):
        relax.transform.ConvertLayout(passes.NHWC)(mod)
    converted = passes.convert_layout(mod)
    script = converted["main"].script()
    assert "R.stack(" not in script and "call_tir(stack" in script and 'data_layout="NHWC"' in script
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    spec = build.resolve_target(targets.load("host"))
    vm = relax.VirtualMachine(tvm.compile(converted, target=tvm.target.Target(spec)), tvm.cpu())
    want = ort.InferenceSession(str(path)).run(None, {"data": x})[0]
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), want, atol=1e-5)
