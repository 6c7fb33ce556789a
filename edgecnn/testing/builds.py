"""What the budgets test: a build directory, or a bundle (.edgecnn.tar.gz, checked and unpacked)."""

import json
import shutil
import tempfile
from pathlib import Path

from edgecnn.core.errors import EdgecnnError


class Build:
    """An opened build or bundle: `folder` holds the artifact and `manifest`; `bundle` says which it is.

    Nothing is written into the given build: parity and latency run on scratch(), a copy."""

    def __init__(self, path: Path, folder: Path, manifest: dict, *, bundle: bool, tmp=None):
        self.path, self.folder, self.manifest, self.bundle = path, folder, manifest, bundle
        self._tmp, self._scratch = tmp, None

    @property
    def name(self) -> str:
        man = self.manifest
        return f"{man.get('model', {}).get('name')} {man['backend']} ({man['target']['name']}, {man['precision']})"

    def temp(self) -> Path:
        """A folder that lives as long as this Build."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgecnn-testing-")
        return Path(self._tmp.name)

    def scratch(self) -> Path:
        """A copy of the build directory to run verify and bench in (they record their results there)."""
        if self.bundle:
            raise EdgecnnError(f"{self.path} is a bundle: it has no build directory to copy")
        if self._scratch is None:
            self._scratch = shutil.copytree(self.folder, self.temp() / "build", symlinks=True)
        return self._scratch

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = self._scratch = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"Build({str(self.path)!r}: {self.name}{', bundle' if self.bundle else ''})"


def open_build(path) -> Build:
    """A Build from a build directory, a bundle file or an unpacked bundle folder (a Build is returned as is)."""
    if isinstance(path, Build):
        return path
    from edgecnn.deploy import bundle

    path = Path(path)
    if path.is_file():
        tmp = tempfile.TemporaryDirectory(prefix="edgecnn-testing-")
        try:
            folder = Path(tmp.name) / "bundle"
            return Build(path, folder, bundle.unpack(path, folder), bundle=True, tmp=tmp)
        except BaseException:
            tmp.cleanup()
            raise
    try:
        fmt = json.loads((path / "manifest.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt == bundle.FORMAT:
        return Build(path, path, bundle.read(path), bundle=True)
    from edgecnn.core import manifest as manifest_mod

    if not path.exists():
        raise EdgecnnError(f"{path} does not exist: give a build directory (edgecnn compile) or a bundle "
                           "(edgecnn bundle)")
    return Build(path, path, manifest_mod.read(path), bundle=False)


def load_runner(folder: str, threads: int | None = None):
    """The artifact's runner on this machine, from a build directory or an unpacked bundle (picklable)."""
    from edgecnn import backends

    return backends.load_runner(folder, open_build(folder).manifest, threads=threads)


def inputs(build: Build, data, limit: int | None):
    """(model inputs, labels or None, description): verify's data names, or (uint8 images, labels): pixels as
    the runtime takes them (N x C x H x W or N x H x W x C), preprocessed as the manifest's input section says
    (edgecnn.data.preprocess, as verify and the runtime do)."""
    from edgecnn import verify
    from edgecnn.data import preprocess

    if isinstance(data, str):
        return verify.load_inputs(build.manifest, data, limit)
    import numpy as np

    images, labels = data
    images, labels = np.asarray(images)[:limit], np.asarray(labels)[:limit]
    inp = build.manifest["input"]
    channels, height, width = preprocess.geometry(inp)
    pixels = preprocess.pixels_nchw(images, channels) if images.ndim == 4 else images
    if images.ndim != 4 or list(pixels.shape[1:]) != [channels, height, width]:
        raise EdgecnnError(f"data: give uint8 images N x {channels} x {height} x {width} (or N x {height} x "
                           f"{width} x {channels}) and their labels, not {images.dtype} {list(images.shape)}")
    return preprocess.preprocess(pixels, inp), labels, f"given images x{len(images)}"
