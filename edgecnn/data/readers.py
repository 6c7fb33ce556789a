"""Dataset readers -> ImageSet (uint8 NCHW): IDX (MNIST format), ImageFolder, .npz, single image files.

Fashion-MNIST is the built-in default, read from Debian's `dataset-fashion-mnist`; nothing is downloaded.
"""

import gzip
import os
from pathlib import Path

import numpy as np

from edgecnn.core.errors import EdgecnnError
from edgecnn.data.imageset import ImageSet

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip or raw); a corrupt or truncated file raises EdgecnnError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise EdgecnnError(f"IDX file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise EdgecnnError(f"corrupt gzip in {path} ({e}): replace the file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise EdgecnnError(f"{path} is not an IDX file (bad magic number): expected MNIST-format data")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise EdgecnnError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise EdgecnnError(f"{path}: IDX size {len(raw)} bytes, header says {expected}: file is "
                           "truncated or corrupt")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise EdgecnnError(f"missing {stem}[.gz] in {root}")


def load_idx_split(root: str | Path, split: str, classes: list[str] | None = None) -> ImageSet:
    root = Path(root)
    images = read_idx(_find(root, IDX_FILES[split][0]))
    labels = read_idx(_find(root, IDX_FILES[split][1])).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise EdgecnnError(f"{root}: {split} images {images.shape} do not match labels {labels.shape}")
    classes = classes or [str(i) for i in range(int(labels.max()) + 1)]
    return ImageSet(np.ascontiguousarray(images[:, None]).astype(np.uint8), labels, classes)


def load_fashion_mnist(split: str, root: str | None = None) -> ImageSet:
    root = root or os.environ.get("EDGECNN_FASHION_MNIST", FASHION_MNIST_DIR)
    if not Path(root, IDX_FILES[split][0] + ".gz").exists() and not Path(root, IDX_FILES[split][0]).exists():
        raise EdgecnnError(f"Fashion-MNIST not found in {root}: apt-get install dataset-fashion-mnist, "
                           "or set data.root (or EDGECNN_FASHION_MNIST) to a folder of IDX files")
    return load_idx_split(root, split, FASHION_MNIST_CLASSES)


def load_image_folder(root: str | Path, split: str, size: int, channels: int) -> ImageSet:
    """root/<split>/<class>/*.png (Pillow); images are resized to size x size."""
    base = Path(root) / split
    ds = read_image_dir(base, size, channels) if base.is_dir() else None
    if ds is None or not ds.classes:
        raise EdgecnnError(f"no class folders in {base}: expected {base}/<class>/<image files>")
    return ds


def read_image_dir(folder: str | Path, size: int, channels: int) -> ImageSet:
    """folder/<class>/<images> (labelled by class, classes sorted) or folder/<images> (unlabelled: label -1,
    no classes); images resized to size x size."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgecnnError(f"image folder not found: {folder}")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    groups = [(i, folder / c) for i, c in enumerate(classes)] or [(-1, folder)]
    images, labels = [], []
    for label, sub in groups:
        for f in sorted(sub.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(load_image(f, size, channels))
                labels.append(label)
    if not images:
        raise EdgecnnError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder} or its class folders")
    return ImageSet(np.stack(images), np.array(labels, np.int64), classes)


def load_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image file -> uint8 C x size x size."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path).convert("L" if channels == 1 else "RGB").resize((size, size))
    except (OSError, UnidentifiedImageError) as e:
        raise EdgecnnError(f"cannot read image {path}: {e}") from None
    arr = np.asarray(img, np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def load_npz(path: str | Path, split: str) -> ImageSet:
    """.npz with x_train/y_train/x_test/y_test (N,H,W or N,H,W,C or N,C,H,W uint8) and optional classes."""
    try:
        data = np.load(path, allow_pickle=False)
        x, y = data[f"x_{split}"], data[f"y_{split}"].astype(np.int64)
    except FileNotFoundError:
        raise EdgecnnError(f"npz file not found: {path}") from None
    except KeyError as e:
        raise EdgecnnError(f"{path} lacks array {e}: needs x_train, y_train, x_test, y_test") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    classes = [str(c) for c in data["classes"]] if "classes" in data else \
        [str(i) for i in range(int(y.max()) + 1)]
    return ImageSet(np.ascontiguousarray(x).astype(np.uint8), y, classes)
