"""ONNX Runtime's int8 kernels on this CPU and on one without VNNI, with and without compile's fix.

    .venv/bin/python benchmarks/ort_int8_isa.py --run RUN_DIR MODEL.int8.onnx [...] [--limit 1000]

Each Q/DQ model runs on ONNX Runtime with its int8 kernels (graph optimisation 'all') as quantized (int8
weights) and as `edgecnn compile --target onnxruntime-cpu` stores it on a CPU without VNNI (the same
weights as uint8, zero point + 128), here and on an emulated Haswell (qemu-x86_64-static -cpu Haswell:
AVX2 and FMA, no AVX-512, no VNNI; Debian qemu-user-static; emulated timings are not latency). Each is
compared with the Q/DQ graph run op by op on this machine (the fakequant reference verify uses), with
verify's comparators: raw and decisive top-1 agreement, max abs error, top-1 on the labels.
Writes benchmarks/results/ort_int8_isa.json and README.md's ort-isa block (`--table-only`: only the block, from
the saved results).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgecnn.backends import reference
from edgecnn.backends.onnxruntime import OrtRunner, int8_isa, weights_to_uint8
from edgecnn.quantize import data
from edgecnn.models import checkpoint
from edgecnn.verify import compare, noise

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NO_VNNI = ["qemu-x86_64-static", "-cpu", "Haswell"]
MARKERS = ("<!-- ort-isa:start -->", "<!-- ort-isa:end -->")

# Runs where the CPU is (natively or under qemu): the ISA ONNX Runtime sees, then each model's logits.
ON_THE_CPU = """
import json, sys, numpy as np
from edgecnn.backends.onnxruntime import OrtRunner, int8_isa
from edgecnn.backends import run_batches
x = np.load(sys.argv[1])
print(json.dumps(int8_isa()))
for path in sys.argv[2:]:
    out = run_batches(OrtRunner(path, level="all").run, x, 100)
    np.save(path + ".logits.npy", next(iter(out.values())))
"""


def run_on(cpu: list[str], x_path: Path, models: list[Path]) -> dict:
    r = subprocess.run([*cpu, sys.executable, "-c", ON_THE_CPU, str(x_path), *map(str, models)], capture_output=True,
                       text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    logits = {m: np.load(f"{m}.logits.npy") for m in models}
    return {"isa": json.loads(r.stdout.splitlines()[-1]), "logits": logits}


def measure(model: Path, x: np.ndarray, labels: np.ndarray, work: Path) -> dict:
    fixed = work / f"{model.parent.name}-{model.stem}-u8.onnx"
    proto = onnx.load(str(model))
    n = weights_to_uint8(proto)
    onnx.save(proto, str(fixed))
    want = OrtRunner(model, level=reference.FAKEQUANT_LEVEL).run(x)["logits"]
    twins = reference.twins(reference.Reference("fakequant", model, level=reference.FAKEQUANT_LEVEL))
    spread = [reference.load(t).run(x)["logits"] for t in twins]
    step = noise.output_step(proto, "logits")
    np.save(work / "x.npy", x)
    out = {"model": str(model), "uint8_weight_tensors": n, "samples": len(x)}
    for cpu_name, cpu in (("this CPU", []), ("emulated Haswell", NO_VNNI)):
        ran = run_on(cpu, work / "x.npy", [model, fixed])
        for variant, path in (("int8 weights (as quantized)", model), ("uint8 weights (compile's fix)", fixed)):
            m = compare.compare_output(ran["logits"][path], want, labels, noise=spread, step=step)
            out[f"{cpu_name}: {variant}"] = {"isa": ran["isa"], **{k: m[k] for k in (
                "max_abs", "mean_abs", "top1_agreement", "disagreements", "decisive_agreement", "decisive_samples",
                "margin_bound", "top1_candidate", "top1_reference")},
                "passes_int8_bar": not compare.failures(m, compare.tolerance("int8"))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--run", type=Path, help="the RUN_DIR the models were quantized from (test data)")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--table-only", action="store_true", help="only write README.md's block from the saved results")
    args = ap.parse_args()
    if args.table_only:
        return write_readme(json.loads((RESULTS / "ort_int8_isa.json").read_text()))
    if not args.run or not args.models:
        ap.error("give MODEL.int8.onnx ... and --run RUN_DIR")
    _, spec = checkpoint.load(args.run)
    test = data.load(data.recipe(args.run).data, spec, "test", n=args.limit)
    results = {"host_isa": int8_isa(), "data": test.described, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            results["models"].append(measure(model, test.x, test.labels, Path(tmp)))
            print(json.dumps(results["models"][-1], indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ort_int8_isa.json").write_text(json.dumps(results, indent=1) + "\n")
    write_readme(results)


def write_readme(results: dict) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme import replace_block

    lines = ["| model | CPU: weights | ISA | max abs | raw top-1 agreement | decisive agreement (samples) | "
             "top-1 build / reference | passes the int8 bar |", "|---|---|---|---:|---:|---:|---:|---|"]
    for m in results["models"]:
        name = "/".join(Path(m["model"]).parts[-2:])
        for key, r in m.items():
            if not isinstance(r, dict) or "isa" not in r:
                continue
            isa = "VNNI" if r["isa"]["vnni"] else ", ".join(r["isa"]["flags"]) + " (no VNNI)"
            lines.append(f"| {name} | {key} | {isa} | {r['max_abs']:.3g} | {r['top1_agreement']:.2f}% "
                         f"({r['disagreements']} differ) | {r['decisive_agreement']:.2f}% ({r['decisive_samples']}) | "
                         f"{r['top1_candidate']:.2f}% / {r['top1_reference']:.2f}% | "
                         f"{'yes' if r['passes_int8_bar'] else 'no'} |")
    replace_block(ROOT / "README.md", MARKERS, "\n".join(lines) + f"\n\n`benchmarks/ort_int8_isa.py` on "
                  f"{results['data']} (results in `benchmarks/results/ort_int8_isa.json`); emulated timings are not "
                  "latency, so none are shown.")


if __name__ == "__main__":
    main()
