"""Atomic writes and checksums (no half-written artifact survives a failure), and reading the YAML and JSON
documents edgecnn writes and takes (one error line for a missing or broken one)."""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from edgecnn.core.errors import EdgecnnError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary sibling directory; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary path beside `path`; it is renamed onto `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a shipped file gets the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_document(path: str | Path, *, missing: str, fix: str = ""):
    """The content of a YAML (.yaml, .yml) or JSON file; one EdgecnnError line when it is missing (`missing`)
    or does not parse (where and why, then `fix`)."""
    import yaml

    path, tail = Path(path), f": {fix}" if fix else ""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EdgecnnError(missing) from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise EdgecnnError(f"{path} is corrupt ({e.msg} at line {e.lineno}){tail}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgecnnError(f"{path}: bad YAML{where}: {getattr(e, 'problem', e)}{tail}") from None
