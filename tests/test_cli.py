import pytest
from conftest import run_cli

from edgecnn.cli import COMMANDS


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    r = run_cli(name, "-h")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


def test_unknown_command_suggests():
    r = run_cli("trian")
    assert r.returncode == 2 and "did you mean 'train'" in r.stderr


def test_import_is_light():
    """`import edgecnn` and the CLI's entry point pull in no heavy backend."""
    import subprocess
    import sys

    code = "import sys, edgecnn, edgecnn.cli; print(sorted(m for m in ('tvm', 'tensorrt', 'onnxruntime', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
