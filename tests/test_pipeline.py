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
    int8 = json.loads((tmp_path / "run" / "build-host-int8" / "manifest.json").read_text())["bench"]
    assert set(int8["results"]) == {"tvm", "onnxruntime", "onnxruntime int8", "fp32 build"}  # bench.baselines
    assert "ONNX Runtime int8" in r.stdout and "fp32 build" in r.stdout  # ORT's own int8 form, not the same Q/DQ


def test_p50_text_names_the_baselines():
    from edgecnn.pipeline import p50_text

    lat = {"p50_ms": 0.5, "onnxruntime_p50_ms": 1.0, "vs_onnxruntime": 0.5, "onnxruntime_label": "ONNX Runtime int8",
           "fp32_build_p50_ms": 0.4, "vs_fp32_build": 1.25}
    assert p50_text(lat) == "p50 0.500 ms (ONNX Runtime int8 1.000 ms: 0.50x; fp32 build 0.400 ms: 1.25x)"
