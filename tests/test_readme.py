"""What the READMEs say is what happens: their shell and Python blocks run as written, in order, in a
temporary folder; a block that cannot run here carries a visible marker saying why and what stands in."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION, ROOT, needs_fashion

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARKER = "*README test: "  # a visible paragraph right before a block: how the README test treats it
BIN = Path(sys.executable).parent  # edgecnn and python of this environment, as `source .venv/bin/activate` gives


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


def own_model_files(folder: Path) -> None:
    """What the README's "Your own model" block names (its marker lists them)."""
    import torch
    from foreign_models import caffe_zoo, keras_nhwc, make_tiny_resnet, squeezenet_like
    from PIL import Image

    squeezenet_like(folder / "model.onnx", size=224, classes=3)  # no edgecnn metadata: a model from elsewhere
    labels = ["cat", "dog", "bird"]
    (folder / "synset.txt").write_text("\n".join(labels) + "\n")
    rng = np.random.default_rng(0)
    for split, n in (("val", 3), ("calib", 6)):  # calibration takes at least 16 images
        for k, name in enumerate(labels):
            (folder / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(60 + 70 * k, 30, (224, 224, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / split / name / f"{i}.jpg")
    keras_nhwc(folder / "keras.onnx", size=224)
    caffe_zoo(folder / "caffenet.onnx")
    (folder / "mypackage").mkdir()
    (folder / "mypackage" / "__init__.py").write_text("")
    (folder / "mypackage" / "nets.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\nfrom foreign_models import make_tiny_resnet\n\n\n"
        "def build(classes=5):\n    return make_tiny_resnet(classes)\n")
    torch.save(make_tiny_resnet(5).state_dict(), folder / "best.pt")
    (folder / "classes.txt").write_text("\n".join(f"class{k}" for k in range(5)) + "\n")


def venv(dest: Path) -> None:
    """dest as this environment's venv, with an activate script naming this environment (a venv copied from
    elsewhere keeps the original's path in its activate script)."""
    real = Path(sys.prefix)
    (dest / "bin").mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != "bin":
            (dest / entry.name).symlink_to(entry)
    for entry in (real / "bin").iterdir():
        if entry.name != "activate":
            (dest / "bin" / entry.name).symlink_to(entry)
    script = re.sub(r"^VIRTUAL_ENV=.*$", f"VIRTUAL_ENV={str(real)!r}", (real / "bin" / "activate").read_text(),
                    count=1, flags=re.M)
    (dest / "bin" / "activate").write_text(script)


def checkout(tmp_path: Path) -> Path:
    """A folder like a fresh clone after `make test`: the README's inputs (recipes, targets, examples), .venv
    (this environment) and .cache/aarch64-tvm (make test-tools)."""
    folder = tmp_path / "clone"
    for name in ("recipes", "targets", "examples"):
        shutil.copytree(ROOT / name, folder / name)
    venv(folder / ".venv")
    if (ROOT / ".cache" / "aarch64-tvm").is_dir():
        shutil.copytree(ROOT / ".cache" / "aarch64-tvm", folder / ".cache" / "aarch64-tvm")
    return folder


def run_readme(readme: Path, folder: Path, timings: list) -> None:
    """Every shell and Python block of `readme` in `folder`, in order, as written; marked blocks as marked."""
    import time

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(sys.prefix)}
    for kind, code, marker in marked_blocks(readme.read_text()):
        if marker and marker.startswith(MARKER + "not run"):
            continue
        if marker and "in a folder that holds" in marker and not (folder / "model.onnx").exists():
            own_model_files(folder)
        start = time.monotonic()
        cmd = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
        r = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
        timings.append((readme.relative_to(ROOT), code.splitlines()[0][:60], round(time.monotonic() - start, 1)))
        assert r.returncode == 0, f"{readme.relative_to(ROOT)}: this block failed:\n{code}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def test_every_block_says_how_it_runs():
    """A block the test cannot run says why and what stands in; the rest run (few are marked)."""
    for readme in (ROOT / "README.md", *sorted((ROOT / "examples").glob("*/README.md")),
                   *sorted((ROOT / "examples").glob("*/*/README.md"))):
        found = marked_blocks(readme.read_text())
        skipped = [m for _, _, m in found if m and m.startswith(MARKER + "not run")]
        assert all("stand" in m for m in skipped), (readme, skipped)
        assert len(skipped) <= len(found) // 2, readme


@pytest.mark.slow
@needs_fashion
def test_the_readmes_run_as_written(tmp_path):
    """README.md, then examples/*/README.md, in one folder like a fresh clone (CI: its own step in .ci/run)."""
    folder, timings = checkout(tmp_path), []
    try:
        run_readme(ROOT / "README.md", folder, timings)
        for readme in (*sorted((ROOT / "examples").glob("*/README.md")),
                       *sorted((ROOT / "examples").glob("*/*/README.md"))):
            run_readme(readme, folder, timings)
    finally:
        print("\n".join(f"{s:7.1f} s  {name}: {line}" for name, line, s in timings))
    assert (folder / "runs" / "lenet5-fashion" / "build-host-fp32.edgecnn.tar.gz").is_file()


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


@pytest.mark.parametrize("script", ["quant_table", "model_table", "demo", "int8"])
def test_a_benchmark_table_is_the_one_its_json_gives(script, monkeypatch):
    """README.md's block of benchmarks/SCRIPT.py is what the script writes from its results: a hand edit fails."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = __import__(script)
    text = (ROOT / "README.md").read_text()
    body = text.split(module.MARKERS[0], 1)[1].split(module.MARKERS[1], 1)[0]
    written = module.markdown(json.loads(module.RESULTS.read_text()))
    assert body.strip() == written.strip(), f"README.md's {module.MARKERS[0]} block differs from " \
        f"{module.RESULTS.name}: run benchmarks/{script}.py (--table-only rewrites the block from the JSON)"


def test_the_demo_block_measured_what_make_demo_runs(monkeypatch):
    """benchmarks/results/demo.json (README.md's demo block) timed the Makefile's demo command as it is now, and
    that took under 3 minutes of CPU: a changed demo line needs benchmarks/demo.py run again."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import demo

    measured = json.loads(demo.RESULTS.read_text())
    assert measured["command"] == "edgecnn " + " ".join(demo.demo_command()), "run benchmarks/demo.py"
    assert measured["cpu_s"] < 180


@pytest.mark.slow
def test_the_readme_torchrun_line_forms_two_nodes(tiny_recipe, tmp_path):
    """README's raw torchrun line, its two nodes started on this machine (HEAD: 127.0.0.1, one rank each, the
    tiny recipe): both join one rendezvous and the run completes."""
    import socket

    line = next(ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("torchrun "))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = (line.replace("HEAD:29400", f"127.0.0.1:{port}").replace("--nproc-per-node 8", "--nproc-per-node 1")
            .replace("recipes/mobilenet_v2-fashion.yaml", f"{tiny_recipe} --epochs 1 --out {tmp_path / 'run'}"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    nodes = [subprocess.Popen(["bash", "-c", line], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        outputs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert (tmp_path / "run" / "model.pt").is_file()
