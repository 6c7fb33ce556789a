"""Models not written by edgecnn export, at their real sizes, through compile (TVM host, ONNX Runtime) and
verify against ONNX Runtime on the source ONNX: what edgecnn had to change, and the parity.

    .venv/bin/python benchmarks/foreign_models.py [--models caffenet,keras] [--images 4]

Nothing is downloaded: the ONNX files are written here the way other tools write them (tests/foreign_models.py:
a Caffe2-era zoo model, a Keras model through tf2onnx, SqueezeNet-style, TFLite-style uint8, a fully
convolutional one with dynamic H/W, an opset-9 upsampling one), and edgecnn's own MobileNet v2 and ResNet-18
(torchvision's layouts, ImageNet size) are exported as a user's PyTorch modules with `edgecnn.export.from_module`
(ResNet-18 with its weights as external data), and the graph-pattern corpus of tests/corpus_models.py (older
exporters, ShuffleNet, ResNet bottlenecks, Inception, DenseNet, SqueezeNet/SE, tf2onnx, upsampling; written at
--corpus-size). Each TVM host build is timed against ONNX Runtime on its source ONNX (batch 1, 2 threads each,
interleaved rounds as benchmarks/tvm_vs_ort.py does; ONNX Runtime spinning or not, the faster of each round):
the ratio column is TVM p50 / ONNX Runtime p50 (goal <= 1.2x). Writes benchmarks/results/foreign_models.json.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path



def threads_arg() -> str:
    """--threads, read before TVM's thread pool starts (compile and verify start it)."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return "2"


os.environ.setdefault("TVM_NUM_THREADS", threads_arg())
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import corpus_models  # noqa: E402
import foreign_models as fm  # noqa: E402
from edgecnn.core.fileio import write_json  # noqa: E402
from edgecnn.core.progress import console  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "foreign_models.json"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
RATIO_GOAL = 1.2  # TVM host p50 / ONNX Runtime p50


def torch_model(name: str, work: Path, *, external: bool = False) -> Path:
    from edgecnn import export, models

    net = models.create(name, num_classes=1000, in_channels=3, input_size=224)
    path = export.from_module(net, (3, 224, 224), work / f"{name}.onnx", **IMAGENET)
    if external:
        onnx.save(onnx.load(str(path)), str(work / f"{name}-ext.onnx"), save_as_external_data=True,
                  location=f"{name}.weights")
        return work / f"{name}-ext.onnx"
    return path


MODELS = {  # name: (how it was made, maker, what the user gives)
    "caffenet": ("Caffe2-era zoo: IR 3, opset 9, initializers as inputs, LRN, BN, Dropout, Softmax",
                 lambda w: fm.caffe_zoo(w / "caffenet.onnx", size=224, classes=1000), {}),
    "keras-mobilenet": ("tf2onnx of Keras: NHWC, dynamic batch, Transpose in, Clip, ReduceMean, MatMul, Softmax",
                        lambda w: fm.keras_nhwc(w / "keras.onnx", size=224, classes=1000),
                        {"scale": "1/127.5", "mean": [1.0], "std": [1.0]}),
    "squeezenet": ("SqueezeNet-style: fire module, output N x 1000 x 1 x 1, opset 12",
                   lambda w: fm.squeezenet_like(w / "squeezenet.onnx", size=224, classes=1000), {}),
    "tflite-uint8": ("TFLite-style: uint8 NHWC pixels in, Cast and scaling inside",
                     lambda w: fm.uint8_nhwc(w / "u8.onnx", size=224, classes=1000), {}),
    "fcn-dynamic-hw": ("fully convolutional, input N x 3 x H x W", lambda w: fm.dynamic_hw(w / "fcn.onnx"),
                       {"input_shape": "1x3x224x224"}),
    "fpn-opset9": ("opset 9 Upsample (linear) + Slice (attribute form)",
                   lambda w: fm.upsampling_opset9(w / "fpn.onnx", size=224), {}),
    "mobilenet_v2": ("a user's PyTorch module (edgecnn.models, torchvision layout), from_module",
                     lambda w: torch_model("mobilenet_v2", w), {}),
    "resnet18-external": ("a user's PyTorch module, from_module, weights in external data",
                          lambda w: torch_model("resnet18", w, external=True), {}),
}
CORPUS_SIZE = 112


def corpus_entry(name: str):
    make = corpus_models.CORPUS[name]
    return (f"corpus: {' '.join(make.__doc__.split()[:12])} ...",
            lambda w: make(w / f"{name}.onnx", size=CORPUS_SIZE), {})


MODELS.update({f"corpus-{name}": corpus_entry(name) for name in corpus_models.CORPUS})


