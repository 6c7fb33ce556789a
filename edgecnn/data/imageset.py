"""ImageSet (uint8 N x C x H x W images with labels) and the array preprocessing every stage shares."""

from dataclasses import dataclass

import numpy as np

from edgecnn.core.errors import EdgecnnError


@dataclass
class ImageSet:
    images: np.ndarray  # uint8, N x C x H x W
    labels: np.ndarray  # int64, N
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.classes)


def fit(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Match the recipe's input: repeat grey to 3 channels, zero-pad (even difference) or resize."""
    if images.shape[1] != channels:
        if images.shape[1] == 1 and channels == 3:
            images = np.repeat(images, 3, axis=1)
        else:
            raise EdgecnnError(f"data has {images.shape[1]} channels, recipe asks for {channels}: "
                               "set data.channels to match")
    h = images.shape[2]
    if h == size:
        return images
    if size > h and (size - h) % 2 == 0:
        p = (size - h) // 2
        return np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
    from PIL import Image

    out = [np.stack([np.asarray(Image.fromarray(c).resize((size, size))) for c in img]) for img in images]
    return np.stack(out).astype(np.uint8)


def normalize(images: np.ndarray, mean, std, scale: float | None = None) -> np.ndarray:
    """uint8 NCHW -> float32 NCHW, (x / 255 - mean) / std per channel (x * scale with a scale): the
    preprocessing every stage uses (edgecnn.data.preprocess applies a manifest's section with it)."""
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    x = images.astype(np.float32)
    x = x / 255.0 if scale is None else x * np.float32(scale)
    return ((x - mean) / std).astype(np.float32)
