"""A model's input and output as arrays, as the "input" section of its manifest says: uint8 images -> what the
model takes, and its output -> class scores. verify, quantize, the bundle's README and the runtime all read
the section through these functions (numpy only: the runtime uses them without torch or onnx).

    x[c] = (pixel[c] * scale - mean[c]) / std[c]    channels in the model's order (rgb or bgr), scale 1/255
                                                     unless given; then the model's layout (NCHW or NHWC)

A uint8 model takes the pixels as they are (it normalizes them itself): only the channel order and the
layout apply.
"""

import numpy as np

from edgecnn.core.errors import EdgecnnError
from edgecnn.data.imageset import normalize

LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("rgb", "bgr")
DEFAULT_SCALE = 1 / 255


def scale_of(value) -> float:
    """A scale as a number: 0.0078125, '1/127.5', or a checkpoint's 'x / 255' (default 1/255)."""
    if value is None:
        return DEFAULT_SCALE
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).replace(" ", "").removeprefix("x")
    try:
        if "/" in text:
            num, _, den = text.partition("/")
            return float(num or 1) / float(den)
        return float(text.removeprefix("*"))
    except (ValueError, ZeroDivisionError):
        raise EdgecnnError(f"scale '{value}': give a number such as 0.00392 or 1/255") from None


def geometry(spec: dict) -> tuple[int, int, int]:
    """(channels, height, width) of the model's image input (its shape, with or without the batch)."""
    dims = list(spec["shape"])[-3:]
    c, h, w = (dims[2], dims[0], dims[1]) if spec.get("layout", "NCHW") == "NHWC" else dims
    return int(c), int(h), int(w)


def takes_pixels(spec: dict) -> bool:
    """Whether the model takes raw uint8 pixels (and normalizes them itself)."""
    return spec.get("dtype", "float32") == "uint8"


def pixels_nchw(a: np.ndarray, channels: int) -> np.ndarray:
    """uint8 pixels as H x W, H x W x C, N x C x H x W or N x H x W x C (C = 1 or 3) -> N x C x H x W for a
    model of `channels` channels (grey images are widened later, by fit)."""
    if a.dtype != np.uint8:
        raise EdgecnnError(f"images must be uint8 pixels (0-255), got {a.dtype}: the model's own "
                           "normalization is applied here")
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3):
        a = a.transpose(2, 0, 1)[None]
    elif a.ndim == 4 and a.shape[1] not in (1, 3) and a.shape[-1] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    elif a.ndim != 4:
        raise EdgecnnError(f"cannot read an image array of shape {list(a.shape)}: pass H x W, H x W x C, "
                           "N x C x H x W or N x H x W x C (C = 1 or 3)")
    if a.shape[1] != channels and not (a.shape[1] == 1 and channels == 3):
        raise EdgecnnError(f"the model takes {channels}-channel images, got {a.shape[1]} channels: "
                           "convert them first (e.g. Pillow .convert('L'))")
    return np.ascontiguousarray(a)


def preprocess(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 N x C x H x W images (RGB or grey) -> the model's input: channel order, scale/mean/std, layout."""
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise EdgecnnError(f"preprocess takes uint8 N x C x H x W images, got {x.dtype} {list(x.shape)}")
    if spec.get("channel_order", "rgb") == "bgr" and x.shape[1] == 3:
        x = x[:, ::-1]
    if not takes_pixels(spec):
        scale = scale_of(spec.get("scale"))
        x = normalize(x, spec.get("mean", [0.0]), spec.get("std", [1.0]),
                      None if scale == DEFAULT_SCALE else scale)
    if spec.get("layout", "NCHW") == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x)


def formula(spec: dict) -> str:
    """The preprocessing in one line, for a README."""
    order = f", channels {spec.get('channel_order', 'rgb').upper()}" if geometry(spec)[0] == 3 else ""
    if takes_pixels(spec):
        return f"x = pixel (uint8, as it is: the model normalizes it itself){order}"
    scale = scale_of(spec.get("scale"))
    by = "/ 255" if scale == DEFAULT_SCALE else f"* {scale:.6g}"
    return (f"x[c] = (pixel[c] {by} - mean[c]) / std[c],  mean = {spec.get('mean', [0.0])}, "
            f"std = {spec.get('std', [1.0])}{order}")


def class_scores(output: np.ndarray) -> np.ndarray:
    """N x K class scores from an output of shape N x K, N x K x 1 x 1 or N x 1 x 1 x K."""
    rest = output.shape[1:]
    if len(rest) == 1 or sum(d != 1 for d in rest) <= 1:
        return output.reshape(len(output), -1)
    raise EdgecnnError(f"output of shape {list(output.shape)} is not class scores (N x K or N x K x 1 x 1)")
