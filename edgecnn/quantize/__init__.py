"""edgecnn quantize: RUN_DIR -> model.int8.onnx (Q/DQ, PTQ or QAT) or model.fp16.onnx, accuracy measured.

    from edgecnn.quantize import quantize
    report = quantize("runs/lenet5-fashion", method="ptq", algo="minmax", per_channel=True)
    report = quantize("mobilenet.onnx", calib_dir="images/", data="imagefolder:val/")  # an ONNX from elsewhere

int8 models follow TensorRT's explicit-quantization rules (see ptq.py) and run on ONNX Runtime and TVM
too; `edgecnn compile` and `edgecnn verify` take them like any exported model. The report (quant.json)
holds fp32 vs int8 test top-1, the drop in points, per-layer sensitivity and the layers kept in fp32.
"""

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecnn.backends import DEFAULT_QDQ_FORM, qdq_form, qdq_forms
from edgecnn.core.errors import EdgecnnError, suggest
from edgecnn.core.fileio import atomic_file, write_json
from edgecnn.quantize import data, foreign
from edgecnn.quantize.data import predict
from edgecnn.verify.compare import top1, top1_agreement as agreement

METHODS = ("ptq", "qat", "fp16")
FORMAT = "edgecnn.quant/1"


@dataclass
class Options:
    method: str = "ptq"  # ptq | qat | fp16
    calib: int = 512  # calibration images: the first N of the recipe's held-out val split
    algo: str = "minmax"  # minmax | percentile | entropy | mse | auto (each tried, the most accurate kept)
    per_channel: bool = True  # weight scales per output channel (False: one per tensor)
    form: str = DEFAULT_QDQ_FORM  # Q/DQ form, named after the backend it is for (edgecnn.backends.qdq_forms)
    reduce_range: bool | None = None  # 7-bit weights; None: where the form's backend needs it on this CPU
    skip: list = field(default_factory=list)  # layers (or module prefixes) kept in fp32
    auto: bool = False  # keep the most sensitive layers in fp32 until the val drop <= max_drop
    max_drop: float = 0.5  # --auto target, top-1 points
    sensitivity: int = 1000  # val images (after the calibration ones) for per-layer sensitivity; 0: none
    epochs: int = 1  # QAT epochs
    lr: float | None = None  # QAT learning rate (default: the recipe's / 50)
    keep_io_fp32: bool = True  # fp16: keep the input and output float32
    opset: int = 17  # 17: TensorRT 8.5 (JetPack 5) parses it; per-channel Q/DQ needs >= 13
    limit: int | None = None  # first N test (and QAT train) images: a quick trial
    calib_data: np.ndarray | None = None  # your own normalized NCHW calibration inputs instead of val
    calib_dir: str | None = None  # a folder of images to calibrate on (a sample of `calib`) instead of val
    data: str | None = None  # an ONNX from elsewhere: labelled evaluation images (verify's --data DATASET:PATH)
    given: dict | None = None  # an ONNX from elsewhere: its preprocessing, labels, input shape (image_model.GIVEN)

    def check(self) -> None:
        from edgecnn.qdq.ptq import ALGOS

        if self.method not in METHODS:
            raise EdgecnnError(f"--method {self.method}: unknown{suggest(self.method, METHODS)}")
        if self.algo not in (*ALGOS, "auto"):
            raise EdgecnnError(f"--algo {self.algo}: unknown{suggest(self.algo, (*ALGOS, 'auto'))}")
        if not qdq_form(self.form).symmetric and self.method == "qat":
            raise EdgecnnError(f"--method qat writes the {DEFAULT_QDQ_FORM} form only (its fake quantization is "
                               "symmetric)")
        if self.method != "fp16" and self.calib < data.MIN_CALIB:
            raise EdgecnnError(f"--calib {self.calib}: calibrate on at least {data.MIN_CALIB} images "
                               "(512 is a good default)")
        if self.epochs < 1 or self.sensitivity < 0 or self.max_drop < 0:
            raise EdgecnnError("--epochs must be >= 1, --sensitivity and --max-drop >= 0")


