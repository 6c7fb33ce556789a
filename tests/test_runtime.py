import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from edgecnn.deploy import bundle, runtime
from edgecnn.models import checkpoint
from edgecnn.data import load_idx_split, normalize
from edgecnn.core.errors import EdgecnnError

TARGETS = ("host", "onnxruntime-cpu")


@pytest.fixture(scope="module")
def bundles(lenet_builds, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bundles")
    return {t: bundle.pack(lenet_builds[t], root / f"{t}.edgecnn.tar.gz") for t in TARGETS}


@pytest.fixture(scope="module")
def samples(tiny_idx, lenet_run, tmp_path_factory):
    """16 test images (uint8 N x 1 x 28 x 28), their PNG files, and PyTorch's logits for them."""
    import torch
    from PIL import Image

    images = load_idx_split(tiny_idx, "test").images[:16]
    root = tmp_path_factory.mktemp("pngs")
    paths = [root / f"{i}.png" for i in range(len(images))]
    for img, path in zip(images, paths):
        Image.fromarray(img[0]).save(path)
    model, spec = checkpoint.load(lenet_run)
    with torch.inference_mode():
        logits = model(torch.from_numpy(normalize(images, spec["input"]["mean"], spec["input"]["std"])))
    return images, paths, logits.numpy()


@pytest.mark.parametrize("target", TARGETS)
def test_predict_matches_pytorch(bundles, samples, target):
    images, paths, logits = samples
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    with runtime.load(bundles[target]) as model:
        np.testing.assert_allclose(model.logits(images), logits, atol=1e-4)
        preds = model.predict(images, k=3)
        assert [p.indices for p in preds] == np.argsort(-logits, 1)[:, :3].tolist()
        assert [p.label for p in preds] == [str(i) for i in logits.argmax(1)]
        np.testing.assert_allclose([p.scores for p in preds], -np.sort(-probs, 1)[:, :3], atol=1e-5)
        same = [paths[3:4], paths[3], str(paths[3]), images[3, 0], images[3].transpose(1, 2, 0),
                images[3:4].transpose(0, 2, 3, 1), [images[3, 0]]]
        for x in same:
            np.testing.assert_allclose(model.logits(x), logits[3:4], atol=1e-4)


def test_predict_input_errors(bundles, samples):
    images = samples[0]
    with runtime.load(bundles["onnxruntime-cpu"]) as model:
        bad = {"must be uint8 pixels": images.astype(np.float32), "takes 1-channel images, got 3 channels":
               np.zeros((2, 3, 28, 28), np.uint8), "square": np.zeros((28, 30), np.uint8),
               "cannot read an image array of shape \\[28\\]": np.zeros(28, np.uint8), "empty list": []}
        for match, x in bad.items():
            with pytest.raises(EdgecnnError, match=match):
                model.predict(x)
        assert model.predict(np.zeros((32, 32), np.uint8))[0].label  # resized like the training data


def test_load_refuses_a_tampered_bundle_before_loading(bundles, tmp_path):
    folder = tmp_path / "b"
    bundle.unpack(bundles["host"], folder)
    data = bytearray((folder / "model.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.so").write_bytes(bytes(data))
    with pytest.raises(EdgecnnError, match="'model.so' is missing or its sha256 does not match"):
        runtime.load(folder)


def test_example_classifies_files(bundles, samples):
    images, paths, logits = samples
    r = subprocess.run([sys.executable, ROOT / "examples/python/classify.py", bundles["host"], *paths[:4]],
                       capture_output=True, text=True, check=True)
    firsts = [line.split(": ")[1].split()[0] for line in r.stdout.splitlines()]
    assert firsts == [str(i) for i in logits[:4].argmax(1)]
    assert len((ROOT / "examples/python/classify.py").read_text().splitlines()) <= 10


# The runtime's promise: numpy, Pillow and the backend's runtime, never torch or a compiler. The check runs
# in this venv with every other dependency of edgecnn blocked from import (no venv to build, no download).
RUNTIME_DEPENDENCIES = {"numpy": "numpy", "pillow": "PIL", "onnxruntime": "onnxruntime"}
IMPORT_NAMES = {"pyyaml": "yaml"}

PREDICT = """
import importlib.abc, json, sys
BLOCKED = set(sys.argv[1].split(","))

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not a runtime dependency)", name=name)

sys.meta_path.insert(0, Blocked())
import numpy as np
import edgecnn.runtime
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch imported despite the block")
images = np.load(sys.argv[2])
out = {}
for path in sys.argv[3:]:
    with edgecnn.runtime.load(path) as model:
        out[path] = model.logits(images).tolist()
out["modules"] = sorted(m for m in ("torch", "onnx", "tvm", "onnxruntime") if m in sys.modules)
print(json.dumps(out))
"""


def blocked_modules() -> list[str]:
    """The import names of edgecnn's dependencies (its own and the host extra's, as installed) that the runtime
    must not need."""
    import re
    from importlib import metadata

    deps = [d for d in metadata.requires("edgecnn") if "extra" not in d or 'extra == "host"' in d]
    names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in deps]
    return [IMPORT_NAMES.get(n, n) for n in names if n not in RUNTIME_DEPENDENCIES]


def test_runtime_works_without_torch_or_a_compiler(bundles, samples, tmp_path):
    images = samples[0]
    np.save(tmp_path / "images.npy", images)
    paths = [str(bundles[t]) for t in TARGETS]
    blocked = blocked_modules()
    assert {"torch", "onnx", "yaml", "matplotlib"} <= set(blocked)
    r = subprocess.run([sys.executable, "-c", PREDICT, ",".join(blocked), tmp_path / "images.npy", *paths],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["modules"] == ["onnxruntime", "tvm"]
    for path, target in zip(paths, TARGETS):
        with runtime.load(bundles[target]) as model:
            np.testing.assert_allclose(out[path], model.logits(images), atol=1e-5)
