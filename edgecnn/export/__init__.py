"""ONNX export: RUN_DIR/model.pt -> model.onnx (BatchNorm folded, checked, metadata, verified at once).

    macs.py  multiply-accumulates counted from the graph; info.py  what an ONNX holds (edgecnn info)
"""

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml

from edgecnn.core import onnx_utils
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_file, sha256
from edgecnn.train import checkpoint

EXPORT_ATOL = 1e-4


def torch_export(model, example: torch.Tensor, *, opset: int, dynamic: bool, path: Path) -> None:
    """The dynamo exporter first (it folds BatchNorm in its optimizer); TorchScript as fallback."""
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=opset)
    for name in ("torch.onnx", "onnxscript"):  # their fallbacks log tracebacks a user need not see
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            dyn = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dyn, **kwargs)
            program.optimize()
            program.save(str(path))
            # below 18 the dynamo exporter may keep 18 when it cannot convert
            if onnx_utils.opset_of(onnx.load(str(path), load_external_data=False)) == opset:
                return
        except Exception as e:  # fall back to the TorchScript exporter, which folds BN in eval mode
            logging.getLogger(__name__).info("dynamo export failed (%s), using TorchScript", e)
        torch.onnx.export(model, (example,), str(path), dynamo=False, do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
                          **kwargs)


def run_data_config(run_dir: Path) -> dict | None:
    path = run_dir / "recipe.yaml"
    return yaml.safe_load(path.read_text()).get("data") if path.exists() else None


def export(run_dir: str | Path, out: str | Path | None = None, opset: int = 18,
           batch: int | str = "dynamic") -> Path:
    """Export RUN_DIR's model to ONNX; verified against PyTorch through ONNX Runtime before it is kept."""
    ckpt_path = checkpoint.resolve(run_dir)
    model, spec = checkpoint.load(ckpt_path)
    out = Path(out) if out else ckpt_path.parent / "model.onnx"
    dynamic = batch == "dynamic"
    example = torch.randn(1 if dynamic else int(batch), *spec["input"]["shape"])
    with atomic_file(out) as tmp:
        torch_export(model, example, opset=opset, dynamic=dynamic, path=tmp)
        proto = onnx.load(str(tmp))
        if any(n.op_type == "BatchNormalization" for n in proto.graph.node):
            raise EdgecnnError("export left BatchNormalization nodes unfolded: report this model")
        onnx_utils.write_meta(proto, {"format": "edgecnn.onnx/1", "model": spec["model"], "input": spec["input"],
                               "classes": spec["classes"], "recipe": spec["recipe"], "precision": "fp32",
                               "data": run_data_config(ckpt_path.parent),
                               "checkpoint": str(ckpt_path.resolve()), "checkpoint_sha256": sha256(ckpt_path)})
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        check_against_torch(model, tmp, spec)
    return out


def check_against_torch(model, onnx_path: Path, spec: dict, n: int = 8) -> float:
    """Run random inputs through PyTorch and ONNX Runtime; raise when logits differ by > EXPORT_ATOL."""
    from edgecnn.backends.onnxruntime import OrtRunner

    runner = OrtRunner(onnx_path)
    x = np.random.default_rng(0).standard_normal((runner.batch or n, *spec["input"]["shape"])).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    got = runner.run(x)["logits"]
    err = float(np.abs(got - want).max())
    if err > EXPORT_ATOL:
        raise EdgecnnError(f"exported ONNX differs from PyTorch by {err:.2e} (> {EXPORT_ATOL}): export refused")
    return err
