"""Tests for simulation.datasets: real data (HIL_DATA_DIR), synthetic files, bad input."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simulation import datasets
from simulation.datasets import DATASET_NAMES, SPLITS, available_datasets, load_dataset

# ----------------------------------------------------------------------------- helpers


def _real_dir() -> Path:
    value = os.environ.get("HIL_DATA_DIR")
    if not value:
        pytest.skip("real-data test: set HIL_DATA_DIR to the shared data folder (../shared/data)")
    return Path(value)


def _need(name: str) -> Path:
    root = _real_dir()
    if not (root / name).is_file():
        pytest.skip(f"real-data test: {root / name} is not present")
    return root


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No HIL_DATA_DIR and no Debian Fashion-MNIST, so only tmp_path files count."""
    monkeypatch.delenv("HIL_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "_DEBIAN_FASHION_DIR", tmp_path / "no-debian-here")


def _idx_bytes(array: np.ndarray) -> bytes:
    header = (0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool):
    prefix = "train" if split == "train" else "t10k"
    _write(folder / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), gz)
    _write(folder / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), gz)


def _synthetic_grey(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.uint8))


def _cifar_batch(path: Path, images_chw: np.ndarray, labels: np.ndarray, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {b"data": images_chw.reshape(len(images_chw), 3072), key: labels.tolist(),
             b"batch_label": b"synthetic"}
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def _synthetic_colour(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


# ------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_mnist_test_real():
    root = _need("mnist_test.npz")
    x, y = load_dataset("mnist", "test", data_dir=root)
    assert x.shape == (10000, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.shape == (10000,)
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) == 1.0
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert float(x[:, border].abs().max()) == 0.0
    raw = np.load(root / "mnist_test.npz")["images"][:3]
    assert torch.equal(x[:3, 2:30, 2:30], torch.from_numpy(raw.astype(np.float32) / 255))


@pytest.mark.realdata
def test_mnist_env_var_is_used(monkeypatch):
    root = _need("mnist_test.npz")
    monkeypatch.setenv("HIL_DATA_DIR", str(root))
    x, y = load_dataset("mnist", n=5)
    assert x.shape == (5, 32, 32) and y.tolist() == [7, 2, 1, 0, 4]


@pytest.mark.realdata
def test_fashion_mnist_real():
    root = _need("fashion_mnist_test.npz")
    x, y = load_dataset("fashion-mnist", "test", data_dir=root)
    assert x.shape == (10000, 32, 32)
    assert y[:5].tolist() == [9, 2, 1, 1, 6]
    assert torch.bincount(y).tolist() == [1000] * 10
    assert 0.2 < float(x[:, 2:30, 2:30].mean()) < 0.35


@pytest.mark.realdata
def test_cifar10_real_colour_and_grey():
    root = _need("cifar10_test.npz")
    x, y = load_dataset("cifar10", "test", data_dir=root)
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.float32
    assert torch.bincount(y).tolist() == [1000] * 10
    mean = x.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.4941, 0.4851, 0.4504]), atol=2e-3)
    g, yg = load_dataset("cifar10", "test", data_dir=root, colour="grey", n=50, seed=1)
    c, yc = load_dataset("cifar10", "test", data_dir=root, n=50, seed=1)
    assert g.shape == (50, 32, 32) and torch.equal(yg, yc)
    assert torch.allclose(g, c.mean(dim=1), atol=1e-6)


@pytest.mark.realdata
def test_subsets_real():
    root = _need("cifar10_test.npz")
    first, yf = load_dataset("cifar10", data_dir=root, n=100)
    assert first.shape == (100, 3, 32, 32) and set(yf.tolist()) == {0}  # grouped by class
    a, ya = load_dataset("cifar10", data_dir=root, n=100, seed=0)
    b, yb = load_dataset("cifar10", data_dir=root, n=100, seed=0)
    _, yc = load_dataset("cifar10", data_dir=root, n=100, seed=1)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(ya, yc)
    assert len(set(ya.tolist())) >= 8
    expected = np.random.default_rng(0).permutation(10000)[:100] // 1000
    assert ya.tolist() == expected.tolist()


