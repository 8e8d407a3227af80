"""The calibration file on disk: ``calibration.h5``, written atomically and read with checks.

A calibration is a directory (``DIR/calibration.h5``; the report and figures sit beside
it) or the ``.h5`` file itself (``file_path``). ``CalibrationSet.save`` and ``.load``
(``calibration.store``) are ``save_set`` and ``load_set`` here.

File layout (format version 2, docs/architecture.md §File-formats): the file's attributes
``format`` (``FORMAT``), ``format_version``, ``created``, ``saved`` and ``code_version``;
its ``devices`` and ``provenance`` (``simulation.provenance``) groups; and a group per
record with ``values``, ``residuals``, ``data`` and ``devices`` subgroups and its ``time``
and ``code_version`` attributes. How a mapping is laid out in a group (arrays as datasets,
numbers, strings and short lists as native typed attributes, each with its units: a
dataset's ``units`` attribute, an attribute's ``<name>_units``, the convention of
``simulation.h5attrs``) is ``calibration.store_h5``'s; the units of a value come from its
step (``step_registry.value_units``).

Version 1 files (JSON string attributes, the centre correction written into the geometry
record) are read and converted (``upgrade_v1``). ``save_set`` writes to a temporary name
and renames it over the target (``simulation.atomic``), so a crash never leaves half a
file; ``load_set`` refuses a missing, unreadable, foreign, corrupt or newer file with a
clear ``CalibrationError`` and keeps a record of a step this process has not registered.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from calibration import step_registry as registry
from calibration.store_h5 import read_mapping, read_mapping_v1, write_mapping
from calibration.store_step import CalibrationError, StepResult
from simulation.atomic import atomic_path
from simulation.h5attrs import get_attr, set_attr

__all__ = ["FORMAT", "FORMAT_VERSION", "READ_VERSIONS", "FILE_NAME", "file_path", "save_set",
           "load_set", "write_step", "read_step", "upgrade_v1"]

# the warnings of ``CalibrationSet.load`` keep the logger they had before this module
log = logging.getLogger("calibration.store")

FORMAT = "hil-calibration"
FORMAT_VERSION = 2  # 2: native typed attributes with units; 1: JSON string attributes
READ_VERSIONS = (1, 2)
FILE_NAME = "calibration.h5"
_FILE_GROUPS = ("devices", "provenance")  # the file's own groups; every other is a record


def _units(record: str) -> Callable[[str], str | None]:
    """The units callable of ``store_h5`` for the values of ``record``."""
    return lambda key: registry.value_units(record, key)


def file_path(path: str | os.PathLike) -> Path:
    """``path`` itself when it names an ``.h5`` file, else ``path/calibration.h5``."""
    p = Path(path)
    return p if p.suffix in (".h5", ".hdf5") else p / FILE_NAME


def write_step(g: h5py.Group, step: StepResult) -> None:
    """A record into its (empty) group: arrays as datasets, scalars as typed attributes
    with units (``store_h5``)."""
    set_attr(g.attrs, "time", float(step.time), units="s since 1970-01-01 UTC")
    set_attr(g.attrs, "code_version", str(step.code_version))
    for part in ("values", "residuals", "data"):
        write_mapping(g.create_group(part, track_order=True), getattr(step, part),
                      _units(step.name), f"{step.name}/{part}")
    write_mapping(g.create_group("devices", track_order=True), step.devices,
                  _units("devices"), f"{step.name}/devices")


def read_step(name: str, g: h5py.Group, version: int) -> StepResult:
    """The record ``write_step`` wrote into ``g`` (or a version-1 file's)."""
    where = f"step {name!r}"
    if version == 1:
        parts = {part: read_mapping_v1(g[part]) for part in ("values", "residuals", "data")}
        devices = json.loads(g.attrs["devices"])
    else:
        parts = {part: read_mapping(g[part]) for part in ("values", "residuals", "data")}
        devices = read_mapping(g["devices"])
    values = parts["values"]
    if isinstance(values.get("zernike_noll_rad"), dict):  # HDF5/JSON keys are strings
        values["zernike_noll_rad"] = {int(k): float(v)
                                      for k, v in values["zernike_noll_rad"].items()}
    return StepResult(name=name, values=values, residuals=parts["residuals"],
                      data=parts["data"],
                      time=get_attr(g.attrs, "time", "float", where=where),
                      code_version=get_attr(g.attrs, "code_version", "str", where=where),
                      devices=devices)


def upgrade_v1(records: dict[str, StepResult]) -> None:
    """Version-1 records -> today's: the wavefront step used to write its centre
    correction into the geometry record (``model_to_camera`` corrected, the spot fit in
    ``model_to_camera_spots``) and keep a copy of the corrected map; now the geometry keeps
    its spot fit and the correction is applied on read (``model_to_camera``)."""
    geo, wf = records.get("geometry"), records.get("wavefront")
    shifted = wf is not None and "center_shift_px" in wf.values
    if geo is not None and "model_to_camera_spots" in geo.values:
        spots = geo.values.pop("model_to_camera_spots")
        if shifted:  # else (a wavefront imported since): keep the map that was in use
            geo.values["model_to_camera"] = spots
            geo.values.pop("center_corrected_by", None)
    if wf is not None:
        wf.values.pop("model_to_camera", None)


def save_set(cal: Any, path: str | os.PathLike) -> Path:
    """Write the ``CalibrationSet`` ``cal`` atomically (temporary name in the same
    directory, then rename) at ``cal.file_path(path)``; sets ``cal.path``."""
    from simulation.provenance import code_label, provenance

    target = cal.file_path(path)
    record = provenance()
    with atomic_path(target) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        set_attr(f.attrs, "format", FORMAT)
        set_attr(f.attrs, "format_version", FORMAT_VERSION)
        set_attr(f.attrs, "created", float(cal.created), units="s since 1970-01-01 UTC")
        set_attr(f.attrs, "saved", time.time(), units="s since 1970-01-01 UTC")
        set_attr(f.attrs, "code_version", code_label(record))
        write_mapping(f.create_group("devices", track_order=True), cal.devices,
                      _units("devices"), "devices")
        write_mapping(f.create_group("provenance", track_order=True), record,
                      _units("provenance"), "provenance")
        for name in cal.steps():
            write_step(f.create_group(name, track_order=True), cal.record(name))
    cal.path = target
    return target


def load_set(cls: Any, path: str | os.PathLike) -> Any:
    """Read a calibration into a new ``cls`` (a ``CalibrationSet``): format version 2, or 1
    from before typed attributes; clear errors for a missing, corrupt or foreign file."""
    p = cls.file_path(path)
    if not p.exists():
        where = f"{path} (looked for {p})" if Path(path) != p else str(p)
        raise FileNotFoundError(f"calibration: no calibration file at {where}")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise CalibrationError(f"calibration: {p} is not a readable HDF5 file ({exc})") from exc
    with f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        if fmt != FORMAT:
            raise CalibrationError(
                f"calibration: {p} is not a calibration file (format {fmt!r}, "
                f"expected {FORMAT!r})"
            )
        try:
            ver = int(f.attrs.get("format_version", -1))
        except (TypeError, ValueError):
            ver = -1
        if ver not in READ_VERSIONS:
            raise CalibrationError(
                f"calibration: {p} has format version {ver}, this code reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}; recalibrate or use a matching "
                "release"
            )
        try:
            devices = json.loads(f.attrs.get("devices", "{}")) if ver == 1 \
                else read_mapping(f["devices"])
            out = cls(devices=devices)
            out.created = float(f.attrs.get("created", 0.0))
            out.path = p
            records = {name: read_step(name, f[name], ver) for name in f
                       if name not in _FILE_GROUPS and isinstance(f[name], h5py.Group)}
        except (KeyError, ValueError, OSError, TypeError) as exc:
            raise CalibrationError(f"calibration: {p} is corrupt ({exc})") from exc
    if ver == 1:
        upgrade_v1(records)
    known = registry.record_names()
    for name, step in records.items():
        if name in known:
            out.set(name, step)
        else:
            log.warning("calibration: %s holds step %r, which no registered step "
                        "produces; kept as it is", p, name)
            out._records[name] = step
    return out
