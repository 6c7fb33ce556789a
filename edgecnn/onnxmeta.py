"""edgecnn's facts stored in an ONNX file's metadata_props (JSON values under 'edgecnn.*' keys)."""

import json
from pathlib import Path

from edgecnn.errors import EdgecnnError

PREFIX = "edgecnn."


def load_model(path: str | Path, load_weights: bool = True):
    """onnx.load with a one-line error for a missing or corrupt file."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise EdgecnnError(f"ONNX file not found: {path} (edgecnn export RUN_DIR writes one)")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, onnx ValidationError, ...
        raise EdgecnnError(f"{path} is not a valid ONNX model ({type(e).__name__}): re-export it") from None
    return model


def read(model) -> dict:
    out = {}
    for p in model.metadata_props:
        if p.key.startswith(PREFIX):
            out[p.key[len(PREFIX):]] = json.loads(p.value)
    return out


def write(model, facts: dict) -> None:
    keep = [p for p in model.metadata_props if not (p.key[len(PREFIX):] in facts and p.key.startswith(PREFIX))]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = PREFIX + key, json.dumps(value)