@pytest.mark.realdata
def test_sizes_real():
    root = _need("mnist_test.npz")
    x28, _ = load_dataset("mnist", data_dir=root, n=4, size=28)
    x32, _ = load_dataset("mnist", data_dir=root, n=4)
    x20, _ = load_dataset("mnist", data_dir=root, n=4, size=20)
    x40, _ = load_dataset("mnist", data_dir=root, n=4, size=40)
    assert torch.equal(x32[:, 2:30, 2:30], x28)
    assert torch.equal(x20, x28[:, 4:24, 4:24])
    assert torch.equal(x40[:, 6:34, 6:34], x28) and float(x40[:, :6].abs().max()) == 0.0


@pytest.mark.realdata
def test_available_datasets_real():
    root = _real_dir()
    found = available_datasets(root)
    assert found["digits"] == ["train", "test"]
    if (root / "mnist_test.npz").is_file():
        assert "test" in found["mnist"]


# ---------------------------------------------------------------- synthetic files


@pytest.mark.parametrize("gz", [False, True])
def test_idx_mnist_and_fashion(tmp_path, no_env, gz):
    images, labels = _synthetic_grey(7)
    _write_idx(tmp_path, "train", images, labels, gz)
    f_images, f_labels = _synthetic_grey(5, seed=1)
    _write_idx(tmp_path / "fashion-mnist", "test", f_images, f_labels, gz)

    x, y = load_dataset("mnist", "train", data_dir=tmp_path)
    assert x.shape == (7, 32, 32) and y.tolist() == labels.tolist()
    assert torch.equal(x[:, 2:30, 2:30], torch.from_numpy(images / np.float32(255)))
    assert float(x[:, :2].abs().max()) == 0.0

    fx, fy = load_dataset("fashion-mnist", "test", data_dir=tmp_path, n=3)
    assert fx.shape == (3, 32, 32) and fy.tolist() == f_labels[:3].tolist()
    # the bare data directory is MNIST's, never Fashion-MNIST's (the file names are the same)
    with pytest.raises(FileNotFoundError):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    assert available_datasets(tmp_path) == {"mnist": ["train"], "fashion-mnist": ["test"],
                                            "digits": ["train", "test"]}


def test_idx_in_mnist_subfolder_and_debian_dir(tmp_path, monkeypatch, no_env):
    images, labels = _synthetic_grey(4)
    _write_idx(tmp_path / "mnist", "test", images, labels, gz=True)
    x, y = load_dataset("mnist", data_dir=tmp_path)
    assert x.shape == (4, 32, 32) and y.tolist() == labels.tolist()
    debian = tmp_path / "debian"
    _write_idx(debian, "train", images, labels, gz=True)
    monkeypatch.setattr(datasets, "_DEBIAN_FASHION_DIR", debian)
    fx, _ = load_dataset("fashion-mnist", "train")  # no data dir at all
    assert torch.equal(fx, x)


def test_npz_preferred_over_idx(tmp_path, no_env):
    images, labels = _synthetic_grey(6)
    np.savez(tmp_path / "mnist_test.npz", images=images[:3], labels=labels[:3])
    _write_idx(tmp_path, "test", images, labels, gz=False)
    x, _ = load_dataset("mnist", data_dir=tmp_path)
    assert len(x) == 3


def test_cifar10_batches(tmp_path, no_env):
    folder = tmp_path / "cifar-10-batches-py"
    parts = [_synthetic_colour(4, seed) for seed in range(6)]
    labels = [np.arange(4) + i for i in range(6)]
    for i in range(5):
        _cifar_batch(folder / f"data_batch_{i + 1}", parts[i], labels[i], b"labels")
    _cifar_batch(folder / "test_batch", parts[5], labels[5], b"labels")

    x, y = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert x.shape == (20, 3, 32, 32)
    assert y.tolist() == np.concatenate(labels[:5]).tolist()
    assert torch.equal(x, torch.from_numpy(np.concatenate(parts[:5]) / np.float32(255)))
    g, _ = load_dataset("cifar10", "test", data_dir=tmp_path, colour="grey")
    want = parts[5].astype(np.float32).mean(axis=1) / 255
    assert g.shape == (4, 32, 32) and np.allclose(g.numpy(), want, atol=1e-6)
    assert available_datasets(tmp_path)["cifar10"] == ["train", "test"]


