"""Fetch the TVM runtime for another platform (default: aarch64 Linux) to cross-build edgecnn-tvm-run.

    python examples/cpp/tvm/fetch_runtime.py --out .cache/aarch64-tvm

pip-downloads the apache-tvm and apache-tvm-ffi wheels of the same versions as this Python environment
(a model compiled by TVM X runs on TVM X's runtime) and unpacks what a C++ app needs:
OUT/lib/libtvm_runtime.so, OUT/lib/libtvm_ffi.so and OUT/include (the tvm-ffi headers).
Nothing happens when OUT already holds those versions.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

PACKAGES = ("apache-tvm", "apache-tvm-ffi")
MEMBERS = {"tvm/lib/libtvm_runtime.so": "lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so": "lib/libtvm_ffi.so"}
HEADERS = "tvm_ffi/include/"


def pins() -> list[str]:
    try:
        return [f"{name}=={metadata.version(name)}" for name in PACKAGES]
    except metadata.PackageNotFoundError as e:
        sys.exit(f"error: {e.name} is not installed here: pip install 'edgecnn[tvm]' first")


def unpack(wheel: Path, dest: Path) -> set[str]:
    """Extract the runtime libraries and headers a wheel holds; return the library names found."""
    found = set()
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name in MEMBERS:
                target = dest / MEMBERS[name]
                found.add(MEMBERS[name])
            elif name.startswith(HEADERS) and not name.endswith("/"):
                target = dest / "include" / name[len(HEADERS):]
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    return found


def fetch(out: Path, platform: str) -> None:
    stamp = f"{' '.join(pins())} {platform}\n"
    if (out / "VERSIONS").is_file() and (out / "VERSIONS").read_text() == stamp:
        print(f"{out}: {stamp.strip()} already there")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out.parent) as tmp:  # same file system: rename
        wheels, staged = Path(tmp) / "wheels", Path(tmp) / "runtime"
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                        "--platform", platform, "--python-version", py, "-d", str(wheels), *pins()], check=True)
        found = set().union(*(unpack(w, staged) for w in wheels.glob("*.whl")))
        if found != set(MEMBERS.values()):
            sys.exit(f"error: the {platform} wheels lack {sorted(set(MEMBERS.values()) - found)}")
        (staged / "VERSIONS").write_text(stamp)
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    print(f"{out}: unpacked the {platform} TVM runtime ({stamp.strip()})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/aarch64-tvm"))
    parser.add_argument("--platform", default="manylinux_2_28_aarch64", help="a pip --platform tag")
    args = parser.parse_args()
    fetch(args.out, args.platform)
