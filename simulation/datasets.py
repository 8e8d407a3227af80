"""Test image data sets: MNIST, Fashion-MNIST, CIFAR-10/100 and scikit-learn's digits.

`load_dataset` returns images in the house format (docs/architecture.md §Data-contracts):
float32 tensors in [0, 1], grey (B, size, size) or colour (B, 3, size, size), with int64
labels (B,).

Files are searched for in one directory: the `data_dir` argument, else the environment
variable ``HIL_DATA_DIR``, else none (only the system locations below are then searched).
For each data set the sources are tried in this order, and the first one present is read:

1. NumPy archives in the layout of the project's ``shared/data`` folder (``mnist_test.npz``,
   ``fashion_mnist_train.npz``, ``cifar10_test.npz``, ``cifar100_train.npz``, ...) with the
   keys ``images`` (uint8, (N, 28, 28) grey or (N, 32, 32, 3) RGB) and ``labels``.
2. MNIST / Fashion-MNIST IDX files (``t10k-images-idx3-ubyte[.gz]`` and the labels alike).
   MNIST: in the data directory itself, ``mnist/`` or ``MNIST/raw/``. Fashion-MNIST (whose
   files have the same names) only in ``fashion-mnist/``, ``fashion_mnist/``,
   ``FashionMNIST/raw/`` or the Debian package's ``/usr/share/datasets/fashion-mnist/``.
3. The official CIFAR python batches: ``cifar-10-batches-py/`` and ``cifar-100-python/``.
   These are pickles; they are read with a restricted unpickler
   (`simulation.cifar_pickle.read_cifar_python`, also importable from here) that
   builds only what a batch holds (dicts, lists, bytes, strings, numbers and numpy arrays of
   plain dtypes) and refuses anything else before it is called: a crafted batch runs no code.
4. ``digits``: scikit-learn's bundled 8x8 digits, always available.

A data set that cannot be found raises FileNotFoundError listing every path tried; a file that
is found but cannot be read (bad archive, wrong IDX magic number, truncated data, wrong shapes,
missing keys) raises ValueError naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from simulation._checks import check_choice, check_positive
from simulation.cifar_pickle import read_cifar_python

__all__ = ["DATASET_NAMES", "SPLITS", "available_datasets", "load_dataset", "read_cifar_python"]

DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10", "cifar100", "digits")
SPLITS = ("train", "test")
COLOURS = ("channels", "grey")

_N_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "digits": 10}
_NPZ_STEM = {"mnist": "mnist", "fashion-mnist": "fashion_mnist", "cifar10": "cifar10",
             "cifar100": "cifar100"}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_SUBDIRS = {"mnist": (".", "mnist", "MNIST/raw"),
                "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw")}
# Where `apt-get install dataset-fashion-mnist` puts the files (module-level so tests can move it).
_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_CIFAR_FILES = {
    ("cifar10", "train"): ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)]),
    ("cifar10", "test"): ("cifar-10-batches-py", ["test_batch"]),
    ("cifar100", "train"): ("cifar-100-python", ["train"]),
    ("cifar100", "test"): ("cifar-100-python", ["test"]),
}
_CV_CHANNELS = 128  # channels per cv2.resize call (OpenCV 5 refuses more)
_DIGITS_N_TRAIN = 898  # sklearn's digits example: first half train, second half (899) test


@dataclass(frozen=True)
class _Source:
    kind: str  # "npz" | "idx" | "cifar" | "sklearn"
    paths: tuple[Path, ...]


def _search_dir(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("HIL_DATA_DIR")
    return Path(env) if env else None


def _find_file(folder: Path, stem: str, tried: list[str]) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate
    return None


def _locate(name: str, split: str, root: Path | None) -> tuple[_Source | None, list[str]]:
    """The first source present for (name, split), and every path looked at."""
    tried: list[str] = []
    if name == "digits":
        return _Source("sklearn", ()), tried
    if root is not None:
        npz = root / f"{_NPZ_STEM[name]}_{split}.npz"
        tried.append(str(npz))
        if npz.is_file():
            return _Source("npz", (npz,)), tried
    if name in _IDX_SUBDIRS:
        folders = [root / sub for sub in _IDX_SUBDIRS[name]] if root is not None else []
        if name == "fashion-mnist":
            folders.append(_DEBIAN_FASHION_DIR)
        prefix = _IDX_PREFIX[split]
        for folder in folders:
            folder = Path(os.path.normpath(folder))
            images = _find_file(folder, f"{prefix}-images-idx3-ubyte", tried)
            labels = _find_file(folder, f"{prefix}-labels-idx1-ubyte", tried)
            if images is not None and labels is not None:
                return _Source("idx", (images, labels)), tried
    if name in ("cifar10", "cifar100") and root is not None:
        sub, files = _CIFAR_FILES[(name, split)]
        paths = [root / sub / f for f in files]
        tried.extend(str(p) for p in paths)
        if all(p.is_file() for p in paths):
            return _Source("cifar", tuple(paths)), tried
    return None, tried


def _not_found(name: str, split: str, root: Path | None, tried: list[str]) -> FileNotFoundError:
    where = (f"data directory {str(root)!r}" + ("" if root.is_dir() else " (does not exist)")
             if root is not None else "no data directory (data_dir not given, HIL_DATA_DIR unset)")
    how = [f"pass data_dir=... or set HIL_DATA_DIR to a folder holding "
           f"{_NPZ_STEM[name]}_{split}.npz"]
    if name in ("mnist", "fashion-mnist"):
        how.append("or the IDX files (train-/t10k-images-idx3-ubyte[.gz] and -labels-idx1-ubyte"
                   f"[.gz]) in {' or '.join(repr(s) for s in _IDX_SUBDIRS[name])}")
    if name == "fashion-mnist":
        how.append("or run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu)")
    if name in ("cifar10", "cifar100"):
        sub = _CIFAR_FILES[(name, split)][0]
        how.append(f"or the official python batches in {sub}/ (from "
                   "https://www.cs.toronto.edu/~kriz/cifar.html)")
    how.append("the 'digits' data set is always available")
    return FileNotFoundError(
        f"dataset {name!r}, split {split!r}: not found with {where}. Tried: "
        + ", ".join(tried) + ". To get it: " + "; ".join(how) + "."
    )


# ---------------------------------------------------------------------------------- readers


def _check_arrays(images: np.ndarray, labels: np.ndarray, name: str, path: str) -> None:
    """Shapes, dtypes and label range; raises ValueError naming `path`."""
    want = (32, 32, 3) if name in ("cifar10", "cifar100") else (28, 28)
    if images.dtype != np.uint8 or images.ndim != len(want) + 1 or images.shape[1:] != want:
        raise ValueError(f"{path}: expected images of shape (N, {', '.join(map(str, want))}) "
                         f"uint8, got shape {images.shape}, dtype {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise ValueError(f"{path}: expected integer labels of shape (N,), got shape "
                         f"{labels.shape}, dtype {labels.dtype}")
    if len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError(f"{path}: holds no images")
    k = _N_CLASSES[name]
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= k:
        raise ValueError(f"{path}: expected labels in 0..{k - 1} for {name}, got {lo}..{hi}")


def _read_npz(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"images", "labels"} - set(archive.files)
            if missing:
                raise ValueError(f"{path}: missing key(s) {sorted(missing)}, has "
                                 f"{sorted(archive.files)}")
            images, labels = archive["images"], archive["labels"]
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({type(exc).__name__}: "
                         f"{exc})") from exc
    _check_arrays(images, labels, name, str(path))
    if images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)  # RGB HWC -> CHW
    return images, labels


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def _parse_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array of rank `ndim`, checked against its header."""
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {header})")
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x800 + ndim:
        raise ValueError(f"{path}: wrong IDX magic number 0x{magic:08x}, expected "
                         f"0x{0x800 + ndim:08x} (unsigned bytes, {ndim}-D)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        kind = "truncated" if len(raw) - header < expected else "oversized"
        raise ValueError(f"{path}: {kind} IDX data: header says {dims} = {expected} bytes, "
                         f"file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx(images_path: Path, labels_path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    images = _parse_idx(images_path, 3)
    labels = _parse_idx(labels_path, 1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path}: {len(images)} images but {labels_path} has "
                         f"{len(labels)} labels")
    _check_arrays(images, labels, name, str(images_path))
    return images, labels


def _read_cifar_batch(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    key = b"fine_labels" if name == "cifar100" else b"labels"
    batch = read_cifar_python(path)
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        found = (sorted(map(repr, batch)) if isinstance(batch, dict)
                 else type(batch).__name__)
        raise ValueError(f"{path}: expected a dict with keys b'data' and {key!r}, got {found}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: expected b'data' of shape (N, 3072) uint8, got shape "
                         f"{data.shape}, dtype {data.dtype}")
    images = data.reshape(-1, 3, 32, 32)
    _check_arrays(images.transpose(0, 2, 3, 1), labels, name, str(path))
    return images, labels


def _read_cifar(paths: tuple[Path, ...], name: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_cifar_batch(p, name) for p in paths]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _read_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32) / 16.0, bunch.target
    part = slice(None, _DIGITS_N_TRAIN) if split == "train" else slice(_DIGITS_N_TRAIN, None)
    return images[part], labels[part]


def _read(source: _Source, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if source.kind == "npz":
        return _read_npz(source.paths[0], name)
    if source.kind == "idx":
        return _read_idx(source.paths[0], source.paths[1], name)
    if source.kind == "cifar":
        return _read_cifar(source.paths, name)
    return _read_digits(split)


# ------------------------------------------------------------------------------- geometry


def _pad_crop(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad or crop the last two axes, centred, to size x size (28 -> 32 puts 2:30)."""
    out = np.zeros(x.shape[:-2] + (size, size), dtype=x.dtype)
    src, dst = [], []
    for n in x.shape[-2:]:
        if n <= size:
            start = (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
        else:
            start = (n - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
    out[..., dst[0], dst[1]] = x[..., src[0], src[1]]
    return out


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (cv2.INTER_LINEAR) of (B, h, w) float32, images stacked as channels."""
    if x.shape[-2:] == (size, size):
        return x
    stacked = np.ascontiguousarray(x.transpose(1, 2, 0))  # (h, w, B)
    chunks = []
    for i in range(0, stacked.shape[2], _CV_CHANNELS):
        part = cv2.resize(stacked[:, :, i:i + _CV_CHANNELS], (size, size),
                          interpolation=cv2.INTER_LINEAR)
        chunks.append(part.reshape(size, size, -1))
    return np.clip(np.concatenate(chunks, axis=2).transpose(2, 0, 1), 0.0, 1.0)


# --------------------------------------------------------------------------------- public


def load_dataset(
    name: str,
    split: str = "test",
    *,
    data_dir: str | os.PathLike | None = None,
    n: int | None = None,
    size: int = 32,
    colour: str = "channels",
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a test image data set as (images, labels) tensors.

    Args:
        name: "mnist", "fashion-mnist", "cifar10", "cifar100" or "digits".
        split: "train" or "test". For "digits" (1,797 images, no official split) the first
            898 images are "train" and the last 899 "test", as in scikit-learn's example.
        data_dir: folder to search (see the module docstring); default ``HIL_DATA_DIR``.
        n: keep only n images: the first n, or with `seed` a random subset of n. The
            ``cifar10_test.npz`` archive is grouped by class, so its first n images are all
            of one or a few classes: pass a seed for a mixed subset.
        size: height and width of the output. 28x28 images (MNIST, Fashion-MNIST) and 32x32
            CIFAR images are zero-padded or cropped about the centre (28 -> 32 puts the image
            at rows/columns 2:30, as the paper does); the 8x8 digits are resized with
            ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``.
        colour: for CIFAR only: "channels" gives (B, 3, size, size) RGB; "grey" gives
            (B, size, size), the mean of R, G and B (the paper's monochrome conversion is
            not known; the RGB mean is this project's reading). Grey data sets ignore it.
        seed: with `n`, the subset is ``np.random.default_rng(seed).permutation(N)[:n]`` (in
            that random order); without `n`, the whole split in that random order.

    Returns:
        images: float32 in [0, 1], (B, size, size) or (B, 3, size, size).
        labels: int64 (B,).

    Raises:
        ValueError: unknown name/split/colour, n or size not > 0, n larger than the split,
            or a found file that is corrupt (the message names the file and what is wrong).
        TypeError: n, size or seed not an integer.
        FileNotFoundError: the data set is not present; the message lists every path tried
            and how to get the data.
    """
    check_choice(name, "name", DATASET_NAMES)
    check_choice(split, "split", SPLITS)
    check_choice(colour, "colour", COLOURS)
    check_positive(size, "size", integer=True)
    if n is not None:
        check_positive(n, "n", integer=True)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise TypeError(f"seed: expected an integer or None, got {seed!r}")

    root = _search_dir(data_dir)
    source, tried = _locate(name, split, root)
    if source is None:
        raise _not_found(name, split, root, tried)
    images, labels = _read(source, name, split)

    total = len(labels)
    if n is not None and n > total:
        raise ValueError(f"n: expected at most {total} (the size of {name} {split}), got {n}")
    if seed is not None:
        index = np.random.default_rng(seed).permutation(total)[: n if n is not None else total]
        images, labels = images[index], labels[index]
    elif n is not None:
        images, labels = images[:n], labels[:n]

    if source.kind == "sklearn":
        out = _resize(images, size)
    else:
        if images.ndim == 4 and colour == "grey":
            pixels = images.mean(axis=1, dtype=np.float32) / np.float32(255.0)
        else:
            pixels = images.astype(np.float32) / np.float32(255.0)
        out = _pad_crop(pixels, size)
    return (torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)),
            torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def available_datasets(data_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Data sets whose files are present: {name: [splits]}, only names with a split found.

    Looks for files only (nothing is read or checked), in the same places and order as
    `load_dataset`; "digits" is always listed with both splits.
    """
    root = _search_dir(data_dir)
    found: dict[str, list[str]] = {}
    for name in DATASET_NAMES:
        splits = [s for s in SPLITS if _locate(name, s, root)[0] is not None]
        if splits:
            found[name] = splits
    return found