def outputs(method: str, stem: str | None = None) -> dict[str, str]:
    """The files a method writes: role -> file name (a RUN_DIR's model.int8.onnx, quant.json ...; STEM.int8.onnx,
    STEM.quant.json ... for STEM.onnx)."""
    report = f"{stem}.quant" if stem else "quant"
    stem = stem or "model"
    if method == "fp16":
        return {"onnx": f"{stem}.fp16.onnx", "report": f"{report}.fp16.json"}
    return {"onnx": f"{stem}.int8.onnx", "report": f"{report}.json", "plot": f"{report}-sensitivity.png",
            **({"checkpoint": "model.qat.pt"} if method == "qat" else {})}


@dataclass
class Job:
    """What every step of one quantization reads: the settings, the model and its data."""

    opts: Options
    model: object  # the trained torch module (None for an ONNX from elsewhere)
    spec: dict  # the checkpoint's description of it (model, input, classes)
    rec: object  # the recipe it was trained with (None for an ONNX from elsewhere)
    fp32: Path  # its fp32 export at opts.opset
    test: data.Batch
    base: np.ndarray  # fp32 logits on the test images
    work: Path
    calib: data.Batch | None = None  # calibration images read already (from opts.calib_dir)
    holdout: data.Batch | None = None  # an ONNX from elsewhere: images for sensitivity and --auto
    world: object = None  # the ranks QAT fine-tunes on (edgecnn.train.distributed.World)


def quantize(run_dir: str | Path, out: str | Path | None = None, **options) -> dict | None:
    """Quantize RUN_DIR (or MODEL.onnx from elsewhere, with calib_dir) into OUT (default beside it); returns
    the report also written as quant.json (STEM.quant.json).

    Under torchrun (--method qat only) every rank fine-tunes its share; rank 0 does the rest, writes and
    returns the report, the other ranks return None."""
    from edgecnn.train import distributed

    opts = Options(**options)
    opts.check()
    with distributed.session("cpu") as world:
        if world.size > 1 and opts.method != "qat":
            raise EdgecnnError(f"--method {opts.method} does not train: run it without torchrun (only qat runs on "
                               "several ranks)")
        if not world.main:
            return qat_rank(Path(run_dir), opts, world)
        return _quantize(Path(run_dir), out, opts, world)


def _quantize(src: Path, out, opts: Options, world) -> dict:
    foreign = src.suffix == ".onnx"
    names = outputs(opts.method, src.name.split(".")[0] if foreign else None)
    out = Path(out) if out else (src.parent if foreign else src)
    with tempfile.TemporaryDirectory(prefix="edgecnn-quant-") as tmp:
        job = onnx_job(src, opts, Path(tmp)) if foreign else run_dir_job(src, opts, Path(tmp), world)
        work, test = job.work, job.test
        precision = "fp16" if opts.method == "fp16" else "int8"
        config = {k: v for k, v in asdict(opts).items() if k != "calib_data"}
        rep = {"format": FORMAT, "method": opts.method, "precision": precision, "model": job.spec["model"]["name"],
               ("onnx" if foreign else "run_dir"): str(src.resolve()), "config": config,
               "accuracy": {"data": test.described, "fp32": accuracy(job.base, test.labels)}}
        final, parts = fp16(job, work / names["onnx"]) if opts.method == "fp16" else int8(job, names["onnx"])
        rep["config"]["fp32_layers"] = parts.pop("fp32_layers", [])
        rep["config"]["reduce_range"] = parts.pop("reduce_range", False)
        rep["config"]["algo"] = parts.pop("algo", opts.algo)
        calibration = parts.pop("form_ranges", None)
        rep["accuracy"].update(parts.pop("accuracy", {}))
        rep.update(parts)
        rep["accuracy"].update(finish(final, job, precision, rep["config"], calibration=calibration))
        if rep.get("sensitivity") and "plot" in names:
            from edgecnn.quantize.report import plot_sensitivity

            plot_sensitivity(rep, work / names["plot"])
        rep["files"] = {k: str(out / v) for k, v in names.items() if (work / v).exists() or k == "report"}
        publish(work, out, names, rep)
    return rep


def run_dir_job(run_dir: Path, opts: Options, work: Path, world) -> Job:
    """A trained RUN_DIR: its checkpoint exported at opts.opset, its recipe's test split."""
    from edgecnn.models import checkpoint

    model, spec = checkpoint.load(run_dir)
    rec = data.recipe(run_dir)
    fp32 = export_fp32(checkpoint.resolve(run_dir), work / "fp32.onnx", opts.opset)
    test = data.load(rec.data, spec, "test", n=opts.limit)
    calib = foreign.calibration_images(opts.calib_dir, spec, opts.calib)[0] if opts.calib_dir else None
    return Job(opts, model, spec, rec, fp32, test, predict(fp32, test.x, "evaluate fp32"), work, calib=calib,
               world=world)


