"""The run record: a directory with ``run.json``, ``captures.h5``, ``results.json``, a report.

``hil.session`` runs the capture loop and writes the record; the pieces live where one
idea each is:

* ``hil.capture_format``: the layout and attributes of ``captures.h5`` (format version,
  units, the checks on reading);
* ``hil.capture_store``: ``CaptureStore``, the append-only writer, every capture checked on
  disk (``hil.capture_disk``: room, HDF5 errors, truncated files; ``CaptureWriteError``);
* ``hil.capture_read``: ``read_captures`` and ``read_capture_header``;
* here: the JSON files of the record (``write_json_atomic``) and the provenance a record
  keeps (``simulation.provenance``: ``run_provenance``, and ``git_commit`` / ``versions``,
  the two fields ``run.json`` has always had).

The names above are importable from here too (``from hil.runs import CaptureStore``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from simulation.atomic import atomic_open
from simulation.provenance import git_state, provenance

from .capture_disk import RESERVE_BYTES, CaptureWriteError
from .capture_format import CAPTURES_FILE, FORMAT, FORMAT_VERSION, CaptureFormatError
from .capture_read import read_capture_header, read_captures
from .capture_store import CaptureStore

__all__ = ["CaptureStore", "CaptureWriteError", "CaptureFormatError", "read_captures",
           "read_capture_header", "write_json_atomic", "git_commit", "versions",
           "run_provenance", "CAPTURES_FILE", "FORMAT", "FORMAT_VERSION", "RESERVE_BYTES"]


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


def run_provenance() -> dict[str, Any]:
    """What ``run.json`` records of the code: ``provenance`` (the one record,
    ``simulation.provenance.provenance()``) and, derived from it, the two fields run
    records have always had: ``git_commit`` and ``versions`` (python, the package, its
    dependencies)."""
    p = provenance()
    return {"provenance": p, "git_commit": p["git_commit"],
            "versions": {"python": p["python"], "hil-diffraction": p["package_version"],
                         **p["versions"]}}


def git_commit() -> str | None:
    """The commit of the checkout this code runs from (None outside a git checkout)."""
    return git_state()[0]


def versions() -> dict[str, str]:
    """Python's version, the package's and those of its installed dependencies (the
    ``versions`` of ``run_provenance``)."""
    return dict(run_provenance()["versions"])
