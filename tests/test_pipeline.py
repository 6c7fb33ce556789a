import json

from conftest import run_cli


def test_run_chains_every_stage(tiny_recipe, tmp_path):
    r = run_cli("run", tiny_recipe, "--target", "host", "--out", tmp_path / "run", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "parity vs PyTorch" in r.stdout and "pass" in r.stdout
    build = tmp_path / "run" / "build-host-fp32"
    man = json.loads((build / "manifest.json").read_text())
    assert man["verify"]["passed"] and man["verify"]["top1_agreement"] == 100.0
    assert (tmp_path / "run" / "model.onnx").exists() and (tmp_path / "run" / "metrics.json").exists()
    assert "latency (host, batch 1)" in r.stdout and man["bench"]["results"]["tvm"]["batches"]["1"]["p50_ms"] > 0
    assert (tmp_path / "run" / "build-host-fp32.edgecnn.tar.gz").stat().st_size > 10_000
