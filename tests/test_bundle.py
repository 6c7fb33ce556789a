import io
import json
import shutil
import subprocess
import tarfile

import pytest
from conftest import ROOT, run_cli

from edgecnn import bench, verify
from edgecnn.deploy import bundle
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256


@pytest.fixture(scope="module")
def host_bundle(lenet_builds, tmp_path_factory):
    """A TVM host bundle of a build that was verified and benchmarked first."""
    build = shutil.copytree(lenet_builds["host"], tmp_path_factory.mktemp("bundle") / "build")
    verify.verify(build, "torch", data="test")
    bench.bench(build, runs=10, warmup=1, threads=1, plot=False)
    return bundle.pack(build)


def members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def repack(path, out, change=None, extra=()):
    """Copy of a bundle with members changed (name -> bytes) and extra TarInfo members added."""
    with tarfile.open(out, "w:gz") as tar:
        for name, data in {**members(path), **(change or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out


def test_bundle_carries_artifact_manifest_readme(host_bundle, lenet_builds):
    files = members(host_bundle)
    assert sorted(files) == ["README.md", "manifest.json", "model.so"]
    man = json.loads(files["manifest.json"])
    assert (man["format"], man["version"]) == ("edgecnn.bundle", 1)
    assert man["files"]["model.so"] == sha256(lenet_builds["host"] / "model.so")
    assert set(man["files"]) == {"model.so", "README.md"}
    assert man["labels"] == ["0", "1", "2", "3"] and man["input"]["mean"] == [0.2] and man["input"]["std"] == [0.3]
    assert man["target"]["name"] == "host" and man["precision"] == "fp32" and man["tools"]["apache-tvm"]
    assert man["verify"]["passed"] and man["verify"]["top1_agreement"] == 100.0
    assert man["bench"]["results"]["tvm"]["batches"]["1"]["runs"] == 10
    assert "/" not in json.dumps(man["source"])  # no local paths, only the sources' sha256
    readme = files["README.md"].decode()
    assert "x[c] = (pixel[c] / 255 - mean[c]) / std[c]" in readme and "top-1 agreement 100.00%" in readme
    assert "latency at batch 1: p50" in readme and man["files"]["model.so"] in readme


def test_unpack_checks_and_returns_manifest(host_bundle, tmp_path):
    man = bundle.unpack(host_bundle, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "manifest.json", "model.so"]
    assert bundle.read(tmp_path / "out") == man
    with pytest.raises(EdgecnnError, match="already exists: unpack a bundle into a new folder"):
        bundle.unpack(host_bundle, tmp_path / "out")


def refused(path, tmp_path, match):
    with pytest.raises(EdgecnnError, match=match):
        bundle.unpack(path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest.*"))  # nothing half-written


def test_changed_byte_in_a_member_is_refused(host_bundle, tmp_path):
    so = bytearray(members(host_bundle)["model.so"])
    so[len(so) // 2] ^= 0xFF
    bad = repack(host_bundle, tmp_path / "bad.tar.gz", {"model.so": bytes(so)})
    refused(bad, tmp_path, "'model.so' is missing or its sha256 does not match manifest.json")


def test_changed_byte_in_the_file_is_refused(host_bundle, tmp_path):
    raw = bytearray(host_bundle.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.tar.gz").write_bytes(bytes(raw))
    refused(tmp_path / "bad.tar.gz", tmp_path, "(corrupt or truncated|sha256 does not match)")


def link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("extra, match", [
    ((tarfile.TarInfo("../evil.txt"), b"x"), "member name '../evil.txt' is absolute or leaves the bundle folder"),
    ((tarfile.TarInfo("/tmp/evil.txt"), b"x"), "member name '/tmp/evil.txt' is absolute"),
    ((tarfile.TarInfo("sub/../../evil.txt"), b"x"), "leaves the bundle folder"),
    (link("passwd", "/etc/passwd", tarfile.SYMTYPE), "member 'passwd' is a symbolic link"),
    (link("inside.so", "model.so", tarfile.SYMTYPE), "member 'inside.so' is a symbolic link"),
    (link("hard", "../../etc/passwd", tarfile.LNKTYPE), "member 'hard' is a hard link"),
])
def test_path_traversal_and_links_are_refused(host_bundle, tmp_path, extra, match):
    info, data = extra
    if data:
        info.size = len(data)
    bad = repack(host_bundle, tmp_path / "bad.tar.gz", extra=[(info, data)])
    refused(bad, tmp_path, match)
    assert not (tmp_path / "evil.txt").exists()


def test_unlisted_member_is_refused(host_bundle, tmp_path):
    bad = repack(host_bundle, tmp_path / "bad.tar.gz", {"extra.so": b"\x7fELF"})
    refused(bad, tmp_path, "member 'extra.so' is not listed in manifest.json")


@pytest.mark.parametrize("change, match", [
    ({"version": 2}, "bundle version 2 is not supported: this edgecnn reads edgecnn.bundle version 1"),
    ({"format": "edgecnn.build"}, "is not an edgecnn bundle \\(format 'edgecnn.build'\\)"),
])
def test_unknown_format_or_version_is_refused(host_bundle, tmp_path, change, match):
    man = {**json.loads(members(host_bundle)["manifest.json"]), **change}
    bad = repack(host_bundle, tmp_path / "bad.tar.gz", {"manifest.json": json.dumps(man).encode()})
    refused(bad, tmp_path, match)


def test_not_a_bundle(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"hello")
    refused(tmp_path / "x.tar.gz", tmp_path, "is not a readable bundle")
    refused(tmp_path / "missing.tar.gz", tmp_path, "bundle not found")


def test_cli_bundle_and_unpack(lenet_builds, tmp_path):
    r = run_cli("bundle", lenet_builds["onnxruntime-cpu"], "-o", tmp_path / "m.edgecnn.tar.gz")
    assert r.returncode == 0, r.stderr
    assert sorted(members(tmp_path / "m.edgecnn.tar.gz")) == ["README.md", "manifest.json", "model.onnx"]
    r = run_cli("bundle", "--unpack", tmp_path / "m.edgecnn.tar.gz")
    assert r.returncode == 0 and "every sha256 checked" in r.stdout
    assert (tmp_path / "m.unpacked" / "model.onnx").exists()


def test_cli_errors_are_one_line_and_leave_nothing(lenet_builds, tmp_path):
    build = shutil.copytree(lenet_builds["onnxruntime-cpu"], tmp_path / "b")
    (build / "model.onnx").write_bytes(b"changed")
    r = run_cli("bundle", build, "-o", tmp_path / "x.edgecnn.tar.gz")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "sha256 mismatch" in r.stderr
    assert list(tmp_path.glob("*.tar.gz")) == [] and list(tmp_path.glob(".x.*")) == []
    r = run_cli("bundle", "--unpack", tmp_path / "none.tar.gz")
    assert r.returncode == 1 and r.stderr == f"error: bundle not found: {tmp_path / 'none.tar.gz'}\n"


@pytest.fixture(scope="module")
def tvm_app(tmp_path_factory):
    """examples/cpp/tvm built for the host with CMake against this environment's TVM wheels."""
    import sys

    if not (shutil.which("cmake") and shutil.which("c++")):
        pytest.skip("cmake and a C++ compiler are needed: apt-get install cmake g++")
    out = tmp_path_factory.mktemp("cpp-host")
    for cmd in (["cmake", "-S", ROOT / "examples/cpp/tvm", "-B", out, f"-DPython3_EXECUTABLE={sys.executable}"],
                ["cmake", "--build", out, "-j2"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return out / "edgecnn-tvm-run"


def test_cpp_host_app_matches_python_runtime(tvm_app, host_bundle, tiny_idx, tmp_path):
    """The C++ app on an unpacked bundle prints the Python runtime's top-1 and the same logits."""
    import gzip

    import numpy as np
    from PIL import Image

    from edgecnn.deploy import runtime
    from edgecnn.data import read_idx

    folder = tmp_path / "bundle"
    bundle.unpack(host_bundle, folder)
    idx = tmp_path / "t10k-images-idx3-ubyte"
    idx.write_bytes(gzip.decompress((tiny_idx / "t10k-images-idx3-ubyte.gz").read_bytes()))
    images = read_idx(idx)[:8, None]
    Image.fromarray(images[5, 0]).save(tmp_path / "five.pgm")
    r = subprocess.run([tvm_app, folder, "--idx", idx, "--count", "8", "--top", "1", "--dump", tmp_path / "z.f32"],
                       capture_output=True, text=True, check=True)
    cpp_top1 = [int(line.split()[2]) for line in r.stdout.splitlines() if line.strip().startswith("#1")]
    with runtime.load(folder) as model:
        assert cpp_top1 == [p.indices[0] for p in model.predict(images)]
        np.testing.assert_allclose(np.fromfile(tmp_path / "z.f32", np.float32).reshape(8, -1),
                                   model.logits(images), atol=1e-5)
        one = subprocess.run([tvm_app, folder, "--image", tmp_path / "five.pgm"], capture_output=True, text=True,
                             check=True).stdout
        assert f"#1 class {model.predict(tmp_path / 'five.pgm')[0].indices[0]} " in one


def test_cli_unpack_counts_every_member(host_bundle, tmp_path):
    r = run_cli("bundle", "--unpack", host_bundle, "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "3 files (manifest.json, model.so, README.md)" in r.stdout
