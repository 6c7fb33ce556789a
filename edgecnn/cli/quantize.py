"""edgecnn quantize."""

import click

from edgecnn.backends import DEFAULT_QDQ_FORM, qdq_forms
from edgecnn.cli.options import given, model_facts
from edgecnn.cli.train import launch_options, relaunch
from edgecnn.core.progress import console


@click.command("quantize")
@click.argument("run_dir", metavar="RUN_DIR|MODEL.onnx")
@click.option("--method", type=click.Choice(["ptq", "qat", "fp16"]), default="ptq", show_default=True,
              help="int8 post-training, int8 quantization-aware fine-tuning, or an fp16 conversion")
@click.option("--calib", default="512", show_default=True, help="N calibration images of RUN_DIR's held-out val "
              "split, or DIR: a folder of images (MODEL.onnx; a fixed sample of --calib-images)")
@click.option("--calib-images", type=int, default=512, show_default=True, help="with --calib DIR: how many")
@click.option("--data", default=None, help="MODEL.onnx: labelled images to measure on (imagefolder:DIR, idx:DIR, "
              "npz:FILE; default: the folder's images not calibrated on)")
@click.option("--algo", type=click.Choice(["minmax", "percentile", "entropy", "mse", "auto"]), default="minmax",
              show_default=True, help="activation range calibration; auto: try each on held-out val images, keep "
              "the most accurate within --max-drop")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="weight scales")
@click.option("--form", type=click.Choice(sorted(qdq_forms())), default=DEFAULT_QDQ_FORM, show_default=True,
              help="Q/DQ form: TensorRT's rules (runs everywhere), or ONNX Runtime's CPU recipe (fast on ORT CPU, "
                   "refused by TensorRT)")
@click.option("--reduce-range/--full-range", default=None,
              help="7-bit weights, ONNX Runtime's advice for x86 CPUs without VNNI (default: on for the onnxruntime "
                   "form where this CPU lacks VNNI)")
@click.option("--skip", multiple=True, metavar="LAYER", help="keep a layer (or module prefix) in fp32; repeatable")
@click.option("--auto", is_flag=True, help="keep the most sensitive layers in fp32 until the drop <= --max-drop")
@click.option("--max-drop", type=float, default=0.5, show_default=True, help="--auto and --algo auto budget, "
              "top-1 points")
@click.option("--sensitivity", type=int, default=1000, show_default=True,
              help="held-out val images for per-layer sensitivity (0: skip it)")
@click.option("--epochs", type=int, default=1, show_default=True, help="QAT fine-tuning epochs")
@click.option("--lr", type=float, default=None, help="QAT learning rate (default: the recipe's / 50)")
@click.option("--fp16-io", is_flag=True, help="fp16: make the input and output fp16 too (default float32)")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (TensorRT 8.5 takes <= 17)")
@click.option("--limit", type=int, default=None, help="first N test (and QAT train) images: a quick trial")
@click.option("--out", default=None, help="output folder (default RUN_DIR, or MODEL.onnx's folder)")
@model_facts
@launch_options
@click.pass_context
def quantize_cmd(ctx, run_dir, *, method, calib, calib_images, data, algo, per_channel, form, reduce_range, skip,
                 auto, max_drop, sensitivity, epochs, lr, fp16_io, opset, limit, out, nproc, **facts):
    """Quantize a trained RUN_DIR, or an ONNX from elsewhere with --calib DIR: model.int8.onnx (Q/DQ for
    TensorRT, ONNX Runtime, TVM) or model.fp16.onnx, with fp32 vs quantized top-1 and per-layer sensitivity
    (quant.json, quant-sensitivity.png; STEM.int8.onnx, STEM.quant.json for STEM.onnx).

    --method qat fine-tunes on several ranks with --nproc N (or under torchrun)."""
    from rich.markup import escape

    from edgecnn.core.errors import EdgecnnError
    from edgecnn.quantize import quantize, report

    if nproc and method != "qat":
        raise EdgecnnError(f"--nproc runs training on several ranks: --method {method} does not train "
                           "(use --method qat)")
    if relaunch(ctx, nproc, "no quantized model was written"):
        return  # rank 0 printed the report
    folder = None if calib.isdigit() else calib
    rep = quantize(run_dir, out, method=method, calib=calib_images if folder else int(calib), calib_dir=folder,
                   data=data, given=given(facts), algo=algo, per_channel=per_channel, form=form,
                   reduce_range=reduce_range, skip=list(skip), auto=auto, max_drop=max_drop, sensitivity=sensitivity,
                   epochs=epochs, lr=lr, keep_io_fp32=not fp16_io, opset=opset, limit=limit)
    if rep is None:  # a rank other than 0
        return
    for table in (report.algo_table(rep), report.accuracy_table(rep)):
        if table is not None:
            console.print(table)
    sens = report.sensitivity_table(rep)
    if sens is not None:
        console.print(sens)
    if rep["config"].get("reduce_range"):
        console.print("weights in 7 bits (reduce_range): ONNX Runtime's advice for x86 CPUs without VNNI, whose "
                      "u8 x s8 kernels saturate")
    if rep.get("note"):
        console.print(rep["note"])
    lint = rep.get("tensorrt_lint") or []
    if lint and form != DEFAULT_QDQ_FORM:
        console.print(f"the {form} form is not for TensorRT ({len(lint)} Q/DQ lint findings in quant.json)")
    elif lint:
        more = f" (and {len(lint) - 1} more in quant.json)" if len(lint) > 1 else ""
        console.print(f"[yellow]TensorRT Q/DQ lint:[/] {escape(lint[0])}{more}")
    console.print("wrote " + ", ".join(rep["files"].values()))
