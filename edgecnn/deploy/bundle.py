"""The deployable bundle: one .tar.gz an application loads (Python: edgecnn.runtime; C++: examples/cpp/).

Members, all at the top level and all regular files:
    manifest.json   format "edgecnn.bundle", version 1: the build manifest's facts (model, labels, input
                    spec and normalization, outputs, target, precision, artifact, tools, verify and bench
                    summaries) with "files": the sha256 of every other member
    README.md       for the app developer: what goes in, what comes out, how it was measured
    the artifact    model.so (TVM), model.onnx (ONNX Runtime), model.engine (TensorRT), ...

unpack() refuses links, devices, absolute paths and '..' in member names, members the manifest does not
list, and any sha256 mismatch, before anything is loaded. Only this package writes and reads the format;
a reader refuses a format name or version it does not know (like llm.c's magic + version header).
This module needs only the standard library: the Python runtime uses it without torch.
"""

import datetime
import io
import json
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_dir, atomic_file, sha256

FORMAT, VERSION = "edgecnn.bundle", 1
SUFFIX = ".edgecnn.tar.gz"
# build-manifest sections a bundle carries (the build's own file list and local paths stay behind)
CARRIED = ("model", "recipe", "labels", "input", "outputs", "data", "target", "backend", "precision", "artifact",
           "tools", "host", "verify", "bench")


def artifact_files(man: dict) -> list[str]:
    art = man["artifact"]
    return [art["file"], *art.get("files", [])]


def default_out(build_dir: Path) -> Path:
    return build_dir.parent / f"{build_dir.name}{SUFFIX}"


def bundle_manifest(build_man: dict, hashes: dict) -> dict:
    from edgecnn import __version__

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"format": FORMAT, "version": VERSION, "created": now, "edgecnn": __version__,
            "built": build_man.get("created"), **{k: build_man[k] for k in CARRIED if k in build_man},
            "source": {k: v for k, v in build_man.get("source", {}).items() if k.endswith("sha256")},
            "files": hashes}


