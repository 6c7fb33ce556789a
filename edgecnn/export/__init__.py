"""ONNX export: RUN_DIR/model.pt -> model.onnx (BatchNorm folded, checked, metadata, verified at once), and
the same for a PyTorch module from your own code (`from_module`, `edgecnn export package.module:factory`).

    macs.py  multiply-accumulates counted from the graph; info.py  what an ONNX holds (edgecnn info)
"""

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml

from edgecnn.core import onnx_utils, tolerance
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_file, sha256
from edgecnn.models import checkpoint

EXPORT_ATOL = 1e-4
OPSET = 18  # the default: what `edgecnn export` writes


def torch_export(model, example: torch.Tensor, *, opset: int, dynamic: bool, path: Path) -> None:
    """The dynamo exporter first (it folds BatchNorm in its optimizer); TorchScript as fallback."""
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=opset)
    for name in ("torch.onnx", "onnxscript"):  # their fallbacks log tracebacks a user need not see
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None  # whatever forward's name
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


def export(run_dir: str | Path, out: str | Path | None = None, opset: int = OPSET,
           batch: int | str = "dynamic") -> Path:
    """Export RUN_DIR's model to ONNX; verified against PyTorch through ONNX Runtime before it is kept."""
    ckpt_path = checkpoint.resolve(run_dir)
    model, spec = checkpoint.load(ckpt_path)
    out = Path(out) if out else ckpt_path.parent / "model.onnx"
    return write_checked(model, spec, out, opset=opset, batch=batch, facts=run_facts(ckpt_path, spec))


def run_facts(ckpt_path: Path, spec: dict) -> dict:
    """The metadata an export of a RUN_DIR's checkpoint records about where it came from."""
    return {"recipe": spec["recipe"], "data": run_data_config(ckpt_path.parent),
            "checkpoint": str(ckpt_path.resolve()), "checkpoint_sha256": sha256(ckpt_path)}


def exported(run_dir: str | Path) -> Path | None:
    """RUN_DIR/model.onnx when it is what `export(RUN_DIR)` would write now (the same checkpoint, recipe and
    path, export's defaults: dynamic batch, opset 18), else None. The exporter is deterministic (the same
    bytes, tests/test_export.py), so a caller may copy that file instead of exporting again."""
    ckpt_path = checkpoint.resolve(run_dir)
    path = ckpt_path.parent / "model.onnx"
    if not path.exists():
        return None
    proto = onnx.load(str(path), load_external_data=False)
    _, spec = checkpoint.load(ckpt_path)
    want = {"format": "edgecnn.onnx/1", "model": spec["model"], "input": spec["input"], "classes": spec["classes"],
            "precision": "fp32", **run_facts(ckpt_path, spec)}
    same = json.loads(json.dumps(want)) == onnx_utils.read_meta(proto)  # as the metadata holds it: JSON
    default = onnx_utils.opset_of(proto) == OPSET and onnx_utils.input_info(proto)[2]
    return path if same and default and not onnx_utils.external_files(proto) else None


def write_checked(model, spec: dict, out: Path, *, opset: int, batch: int | str, facts: dict) -> Path:
    """torch -> ONNX at `out`: BatchNorm folded, edgecnn's metadata (spec: model, input, classes; facts),
    checked by onnx and against PyTorch through ONNX Runtime before it is kept."""
    dynamic = batch == "dynamic"
    example = torch.randn(1 if dynamic else int(batch), *spec["input"]["shape"])
    with atomic_file(out) as tmp:
        torch_export(model, example, opset=opset, dynamic=dynamic, path=tmp)
        proto = onnx.load(str(tmp))
        if any(n.op_type == "BatchNormalization" for n in proto.graph.node):
            raise EdgecnnError("export left BatchNormalization nodes unfolded: report this model")
        onnx_utils.write_meta(proto, {"format": "edgecnn.onnx/1", "model": spec["model"], "input": spec["input"],
                                      "classes": spec["classes"], "precision": "fp32", **facts})
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        check_against_torch(model, tmp, spec)
    return out


