"""The reader of ``captures.h5``: the complete captures as arrays, and the checked header.

Reads every format version (``hil.capture_format``), including a file whose last append
failed (without changing it: a file cut short by a file-size limit is read through a
zero-padded view). Every attribute is checked before use and every dataset against the
header: a damaged or foreign file is a ``CaptureFormatError`` (``ValueError``) naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .capture_disk import close_h5, open_h5
from .capture_format import SCALARS, V2_SCALARS, CaptureHeader, check_layout, read_header

__all__ = ["read_captures", "read_capture_header"]


def read_capture_header(path: str | os.PathLike) -> CaptureHeader:
    """The checked header of a capture file: version, ``n_complete``, shapes, window
    boxes, units and the run's own attributes (dataset, split, seed)."""
    path = Path(path)
    f = open_h5(path, "r")
    try:
        head = read_header(f, path)
        check_layout(f, head, path)
    finally:
        close_h5(f)
    return head


def read_captures(path: str | os.PathLike, *, frames: bool = False,
                  limit: int | None = None) -> dict[str, np.ndarray]:
    """The complete captures of a store, as arrays: patterns, the scalars, ``windows``
    where stored, ``dark`` where stored, and ``frames`` when asked (``ValueError`` naming
    the file when the run did not store them: ``hil run --store-frames``). ``limit``: the
    first ``limit`` captures only.

    Reads a file whose last append failed too (without changing it).
    """
    path = Path(path)
    f = open_h5(path, "r")
    try:
        head = read_header(f, path)
        check_layout(f, head, path)
        n = head.n_complete if limit is None else max(0, min(int(limit), head.n_complete))
        if frames and "frames" not in f:
            raise ValueError(f"{path}: this run stored the model windows only, not the "
                             "full frames (run with --store-frames to keep them)")
        names = ["patterns", *SCALARS] + [k for k in ("windows", *V2_SCALARS) if k in f] + (
            ["frames"] if frames else [])
        out = {name: np.asarray(f[name][:n]) for name in names}
        if "dark" in f:
            out["dark"] = np.asarray(f["dark"])
    finally:
        close_h5(f)
    return out
