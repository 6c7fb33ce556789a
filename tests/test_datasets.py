import numpy as np
import pytest
from conftest import needs_fashion, write_idx

from edgecnn import data
from edgecnn.core.errors import EdgecnnError
from edgecnn.train.recipe import DataCfg


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(data.read_idx(write_idx(tmp_path / "a.idx", a, compress)), a)


def test_read_idx_truncated(tmp_path):
    p = write_idx(tmp_path / "a.idx", np.zeros((10, 28, 28), np.uint8), compress=False)
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(EdgecnnError, match="truncated or corrupt"):
        data.read_idx(p)


def test_read_idx_truncated_gzip(tmp_path):
    p = write_idx(tmp_path / "a.idx.gz", np.zeros((10, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(EdgecnnError, match="corrupt gzip"):
        data.read_idx(p)


def test_read_idx_bad_magic(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(b"PNG\x00" + bytes(100))
    with pytest.raises(EdgecnnError, match="bad magic"):
        data.read_idx(p)


def test_read_idx_header_cut(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(EdgecnnError, match="truncated IDX header"):
        data.read_idx(p)


def test_missing_fashion_mnist_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_FASHION_MNIST", str(tmp_path))
    with pytest.raises(EdgecnnError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("train")


@needs_fashion
def test_fashion_mnist_splits():
    cfg = DataCfg(val_size=5000)
    train, val, test = (data.load_split(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == np.uint8
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_idx_split_on_generated_files(tiny_idx):
    cfg = DataCfg(dataset="idx", root=str(tiny_idx), val_size=100)
    assert len(data.load_split(cfg, "train")) == 500
    assert len(data.load_split(cfg, "val")) == 100


def test_npz_and_fit(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (20, 28, 28, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 2, x_test=x[:4], y_test=np.arange(4) % 2,
             classes=np.array(["cat", "dog"]))
    cfg = DataCfg(dataset="npz", root=str(tmp_path / "d.npz"), channels=3, input_size=32, val_size=5,
                  mean=[0.5] * 3, std=[0.5] * 3)
    test = data.load_split(cfg, "test")
    assert test.images.shape == (4, 3, 32, 32) and test.classes == ["cat", "dog"]
    assert np.array_equal(test.images[:, :, 2:30, 2:30], x[:4].transpose(0, 3, 1, 2))


def test_npz_missing_array(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(EdgecnnError, match="needs x_train, y_train, x_test, y_test"):
        data.load_npz(tmp_path / "d.npz", "train")


def test_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls, value in (("dark", 10), ("light", 240)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (value, value, value)).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "dark" / "notes.txt").write_text("ignored")
    ds = data.load_image_folder(tmp_path, "train", 28, 1)
    assert ds.images.shape == (6, 1, 28, 28) and ds.classes == ["dark", "light"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.images[3].min() == 240


def test_image_folder_empty(tmp_path):
    with pytest.raises(EdgecnnError, match="no class folders"):
        data.load_image_folder(tmp_path, "train", 28, 1)


def test_normalize():
    x = np.full((1, 1, 2, 2), 255, np.uint8)
    assert np.allclose(data.normalize(x, [0.5], [0.25]), 2.0)