def try_model(name: str, work: Path, images: int, repeats: int = 0, threads: int = 2) -> dict:
    from edgecnn import compiler, verify
    from edgecnn.core import manifest
    from edgecnn.core.errors import EdgecnnError

    how, make, given = MODELS[name]
    path = make(work)
    model = onnx.load(str(path), load_external_data=False)
    row = {"model": name, "how": how, "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
           "ir": model.ir_version, "given": given}
    for target in ("host", "onnxruntime-cpu"):
        start = time.perf_counter()
        try:
            build = compiler.compile_model(path, target, out=work / f"{name}-{target}", given=given)
            seconds = time.perf_counter() - start
            rep = verify.verify(build, data="random", limit=images)
        except EdgecnnError as e:
            row[target] = {"error": str(e)}
            continue
        man = manifest.read(build)
        out = next(iter(rep["outputs"].values()))
        row["input"] = {k: man["input"][k] for k in ("shape", "layout", "dtype")}
        row["prepared"] = man["source"]["prepared"]
        if man["artifact"].get("onnx_opset", row["opset"]) != row["opset"]:
            row["tvm_imported_opset"] = man["artifact"]["onnx_opset"]
        row[target] = {"compile_s": round(seconds, 1), "passed": rep["passed"], "max_abs": out["max_abs"],
                       "min_cosine": out["min_cosine"], "top1_agreement": out.get("top1_agreement"),
                       "samples": out["samples"]}
        if target == "host" and repeats:
            row[target].update(speed_vs_onnxruntime(build, path, repeats, threads))
    return row


def speed_vs_onnxruntime(build: Path, source: Path, repeats: int, threads: int = 2) -> dict:
    """p50 of the TVM build and of ONNX Runtime on the source ONNX, interleaved rounds; their ratio."""
    from tvm_vs_ort import measure, ort_nospin

    from edgecnn import backends
    from edgecnn.core import manifest
    from edgecnn.backends.onnxruntime import OrtRunner
    from edgecnn.bench import random_input

    tvm = backends.get("tvm").load(build, manifest.read(build), threads=threads)
    subjects = {"tvm": tvm, "ort": OrtRunner(source, threads=threads), "ort nospin": ort_nospin(source, threads)}
    rounds, _ = measure(subjects, random_input(tvm, 1), repeats, 0.2)
    ort = np.minimum(rounds["ort"], rounds["ort nospin"])
    return {"tvm_p50_ms": float(np.median(rounds["tvm"])), "ort_p50_ms": float(np.median(ort)),
            "ratio_vs_onnxruntime": float(np.median(np.array(rounds["tvm"]) / ort))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--images", type=int, default=4, help="random images each build is verified on")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds of TVM and ONNX Runtime "
                        "(0: no timing)")
    parser.add_argument("--threads", type=int, default=2, help="threads of TVM and of ONNX Runtime alike")
    parser.add_argument("--out", default=str(RESULTS), help="the JSON written")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecnn-foreign-") as tmp:
        for name in args.models.split(","):
            console.rule(name)
            rows.append(try_model(name, Path(tmp), args.images, args.repeats, args.threads))
            console.print(rows[-1])
    write_json(args.out, {"images": args.images, "threads": args.threads, "rows": rows})
    print(markdown(rows))  # plain print: the README's table, unwrapped


def markdown(rows: list[dict]) -> str:
    lines = ["| model | made as | input | edgecnn changed | TVM host: compile s, max abs, min cosine, top-1 agr. "
             f"| TVM p50 / ONNX Runtime p50 (goal <= {RATIO_GOAL}x) | ONNX Runtime |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[t]['compile_s']} s, {r[t]['max_abs']:.1e}, {r[t]['min_cosine']:.6f}, {r[t]['top1_agreement']:.0f}%"
                 if "max_abs" in r.get(t, {}) else r.get(t, {}).get("error", "-") for t in ("host", "onnxruntime-cpu")]
        inp, given = r.get("input", {}), ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in r["given"].items())
        lines.append(f"| {r['model']} | {r['how']}{f' ({given})' if given else ''} | {inp.get('shape')} "
                     f"{inp.get('layout')} {inp.get('dtype')} | {'; '.join(changed(r)) or '-'} | {cells[0]} "
                     f"| {ratio_cell(r.get('host', {}))} | {cells[1]} |")
    return "\n".join(lines)


def ratio_cell(host: dict) -> str:
    if "ratio_vs_onnxruntime" not in host:
        return "-"
    ratio = host["ratio_vs_onnxruntime"]
    short = "" if ratio <= RATIO_GOAL else " (short of the goal)"
    return f"{ratio:.2f}x ({host['tvm_p50_ms']:.3f} / {host['ort_p50_ms']:.3f} ms){short}"


def changed(row: dict) -> list[str]:
    tvm = [f"TVM imports it at opset {row['tvm_imported_opset']}"] if row.get("tvm_imported_opset") else []
    return [*(row.get("prepared") or []), *tvm]


if __name__ == "__main__":
    main()
