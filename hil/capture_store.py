"""The writer of ``captures.h5``: ``CaptureStore``, append-only, every capture checked.

One *capture* is everything recorded for one input image: its model windows (C, h, w)
in the camera's integer dtype (the camera pixels around each channel's N×N window: what
the decoder reads, ``BenchImager.windows``), the patterns on the model grid (C, N, N)
float32, the index of the image in the run's image list, and per-frame metadata
(exposure, averaging, timestamp, dropped frames, drift correction). The full raw frames
(K, H, W) are stored only when asked (``store_frames``; ``hil run --store-frames``),
compressed (``capture_format.FRAMES_FILTER``). A store created without ``window_shape``
keeps full frames, uncompressed. The layout and attributes are ``hil.capture_format``'s;
files of format versions 1 and 2 are resumed as they are.

Datasets are resizable along the first axis and chunked one capture per chunk; after
every capture they are written, the ``n_complete`` attribute is set, and the file is
flushed. A run killed at any point therefore finds on disk every capture up to the last
flush; ``CaptureStore.resume`` trims anything beyond ``n_complete`` (a capture that was
being written) so the run continues with no capture lost and none duplicated.

Every append is checked (``hil.capture_disk``): room before the write (``create`` and
``append`` look ``hil.capture_disk.check_room`` up at each call: replaced there, a test's
check lets the write itself fail); after the flush the capture's bytes are read back from
the file on disk, past HDF5's caches (a compressed chunk is inflated with ``zlib`` and
un-shuffled), and compared with what was written; any h5py error, ignored or not, fails
the append too. A failed check raises ``CaptureWriteError`` *before* ``n_complete`` counts
the capture, and the store closes itself: the captures before it stay complete and
``resume`` continues the run.

Compression (``capture_format.FRAMES_FILTER``, ``WINDOWS_FILTER``): gzip level 1 after
HDF5's byte shuffle, for frames and windows, one capture per chunk. Measured with
``python -m experiments.bench_h5 --n 10 --repeat 2`` on the sim-realistic bench (noisy
12-bit frames, 2×1080×1440 uint16, windows 2×67×67; load average ~8 on 2 cores, so CPU
seconds and ratios, not wall times, are the figures): full frames keep 0.315 of their
bytes with gzip-1+shuffle against 0.361 with the former gzip-4, 0.305 with gzip-4+shuffle
and 0.52 with lzf, for 0.051 CPU-s per capture against 0.107 (gzip-4) and 0.026 (lzf,
which the read-back check could not inflate). Through ``CaptureStore.append`` (read-back
included): a windows + frames capture costs 0.079 CPU-s and 1.98 MB (former gzip-4
frames, raw windows: 0.129 CPU-s, 2.28 MB); a windows-only capture 21.3 KB instead of
30.5 KB for 0.3 ms more CPU (2.4 ms against 2.1 ms), far inside the bench's 33 ms per
image. ``--store-frames`` still bounds a run at roughly 1/0.08 s per core.
"""

from __future__ import annotations

import errno
import os
import re
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simulation.atomic import atomic_path
from simulation.provenance import code_label

from . import capture_disk
from .capture_disk import CaptureWriteError, h5_errors, open_h5, unfilter_chunk
from .capture_format import (
    CAPTURES_FILE,
    FRAMES_FILTER,
    SCALARS,
    V2_SCALARS,
    WINDOWS_FILTER,
    CaptureFormatError,
    check_layout,
    read_header,
    set_dataset_units,
    write_header,
)

__all__ = ["CaptureStore", "CaptureWriteError", "CAPTURES_FILE"]

