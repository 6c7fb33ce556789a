"""model.pt: state dict + everything later stages need (model config, input spec, normalization, labels).

Only plain types and tensors go in, so it loads with `torch.load(..., weights_only=True)`.
"""

from pathlib import Path

import torch
import torch.nn as nn

from edgecnn import models
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_file

FORMAT, VERSION = "edgecnn.checkpoint", 1


def model_spec(recipe, num_classes: int, classes: list[str]) -> dict:
    """The part of a checkpoint that describes the model and its input, without weights."""
    d = recipe.data
    return {"format": FORMAT, "version": VERSION, "recipe": recipe.name,
            "model": {"name": recipe.model.name, "num_classes": num_classes, "in_channels": d.channels,
                      "input_size": d.input_size, **recipe.model.options},
            "input": {"name": "input", "shape": [d.channels, d.input_size, d.input_size],
                      "layout": "NCHW", "dtype": "float32", "mean": list(d.mean), "std": list(d.std),
                      "scale": "x / 255"},
            "classes": list(classes)}


def build_model(spec: dict) -> nn.Module:
    cfg = dict(spec["model"])
    return models.create(cfg.pop("name"), **cfg)


def save(path: str | Path, model: nn.Module, spec: dict) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_file(path) as tmp:
        torch.save({**spec, "state_dict": state}, tmp)


def resolve(path: str | Path) -> Path:
    path = Path(path)
    return path / "model.pt" if path.is_dir() else path


def load(path: str | Path) -> tuple[nn.Module, dict]:
    """RUN_DIR or model.pt -> (model in eval mode, spec)."""
    path = resolve(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EdgecnnError(f"no checkpoint at {path}: train first (edgecnn train RECIPE --out RUN_DIR)") from None
    except Exception as e:  # torch raises several types for a bad pickle/zip
        raise EdgecnnError(f"{path} is not a loadable checkpoint ({type(e).__name__}): retrain or restore it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise EdgecnnError(f"{path} is not an edgecnn checkpoint")
    if ckpt.get("version") != VERSION:
        raise EdgecnnError(f"{path}: checkpoint version {ckpt.get('version')} unsupported (expected {VERSION})")
    model = build_model(ckpt)
    model.load_state_dict(ckpt.pop("state_dict"))
    return model.eval(), ckpt
