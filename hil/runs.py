"""The run record: a directory with ``run.json``, ``captures.h5``, ``results.json``, a report.

``CaptureStore`` is the append-only HDF5 file of a run (h5py). One *capture* is
everything recorded for one input image: its raw frames (K, H, W) in the camera's
integer dtype, the patterns on the model grid (C, N, N) float32, the index of the
image in the run's image list, and per-frame metadata (exposure, averaging,
timestamp, dropped frames). Datasets are resizable along the first axis and chunked
one capture per chunk; after every capture they are written, the ``n_complete``
attribute is set, and the file is flushed. A run killed at any point therefore finds
on disk every capture up to the last flush; ``CaptureStore.resume`` trims anything
beyond ``n_complete`` (a capture that was being written) so the run continues with
no capture lost and none duplicated.

Layout of ``captures.h5``::

    /frames     (n, K, H, W)   camera dtype
    /patterns   (n, C, N, N)   float32
    /index      (n,)           int64    position of the image in the run's image list
    /timestamp  (n,)           float64  time.time() when the capture completed
    /exposure_s (n,)           float64
    /averaging  (n,)           int32
    /dropped    (n,)           int32    frames dropped (and retried) during the capture
    /dark       (H, W)         float32  the dark frame subtracted (absent when none)
    attrs: format, format_version, n_complete, frame_shape, pattern_shape, created
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["CaptureStore", "read_captures", "write_json_atomic", "git_commit", "versions",
           "CAPTURES_FILE"]

FORMAT = "hil-captures"
FORMAT_VERSION = 1
CAPTURES_FILE = "captures.h5"
_SCALARS = {"index": np.int64, "timestamp": np.float64, "exposure_s": np.float64,
            "averaging": np.int32, "dropped": np.int32}


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON to a temporary name in the same directory, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


class CaptureStore:
    """Append-only HDF5 store of a run's captures (see the module docstring)."""

    def __init__(self, f: h5py.File) -> None:
        self._f = f
        self.path = Path(f.filename)

    # ------------------------------------------------------------ open/create
    @classmethod
    def create(cls, path: str | os.PathLike, *, frame_shape: Sequence[int], frame_dtype: Any,
               pattern_shape: Sequence[int], dark: np.ndarray | None = None,
               attrs: dict[str, Any] | None = None) -> CaptureStore:
        """A new, empty store; refuses to overwrite an existing file."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path}: a capture file already exists (resume the run "
                                  "with --resume, or choose another --out)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fs, ps = tuple(int(v) for v in frame_shape), tuple(int(v) for v in pattern_shape)
        tmp = path.with_name(f".{path.name}.tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["n_complete"] = 0
            f.attrs["frame_shape"] = fs
            f.attrs["pattern_shape"] = ps
            f.attrs["created"] = time.time()
            for k, v in (attrs or {}).items():
                f.attrs[k] = json.dumps(v, default=_json_default)
            f.create_dataset("frames", shape=(0, *fs), maxshape=(None, *fs),
                             dtype=np.dtype(frame_dtype), chunks=(1, *fs))
            f.create_dataset("patterns", shape=(0, *ps), maxshape=(None, *ps),
                             dtype=np.float32, chunks=(1, *ps))
            for name, dt in _SCALARS.items():
                f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(256,))
            if dark is not None:
                f.create_dataset("dark", data=np.asarray(dark, dtype=np.float32))
        os.replace(tmp, path)  # the empty store appears whole or not at all
        return cls(h5py.File(path, "a"))

    @classmethod
    def resume(cls, path: str | os.PathLike) -> CaptureStore:
        """Open an existing store for appending; trim a capture that was cut short."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no capture file to resume")
        try:
            f = h5py.File(path, "a")
        except OSError as exc:
            raise ValueError(f"{path}: the capture file cannot be opened ({exc})") from exc
        if f.attrs.get("format") != FORMAT:
            f.close()
            raise ValueError(f"{path}: not a capture file of a hil run")
        store = cls(f)
        n = store.count
        for name in ("frames", "patterns", *_SCALARS):
            if f[name].shape[0] != n:
                f[name].resize(n, axis=0)
        f.flush()
        return store

    # ------------------------------------------------------------------ access
    @property
    def count(self) -> int:
        """Complete captures on disk."""
        return int(self._f.attrs["n_complete"])

    @property
    def indices(self) -> np.ndarray:
        return np.asarray(self._f["index"][: self.count])

    def append(self, index: int, frames: np.ndarray, patterns: np.ndarray,
               frame_info: Sequence[dict[str, Any]] = ()) -> int:
        """Write one capture, mark it complete and flush; returns the new count."""
        f = self._f
        n = self.count
        fr = np.asarray(frames)
        if fr.shape != f["frames"].shape[1:]:
            raise ValueError(f"frames: expected shape {f['frames'].shape[1:]}, got {fr.shape}")
        pa = np.asarray(patterns, dtype=np.float32)
        if pa.shape != f["patterns"].shape[1:]:
            raise ValueError(f"patterns: expected shape {f['patterns'].shape[1:]}, "
                             f"got {pa.shape}")
        info = list(frame_info)
        row = {
            "index": int(index),
            "timestamp": max([float(i.get("timestamp", 0.0)) for i in info] or [time.time()]),
            "exposure_s": float(info[0].get("exposure_s", np.nan)) if info else np.nan,
            "averaging": int(info[0].get("averaging", 1)) if info else 1,
            "dropped": int(sum(int(i.get("dropped_frames", 0)) for i in info)),
        }
        for name in ("frames", "patterns", *_SCALARS):
            f[name].resize(n + 1, axis=0)
        f["frames"][n] = fr
        f["patterns"][n] = pa
        for name, v in row.items():
            f[name][n] = v
        f.flush()  # the data first ...
        f.attrs["n_complete"] = n + 1
        f.flush()  # ... then the count that makes it part of the run
        return n + 1

    def close(self) -> None:
        if self._f.id.valid:
            self._f.flush()
            self._f.close()

    def __enter__(self) -> CaptureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_captures(path: str | os.PathLike, *, frames: bool = False) -> dict[str, np.ndarray]:
    """The complete captures of a store, as arrays (``frames`` too when asked)."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_complete"])
        names = ["patterns", *_SCALARS] + (["frames"] if frames else [])
        out = {name: np.asarray(f[name][:n]) for name in names}
        if "dark" in f:
            out["dark"] = np.asarray(f["dark"])
    return out