_SCALARS, _V2_SCALARS = SCALARS, V2_SCALARS


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
        self._filter_codes: dict[str, tuple[int, ...]] = {}

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

        ``window_shape`` (C, h, w): store model windows (``window_boxes``: where each
        lies in the frames, [frame, r0, r1, c0, c1] per channel); full frames then only
        with ``store_frames`` (compressed: ``FRAMES_FILTER``). Without ``window_shape``:
        full frames, uncompressed. ``attrs``: the run's own attributes (strings, numbers,
        arrays of numbers; None: not stored), typed in the file. The file is written in
        format version ``FORMAT_VERSION``.
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
        capture_disk.check_room(path, 0, per_capture + dark_bytes, 0)  # one capture at least
        boxes = None
        if ws is not None:
            if window_boxes is None:
                raise ValueError("window_boxes: a store with window_shape needs the camera "
                                 "box of each window ([frame, r0, r1, c0, c1] per channel)")
            boxes = np.asarray([[int(v) for v in b] for b in window_boxes], np.int64)
            if boxes.shape != (ws[0], 5):
                raise ValueError(f"window_boxes: expected {ws[0]} rows of [frame, r0, r1, c0, "
                                 f"c1], got shape {boxes.shape}")
        try:  # the empty store appears whole or not at all (simulation.atomic)
            with atomic_path(path) as tmp:
                with h5_errors() as errors, h5py.File(tmp, "w") as f:
                    write_header(f, n_complete=0, frame_shape=fs, pattern_shape=ps,
                                 created=time.time(), created_by=code_label(), window_shape=ws,
                                 window_boxes=boxes, attrs=attrs)
                    if ws is not None:
                        f.create_dataset("windows", shape=(0, *ws), maxshape=(None, *ws),
                                         dtype=np.dtype(frame_dtype), chunks=(1, *ws),
                                         **WINDOWS_FILTER)
                    if store_frames:  # compressed beside windows; a frames-only store: as is
                        f.create_dataset("frames", shape=(0, *fs), maxshape=(None, *fs),
                                         dtype=np.dtype(frame_dtype), chunks=(1, *fs),
                                         **(FRAMES_FILTER if ws else {}))
                    f.create_dataset("patterns", shape=(0, *ps), maxshape=(None, *ps),
                                     dtype=np.float32, chunks=(1, *ps))
                    for name, dt in {**_SCALARS, **_V2_SCALARS}.items():
                        f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt,
                                         chunks=(256,))
                    if dark is not None:
                        f.create_dataset("dark", data=np.asarray(dark, dtype=np.float32))
                    set_dataset_units(f)
                if errors:  # before the rename: a failed store never appears
                    raise CaptureWriteError(errno.EIO, f"{path}: the capture file could "
                                            f"not be written ({errors[0]})")
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, CaptureWriteError):
                raise
            raise CaptureWriteError(getattr(exc, "errno", None) or errno.EIO,
                                    f"{path}: the capture file could not be created "
                                    f"({exc})") from exc
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
            f = open_h5(path, "a")
        except OSError as exc:
            raise ValueError(f"{path}: the capture file cannot be opened ({exc})") from exc
        try:
            check_layout(f, read_header(f, path), path)
        except CaptureFormatError:
            f.close()
            raise
        store = cls(f)
        n = store.count
        try:
            with h5_errors() as errors:
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
        capture_disk.check_room(self.path, n, nbytes, self.path.stat().st_size)

    @property
    def has_frames(self) -> bool:
        """Whether full frames are stored (else model windows only)."""
        return "frames" in self._ds

    @property
    def has_windows(self) -> bool:
        return "windows" in self._ds

    def _verify_row(self, name: str, n: int, expected: np.ndarray) -> None:
        """Read row ``n`` of dataset ``name`` from the file itself and compare (a
        compressed chunk, one capture each, is inflated and un-shuffled first)."""
        d = self._ds[name]
        coord = ((n // d.chunks[0]) * d.chunks[0],) + (0,) * (d.ndim - 1)
        chunk = d.id.get_chunk_info_by_coord(coord)
        if chunk.byte_offset is None:
            raise OSError(errno.EIO, f"{name}: capture {n + 1} has no storage in the file")
        want = np.ascontiguousarray(expected, dtype=d.dtype).tobytes()
        filters = self._filters(d)
        if filters:
            raw = os.pread(self._disk.fileno(), chunk.size, chunk.byte_offset)
            try:
                got = unfilter_chunk(raw, filters, chunk.filter_mask, d.dtype.itemsize)
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

    def _filters(self, d: h5py.Dataset) -> tuple[int, ...]:
        """The filter codes of ``d``'s pipeline, in the order they are applied on write."""
        cache = self._filter_codes
        if d.name not in cache:
            plist = d.id.get_create_plist()
            cache[d.name] = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
        return cache[d.name]

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
            with h5_errors() as errors:
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
            with h5_errors() as errors:
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
        with h5_errors():
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
            with h5_errors() as errors:
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
