"""int8 builds against their fake-quant reference: raw and decisive top-1 agreement, through the CLI.

    .venv/bin/python benchmarks/int8_agreement.py RUN_DIR [...] [--out DIR] [--tvm-limit 2000] [--qat-epochs 1]
        [--qat-limit N] [--variants per-channel,per-tensor,qat]

For each RUN_DIR and each quantization (PTQ per-channel, PTQ per-tensor, QAT): `edgecnn quantize RUN_DIR
--out D [--per-tensor | --method qat --epochs N] --sensitivity 0`, then for ONNX Runtime and TVM host
`edgecnn compile D/model.int8.onnx --target T --batch 100` and `edgecnn verify BUILD` (TVM on --tvm-limit
test images when given; QAT on the first --qat-limit training images when given). Prints the table, writes
benchmarks/results/int8_agreement-RUNS.json and README.md's int8-table block from every int8_agreement-*.json
(`--table-only`: only that block, from the saved results).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKERS = ("<!-- int8-table:start -->", "<!-- int8-table:end -->")
VARIANTS = {"per-channel": [], "per-tensor": ["--per-tensor"], "qat": ["--method", "qat", "--epochs", "{epochs}"]}
TARGETS = ("onnxruntime-cpu", "host")


def cli(*args) -> subprocess.CompletedProcess:
    print("$ edgecnn " + " ".join(map(str, args)), flush=True)
    return subprocess.run([sys.executable, "-m", "edgecnn", *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def row(run: Path, variant: str, target: str, report: dict) -> dict:
    m = next(iter(report["outputs"].values()))
    keep = ("samples", "top1_agreement", "disagreements", "decisive_agreement", "decisive_samples", "decisive_share",
            "noise_spread", "output_step", "margin_bound", "top1_candidate", "top1_reference", "max_abs", "mean_abs")
    return {"run": run.name, "variant": variant, "target": target, "passed": report["passed"],
            "failures": report["failures"], **{k: m.get(k) for k in keep}}


def measure(run: Path, out: Path, args) -> list[dict]:
    rows = []
    for variant in args.variants.split(","):
        extra = [e.format(epochs=args.qat_epochs) for e in VARIANTS[variant]]
        if variant == "qat" and args.qat_limit:
            extra += ["--limit", str(args.qat_limit)]
        folder = out / f"{run.name}-{variant}"
        if not (folder / "model.int8.onnx").exists():
            r = cli("quantize", run, "--out", folder, "--sensitivity", "0", *extra)
            if r.returncode:
                raise SystemExit(r.stderr)
        for target in TARGETS:
            build = folder / f"build-{target}"
            if not build.exists():
                r = cli("compile", folder / "model.int8.onnx", "--target", target, "--batch", 100, "--out", build)
                if r.returncode:
                    raise SystemExit(r.stderr)
            limit = ["--limit", args.tvm_limit] if target == "host" and args.tvm_limit else []
            r = cli("verify", build, *limit, "--no-localize")
            print(r.stdout[-1500:])
            rows.append(row(run, variant, target, json.loads((build / "verify.json").read_text())))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | quantization | backend | samples | raw top-1 agreement | decisive agreement (samples) | "
             "margin bound | top-1 build / reference | result |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['variant']} | {r['target']} | {r['samples']} | {r['top1_agreement']:.2f}% "
                     f"({r['disagreements']} differ) | {r['decisive_agreement']:.2f}% ({r['decisive_samples']}) | "
                     f"{r['margin_bound']:.3g} | {r['top1_candidate']:.2f}% / {r['top1_reference']:.2f}% | "
                     f"{'pass' if r['passed'] else 'FAIL: ' + '; '.join(sum(r['failures'].values(), []))} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgecnn-int8-agreement"))
    ap.add_argument("--tvm-limit", type=int, default=None, help="verify TVM builds on the first N test images")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--qat-limit", type=int, default=None, help="QAT fine-tunes on the first N training images")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    ap.add_argument("--table-only", action="store_true", help="only write README.md's block from the saved results")
    args = ap.parse_args()
    if args.table_only:
        return write_readme()
    rows = [r for run in args.runs for r in measure(run, args.out, args)]
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    name = "-".join(run.name for run in args.runs)
    (RESULTS / f"int8_agreement-{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    write_readme()


def write_readme() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme import replace_block

    saved = sorted(RESULTS.glob("int8_agreement-*.json"))
    rows = [r for path in saved for r in json.loads(path.read_text())]
    replace_block(ROOT / "README.md", MARKERS, table(rows) + f"\n\n`benchmarks/int8_agreement.py` "
                  f"({', '.join(p.name for p in saved)}): PTQ per-channel and per-tensor, QAT; ONNX Runtime "
                  "(onnxruntime-cpu) and TVM (host) builds against their fake-quant reference on the test set.")


if __name__ == "__main__":
    main()