def test_cifar10_batches_incomplete(tmp_path, no_env):
    folder = tmp_path / "cifar-10-batches-py"
    _cifar_batch(folder / "data_batch_1", _synthetic_colour(2, 0), np.arange(2), b"labels")
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_cifar100_python_and_npz(tmp_path, no_env):
    folder = tmp_path / "cifar-100-python"
    train, test = _synthetic_colour(5, 0), _synthetic_colour(3, 1)
    _cifar_batch(folder / "train", train, np.array([0, 99, 50, 7, 3]), b"fine_labels")
    _cifar_batch(folder / "test", test, np.array([98, 1, 2]), b"fine_labels")
    x, y = load_dataset("cifar100", "train", data_dir=tmp_path)
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [0, 99, 50, 7, 3]
    assert torch.equal(x, torch.from_numpy(train / np.float32(255)))
    x, y = load_dataset("cifar100", "test", data_dir=tmp_path, size=28)
    assert x.shape == (3, 3, 28, 28) and y.tolist() == [98, 1, 2]
    assert torch.equal(x, torch.from_numpy(test[:, :, 2:30, 2:30] / np.float32(255)))
    # the same data as an npz in the shared-data layout (HWC) wins and gives the same tensor
    np.savez(tmp_path / "cifar100_test.npz", images=test.transpose(0, 2, 3, 1),
             labels=np.array([98, 1, 2], dtype=np.uint8))
    xn, yn = load_dataset("cifar100", "test", data_dir=tmp_path, size=28)
    assert torch.equal(xn, x) and torch.equal(yn, y)


def test_digits_always_available(monkeypatch, no_env):
    from sklearn.datasets import load_digits

    x, y = load_dataset("digits", "train")
    xt, yt = load_dataset("digits", "test", data_dir="/nonexistent")
    assert x.shape == (898, 32, 32) and xt.shape == (899, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    ref = load_digits()
    assert y.tolist() == ref.target[:898].tolist() and yt.tolist() == ref.target[898:].tolist()
    x8, _ = load_dataset("digits", "train", size=8, n=10)
    assert torch.allclose(x8, torch.from_numpy(ref.images[:10] / 16).float())
    x16, _ = load_dataset("digits", "test", size=16, n=300, seed=3)
    assert x16.shape == (300, 16, 16)
    assert available_datasets() == {"digits": ["train", "test"]}


# ------------------------------------------------------------------- corrupt files


def _assert_names_file(excinfo, path: Path) -> None:
    assert str(path) in str(excinfo.value)


def test_idx_wrong_magic(tmp_path, no_env):
    images, labels = _synthetic_grey(3)
    _write_idx(tmp_path, "test", images, labels, gz=False)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    data = bytearray(bad.read_bytes())
    data[2:4] = b"\x08\x01"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="magic") as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, bad)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, no_env, gz):
    images, labels = _synthetic_grey(3)
    _write_idx(tmp_path, "test", images, labels, gz=gz)
    bad = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    data = bad.read_bytes()
    if gz:
        with gzip.open(bad, "wb") as f:
            f.write(gzip.decompress(data)[:-100])
    else:
        bad.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated") as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, bad)


def test_idx_broken_gzip_and_count_mismatch(tmp_path, no_env):
    images, labels = _synthetic_grey(3)
    _write_idx(tmp_path, "test", images, labels[:2], gz=True)
    with pytest.raises(ValueError, match="3 images but") as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, tmp_path / "t10k-images-idx3-ubyte.gz")
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(ValueError) as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, bad)


