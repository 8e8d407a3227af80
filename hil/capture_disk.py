"""The capture file on disk: room before a write, HDF5's hidden errors, files cut short.

Every append to ``captures.h5`` is checked, because HDF5 cannot be trusted after a failed
write (on a full disk its write errors surface only as ignored exceptions, and the data
read back from its caches looks fine):

* ``check_room``: before writing, the free space of the file system and the process's
  file-size limit (``RLIMIT_FSIZE``) must leave room for the capture plus
  ``RESERVE_BYTES`` (for ``run.json`` and the file's own metadata; a compressed capture
  counts at its uncompressed size);
* ``h5_errors``: collects the exceptions h5py raises where nobody can catch them;
* ``open_h5``: a file whose last write was cut short by a file-size limit ("truncated
  file") is padded back to the length its superblock records when resumed (mode "a") or
  read through a zero-padded view (mode "r"): the missing tail lies beyond ``n_complete``.

* ``unfilter_chunk``: a compressed chunk's bytes as read from the disk, inflated and
  un-shuffled, for the read-back check of each capture.

A failed check raises ``CaptureWriteError`` (an ``OSError`` with the errno).
"""

from __future__ import annotations

import errno
import io
import os
import re
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["CaptureWriteError", "RESERVE_BYTES", "check_room", "h5_errors", "open_h5",
           "close_h5", "unfilter_chunk"]

RESERVE_BYTES = 1 << 20  # kept free beyond each capture: run.json, HDF5 metadata


class CaptureWriteError(OSError):
    """A capture could not be written (disk full, file-size limit, I/O error).

    The store has closed itself; every capture before the failed one is complete on
    disk and ``CaptureStore.resume`` continues from there.
    """


@contextmanager
def h5_errors() -> Iterator[list[BaseException]]:
    """Collect the exceptions h5py raises where nobody can catch them (``__dealloc__``).

    On a full disk HDF5 reports the failed ``pwrite`` only there; Python prints them as
    "Exception ignored in ...". Inside the block they are collected instead, so that a
    write can be checked (the list is empty when every write went through).
    """
    seen: list[BaseException] = []
    previous, stderr = sys.unraisablehook, sys.stderr
    printed = io.StringIO()  # h5py prints some of them (a traceback) instead

    def hook(unraisable: Any) -> None:
        if unraisable.exc_value is not None:
            seen.append(unraisable.exc_value)

    sys.unraisablehook, sys.stderr = hook, printed
    try:
        yield seen
    finally:
        sys.unraisablehook, sys.stderr = previous, stderr
        text = printed.getvalue()
        if text:
            last = [ln for ln in text.splitlines() if ln.strip()]
            if any("Error" in ln for ln in last):
                seen.append(OSError(next(ln for ln in reversed(last) if "Error" in ln)))
            else:
                stderr.write(text)


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*?stored_eof = (\d+)")


def open_h5(path: Path, mode: str) -> h5py.File:
    """Open ``path``; a file cut short by a failed write is first padded (mode "a") or read
    through a zero-padded view (mode "r") up to the length its superblock records."""
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        m = _TRUNCATED.search(str(exc))
        if m is None or int(m.group(1)) >= int(m.group(2)):
            raise
        stored = int(m.group(2))
    if mode == "r":
        reader = _PaddedReader(path, stored)
        try:
            f = h5py.File(reader, "r")
        except BaseException:
            reader.close()
            raise
        f._hil_reader = reader  # closed by close_h5
        return f
    os.truncate(path, stored)  # the tail a failed write never wrote: zeros, beyond n_complete
    return h5py.File(path, mode)


class _PaddedReader:
    """A read-only file object: ``path`` followed by zeros up to ``length`` bytes."""

    def __init__(self, path: Path, length: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close() (close_h5)
        self._len = int(length)
        self._pos = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._len}[whence]
        self._pos = base + int(offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        n = max(0, min(len(view), self._len - self._pos))
        self._f.seek(self._pos)
        got = self._f.readinto(view[:n])
        view[got:n] = b"\0" * (n - got)
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        n = self._len - self._pos if size < 0 else size
        buf = bytearray(max(0, min(n, self._len - self._pos)))
        self.readinto(buf)
        return bytes(buf)

    def close(self) -> None:
        self._f.close()


def check_room(path: Path, n: int, nbytes: int, size: int) -> None:
    """``CaptureWriteError`` when capture ``n + 1`` (``nbytes``) and the reserve cannot be
    added to ``path`` (now ``size`` bytes): too little free space, or past RLIMIT_FSIZE."""
    need = nbytes + RESERVE_BYTES
    kept = (f"the {n} captures so far are kept" if n else "nothing was captured")
    try:
        st = os.statvfs(path.parent)
    except (AttributeError, OSError):  # pragma: no cover - no statvfs
        st = None
    if st is not None and st.f_bavail * st.f_frsize < need:
        raise CaptureWriteError(
            errno.ENOSPC, f"{path}: no space left for capture {n + 1} (needs "
            f"{need / 1e6:.1f} MB with reserve, {st.f_bavail * st.f_frsize / 1e6:.1f} MB "
            f"free); {kept}: free space and resume with --resume")
    limit = _fsize_limit()
    if limit is not None and size + need > limit:
        raise CaptureWriteError(
            errno.EFBIG, f"{path}: capture {n + 1} would pass the file-size limit of "
            f"{limit} bytes (ulimit -f); {kept}: raise the limit and resume with --resume")


def _fsize_limit() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)




def close_h5(f: h5py.File) -> None:
    """Close a file from ``open_h5`` (and the padded view it may read through)."""
    f.close()
    reader = getattr(f, "_hil_reader", None)
    if reader is not None:
        reader.close()


def unfilter_chunk(raw: bytes, filters: tuple[int, ...], mask: int, itemsize: int) -> bytes:
    """Undo an HDF5 filter pipeline (deflate, shuffle) on one chunk's stored bytes; bit i
    of ``mask`` set: filter i was skipped for this chunk."""
    data = raw
    for i in reversed(range(len(filters))):
        if mask & (1 << i):
            continue
        if filters[i] == h5py.h5z.FILTER_DEFLATE:
            data = zlib.decompress(data)
        elif filters[i] == h5py.h5z.FILTER_SHUFFLE:
            if itemsize > 1:
                b = np.frombuffer(data, np.uint8)
                data = b.reshape(itemsize, -1).T.tobytes()
        else:
            raise OSError(errno.EIO, f"filter {filters[i]}: the read-back check handles "
                          "deflate and shuffle only")
    return data
