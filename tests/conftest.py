import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path(os.environ.get("EDGECNN_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                                   reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")


def run_cli(*args, cwd=None, env=None, timeout=900):
    """Run `python -m edgecnn ARGS` in a subprocess; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "edgecnn", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def write_idx(path: Path, array: np.ndarray, compress=True) -> Path:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture(scope="session")
def tiny_idx(tmp_path_factory) -> Path:
    """An MNIST-format folder of 600 train / 200 test 28x28 images whose class is a bright square's position."""
    root = tmp_path_factory.mktemp("tiny_idx")
    rng = np.random.default_rng(0)
    for split, n, (img_name, lbl_name) in (("train", 600, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
                                            ("test", 200, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))):
        labels = rng.integers(0, 4, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            y, x = divmod(int(c), 2)
            images[i, 4 + 12 * y: 12 + 12 * y, 4 + 12 * x: 12 + 12 * x] = 230
        write_idx(root / (img_name + ".gz"), images)
        write_idx(root / (lbl_name + ".gz"), labels)
    return root


@pytest.fixture
def tiny_recipe(tiny_idx, tmp_path) -> Path:
    """A LeNet-5 recipe on `tiny_idx` that trains in a second."""
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
seed: 0
model: {{name: lenet5}}
data: {{dataset: idx, root: {tiny_idx}, val_size: 100, mean: [0.2], std: [0.3]}}
optim: {{lr: 0.01}}
schedule: {{epochs: 2, batch_size: 32}}
""")
    return path


@pytest.fixture(scope="session")
def has_tool():
    return lambda name: shutil.which(name) is not None