def pack(build_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write BUILD_DIR's artifact, a bundle manifest and a README into one .tar.gz (atomically)."""
    from edgecnn.core import manifest as manifest_mod

    build_dir = Path(build_dir)
    build_man = manifest_mod.read(build_dir)
    names = artifact_files(build_man)
    missing = [n for n in names if n not in build_man["files"]]
    if missing:
        raise EdgecnnError(f"{build_dir}: artifact file {missing[0]} is not in manifest.json: recompile the build")
    hashes = {name: build_man["files"][name] for name in names}
    out = Path(out) if out else default_out(build_dir)
    text = readme({**build_man, "files": hashes}, out.name).encode()
    man = bundle_manifest(build_man, {**hashes, "README.md": _sha256_bytes(text)})
    with atomic_file(out) as tmp, tarfile.open(tmp, "w:gz") as tar:
        _add_bytes(tar, "manifest.json", (json.dumps(man, indent=2) + "\n").encode())
        _add_bytes(tar, "README.md", text)
        for name in names:
            with open(build_dir / name, "rb") as f:
                _add_file(tar, name, f, (build_dir / name).stat().st_size)
    return out


def readme(man: dict, bundle_name: str = "model.edgecnn.tar.gz") -> str:
    """README.md for the app developer: input, preprocessing, outputs, labels, measurements, files, and a
    Python snippet that runs as written beside the bundle (tests/test_readme.py runs it)."""
    from edgecnn.data import preprocess

    inp = man["input"]
    out = next((o for o in man["outputs"] if o.get("classes")), man["outputs"][0])
    channels, height, width = preprocess.geometry(inp)
    labels = man.get("labels") or []
    probabilities = out.get("scores") == "probabilities"
    lines = [f"# {man.get('model', {}).get('name', 'model')}: {man['target']['name']} ({man['precision']}), "
             f"an edgecnn bundle", "",
             f"Backend {man['backend']} ({', '.join(f'{k} {v}' for k, v in man.get('tools', {}).items())}).", "",
             "## Input", "",
             f"One {inp.get('dtype', 'float32')} tensor `{inp['name']}`, {inp.get('layout', 'NCHW')} {inp['shape']}"
             f"{' (that batch only)' if isinstance(inp['shape'][0], int) else ''}, from uint8 pixels "
             f"({'greyscale' if channels == 1 else 'RGB'}, resized to {height}x{width}):",
             "", f"    {preprocess.formula(inp)}",
             "", "## Output", "", f"`{out['name']}` {out['shape']}: one "
             f"{'probability (a Softmax head)' if probabilities else 'logit (softmax gives probabilities)'} "
             "per class. Labels by index:", ""]
    lines += [f"{i}. {name}" for i, name in enumerate(labels[:20])]
    if len(labels) > 20:
        lines.append(f"... {len(labels)} in all: manifest.json `labels`")
    lines += ["", "## Measured", "", *_measured(man), "", "## Files (sha256, also in manifest.json)", ""]
    lines += [f"    {digest}  {name}" for name, digest in man["files"].items()]
    lines += ["", "## Use", "", "Python (numpy, Pillow and the backend's runtime; no torch), beside this bundle "
              "and an image `image.png`:", "", "```python", "import edgecnn.runtime", "",
              f"model = edgecnn.runtime.load({bundle_name!r})", "best = model.predict('image.png')[0]  # top-5, best first",
              "print(best.label, best.score)", "```", "",
              "Unpack with `edgecnn bundle --unpack BUNDLE -o DIR`: it refuses links and paths leaving DIR and "
              "checks every sha256. C++ applications: examples/cpp/ in the edgecnn repository.", ""]
    return "\n".join(lines)


def _measured(man: dict) -> list[str]:
    out = []
    v = man.get("verify")
    if v:
        nan = float("nan")
        out.append(f"- parity vs {v['against']} on {v['data']}{' (partial)' if v.get('partial') else ''}: "
                   f"{'pass' if v['passed'] else 'FAIL'}, max abs error "
                   f"{v.get('max_abs', nan):.3g}, top-1 agreement {v.get('top1_agreement', nan):.2f}%")
        if v.get("top1_candidate") is not None:
            out.append(f"- top-1 accuracy of this build: {v['top1_candidate']:.2f}% on {v['data']}")
    b = man.get("bench")
    if b:
        for batch, s in b["results"][b["backend"]]["batches"].items():
            out.append(f"- latency at batch {batch}: p50 {s['p50_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms on "
                       f"{b['cpu']} with {b['settings']['threads']} threads ({s['runs']} runs)")
    return out or ["- nothing yet: run edgecnn verify and edgecnn bench before edgecnn bundle"]


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    _add_file(tar, name, io.BytesIO(data), len(data))


def _add_file(tar: tarfile.TarFile, name: str, fileobj, size: int) -> None:
    """A regular file, uid/gid 0 and mode 644 whatever the build's files had."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    info.mtime = int(datetime.datetime.now().timestamp())
    tar.addfile(info, fileobj)


def _check_member(m: tarfile.TarInfo, bundle: Path) -> None:
    path = PurePosixPath(m.name)
    if not m.isfile():
        kind = "a symbolic link" if m.issym() else "a hard link" if m.islnk() else "a directory" \
            if m.isdir() else "a special file"
        raise EdgecnnError(f"{bundle}: member '{m.name}' is {kind}; a bundle holds regular files only "
                           "(refused: links can point outside the folder it is unpacked into)")
    if path.is_absolute() or ".." in path.parts or "\\" in m.name or not m.name or path.as_posix() != m.name:
        raise EdgecnnError(f"{bundle}: member name '{m.name}' is absolute or leaves the bundle folder "
                           "(path traversal): refused")


def unpack(bundle: str | Path, dest: str | Path) -> dict:
    """Check and unpack a bundle into the new folder `dest`; return its manifest. Nothing is left on failure."""
    bundle, dest = Path(bundle), Path(dest)
    if dest.exists():
        raise EdgecnnError(f"{dest} already exists: unpack a bundle into a new folder")
    try:
        with tarfile.open(bundle, "r:gz") as tar, atomic_dir(dest) as tmp:
            members = tar.getmembers()
            names = [m.name for m in members]
            for m in members:
                _check_member(m, bundle)
            if len(set(names)) != len(names):
                raise EdgecnnError(f"{bundle}: a member name appears twice: refused")
            for m in members:
                (tmp / m.name).parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(tmp / m.name, "xb") as dst:
                    shutil.copyfileobj(src, dst)
            return read(tmp, bundle, names)
    except FileNotFoundError:
        raise EdgecnnError(f"bundle not found: {bundle}") from None
    except (tarfile.TarError, zlib.error, EOFError, OSError) as e:
        raise EdgecnnError(f"{bundle} is not a readable bundle (corrupt or truncated: {e}): "
                           "copy it again or re-run edgecnn bundle") from None


def read(folder: str | Path, origin: str | Path | None = None, members: list[str] | None = None) -> dict:
    """Validate an unpacked bundle: known format and version, every listed file present with its sha256."""
    folder, origin = Path(folder), origin or folder
    try:
        man = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        raise EdgecnnError(f"{origin} is not an edgecnn bundle (no manifest.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgecnnError(f"{origin}: manifest.json is corrupt ({e}): re-run edgecnn bundle") from None
    fmt = man.get("format") if isinstance(man, dict) else None
    if fmt != FORMAT:
        raise EdgecnnError(f"{origin} is not an edgecnn bundle (format {fmt!r}): make one with "
                           "edgecnn bundle BUILD_DIR")
    if man.get("version") != VERSION:
        raise EdgecnnError(f"{origin}: bundle version {man.get('version')} is not supported: this edgecnn "
                           f"reads {FORMAT} version {VERSION} (use the edgecnn that made it, or re-bundle)")
    files = man.get("files") or {}
    for name in members or []:
        if name != "manifest.json" and name not in files:
            raise EdgecnnError(f"{origin}: member '{name}' is not listed in manifest.json: refused")
    for name, digest in files.items():
        _check_member(tarfile.TarInfo(name), origin)  # a listed name must be safe too
        f = folder / name
        if not f.is_file() or sha256(f) != digest:
            raise EdgecnnError(f"{origin}: '{name}' is missing or its sha256 does not match manifest.json "
                               "(the bundle was modified or damaged): refused")
    return man
