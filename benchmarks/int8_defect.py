"""Does the int8 bar catch a defect? One conv of a Q/DQ model computed 1.5x too large, through verify.

    .venv/bin/python benchmarks/int8_defect.py D/model.int8.onnx [--conv 10] [--factor 1.5] [--limit N]

Copies the model with one Conv's weights scaled by --factor (its weight DequantizeLinear scale), compiles
the copy for ONNX Runtime and TVM host, and records the original as the build's source: the build now
computes something other than the model it claims, as a miscompiled conv would. `edgecnn verify` must
fail it and localisation must name that conv. Writes benchmarks/results/int8_defect-NAME.json.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgecnn.core import manifest
from edgecnn.core.fileio import sha256

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def scaled_copy(src: Path, dst: Path, conv_index: int, factor: float) -> str:
    model = onnx.load(str(src))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][conv_index]
    dq = next(n for n in model.graph.node if conv.input[1] in n.output)
    scale = next(i for i in model.graph.initializer if i.name == dq.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
    onnx.save(model, str(dst))
    return conv.name


def cli(*args) -> subprocess.CompletedProcess:
    print("$ edgecnn " + " ".join(map(str, args)), flush=True)
    return subprocess.run([sys.executable, "-m", "edgecnn", *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--conv", type=int, default=10, help="index of the Conv in graph order")
    ap.add_argument("--factor", type=float, default=1.5)
    ap.add_argument("--limit", type=int, default=2000)
    args = ap.parse_args()
    folder = args.model.parent / f"defect-conv{args.conv}"
    folder.mkdir(exist_ok=True)
    node = scaled_copy(args.model, folder / "model.int8.onnx", args.conv, args.factor)
    out = {"model": str(args.model), "scaled_conv": node, "factor": args.factor, "builds": {}}
    for target in ("onnxruntime-cpu", "host"):
        build = folder / f"build-{target}"
        r = cli("compile", folder / "model.int8.onnx", "--target", target, "--batch", 100, "--out", build)
        if r.returncode:
            raise SystemExit(r.stderr)
        man = manifest.read(build)
        manifest.update(build, source={**man["source"], "onnx": str(args.model.resolve()),
                                       "onnx_sha256": sha256(args.model)})
        r = cli("verify", build, "--limit", args.limit)
        print(r.stdout[-2500:], r.stderr[-1500:])
        report = json.loads((build / "verify.json").read_text())
        m, loc = report["outputs"]["logits"], report.get("localization") or {}
        out["builds"][target] = {"exit": r.returncode, "failures": report["failures"],
                                 "localized": loc.get("node"), "names_the_conv": loc.get("node") == node,
                                 **{k: m.get(k) for k in ("top1_agreement", "decisive_agreement", "decisive_samples",
                                                          "margin_bound", "top1_candidate", "top1_reference")}}
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"int8_defect-{args.model.parent.name}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