def onnx_job(onnx_path: Path, opts: Options, work: Path) -> Job:
    """An ONNX from elsewhere: calibration images from opts.calib_dir, evaluation from opts.data or the rest."""
    if opts.method == "qat":
        raise EdgecnnError("--method qat fine-tunes the PyTorch model: quantize its RUN_DIR (ptq and fp16 take "
                           "an ONNX file)")
    if not opts.calib_dir and opts.method != "fp16":
        raise EdgecnnError(f"{onnx_path.name} has no recorded dataset: give --calib DIR, a folder of images like "
                           "those the model will see (a few hundred)")
    fp32 = work / "fp32.onnx"
    spec = foreign.prepare_fp32(onnx_path, fp32, opset=opts.opset, given=opts.given)
    calib = held = None
    if opts.calib_dir:
        calib, held = foreign.calibration_images(opts.calib_dir, spec, opts.calib)
    if calib is None and not opts.data:
        raise EdgecnnError("--method fp16 of an ONNX file measures itself on --data DATASET:PATH or --calib DIR")
    test = foreign.evaluation_images(opts.data, spec, held, calib)
    if opts.limit:
        labels = None if test.labels is None else test.labels[:opts.limit]
        test = data.Batch(test.x[:opts.limit], labels, test.described)
    holdout = foreign.pseudo_labelled(held, fp32)
    return Job(opts, None, spec, None, fp32, test, predict(fp32, test.x, "evaluate fp32"), work, calib=calib,
               holdout=holdout)


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Test top-1, or None without labels (then only the agreement with fp32 is measured)."""
    return None if labels is None else top1(logits, labels)


def export_fp32(checkpoint_path: Path, path: Path, opset: int) -> Path:
    """The checkpoint exported (BatchNorm folded, checked against PyTorch), at `opset`: a copy of RUN_DIR's
    model.onnx when that is this export already (export.exported: the same bytes, without the exporter's cost)."""
    from edgecnn import export
    from edgecnn.core.onnx_utils import to_opset

    done = export.exported(checkpoint_path)
    if done:
        shutil.copyfile(done, path)
    else:
        export.export(checkpoint_path, path, batch="dynamic")
    to_opset(path, opset)
    return path


def fp16(job: Job, path: Path) -> tuple[Path, dict]:
    import onnx

    from edgecnn.core.onnx_utils import to_fp16

    onnx.save(to_fp16(onnx.load(str(job.fp32)), job.opts.keep_io_fp32), str(path))
    return path, {}


def int8(job: Job, name: str = "model.int8.onnx") -> tuple[Path, dict]:
    """Calibrate, measure sensitivity, choose the fp32 layers, quantize (and fine-tune for QAT).

    Returns the model and the report's parts: calibration, sensitivity, auto, fp32_layers, accuracy, qat, lint."""
    import onnx

    from edgecnn.qdq import ptq
    from edgecnn.quantize import sensitivity

    opts, work = job.opts, job.work
    calib = data.check_calibration(calibration_batch(job))
    layers = ptq.layers(onnx.load(str(job.fp32)))
    if not layers:
        raise EdgecnnError(f"{job.spec['model']['name']} has no quantizable layer (Conv, Gemm, MatMul or residual "
                           "Add): int8 would change nothing; use --method fp16")
    skip = ptq.select(layers, opts.skip)
    if len(skip) == len(layers):
        raise EdgecnnError("--skip keeps every layer in fp32: nothing left to quantize")
    scheme = ptq.Scheme(opts.per_channel, opts.form, opts.reduce_range)
    holdout = held_out(job, len(calib))
    if opts.algo == "auto":
        algo, ranges, choice = choose_algo(job, calib, holdout, scheme=scheme, skip=skip)
        parts = {"algo": algo, "algo_auto": choice}
    else:
        algo, ranges, parts = opts.algo, ptq.calibrate(job.fp32, calib.x, algo=opts.algo, work=work,
                                                       form=scheme.placement), {}
    parts.update({"calibration": {"data": calib.described, "images": len(calib), "tensors": len(ranges)},
                  "reduce_range": scheme.reduced, "form_ranges": form_ranges(job, calib, ranges, algo)})
    if holdout is not None and (opts.sensitivity or opts.auto):
        parts["sensitivity"] = sensitivity.measure(job.fp32, ranges, layers, holdout, scheme=scheme, work=work)
    elif opts.sensitivity:
        more = "raise data.val_size" if job.rec else "add images to the folder"
        parts["note"] = (f"no sensitivity: fewer than 20 held-out images after the {len(calib)} calibration ones "
                         f"(lower --calib or {more})")
    if opts.auto:
        skip, parts["auto"] = sensitivity.auto_skip(job.fp32, ranges, layers, parts["sensitivity"], holdout=holdout,
                                                    scheme=scheme, max_drop=opts.max_drop, skip=skip, work=work)
    parts["fp32_layers"] = [lay.name for lay in skip]
    path = ptq.quantize_onnx(job.fp32, work / "ptq.onnx", ranges, scheme, exclude=skip, work=work)
    if opts.method == "qat":
        ptq_logits = predict(path, job.test.x, "evaluate int8 PTQ")
        parts["accuracy"] = {"ptq_int8": top1(ptq_logits, job.test.labels),
                             "ptq_agreement": agreement(ptq_logits, job.base)}
        path, parts["qat"] = run_qat(job, ranges, skip)
    parts["tensorrt_lint"] = ptq.lint(onnx.load(str(path)), opts.form)
    shutil.move(path, work / name)
    return work / name, parts


def choose_algo(job: Job, calib: data.Batch, holdout: data.Batch, *, scheme, skip: list) -> tuple[str, dict, dict]:
    """--algo auto: every calibrator, the whole model quantized with each and measured on the held-out val
    images; the most accurate within --max-drop is kept (else the most accurate). (algo, its ranges, the table)."""
    from edgecnn.qdq import ptq

    base = predict(job.fp32, holdout.x)
    rows, found = [], {}
    for algo in ptq.ALGOS:
        found[algo] = ptq.calibrate(job.fp32, calib.x, algo=algo, work=job.work, form=scheme.placement)
        q = ptq.quantize_onnx(job.fp32, job.work / "algo.onnx", found[algo], scheme, exclude=skip, work=job.work)
        logits = predict(q, holdout.x, f"evaluate int8 ({algo})")
        acc = accuracy(logits, holdout.labels)
        rows.append({"algo": algo, "top1": acc, "drop": None if acc is None else accuracy(base, holdout.labels) - acc,
                     "agreement": agreement(logits, base)})
    within = [r for r in rows if r["drop"] is None or r["drop"] <= job.opts.max_drop]
    best = max(within or rows, key=lambda r: (-1 if r["top1"] is None else r["top1"], r["agreement"]))
    return best["algo"], found[best["algo"]], {"data": holdout.described, "max_drop": job.opts.max_drop,
                                               "fp32": accuracy(base, holdout.labels), "rows": rows,
                                               "chosen": best["algo"], "within_budget": bool(within)}


def form_ranges(job: Job, calib: data.Batch, ranges: dict, algo: str) -> dict:
    """The activation ranges of every Q/DQ form, calibrated on the same images: compile re-quantizes from them
    for a target whose int8 kernels want another form than the one written (qdq.forms.convert)."""
    from edgecnn.qdq import ptq

    found = {job.opts.form: ranges}
    for name, form in qdq_forms().items():
        if name not in found:
            found[name] = ptq.calibrate(job.fp32, calib.x, algo=algo, work=job.work, form=form)
    return {name: {t: [float(lo), float(hi)] for t, (lo, hi) in r.items()} for name, r in found.items()}


def calibration_batch(job: Job) -> data.Batch:
    opts = job.opts
    if job.calib is not None:
        return job.calib
    if opts.calib_data is not None:
        x = np.asarray(opts.calib_data, np.float32)[:opts.calib]
        return data.Batch(x, None, f"the given array[:{len(x)}]")
    return data.load(job.rec.data, job.spec, "val", n=opts.calib)


def held_out(job: Job, n_calib: int) -> data.Batch | None:
    """Val images after the calibration ones, for sensitivity and --auto (None when not wanted)."""
    opts = job.opts
    n = opts.sensitivity or (1000 if opts.auto or opts.algo == "auto" else 0)
    if not n:
        return None
    if job.rec is None:  # an ONNX from elsewhere: the calibration folder's other images
        batch = job.holdout or data.Batch(np.zeros((0, 1)), None, "no images left after calibration")
        batch = data.Batch(batch.x[:n], None if batch.labels is None else batch.labels[:n], batch.described)
    else:
        batch = data.load(job.rec.data, job.spec, "val", start=n_calib, n=n)
    if len(batch) < 20:
        if opts.auto or opts.algo == "auto":
            flag = "--auto" if opts.auto else "--algo auto"
            raise EdgecnnError(f"{flag} needs held-out val images after the {n_calib} calibration images, "
                               f"found {len(batch)}: lower --calib or raise data.val_size")
        return None
    return batch


def run_qat(job: Job, ranges: dict, skip: list) -> tuple[Path, dict]:
    """Fine-tune under fake quantization with the PTQ ranges, export, quantize with the same ranges."""
    import onnx
    import torch

    from edgecnn.qdq import ptq
    from edgecnn.quantize import qat
    from edgecnn.models import checkpoint

    opts, work = job.opts, job.work
    lr = opts.lr or job.rec.optim.lr / 50
    plan = job.world.broadcast((ranges, [lay.name for lay in skip], job.fp32.read_bytes(), lr))  # to qat_rank
    gm = qat.prepare(job.model, ranges, onnx.load(str(job.fp32)), set(plan[1]), per_channel=opts.per_channel)
    history = qat.finetune(gm, job.rec, epochs=opts.epochs, lr=lr, limit=opts.limit, world=job.world)
    checkpoint.save(work / "model.qat.pt", job.model, job.spec)
    qat_fp32 = export_fp32(work / "model.qat.pt", work / "qat-fp32.onnx", opts.opset)
    missing = set(ranges) - {o for n in onnx.load(str(qat_fp32)).graph.node for o in [*n.input, *n.output]}
    if missing:
        raise EdgecnnError(f"the QAT export renamed tensors ({sorted(missing)[0]}, ...): report this model")
    scheme = ptq.Scheme(opts.per_channel, opts.form, opts.reduce_range)
    path = ptq.quantize_onnx(qat_fp32, work / "qat.onnx", ranges, scheme, exclude=skip, work=work)
    with torch.inference_mode():
        fq = gm(torch.from_numpy(job.test.x[:1000])).numpy()
    return path, {"epochs": opts.epochs, "lr": lr, "history": history,
                  "fakequant_vs_qdq_agreement": agreement(predict(path, job.test.x[:1000]), fq)}


def qat_rank(run_dir: Path, opts: Options, world) -> None:
    """A rank other than 0 of a distributed QAT: rank 0's ranges and fp32 graph, then its share of the
    fine-tuning (rank 0 exports, quantizes and writes)."""
    import onnx

    from edgecnn.quantize import qat
    from edgecnn.models import checkpoint

    model, _ = checkpoint.load(run_dir)
    ranges, skip, fp32, lr = world.broadcast(None)
    gm = qat.prepare(model, ranges, onnx.load_from_string(fp32), set(skip), per_channel=opts.per_channel)
    qat.finetune(gm, data.recipe(run_dir), epochs=opts.epochs, lr=lr, limit=opts.limit, world=world)


def finish(path: Path, job: Job, precision: str, config: dict, *, calibration: dict | None = None) -> dict:
    """Stamp edgecnn's metadata (precision, how it was quantized, each form's activation ranges); return its test
    accuracy."""
    import onnx

    from edgecnn.core import onnx_utils
    from edgecnn.qdq.forms import CALIBRATION_KEY

    model = onnx.load(str(path))
    facts = onnx_utils.read_meta(onnx.load(str(job.fp32), load_external_data=False))
    quant = {k: config[k] for k in ("method", "algo", "per_channel", "form", "reduce_range", "calib", "opset",
                                    "fp32_layers")}
    onnx_utils.write_meta(model, {**facts, "precision": precision, "quantization": quant,
                                  **({CALIBRATION_KEY: calibration} if calibration else {})})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    logits = predict(path, job.test.x, f"evaluate {precision}")
    fp32, acc = accuracy(job.base, job.test.labels), accuracy(logits, job.test.labels)
    return {precision: acc, "drop": None if acc is None else fp32 - acc, "agreement": agreement(logits, job.base)}


def publish(work: Path, out: Path, names: dict, rep: dict) -> None:
    """Each file appears whole or not at all; the report goes last."""
    for role, name in names.items():
        if role != "report" and (work / name).exists():
            with atomic_file(out / name) as tmp:
                shutil.copyfile(work / name, tmp)
    write_json(out / names["report"], rep)