def from_module(module: torch.nn.Module, input_shape, out: str | Path = "model.onnx", *, mean=None, std=None,
                scale=None, channel_order: str = "rgb", labels=None, name: str | None = None, opset: int = 18,
                batch: int | str = "dynamic") -> Path:
    """Export an image classifier from your own PyTorch code: the same checked ONNX and metadata as
    `edgecnn export`, so quantize (--calib DIR), compile, verify, bench and bundle follow.

    input_shape: C x H x W (or N x C x H x W, or '1x3x224x224'); mean, std, scale (default 1/255),
    channel_order and labels (a list or a file) are the preprocessing and class names, recorded once."""
    from edgecnn.data import image_model
    from edgecnn.data.preprocess import geometry

    shape = image_model.parse_shape(input_shape)[1][1:] if isinstance(input_shape, str) else list(input_shape)[-3:]
    module = module.eval()
    given = {"mean": mean, "std": std, "scale": scale, "channel_order": channel_order}
    inp = {"name": "input", "shape": shape, "layout": "NCHW", "dtype": "float32"}
    inp.update(image_model.preprocessing({}, given, "float32", geometry(inp)[0]))
    k = output_count(module, shape, name or type(module).__name__)
    classes = image_model.read_labels(labels) if labels is not None else [str(i) for i in range(k)]
    if len(classes) != k:
        raise EdgecnnError(f"{len(classes)} labels for the module's {k} outputs: give one label per class")
    spec = {"model": {"name": name or type(module).__name__, "source": "from_module"}, "input": inp,
            "classes": classes}
    return write_checked(module, spec, Path(out), opset=opset, batch=batch, facts={"recipe": None, "data": None})


def output_count(module, shape: list, name: str) -> int:
    """The module's outputs for one image of `shape`; EdgecnnError when its forward() does not take that shape."""
    from edgecnn.core.errors import last_line

    try:
        with torch.inference_mode():
            return module(torch.zeros(1, *shape)).reshape(1, -1).shape[1]
    except Exception as e:  # torch's RuntimeError with a shape mismatch, or whatever the user's forward raises
        given = "x".join(str(d) for d in [1, *shape])
        raise EdgecnnError(f"{name} does not take a {given} input ({type(e).__name__}: {last_line(e, 160)}): give "
                           "--input-shape the N x C x H x W its forward() expects") from None


def load_factory(target: str, weights: str | Path | None = None, **kwargs) -> torch.nn.Module:
    """'package.module:factory' (a function or class, called with kwargs), imported from the working folder
    too; with weights, a state dict loaded with torch.load(weights_only=True)."""
    import importlib
    import sys

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise EdgecnnError(f"'{target}': name a factory as package.module:function (or :Class)")
    sys.path.insert(0, str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise EdgecnnError(f"cannot import {target}: {e}") from None
    finally:
        sys.path.remove(str(Path.cwd()))
    try:
        module = factory(**kwargs)
    except Exception as e:  # the user's code: a wrong --arg, or its own error
        raise EdgecnnError(f"{target}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: "
                           f"{type(e).__name__}: {e}; check its --arg values") from None
    if not isinstance(module, torch.nn.Module):
        raise EdgecnnError(f"{target}() returned a {type(module).__name__}, not a torch.nn.Module")
    if weights:
        load_weights(module, weights, target)
    return module


def load_weights(module: torch.nn.Module, weights: str | Path, target: str) -> None:
    """A state dict (or a checkpoint holding one under 'state_dict') into the module; one line when it does not fit."""
    from edgecnn.core.errors import last_line

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except OSError:
        raise
    except Exception as e:  # not a torch file, pickled code, keys or shapes that differ from the module's
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise EdgecnnError(f"--weights {weights} does not load into {target}: {type(e).__name__}: {first}; give "
                           "the state dict saved from this model") from None


def check_against_torch(model, onnx_path: Path, spec: dict, n: int = 8) -> float:
    """Run random inputs through PyTorch and ONNX Runtime; raise when logits differ by > EXPORT_ATOL (times the
    largest logit, when above 1)."""
    from edgecnn.backends.onnxruntime import OrtRunner

    runner = OrtRunner(onnx_path)
    x = np.random.default_rng(0).standard_normal((runner.batch or n, *spec["input"]["shape"])).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    got = runner.run(x)["logits"]
    err, scale = tolerance.max_abs(got, want), tolerance.magnitude(want)
    if tolerance.exceeds(err, EXPORT_ATOL, scale):
        raise EdgecnnError(f"exported ONNX differs from PyTorch by {err:.2e} (> {EXPORT_ATOL} x {scale:.3g}, the "
                           "largest logit): export refused")
    return err
