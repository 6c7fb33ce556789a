"""int8 TVM host builds of the Fashion recipes against their fake-quant reference, through the CLI (issue 24).

    .venv/bin/python benchmarks/int8_parity.py [--recipes lenet5-fashion,...] [--epochs 1] [--train-limit 3000]
        [--verify-limit N] [--batch 1] [--out DIR] [--table-only]

For each recipe in recipes/ that trains on Fashion-MNIST: `edgecnn train RECIPE --epochs E --limit L` (parity
needs a trained model, not an accurate one: a short run keeps this CPU-cheap), `edgecnn export RUN`,
`edgecnn quantize RUN --sensitivity 0` (the default Q/DQ form, PTQ per-channel, minmax),
`edgecnn compile RUN/model.int8.onnx --target host --precision int8 --batch B` and
`edgecnn verify BUILD --against fakequant` on the full test set (10,000 images unless --verify-limit).
The acceptance is verify's own: decisive agreement 100% and top-1 within 0.1 points of the reference.
Writes benchmarks/results/int8_parity.json and README.md's int8-parity block, which names the Fashion recipes
a --recipes run left out (`--table-only`: only that block, from the saved results). Steps already done under --out are reused (delete the folder to start over).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKERS = ("<!-- int8-parity:start -->", "<!-- int8-parity:end -->")
CHANCE_TOP1 = 11.0  # % top-1 on Fashion-MNIST's 10 balanced classes at most: a model at chance
KEEP = ("samples", "top1_agreement", "disagreements", "decisive_agreement", "decisive_samples", "margin_bound",
        "top1_candidate", "top1_reference", "max_abs")


def fashion_recipes() -> list[str]:
    """The recipes in recipes/ that train on Fashion-MNIST, by name."""
    names = []
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        if recipe.get("data", {}).get("dataset") == "fashion-mnist":
            names.append(recipe["name"])
    return names


def cli(*args, done: Path) -> None:
    """Run `edgecnn ARGS` unless `done` exists. SystemExit with stderr on failure."""
    if done.exists():
        return
    print("$ edgecnn " + " ".join(map(str, args)), flush=True)
    r = subprocess.run([sys.executable, "-m", "edgecnn", *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode and not (args[0] == "verify" and done.exists()):
        raise SystemExit(f"edgecnn {args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    print(r.stdout[-1200:], flush=True)


def measure(recipe: str, args) -> dict:
    """Train, export, quantize, compile and verify one recipe; verify's numbers."""
    run = args.out / recipe
    build = run / f"build-host-int8-b{args.batch}"
    cli("train", recipe, "--out", run, "--epochs", args.epochs, "--limit", args.train_limit, "--device", "cpu",
        done=run / "model.pt")
    cli("export", run, done=run / "model.onnx")
    cli("quantize", run, "--sensitivity", "0", done=run / "model.int8.onnx")
    cli("compile", run / "model.int8.onnx", "--target", "host", "--precision", "int8", "--batch", args.batch,
        "--out", build, done=build / "manifest.json")
    limit = ["--limit", args.verify_limit] if args.verify_limit else []
    verified = build / f"parity-{args.verify_limit or 'all'}.json"
    cli("verify", build, "--against", "fakequant", "--no-localize", *limit, "--report", verified, done=verified)
    report = json.loads(verified.read_text())
    out = next(iter(report["outputs"].values()))
    kernels = json.loads((build / "manifest.json").read_text())["artifact"]["schedules"]["rules"]
    trained = json.loads((run / "metrics.json").read_text())
    return {"recipe": recipe, "epochs": args.epochs, "train_images": trained.get("train_images"),
            "batch": args.batch, "int8_conv_kernels": kernels.get("conv2d_nhwc_dot", 0), "passed": report["passed"],
            "failures": report["failures"],
            **{k: out.get(k) for k in KEEP}}


def table(rows: list[dict]) -> str:
    lines = ["| recipe | int8 conv kernels | test images | decisive agreement (samples) | raw top-1 agreement | "
             "margin bound | top-1 TVM int8 / fake-quant | result |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        failed = "; ".join(sum(r["failures"].values(), []))
        lines.append(f"| {r['recipe']} | {r['int8_conv_kernels']} | {r['samples']} | "
                     f"{r['decisive_agreement']:.2f}% ({r['decisive_samples']}) | "
                     f"{r['top1_agreement']:.2f}% ({r['disagreements']} differ) | {r['margin_bound']:.3g} | "
                     f"{r['top1_candidate']:.2f}% / {r['top1_reference']:.2f}% | "
                     f"{'pass' if r['passed'] else 'FAIL: ' + failed} |")
    return "\n".join(lines)


def write_readme(report: dict) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme import replace_block

    rows, cpu = report["rows"], report["machine"]["cpu"]
    note = (f"`benchmarks/int8_parity.py` (int8_parity.json): each recipe trained {rows[0]['epochs']} epoch(s) on "
            f"{rows[0]['train_images']} images (parity needs a trained model, not an accurate one), PTQ in the "
            f"default form, `compile --target host --precision int8 --batch {rows[0]['batch']}` on "
            f"{cpu['model_name']} (TVM int8 path: {report['machine']['int8_path']}), `verify --against fakequant` on "
            "the test set.")
    chance = [r["recipe"] for r in rows if r["top1_reference"] <= CHANCE_TOP1]
    if chance:  # one class predicted for every image: every sample agrees, the kernels' arithmetic barely shows
        note += (f" At chance after this short training (top-1 <= {CHANCE_TOP1:g}%), so their rows check little: "
                 f"{', '.join(chance)}; train longer (--epochs, --train-limit) for a stronger check.")
    missing = [name for name in fashion_recipes() if name not in {r["recipe"] for r in rows}]
    note += f" Not measured yet: {', '.join(missing)}." if missing else ""
    replace_block(ROOT / "README.md", MARKERS, table(rows) + "\n\n" + note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=None, help="comma list (default: every Fashion-MNIST recipe)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-limit", type=int, default=3000, help="first N images of each split for training")
    ap.add_argument("--verify-limit", type=int, default=None, help="first N test images (default: all)")
    ap.add_argument("--batch", type=int, default=1, help="the build's batch")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "int8_parity")
    ap.add_argument("--table-only", action="store_true", help="only write README.md's block from the saved results")
    args = ap.parse_args()
    saved = RESULTS / "int8_parity.json"
    if args.table_only:
        return write_readme(json.loads(saved.read_text()))
    from edgecnn.backends.tvm import build, tunedb
    from edgecnn.backends.tvm.cpu import int8_path
    from edgecnn.compiler import targets

    recipes = args.recipes.split(",") if args.recipes else fashion_recipes()
    path = int8_path(build.resolve_target(targets.load("host")))
    machine = {"cpu": tunedb.host_cpu(), "cores": os.cpu_count(), "load_avg_1min_start": os.getloadavg()[0],
               "int8_path": f"{path.name} ({path.intrin or 'LLVM widening vector code'})"}
    rows = [measure(recipe, args) for recipe in recipes]
    machine["load_avg_1min_end"] = os.getloadavg()[0]
    report = {"machine": machine, "rows": rows}
    print(table(rows))
    if args.verify_limit:
        return print("(on part of the test set: results and README not written)")
    RESULTS.mkdir(exist_ok=True)
    saved.write_text(json.dumps(report, indent=1) + "\n")
    write_readme(report)


if __name__ == "__main__":
    main()
