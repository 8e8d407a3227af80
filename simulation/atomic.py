"""Atomic file output: the one place every writer of this project goes through.

A file a user keeps (a decoder, a mask, a calibration, run.json, a report) must appear
whole or not at all: it is written under a temporary name in the same directory,
flushed to disk, then renamed over the target. The temporary file is created with
mode 0666, so the user's umask decides the final mode, exactly as a plain
``open(path, "w")`` would; ``tempfile.mkstemp`` would make it 0600, which a colleague
on a shared lab PC cannot read.

It lives in ``simulation`` only because that is the package every other one may import
(``experiments -> hil -> calibration -> devices -> simulation``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_open", "write_bytes_atomic", "write_text_atomic"]


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
