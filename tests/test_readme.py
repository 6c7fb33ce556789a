"""What the READMEs say is what happens: their shell and Python blocks run as written, in order, in a
temporary folder; a block that cannot run here carries a visible marker saying why and what stands in."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARKER = "*README test: "  # a visible paragraph right before a block: how the README test treats it


def blocks(text: str, kinds=("bash", "python")) -> list[tuple[str, str]]:
    """(language, code) of the fenced blocks of a Markdown text, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text) if m.group(1) in kinds]


def marked_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, the marker paragraph before it or None) of the shell and Python blocks."""
    found = []
    for m in FENCE.finditer(text):
        if m.group(1) not in ("bash", "python"):
            continue
        before = text[:m.start()].rstrip().rsplit("\n\n", 1)[-1]
        found.append((m.group(1), m.group(2), " ".join(before.split()) if before.startswith(MARKER) else None))
    return found


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


def test_make_installs_the_cpu_torch_and_says_which(tmp_path):
    """`make torch` (the first step of make demo/test): PyTorch's CPU index where reachable, else the plain pin,
    with no long network wait; it prints which build it installed (here: the venv's, already installed)."""
    import shutil
    import time

    if not shutil.which("make"):
        import pytest

        pytest.skip("make is not installed")
    start = time.monotonic()
    r = subprocess.run(["make", "--no-print-directory", "torch", f"PY={sys.executable}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import torch

    build = f"the CUDA {torch.version.cuda} build" if torch.version.cuda else "the CPU build"
    assert f"torch {torch.__version__}: {build}" in r.stdout
    assert time.monotonic() - start < 120


def test_every_block_says_how_it_runs():
    """A block the test cannot run says why and what stands in; the rest run (few are marked)."""
    for readme in (ROOT / "README.md", *sorted((ROOT / "examples").glob("*/README.md")),
                   *sorted((ROOT / "examples").glob("*/*/README.md"))):
        found = marked_blocks(readme.read_text())
        skipped = [m for _, _, m in found if m and m.startswith(MARKER + "not run")]
        assert all("stand" in m for m in skipped), (readme, skipped)
        assert len(skipped) <= len(found) // 2, readme


def readme_table_flags() -> dict[str, set[str]]:
    """verb -> the flags README.md's command table shows for `edgecnn VERB ...`."""
    flags: dict[str, set[str]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("| `edgecnn "):
            continue
        for usage in re.findall(r"`(edgecnn [^`]*)`", line.split(" | ")[0]):
            verb = usage.split()[1]
            flags.setdefault(verb, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", usage))
    return flags


def test_help_texts_hold_the_flags_of_the_readme_table():
    """Every flag the README's command table shows is in that command's --help, and the other way round for
    the `--data` forms verify takes."""
    from click.testing import CliRunner

    from edgecnn.cli import cli

    table = readme_table_flags()
    assert len(table) >= 12
    for verb, flags in table.items():
        result = CliRunner().invoke(cli, [verb, "--help"], terminal_width=200)
        assert result.exit_code == 0, (verb, result.output)
        text = " ".join(result.output.split())
        missing = [f for f in sorted(flags) if f not in re.findall(r"--[a-z][a-z0-9-]*", text)]
        assert not missing, f"edgecnn {verb} --help lacks {missing}, which README.md's table shows"
    verify_help = " ".join(CliRunner().invoke(cli, ["verify", "--help"], terminal_width=200).output.split())
    assert all(form in verify_help for form in ("imagefolder:DIR", "idx:DIR", "npz:FILE"))


def test_no_readme_block_written_by_a_benchmark_is_empty():
    """The blocks benchmarks/*.py write between <!-- NAME:start --> and <!-- NAME:end --> hold their tables."""
    text = (ROOT / "README.md").read_text()
    names = re.findall(r"<!-- ([\w-]+):start -->", text)
    assert names
    for name in names:
        body = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
        assert body.strip(), f"README.md's {name} block is empty: run the benchmark script that writes it"
        writers = [p.name for p in (ROOT / "benchmarks").glob("*.py") if f"{name}:start" in p.read_text()]
        assert writers, f"no script in benchmarks/ writes README.md's {name} block"

