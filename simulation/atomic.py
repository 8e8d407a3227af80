"""Atomic file output: the one place every writer of this project goes through.

A file a user keeps (a decoder, a mask, a calibration, run.json, a report) must appear
whole or not at all: it is written under a temporary name in the same directory,
flushed to disk, then renamed over the target. The temporary file is created with
mode 0666, so the user's umask decides the final mode, exactly as a plain
``open(path, "w")`` would; ``tempfile.mkstemp`` would make it 0600, which a colleague
on a shared lab PC cannot read.

Helpers for the writers that do not take a file object: ``savefig_atomic`` (a matplotlib
figure, its format from the target's suffix since the temporary name ends in ``.tmp``),
``write_image_atomic`` (an OpenCV image, encoded in memory by ``cv2.imencode``) and
``copy_atomic`` (a copy of another file). ``tests/test_atomic.py`` fails on any module
that writes a file around them.

It lives in ``simulation`` only because that is the package every other one may import
(``experiments -> hil -> calibration -> devices -> simulation``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_open", "write_bytes_atomic", "write_text_atomic",
           "savefig_atomic", "write_image_atomic", "copy_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success rename it over ``path``.

    For writers that open the file themselves (h5py, ``np.savez``). The temporary file
    exists (empty, mode 0666 less the umask) when the block starts; it is fsync'ed and
    renamed when the block ends without an exception, and removed otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing, atomically: ``with atomic_open(p, "w") as f: f.write(...)``."""
    if not mode.startswith("w"):
        raise ValueError(f"mode: expected a write mode ('w', 'wb', ...), got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def savefig_atomic(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``fig.savefig(path, **kwargs)``, atomically; returns the path.

    The format is ``kwargs["format"]`` if given, else ``path``'s suffix (``png`` when it
    has none): matplotlib would read it from the temporary name, which ends in ``.tmp``.
    """
    path = Path(path)
    fmt = str(kwargs.pop("format", None) or path.suffix.lstrip(".") or "png").lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"path: expected a figure format ({', '.join(sorted(supported))}), "
                         f"got {fmt!r} (for {path.name})")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return path


def write_image_atomic(path: str | os.PathLike, image: Any, fmt: str | None = None,
                       params: tuple[int, ...] = ()) -> Path:
    """``cv2.imwrite(path, image, params)``, atomically; returns the path.

    The image is encoded in memory (``cv2.imencode``) in ``fmt`` (default: ``path``'s
    suffix) and written with ``write_bytes_atomic``. Unlike ``cv2.imwrite``, which returns
    False, a format OpenCV cannot write or an image it cannot encode raises ``ValueError``.
    """
    import cv2

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if not fmt or not cv2.haveImageWriter(f"x.{fmt}"):
        raise ValueError(f"path: expected an image format OpenCV writes (png, bmp, tiff, "
                         f"jpg, ...), got {fmt or 'no suffix'!r} (for {path.name})")
    try:
        ok, buf = cv2.imencode(f".{fmt}", image, list(params))
    except cv2.error as exc:
        raise ValueError(f"{path}: OpenCV could not encode the image as {fmt}: "
                         f"{str(exc).strip()}") from exc
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the image as {fmt}")
    return write_bytes_atomic(path, buf.tobytes())


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the contents of the file ``src`` to ``dst``, atomically; returns ``dst``.

    Like ``shutil.copyfile``: the bytes only, ``dst`` gets the mode of a new file.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"src: expected an existing file to copy to {dst}, got {src}")
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst
