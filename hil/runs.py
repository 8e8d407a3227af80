"""The run record: a directory with ``run.json``, ``captures.h5``, ``results.json``, a report.

``CaptureStore`` is the append-only HDF5 file of a run (h5py). One *capture* is
everything recorded for one input image: its model windows (C, h, w) in the camera's
integer dtype (the camera pixels around each channel's N×N window: what the decoder
reads, ``BenchImager.windows``), the patterns on the model grid (C, N, N) float32, the
index of the image in the run's image list, and per-frame metadata (exposure,
averaging, timestamp, dropped frames). The full raw frames (K, H, W) are stored only
when asked (``store_frames``; ``hil run --store-frames``), gzip-compressed, one capture
per chunk. A store created without ``window_shape`` keeps full frames, uncompressed
(the layout of format version 1, still read and resumed). Datasets are resizable
along the first axis and chunked one capture per chunk; after every capture they are
written, the ``n_complete`` attribute is set, and the file is flushed. A run killed at
any point therefore finds on disk every capture up to the last flush;
``CaptureStore.resume`` trims anything beyond ``n_complete`` (a capture that was being
written) so the run continues with no capture lost and none duplicated.

Every append is checked, because HDF5 cannot be trusted after a failed write (on a
full disk its write errors surface only as ignored exceptions, and the data read back
from its caches looks fine). Before writing, the free space of the file system and the
process's file-size limit (``RLIMIT_FSIZE``) must leave room for the capture plus
``RESERVE_BYTES`` (for ``run.json`` and the file's own metadata; a compressed capture
counts at its uncompressed size). After the flush the capture's bytes are read back from
the file on disk, past HDF5's caches (a compressed chunk is inflated with ``zlib``), and
compared with what was written; any h5py error, ignored or not, fails the append too. A
failed check raises ``CaptureWriteError`` (an ``OSError`` with the errno) *before*
``n_complete`` counts the capture, and the store closes itself: the captures before
it stay complete and ``resume`` continues the run. A file whose last write was cut
short by a file-size limit ("truncated file") is padded back to the length its
superblock records when resumed or read: the missing tail lies beyond ``n_complete``.

Layout of ``captures.h5``::

    /windows    (n, C, h, w)   camera dtype   model windows (absent in version 1 files)
    /frames     (n, K, H, W)   camera dtype   only when asked: gzip (level 4)
    /patterns   (n, C, N, N)   float32
    /index      (n,)           int64    position of the image in the run's image list
    /timestamp  (n,)           float64  time.time() when the capture completed
    /exposure_s (n,)           float64
    /averaging  (n,)           int32
    /dropped    (n,)           int32    frames dropped (and retried) during the capture
    /drift_x_px, /drift_y_px  (n,) float64  drift correction applied (hil.drift; NaN: none;
                                            absent in version 1 files)
    /dark       (H, W)         float32  the dark frame subtracted (absent when none)
    attrs: format, format_version, n_complete, frame_shape, pattern_shape, created,
           window_shape and window_boxes (JSON: [frame, r0, r1, c0, c1] per channel)
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simulation.atomic import atomic_open

__all__ = ["CaptureStore", "CaptureWriteError", "read_captures", "write_json_atomic",
           "git_commit", "versions", "CAPTURES_FILE"]

FORMAT = "hil-captures"
FORMAT_VERSION = 2  # 2: model windows, full frames optional and compressed
GZIP_LEVEL = 4  # frames compress ~3-10x; higher levels cost time for little more
CAPTURES_FILE = "captures.h5"
_SCALARS = {"index": np.int64, "timestamp": np.float64, "exposure_s": np.float64,
            "averaging": np.int32, "dropped": np.int32}
# per-capture columns of version 2 files (absent in version 1): the drift correction applied
# to the capture (hil.drift), camera px; NaN when the run made no drift checks
_V2_SCALARS = {"drift_x_px": np.float64, "drift_y_px": np.float64}
RESERVE_BYTES = 1 << 20  # kept free beyond each capture: run.json, HDF5 metadata


class CaptureWriteError(OSError):
    """A capture could not be written (disk full, file-size limit, I/O error).

    The store has closed itself; every capture before the failed one is complete on
    disk and ``CaptureStore.resume`` continues from there.
    """


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON to a temporary name in the same directory, then rename over ``path``.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask),
    not the 0600 of a temporary file.
    """
    path = Path(path)
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
    return path


def _json_default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "detach"):
        return x.detach().cpu().tolist()
    return repr(x)


def git_commit() -> str | None:
    """The commit of the checkout this code runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions of the packages a run depends on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("hil-diffraction", "torch", "numpy", "h5py", "slmsuite", "opencv-python",
                 "pyvisa", "pyvisa-sim", "scikit-image"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


@contextmanager
def _h5_errors() -> Iterator[list[BaseException]]:
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


def _open_h5(path: Path, mode: str) -> h5py.File:
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
        f._hil_reader = reader  # closed by read_captures
        return f
    os.truncate(path, stored)  # the tail a failed write never wrote: zeros, beyond n_complete
    return h5py.File(path, mode)


class _PaddedReader:
    """A read-only file object: ``path`` followed by zeros up to ``length`` bytes."""

    def __init__(self, path: Path, length: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close() (read_captures)
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


def _check_room(path: Path, n: int, nbytes: int, size: int) -> None:
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


class CaptureStore:
    """Append-only HDF5 store of a run's captures (see the module docstring)."""

    def __init__(self, f: h5py.File) -> None:
        self._f = f
        self.path = Path(f.filename)
        # datasets stay open: HDF5 closing one flushes it, and a close that fails there
        # leaves a half-closed dataset that crashes the process at exit
        self._ds = {name: f[name] for name in ("windows", "frames", "patterns", *_SCALARS,
                                               *_V2_SCALARS) if name in f}
        self._disk = open(self.path, "rb")  # noqa: SIM115 - reads back what HDF5 wrote
        self.failed: CaptureWriteError | None = None
        self._kept = 0
        self._abandoned = False

    # ------------------------------------------------------------ open/create
    @classmethod
    def create(cls, path: str | os.PathLike, *, frame_shape: Sequence[int], frame_dtype: Any,
               pattern_shape: Sequence[int], dark: np.ndarray | None = None,
               attrs: dict[str, Any] | None = None,
               window_shape: Sequence[int] | None = None,
               window_boxes: Sequence[Sequence[int]] | None = None,
               store_frames: bool | None = None) -> CaptureStore:
        """A new, empty store; refuses to overwrite an existing file, and refuses
        (``CaptureWriteError``, nothing written) when not even one capture would fit.

        ``window_shape`` (C, h, w): store model windows; full frames then only with
        ``store_frames`` (gzip). Without ``window_shape``: full frames, uncompressed.
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path}: a capture file already exists (resume the run "
                                  "with --resume, or choose another --out)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fs, ps = tuple(int(v) for v in frame_shape), tuple(int(v) for v in pattern_shape)
        ws = None if window_shape is None else tuple(int(v) for v in window_shape)
        if store_frames is None:
            store_frames = ws is None
        if ws is None and not store_frames:
            raise ValueError("store_frames: a store without window_shape keeps the frames")
        item = np.dtype(frame_dtype).itemsize
        per_capture = (int(np.prod(fs)) * item if store_frames else 0) \
            + (int(np.prod(ws)) * item if ws else 0) + int(np.prod(ps)) * 4 + 64 * len(_SCALARS)
        dark_bytes = 0 if dark is None else int(np.prod(np.shape(dark))) * 4
        _check_room(path, 0, per_capture + dark_bytes, 0)  # room for one capture at least
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with _h5_errors() as errors, h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION if ws is not None else 1
                f.attrs["n_complete"] = 0
                f.attrs["frame_shape"] = fs
                f.attrs["pattern_shape"] = ps
                f.attrs["created"] = time.time()
                for k, v in (attrs or {}).items():
                    f.attrs[k] = json.dumps(v, default=_json_default)
                if ws is not None:
                    f.attrs["window_shape"] = ws
                    f.attrs["window_boxes"] = json.dumps(
                        [[int(v) for v in b] for b in (window_boxes or [])])
                    f.create_dataset("windows", shape=(0, *ws), maxshape=(None, *ws),
                                     dtype=np.dtype(frame_dtype), chunks=(1, *ws))
                if store_frames:
                    gz = {"compression": "gzip", "compression_opts": GZIP_LEVEL} if ws else {}
                    f.create_dataset("frames", shape=(0, *fs), maxshape=(None, *fs),
                                     dtype=np.dtype(frame_dtype), chunks=(1, *fs), **gz)
                f.create_dataset("patterns", shape=(0, *ps), maxshape=(None, *ps),
                                 dtype=np.float32, chunks=(1, *ps))
                for name, dt in {**_SCALARS, **(_V2_SCALARS if ws else {})}.items():
                    f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt,
                                     chunks=(256,))
                if dark is not None:
                    f.create_dataset("dark", data=np.asarray(dark, dtype=np.float32))
            if errors:
                raise CaptureWriteError(errno.EIO, f"{path}: the capture file could not be "
                                        f"written ({errors[0]})")
        except (OSError, RuntimeError) as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, CaptureWriteError):
                raise
            raise CaptureWriteError(getattr(exc, "errno", None) or errno.EIO,
                                    f"{path}: the capture file could not be created "
                                    f"({exc})") from exc
        os.replace(tmp, path)  # the empty store appears whole or not at all
        return cls(h5py.File(path, "a"))

    @classmethod
    def resume(cls, path: str | os.PathLike) -> CaptureStore:
        """Open an existing store for appending; trim a capture that was cut short.

        A file whose last append failed is accepted: it is padded back to its recorded
        length when a file-size limit truncated it, and trimmed to ``n_complete``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no capture file to resume")
        try:
            f = _open_h5(path, "a")
        except OSError as exc:
            raise ValueError(f"{path}: the capture file cannot be opened ({exc})") from exc
        if f.attrs.get("format") != FORMAT or any(
                name not in f for name in ("patterns", *_SCALARS)) or not (
                "frames" in f or "windows" in f):
            f.close()
            raise ValueError(f"{path}: not a capture file of a hil run")
        store = cls(f)
        n = store.count
        try:
            with _h5_errors() as errors:
                for name, d in store._ds.items():
                    if d.shape[0] < n:
                        raise ValueError(f"{path}: {name} holds {d.shape[0]} captures, "
                                         f"fewer than the {n} marked complete")
                    if d.shape[0] != n:
                        d.resize(n, axis=0)
                f.flush()
            if errors:
                raise CaptureWriteError(errno.EIO, f"{path}: could not be trimmed to its {n} "
                                        f"complete captures ({errors[0]})")
        except BaseException:
            store._abandon()
            raise
        return store

    # ------------------------------------------------------------------ access
    @property
    def count(self) -> int:
        """Complete captures on disk."""
        if self.failed is not None:  # the file is closed; n_complete was not advanced
            return self._kept
        return int(self._f.attrs["n_complete"])

    @property
    def indices(self) -> np.ndarray:
        return np.asarray(self._ds["index"][: self.count])

    def _check_room(self, n: int, nbytes: int) -> None:
        """Refuse (before writing anything) when the capture cannot fit."""
        _check_room(self.path, n, nbytes, self.path.stat().st_size)

    @property
    def has_frames(self) -> bool:
        """Whether full frames are stored (else model windows only)."""
        return "frames" in self._ds

    @property
    def has_windows(self) -> bool:
        return "windows" in self._ds

    def _verify_row(self, name: str, n: int, expected: np.ndarray) -> None:
        """Read row ``n`` of dataset ``name`` from the file itself and compare (a
        gzip-compressed chunk, one capture each, is inflated first)."""
        d = self._ds[name]
        coord = ((n // d.chunks[0]) * d.chunks[0],) + (0,) * (d.ndim - 1)
        chunk = d.id.get_chunk_info_by_coord(coord)
        if chunk.byte_offset is None:
            raise OSError(errno.EIO, f"{name}: capture {n + 1} has no storage in the file")
        want = np.ascontiguousarray(expected, dtype=d.dtype).tobytes()
        if d.compression == "gzip":
            raw = os.pread(self._disk.fileno(), chunk.size, chunk.byte_offset)
            try:
                got = zlib.decompress(raw) if chunk.filter_mask == 0 else raw
            except zlib.error as exc:
                raise OSError(errno.EIO, f"{name}: capture {n + 1} reads back corrupt "
                              f"({exc})") from exc
            if got != want:
                raise OSError(errno.EIO, f"{name}: capture {n + 1} reads back different "
                              "from what was written (compressed chunk)")
            return
        within = (n % d.chunks[0]) * int(np.prod(d.shape[1:], dtype=np.int64)) * d.dtype.itemsize
        got = os.pread(self._disk.fileno(), len(want), chunk.byte_offset + within)
        if got != want:
            raise OSError(errno.EIO, f"{name}: capture {n + 1} reads back different from what "
                          f"was written ({len(got)} of {len(want)} bytes on disk)")

    def append(self, index: int, frames: np.ndarray | None, patterns: np.ndarray,
               frame_info: Sequence[dict[str, Any]] = (), *,
               windows: np.ndarray | None = None) -> int:
        """Write one capture, check it on disk, mark it complete and flush; returns the count.

        ``windows`` (C, h, w) is required by a store with windows; ``frames`` (K, H, W)
        by a store with frames (else it may be None). Raises ``CaptureWriteError`` (and
        closes the store) when the capture cannot be written or does not read back;
        ``n_complete`` then still counts the captures before.
        """
        if self.failed is not None:
            raise self.failed
        f, ds = self._f, self._ds
        n = self.count
        rows: dict[str, np.ndarray] = {}
        for name, given in (("windows", windows), ("frames", frames)):
            if name not in ds:
                continue
            if given is None:
                raise ValueError(f"{name}: this capture file stores {name}; none given")
            a = np.asarray(given)
            if a.shape != ds[name].shape[1:]:
                raise ValueError(f"{name}: expected shape {ds[name].shape[1:]}, got {a.shape}")
            rows[name] = a.astype(ds[name].dtype, copy=False)
        pa = np.asarray(patterns, dtype=np.float32)
        if pa.shape != ds["patterns"].shape[1:]:
            raise ValueError(f"patterns: expected shape {ds['patterns'].shape[1:]}, "
                             f"got {pa.shape}")
        info = list(frame_info)
        row = {
            "index": int(index),
            "timestamp": max([float(i.get("timestamp", 0.0)) for i in info] or [time.time()]),
            "exposure_s": float(info[0].get("exposure_s", np.nan)) if info else np.nan,
            "averaging": int(info[0].get("averaging", 1)) if info else 1,
            "dropped": int(sum(int(i.get("dropped_frames", 0)) for i in info)),
        }
        for name in _V2_SCALARS:
            if name in ds:
                row[name] = float(info[0].get(name, np.nan)) if info else np.nan
        try:
            self._check_room(n, sum(a.nbytes for a in rows.values()) + pa.nbytes
                             + 64 * len(_SCALARS))
        except CaptureWriteError as exc:  # nothing written: the file stays as it was
            self.failed, self._kept = exc, n
            raise
        try:
            with _h5_errors() as errors:
                for name in ds:
                    ds[name].resize(n + 1, axis=0)
                for name, a in rows.items():
                    ds[name][n] = a
                ds["patterns"][n] = pa
                for name, v in row.items():
                    ds[name][n] = v
                f.flush()  # the data first ...
            if errors:
                raise errors[0]
            for name, a in rows.items():
                self._verify_row(name, n, a)
            self._verify_row("patterns", n, pa)
            for name, v in row.items():
                self._verify_row(name, n, np.asarray(v))
            with _h5_errors() as errors:
                f.attrs["n_complete"] = n + 1
                f.flush()  # ... then the count that makes it part of the run
            if errors:
                raise errors[0]
        except (OSError, RuntimeError) as exc:
            found = re.search(r"errno = (\d+)", str(exc))  # HDF5 names the errno in its text
            code = getattr(exc, "errno", None) or (int(found.group(1)) if found else None)
            # one line: HDF5's own text spans several
            reason = os.strerror(code) if code else " ".join(str(exc).split())[:200]
            err = CaptureWriteError(
                code or errno.EIO,
                f"{self.path}: capture {n + 1} could not be written ({reason}); the {n} "
                "captures before it are kept: free space or raise the file-size limit, then "
                "resume with --resume")
            self.failed, self._kept = err, n
            self._abandon()
            raise err from exc
        return n + 1

    def _abandon(self) -> None:
        """Close after a failed write without touching the file again.

        HDF5 retries its failed writes on every flush and close (and at exit, where it
        crashes the process): its descriptor is first pointed at ``/dev/null``, so those
        writes go nowhere and the file stays as the last successful write left it.
        """
        if self._abandoned:  # HDF5 must not be asked about this file again
            return
        self._abandoned = True
        with _h5_errors():
            try:
                if self._f.id.valid:
                    fd = self._f.id.get_vfd_handle()
                    if isinstance(fd, int) and fd >= 0:
                        null = os.open(os.devnull, os.O_RDWR)
                        os.dup2(null, fd)
                        os.close(null)
                    self._f.close()
            except (OSError, RuntimeError, ValueError):
                pass
        self._disk.close()

    def close(self) -> None:
        if self._abandoned:
            return
        if not self._f.id.valid:
            self._disk.close()
            return
        try:
            with _h5_errors() as errors:
                self._f.flush()
                self._f.close()
        except (OSError, RuntimeError) as exc:
            self._abandon()
            raise CaptureWriteError(errno.EIO, f"{self.path}: closing failed ({exc})") from exc
        self._disk.close()
        if errors:
            raise CaptureWriteError(errno.EIO, f"{self.path}: closing failed ({errors[0]})")

    def __enter__(self) -> CaptureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_captures(path: str | os.PathLike, *, frames: bool = False) -> dict[str, np.ndarray]:
    """The complete captures of a store, as arrays: patterns, the scalars, ``windows``
    where stored, and ``frames`` when asked (``ValueError`` naming the file when the run
    did not store them: ``hil run --store-frames``).

    Reads a file whose last append failed too (without changing it).
    """
    path = Path(path)
    f = _open_h5(path, "r")
    try:
        n = int(f.attrs["n_complete"])
        if frames and "frames" not in f:
            raise ValueError(f"{path}: this run stored the model windows only, not the "
                             "full frames (run with --store-frames to keep them)")
        names = ["patterns", *_SCALARS] + [k for k in ("windows", *_V2_SCALARS) if k in f] + (
            ["frames"] if frames else [])
        out = {name: np.asarray(f[name][:n]) for name in names}
        if "dark" in f:
            out["dark"] = np.asarray(f["dark"])
    finally:
        f.close()
        reader = getattr(f, "_hil_reader", None)
        if reader is not None:
            reader.close()
    return out
