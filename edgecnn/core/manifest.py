"""manifest.json of a build directory: what was compiled, how, with which tools, and every file's sha256."""

import datetime
import json
import os
import platform
from pathlib import Path

from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import read_document, sha256, write_json

FORMAT, VERSION = "edgecnn.build", 1
PRECISIONS = ("fp32", "fp16", "int8")
# what every reader of a manifest relies on: key -> type (a hand-edited manifest is checked against it)
SCHEMA = {"precision": str, "backend": str, "target": dict, "artifact": dict, "input": dict, "outputs": list,
          "files": dict}
NESTED = {("target", "name"): str, ("artifact", "file"): str, ("input", "shape"): list}


def recorded_path(path: str | Path, build_dir: Path) -> str:
    """A path as a manifest records it: relative to the build where it lives beside it (under the build's
    parent, e.g. ../model.pt), so a run folder moved or copied keeps pointing at its own files; else absolute."""
    path, build_dir = Path(path).resolve(), Path(build_dir).resolve()
    if path.is_relative_to(build_dir.parent):
        return os.path.relpath(path, build_dir)
    return str(path)


def source_path(build_dir: str | Path, value: str | None) -> Path | None:
    """A path the manifest records (recorded_path), as a path from here."""
    if not value:
        return None
    return Path(value) if Path(value).is_absolute() else Path(build_dir) / value


def file_hashes(build_dir: Path) -> dict:
    return {str(p.relative_to(build_dir)): sha256(p) for p in sorted(build_dir.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def write(build_dir: Path, manifest: dict, *, tools: dict) -> dict:
    """manifest.json for `build_dir`: `manifest` with the format, the time, `tools` (their versions), the host
    and every file's sha256."""
    manifest = {"format": FORMAT, "version": VERSION,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "tools": tools, "host": {"machine": platform.machine(),
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
    manifest = read_document(path, fix="recompile",
                             missing=f"{build_dir} is not a build directory (no manifest.json): run edgecnn compile")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise EdgecnnError(f"{path}: unsupported manifest {manifest.get('format')} v{manifest.get('version')} "
                           f"(this edgecnn reads {FORMAT} v{VERSION})")
    check_schema(manifest, path)
    if check_files:
        for name, digest in manifest.get("files", {}).items():
            f = build_dir / name
            if not f.is_file() or sha256(f) != digest:
                raise EdgecnnError(f"{f}: missing or sha256 mismatch with manifest.json: the build was "
                                   "modified or is incomplete; recompile it")
    return manifest


def check_schema(manifest: dict, path: Path) -> None:
    """One line naming the first missing or mistyped key of a (hand-edited) manifest."""
    fix = "the manifest was edited by hand or is damaged: recompile the build"
    if not isinstance(manifest, dict):
        raise EdgecnnError(f"{path}: a manifest is a JSON object, this is a {type(manifest).__name__}: {fix}")
    checks = [((key,), want, manifest.get(key)) for key, want in SCHEMA.items()]
    checks += [((a, b), want, manifest[a].get(b)) for (a, b), want in NESTED.items() if isinstance(manifest.get(a), dict)]
    for keys, want, value in checks:
        name = ".".join(keys)
        if value is None:
            raise EdgecnnError(f"{path}: '{name}' is missing: {fix}")
        if not isinstance(value, want):
            raise EdgecnnError(f"{path}: '{name}' should be a {want.__name__}, not {type(value).__name__} "
                               f"({json.dumps(value)[:40]}): {fix}")
    if manifest["precision"] not in PRECISIONS:
        raise EdgecnnError(f"{path}: precision '{manifest['precision']}' is not one of {', '.join(PRECISIONS)}: {fix}")
