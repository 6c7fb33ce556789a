"""What the READMEs say is what happens: their shell and Python blocks run as written, in order, in a
temporary folder; a block that cannot run here carries a visible marker saying why and what stands in."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import ROOT

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(text: str, kinds=("bash", "python")) -> list[tuple[str, str]]:
    """(language, code) of the fenced blocks of a Markdown text, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text) if m.group(1) in kinds]


def run_python(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_bundle_readme_runs_as_written(lenet_builds, tmp_path):
    """The Python snippet of a bundle's own README.md, beside the bundle and an image."""
    from PIL import Image

    from edgecnn.deploy import bundle

    path = bundle.pack(lenet_builds["onnxruntime-cpu"], tmp_path / "lenet.edgecnn.tar.gz")
    readme = bundle.unpack(path, tmp_path / "unpacked") and (tmp_path / "unpacked" / "README.md").read_text()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "image.png")
    code = blocks(readme)
    assert [kind for kind, _ in code] == ["python"]
    r = run_python(code[0][1], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    label, score = r.stdout.split()
    assert label in ("0", "1", "2", "3") and 0 < float(score) <= 1