def test_idx_wrong_image_size(tmp_path, no_env):
    _write_idx(tmp_path, "test", np.zeros((2, 20, 20), np.uint8), np.zeros(2, np.uint8), False)
    with pytest.raises(ValueError, match="28, 28") as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, tmp_path / "t10k-images-idx3-ubyte")


def test_bad_npz_files(tmp_path, no_env):
    path = tmp_path / "mnist_test.npz"
    path.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(ValueError) as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, path)

    images, labels = _synthetic_grey(4)
    np.savez(path, pictures=images, labels=labels)
    with pytest.raises(ValueError, match="missing key") as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, path)

    np.savez(path, images=images[:, :27], labels=labels)
    with pytest.raises(ValueError, match="shape") as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, path)

    np.savez(path, images=images, labels=labels[:3])
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        load_dataset("mnist", data_dir=tmp_path)

    np.savez(path, images=images, labels=np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="labels in 0..9"):
        load_dataset("mnist", data_dir=tmp_path)

    np.savez(path, images=images, labels=labels)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated zip
    with pytest.raises(ValueError) as exc:
        load_dataset("mnist", data_dir=tmp_path)
    _assert_names_file(exc, path)


def test_bad_cifar_pickles(tmp_path, no_env):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    bad = folder / "test"
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError) as exc:
        load_dataset("cifar100", data_dir=tmp_path)
    _assert_names_file(exc, bad)

    _cifar_batch(bad, _synthetic_colour(2, 0), np.array([1, 2]), b"labels")  # CIFAR-10 key
    with pytest.raises(ValueError, match="fine_labels") as exc:
        load_dataset("cifar100", data_dir=tmp_path)
    _assert_names_file(exc, bad)

    with open(bad, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072") as exc:
        load_dataset("cifar100", data_dir=tmp_path)
    _assert_names_file(exc, bad)


# ---------------------------------------------------------------- missing / bad args


def test_missing_names_paths(tmp_path, no_env):
    with pytest.raises(FileNotFoundError) as exc:
        load_dataset("mnist", "train", data_dir=tmp_path)
    message = str(exc.value)
    assert str(tmp_path / "mnist_train.npz") in message
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "HIL_DATA_DIR" in message and "digits" in message

    with pytest.raises(FileNotFoundError) as exc:
        load_dataset("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(exc.value)
    assert "HIL_DATA_DIR unset" in str(exc.value)

    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path / "absent")


def test_data_dir_beats_env(tmp_path, monkeypatch, no_env):
    images, labels = _synthetic_grey(2)
    np.savez(tmp_path / "mnist_test.npz", images=images, labels=labels)
    monkeypatch.setenv("HIL_DATA_DIR", str(tmp_path / "elsewhere"))
    assert len(load_dataset("mnist", data_dir=tmp_path)[0]) == 2
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_dataset("mnist")


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError) as exc:
        load_dataset("imagenet")
    assert "name" in str(exc.value)
    for choice in DATASET_NAMES:
        assert repr(choice) in str(exc.value)


@pytest.mark.parametrize("kwargs, error", [
    ({"n": 0}, ValueError), ({"n": -3}, ValueError), ({"n": 2.5}, TypeError),
    ({"n": 100_000}, ValueError), ({"size": 0}, ValueError), ({"size": 32.0}, TypeError),
    ({"colour": "rgb"}, ValueError), ({"seed": 1.5}, TypeError), ({"seed": True}, TypeError),
])
def test_bad_arguments(kwargs, error, no_env):
    with pytest.raises(error) as exc:
        load_dataset("digits", **kwargs)
    assert next(iter(kwargs)) in str(exc.value)


@settings(max_examples=50, deadline=None)
@given(name=st.text(max_size=20), split=st.text(max_size=10))
def test_bad_names_and_splits_property(name, split):
    if name in DATASET_NAMES and split in SPLITS:
        return
    with pytest.raises(ValueError) as exc:
        load_dataset(name, split, data_dir="/nonexistent")
    assert ("name" if name not in DATASET_NAMES else "split") in str(exc.value)
