"""Image datasets as uint8 NCHW numpy arrays (no torch needed), split into train / val / test.

Fashion-MNIST is the built-in default, read from Debian's `dataset-fashion-mnist`; nothing is downloaded.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecnn.core.errors import EdgecnnError
from edgecnn.data.imageset import fit, ImageSet, normalize
from edgecnn.data.readers import (FASHION_MNIST_CLASSES, load_fashion_mnist, load_idx_split, load_image,
                                  load_image_folder, load_npz, read_idx, read_image_dir)

__all__ = ["DataCfg", "ImageSet", "fit", "normalize", "load_split", "load_images", "relabel", "load_image",
           "read_idx", "load_idx_split", "load_fashion_mnist", "load_image_folder", "read_image_dir", "load_npz",
           "FASHION_MNIST_CLASSES"]

DATASETS = ("fashion-mnist", "idx", "imagefolder", "npz")
SPLITS = ("train", "val", "test")


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


def parse_source(spec: str) -> tuple[str | None, str | None, str]:
    """--data: SPLIT (the recorded dataset's), DATASET:SPLIT, or DATASET:PATH[:SPLIT] -> (dataset, root, split)."""
    if spec in SPLITS:
        return None, None, spec
    dataset, _, rest = spec.partition(":")
    if dataset not in DATASETS or not rest:
        raise EdgecnnError(f"--data {spec}: use test, val, random, DATASET:SPLIT (e.g. fashion-mnist:test) or "
                           "DATASET:PATH (imagefolder:DIR, idx:DIR, npz:FILE)")
    if rest in SPLITS:
        return dataset, None, rest
    head, _, tail = rest.rpartition(":")
    root, split = (head, tail) if head and tail in SPLITS else (rest, "test")
    if not Path(root).exists():
        raise EdgecnnError(f"--data {spec}: '{root}' is neither a split ({', '.join(SPLITS)}) nor a file or folder")
    return dataset, root, split


def load_images(spec: str, recorded: dict | None, *, size: int, channels: int) -> tuple[ImageSet, str]:
    """The images --data names, fitted to size x size x channels: (images, what they are).

    recorded: the data section a model was trained with (None for a model from elsewhere). An image
    folder with no SPLIT subfolder is read as it is: DIR/<class>/<images>, or DIR/<images> (unlabelled)."""
    dataset, root, split = parse_source(spec)
    if dataset is None and not recorded:
        raise EdgecnnError(f"--data {spec}: no dataset is recorded with this model; use --data imagefolder:DIR, "
                           "idx:DIR, npz:FILE or random")
    cfg = DataCfg(**recorded) if recorded else DataCfg(val_size=0)
    cfg.root = root or (cfg.root if dataset in (None, cfg.dataset) else None)
    cfg.dataset = dataset or cfg.dataset
    cfg.input_size, cfg.channels = size, channels
    if cfg.dataset == "imagefolder" and root and not (Path(root) / split).is_dir():
        ds = read_image_dir(root, size, channels)
        return ds, f"{root} x{len(ds)}"
    ds = load_split(cfg, split)
    return ds, f"{cfg.dataset}:{split} x{len(ds)}" if not root else f"{cfg.dataset}:{root}:{split} x{len(ds)}"


def relabel(ds: ImageSet, model_labels: list | None) -> tuple[np.ndarray | None, str]:
    """The images' labels as the model's class indices: by name where every class is one of the model's
    labels, else by class index. None for unlabelled images."""
    if not ds.classes:
        return None, "unlabelled"
    if model_labels and set(ds.classes) <= set(map(str, model_labels)) and ds.classes != list(map(str, model_labels)):
        index = {str(name): i for i, name in enumerate(model_labels)}
        return np.array([index[ds.classes[k]] for k in ds.labels], np.int64), "labels matched by name"
    return ds.labels, "labels by class index"
