"""The Python runtime: load a bundle, classify images. Needs numpy, the backend's runtime and (for image
files or resizing) Pillow; never torch or a compiler.

    model = edgecnn.runtime.load("model.edgecnn.tar.gz")
    model.predict("shoe.png")[0].top   # [("Sneaker", 0.93), ("Sandal", 0.04), ...]
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn import backends
from edgecnn.deploy import bundle
from edgecnn.data import fit, load_image, preprocess
from edgecnn.core.errors import EdgecnnError


@dataclass
class Prediction:
    """The top-k classes of one image, best first; scores are softmax probabilities."""

    labels: list[str]
    scores: list[float]
    indices: list[int]

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def score(self) -> float:
        return self.scores[0]

    @property
    def top(self) -> list[tuple[str, float]]:
        return list(zip(self.labels, self.scores))


class Model:
    """A loaded bundle: `predict(images)` preprocesses as its manifest records and runs the artifact."""

    def __init__(self, folder: Path, manifest: dict, threads: int | None = None, keep=None):
        self.folder, self.manifest, self._keep = folder, manifest, keep  # keep: the temp dir, alive with us
        self.spec = manifest["input"]
        self.channels, self.height, self.width = preprocess.geometry(self.spec)
        self.scores = next((o for o in manifest["outputs"] if o.get("classes")), manifest["outputs"][0])
        count = self.scores.get("classes") or self.scores["shape"][-1]
        self.labels = manifest.get("labels") or [str(i) for i in range(count)]
        self.runner = backends.load_runner(folder, manifest, threads=threads)

    def preprocess(self, images) -> np.ndarray:
        """Image file path(s) or uint8 arrays (HxW, HxWxC, NCHW or NHWC), or a list of them -> the model's input
        (edgecnn.data.preprocess: channel order, scale, mean, std, layout, dtype, as the manifest records)."""
        items = [images] if isinstance(images, (str, Path, np.ndarray)) else list(images)
        if not items:
            raise EdgecnnError("predict() got an empty list of images")
        batch = np.concatenate([fit(self._as_nchw(i), self.height, self.channels) for i in items])
        return preprocess.preprocess(batch, self.spec)

    def _as_nchw(self, item) -> np.ndarray:
        if isinstance(item, (str, Path)):
            return load_image(item, self.height, self.channels)[None]
        return self._array_nchw(np.asarray(item))

    def _array_nchw(self, a: np.ndarray) -> np.ndarray:
        a = preprocess.pixels_nchw(a, self.channels)
        if a.shape[2] != a.shape[3]:
            raise EdgecnnError(f"images are {a.shape[2]}x{a.shape[3]}: the model takes square "
                               f"{self.height}x{self.width} images; crop them first")
        return a

    def logits(self, images) -> np.ndarray:
        """The class scores, N x classes: logits, or probabilities for a model with a Softmax head."""
        out = self.runner.run(self.preprocess(images))
        return preprocess.class_scores(out.get(self.scores["name"], next(iter(out.values()))))

    def predict(self, images, k: int = 5) -> list[Prediction]:
        """Top-k (label, probability) for each image, in input order."""
        p = self.logits(images).astype(np.float64)
        if self.scores.get("scores") != "probabilities":
            p = np.exp(p - p.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
        k = min(k, p.shape[1])
        order = np.argsort(-p, axis=1, kind="stable")[:, :k]
        return [Prediction([self.labels[i] for i in row], [float(q[i]) for i in row], [int(i) for i in row])
                for row, q in zip(order, p)]

    def close(self) -> None:
        self.runner.close()
        if self._keep is not None:
            self._keep.cleanup()
            self._keep = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load(path: str | Path, threads: int | None = None) -> Model:
    """A bundle (.edgecnn.tar.gz, checked and unpacked to a temporary folder) or an unpacked bundle folder."""
    path = Path(path)
    if path.is_dir():
        return Model(path, bundle.read(path), threads)
    tmp = tempfile.TemporaryDirectory(prefix="edgecnn-bundle-")
    try:
        folder = Path(tmp.name) / "bundle"
        return Model(folder, bundle.unpack(path, folder), threads, keep=tmp)
    except BaseException:
        tmp.cleanup()
        raise
