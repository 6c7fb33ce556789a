"""manifest.json of a build directory: what was compiled, how, with which tools, and every file's sha256."""

import datetime
import json
import platform
from pathlib import Path

from edgecnn.backends import tool_versions
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256, write_json

FORMAT, VERSION = "edgecnn.build", 1
def file_hashes(build_dir: Path) -> dict:
    return {str(p.relative_to(build_dir)): sha256(p) for p in sorted(build_dir.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def write(build_dir: Path, manifest: dict) -> dict:
    manifest = {"format": FORMAT, "version": VERSION,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "tools": tool_versions(), "host": {"machine": platform.machine(),
                                                               "system": platform.system()},
                "files": file_hashes(build_dir)}
    write_json(build_dir / "manifest.json", manifest)
    return manifest


def update(build_dir: Path, **sections) -> dict:
    """Add sections (verify, bench, ...) to an existing manifest and refresh the file hashes."""
    manifest = read(build_dir, check_files=False)
    manifest.update(sections)
    manifest["files"] = file_hashes(Path(build_dir))
    write_json(Path(build_dir) / "manifest.json", manifest)
    return manifest


def read(build_dir: str | Path, check_files: bool = True) -> dict:
    """Load and validate a manifest; with check_files, every listed file's sha256 must match."""
    build_dir = Path(build_dir)
    path = build_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgecnnError(f"{build_dir} is not a build directory (no manifest.json): run edgecnn compile") from None
    except json.JSONDecodeError as e:
        raise EdgecnnError(f"{path} is corrupt ({e.msg} at line {e.lineno}): recompile") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise EdgecnnError(f"{path}: unsupported manifest {manifest.get('format')} v{manifest.get('version')} "
                           f"(this edgecnn reads {FORMAT} v{VERSION})")
    if check_files:
        for name, digest in manifest.get("files", {}).items():
            f = build_dir / name
            if not f.is_file() or sha256(f) != digest:
                raise EdgecnnError(f"{f}: missing or sha256 mismatch with manifest.json: the build was "
                                   "modified or is incomplete; recompile it")
    return manifest
