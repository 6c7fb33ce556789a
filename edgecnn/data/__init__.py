"""Image datasets as uint8 NCHW numpy arrays (no torch needed), split into train / val / test.

Fashion-MNIST is the built-in default, read from Debian's `dataset-fashion-mnist`; nothing is downloaded.
"""

from dataclasses import dataclass, field

import numpy as np

from edgecnn.core.errors import EdgecnnError
from edgecnn.data.imageset import fit, ImageSet, normalize
from edgecnn.data.readers import (FASHION_MNIST_CLASSES, load_fashion_mnist, load_idx_split, load_image,
                                  load_image_folder, load_npz, read_idx)

__all__ = ["DataCfg", "ImageSet", "fit", "normalize", "load_split", "load_image", "read_idx", "load_idx_split",
           "load_fashion_mnist", "load_image_folder", "load_npz", "FASHION_MNIST_CLASSES"]


@dataclass
class DataCfg:
    """A recipe's `data:` section: where the images come from, their size and normalization."""

    dataset: str = "fashion-mnist"  # fashion-mnist | idx | imagefolder | npz
    root: str | None = None
    input_size: int = 28
    channels: int = 1
    mean: list = field(default_factory=lambda: [0.2860])
    std: list = field(default_factory=lambda: [0.3530])
    val_size: int = 5000
    classes: list | None = None


VAL_SEED = 20240601  # fixed, so every recipe holds out the same validation/calibration images


def load_split(data, split: str) -> ImageSet:
    """Split 'train', 'val' (held out of train: validation and quantization calibration) or 'test'.

    `data` is a recipe DataCfg (dataset, root, input_size, channels, val_size).
    """
    source = "train" if split in ("train", "val") else "test"
    if data.dataset == "fashion-mnist":
        ds = load_fashion_mnist(source, data.root)
    elif data.dataset == "idx":
        ds = load_idx_split(data.root, source)
    elif data.dataset == "imagefolder":
        ds = load_image_folder(data.root, source, data.input_size, data.channels)
    elif data.dataset == "npz":
        ds = load_npz(data.root, source)
    else:
        raise EdgecnnError(f"unknown dataset '{data.dataset}': use fashion-mnist, idx, imagefolder or npz")
    ds = ImageSet(fit(ds.images, data.input_size, data.channels), ds.labels, data.classes or ds.classes)
    if source == "test":
        return ds
    if data.val_size >= len(ds):
        raise EdgecnnError(f"data.val_size {data.val_size} leaves no training images (have {len(ds)})")
    order = np.random.default_rng(VAL_SEED).permutation(len(ds))
    return ds.subset(np.sort(order[:data.val_size] if split == "val" else order[data.val_size:]))
