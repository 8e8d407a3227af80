"""The format of ``captures.h5``: layout, attributes, units, and the checks on reading.

Layout (format version 3; ``hil.capture_store.CaptureStore`` writes it)::

    /windows    (n, C, h, w)   camera dtype  units "counts"  model windows (WINDOWS_FILTER;
                                                          absent in a frames-only store)
    /frames     (n, K, H, W)   camera dtype  units "counts"  only when asked, FRAMES_FILTER
                                                          (a frames-only store: uncompressed)
    /patterns   (n, C, N, N)   float32       units "sqrt(counts)"
    /index      (n,)           int64    position of the image in the run's image list
    /timestamp  (n,)           float64  units "s" (Unix time: time.time() when captured)
    /exposure_s (n,)           float64  units "s"
    /averaging  (n,)           int32    frames averaged per channel
    /dropped    (n,)           int32    frames dropped (and retried) during the capture
    /drift_x_px, /drift_y_px  (n,) float64  units "px": drift correction applied (calibration.drift;
                                            NaN: none)
    /dark       (H, W)         float32  units "counts": the dark frame subtracted (absent: none)

File attributes, stored as native typed values (``simulation.h5attrs``: strings, int64,
float64, int64 arrays; the units of attribute ``x`` in attribute ``x_units``)::

    format "hil-captures", format_version 3, n_complete (int), created (float, "s"),
    created_by (str: simulation.provenance.code_label()), frame_shape [K, H, W],
    pattern_shape [C, N, N], window_shape [C, h, w], window_boxes (C, 5) int64 in "px"
    (columns [frame, r0, r1, c0, c1]: channel c's window is frames[frame, r0:r1, c0:c1]),
    and the run's own attributes (``attrs`` of ``CaptureStore.create``: dataset, split,
    seed; a None value is stored as no attribute).

Older files are read and resumed as they are (a resumed file keeps its version):

* version 2 (windows, optional gzip frames): the run's attributes and ``window_boxes`` are
  JSON strings; no units.
* version 1 (full frames uncompressed, no windows, no drift columns): run's attributes as
  JSON strings.

``read_header`` checks every attribute before it is used (type, shape, size: an array
attribute is refused unread when it is larger than any real header would be; a JSON
string longer than ``MAX_STR_CHARS`` likewise) and raises ``CaptureFormatError`` (a
``ValueError``) naming the file and the attribute.

Chunking and compression were chosen on ``experiments/bench_h5.py`` (see
``FRAMES_FILTER``, ``WINDOWS_FILTER``): one capture per chunk, so that a capture is
written, flushed and checked as a unit and a resumed file trims whole chunks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulation.h5attrs import MAX_STR_CHARS, get_attr, set_attr, set_units, units_of

__all__ = ["FORMAT", "FORMAT_VERSION", "READABLE_VERSIONS", "CAPTURES_FILE", "SCALARS",
           "V2_SCALARS", "DATASET_UNITS", "FRAMES_FILTER", "WINDOWS_FILTER", "CaptureHeader",
           "CaptureFormatError", "read_header", "write_header", "set_dataset_units",
           "check_layout"]

FORMAT = "hil-captures"
FORMAT_VERSION = 3  # 3: typed attributes with units; 2: windows, frames optional; 1: frames
READABLE_VERSIONS = (1, 2, 3)
CAPTURES_FILE = "captures.h5"
# per-capture columns of every version
SCALARS: dict[str, type] = {"index": np.int64, "timestamp": np.float64,
                            "exposure_s": np.float64, "averaging": np.int32,
                            "dropped": np.int32}
# per-capture columns since version 2: the drift correction applied (calibration.drift), camera px
V2_SCALARS: dict[str, type] = {"drift_x_px": np.float64, "drift_y_px": np.float64}
DATASET_UNITS = {"windows": "counts", "frames": "counts", "dark": "counts",
                 "patterns": "sqrt(counts)", "timestamp": "s", "exposure_s": "s",
                 "drift_x_px": "px", "drift_y_px": "px"}
# full frames (--store-frames): gzip level 1 with the byte shuffle, one capture per chunk
# (experiments/bench_h5.py; see its numbers in the module docstring of hil.capture_store)
FRAMES_FILTER: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
# model windows (every run): the same filter (about half the bytes of a window, well under
# a millisecond of CPU per capture)
WINDOWS_FILTER: dict[str, Any] = {"compression": "gzip", "compression_opts": 1,
                                  "shuffle": True}
# header attributes (the rest are the run's own)
_HEADER = ("format", "format_version", "n_complete", "created", "created_by", "frame_shape",
           "pattern_shape", "window_shape", "window_boxes", "window_boxes_columns")
_MAX_CHANNELS = 64  # more encoder channels than any bench has: a corrupt header


class CaptureFormatError(ValueError):
    """A capture file whose format or attributes are not what a hil run writes."""


@dataclass
class CaptureHeader:
    """The checked attributes of a capture file (``read_header``)."""

    version: int
    n_complete: int
    frame_shape: tuple[int, ...]
    pattern_shape: tuple[int, ...]
    window_shape: tuple[int, ...] | None = None
    window_boxes: np.ndarray | None = None  # (C, 5) int64: frame, r0, r1, c0, c1
    created: float | None = None
    created_by: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # the run's own (dataset, split, seed)
    units: dict[str, str] = field(default_factory=dict)  # dataset or attribute -> units


def write_header(f: Any, *, n_complete: int, frame_shape: tuple[int, ...],
                 pattern_shape: tuple[int, ...], created: float, created_by: str,
                 window_shape: tuple[int, ...] | None, window_boxes: np.ndarray | None,
                 attrs: dict[str, Any] | None) -> None:
    """Write the version-3 header attributes of a new file ``f`` (an open h5py file)."""
    a = f.attrs
    set_attr(a, "format", FORMAT)
    set_attr(a, "format_version", FORMAT_VERSION)
    set_attr(a, "n_complete", int(n_complete))
    set_attr(a, "created", float(created), units="s")
    set_attr(a, "created_by", created_by)
    set_attr(a, "frame_shape", list(frame_shape))
    set_attr(a, "pattern_shape", list(pattern_shape))
    if window_shape is not None:
        set_attr(a, "window_shape", list(window_shape))
        set_attr(a, "window_boxes", np.asarray(window_boxes, np.int64).reshape(-1, 5),
                 units="px")
        set_attr(a, "window_boxes_columns", "frame,r0,r1,c0,c1")
    for k, v in (attrs or {}).items():
        if k in _HEADER or k.endswith("_units"):
            raise ValueError(f"attrs: {k!r} is a name the capture file uses itself")
        try:
            set_attr(a, k, v)
        except TypeError as exc:
            raise ValueError(f"attrs: {exc}") from exc


def set_dataset_units(f: Any) -> None:
    """Record ``DATASET_UNITS`` on the datasets of ``f`` that exist."""
    for name, units in DATASET_UNITS.items():
        if name in f:
            set_units(f[name], units)


def _shape(a: Any, name: str, where: Path) -> tuple[int, ...]:
    v = get_attr(a, name, "int_array", where=where, shape=(3,))
    if v is None:
        raise CaptureFormatError(f"{where}: attribute {name!r} missing (not a complete "
                                 "capture file)")
    if (v <= 0).any() or (v > 1 << 20).any():
        raise CaptureFormatError(f"{where}: attribute {name!r}: expected 3 sizes in 1..2^20, "
                                 f"got {v.tolist()}")
    return tuple(int(x) for x in v)


def _legacy_json(a: Any, name: str, where: Path) -> Any:
    text = get_attr(a, name, "str", where=where)
    if text is None:
        return None
    if len(text) > MAX_STR_CHARS:  # pragma: no cover - get_attr refuses it first
        raise CaptureFormatError(f"{where}: attribute {name!r} is too long")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaptureFormatError(f"{where}: attribute {name!r}: expected JSON text (format "
                                 f"version 1/2), got {text[:60]!r} ({exc})") from exc


def _user_attr(a: Any, name: str, where: Path) -> Any:
    aid = a.get_id(name)
    kind = aid.dtype.kind
    if kind in "SUO":  # strings (HDF5 stores str as variable-length bytes/objects)
        return get_attr(a, name, "str", where=where)
    if aid.shape == ():
        return get_attr(a, name, {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(
            kind, "str"), where=where)
    return get_attr(a, name, "float_array" if kind == "f" else "int_array",
                    where=where).tolist()


def read_header(f: Any, path: str | Path) -> CaptureHeader:
    """The checked header of an open capture file ``f`` (any readable version);
    ``CaptureFormatError`` naming ``path`` and the attribute when it is not one."""
    where = Path(path)
    a = f.attrs
    try:
        fmt = get_attr(a, "format", "str", where=where)
        if fmt != FORMAT:
            raise CaptureFormatError(f"{where}: not a capture file of a hil run (format "
                                     f"{fmt!r}, expected {FORMAT!r})")
        version = get_attr(a, "format_version", "int", where=where)
        if version not in READABLE_VERSIONS:
            newer = version is not None and version > FORMAT_VERSION
            raise CaptureFormatError(
                f"{where}: capture format version {version}; this code reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
                + (" (written by a newer hil: update the package)" if newer else ""))
        n = get_attr(a, "n_complete", "int", where=where)
        if n is None or n < 0:
            raise CaptureFormatError(f"{where}: attribute 'n_complete': expected an integer "
                                     f">= 0, got {n!r}")
        head = CaptureHeader(version=version, n_complete=n,
                             frame_shape=_shape(a, "frame_shape", where),
                             pattern_shape=_shape(a, "pattern_shape", where),
                             created=get_attr(a, "created", "float", where=where))
        if "window_shape" in a:
            head.window_shape = _shape(a, "window_shape", where)
            boxes = (_legacy_json(a, "window_boxes", where) if version < 3 else
                     get_attr(a, "window_boxes", "int_array", where=where,
                              shape=(None, 5), max_elements=5 * _MAX_CHANNELS))
            if version >= 3 or boxes:  # a version-2 file may hold "[]" (no boxes given)
                head.window_boxes = _check_boxes(boxes, head, where)
        if version >= 3:
            head.created_by = get_attr(a, "created_by", "str", where=where)
        for k in a:
            if k in _HEADER or k.endswith("_units"):
                continue
            head.attrs[k] = (_legacy_json(a, k, where) if version < 3
                             else _user_attr(a, k, where))
        for k in a:
            if k.endswith("_units"):
                u = units_of(f, k[: -len("_units")])
                if u is not None:
                    head.units[k[: -len("_units")]] = u
        for name in DATASET_UNITS:
            if name in f:
                u = units_of(f[name])
                if u is not None:
                    head.units[name] = u
    except CaptureFormatError:
        raise
    except ValueError as exc:  # from get_attr: already names file and attribute
        raise CaptureFormatError(str(exc)) from exc
    return head


def _check_boxes(boxes: Any, head: CaptureHeader, where: Path) -> np.ndarray:
    label = f"{where}: attribute 'window_boxes'"
    try:
        b = np.asarray(boxes if boxes is not None else [], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CaptureFormatError(f"{label}: expected rows of 5 integers, got "
                                 f"{str(boxes)[:80]}") from exc
    c, h, w = head.window_shape or (0, 0, 0)
    k, fh, fw = head.frame_shape
    if b.shape != (c, 5):
        raise CaptureFormatError(f"{label}: expected shape ({c}, 5) (one row per window "
                                 f"channel), got {b.shape}")
    bad = ((b[:, 0] < 0) | (b[:, 0] >= k) | (b[:, 1] < 0) | (b[:, 3] < 0)
           | (b[:, 2] > fh) | (b[:, 4] > fw) | (b[:, 2] - b[:, 1] != h)
           | (b[:, 4] - b[:, 3] != w))
    if bad.any():
        raise CaptureFormatError(f"{label}: row {int(np.argmax(bad))} = "
                                 f"{b[int(np.argmax(bad))].tolist()} is not a {h}x{w} box "
                                 f"inside frames of shape {head.frame_shape}")
    return b


def check_layout(f: Any, head: CaptureHeader, path: str | Path) -> None:
    """``CaptureFormatError`` naming ``path`` unless the datasets of ``f`` are the ones its
    header (``read_header``) describes, each holding at least ``n_complete`` captures."""
    where = Path(path)
    want: dict[str, tuple[int, ...]] = {"patterns": head.pattern_shape,
                                        **{k: () for k in SCALARS}}
    if head.window_shape is not None:
        want["windows"] = head.window_shape
    if "frames" in f:
        want["frames"] = head.frame_shape
    if head.version >= 2:
        want.update({k: () for k in V2_SCALARS if k in f})
    if "frames" not in f and "windows" not in f:
        raise CaptureFormatError(f"{where}: not a capture file of a hil run (neither frames "
                                 "nor windows stored)")
    for name, shape in want.items():
        d = f.get(name) if name in f else None
        if d is None or not hasattr(d, "shape"):
            raise CaptureFormatError(f"{where}: dataset {name!r} missing (not a complete "
                                     "capture file)")
        if d.dtype.kind not in "biuf":
            raise CaptureFormatError(f"{where}: dataset {name!r}: expected numbers, got "
                                     f"dtype {d.dtype}")
        if d.ndim != len(shape) + 1 or tuple(d.shape[1:]) != tuple(shape):
            raise CaptureFormatError(f"{where}: dataset {name!r}: expected shape (n, "
                                     f"{', '.join(map(str, shape))}), got {d.shape}")
        if d.shape[0] < head.n_complete:
            raise CaptureFormatError(f"{where}: {name} holds {d.shape[0]} captures, fewer "
                                     f"than the {head.n_complete} marked complete")
    if "dark" in f:
        d = f["dark"]
        if not hasattr(d, "shape") or tuple(d.shape) != head.frame_shape[1:] or \
                d.dtype.kind != "f":
            raise CaptureFormatError(f"{where}: dataset 'dark': expected float "
                                     f"{head.frame_shape[1:]}, got {getattr(d, 'dtype', '?')} "
                                     f"{getattr(d, 'shape', '')}")
