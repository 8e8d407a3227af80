"""``CalibrationSet``: what a calibration run fitted, in one versioned HDF5 file.

A calibration is a directory (``DIR/calibration.h5``; the report and figures sit beside
it) or the ``.h5`` file itself. Each step that ran is a ``StepResult``:

* ``values``: what was fitted (numbers, lists, dicts and numpy arrays);
* ``residuals``: how well (rms errors, per-point residuals);
* ``data``: the data it came from, or a summary (arrays);
* ``time``, ``code_version`` and ``devices`` (the identities of the SLM and camera).

Records (``STEPS``: those of the steps registered in ``calibration.step_registry``, in
bench-day order) and the values the rest of the house reads:

=============  ============================================================================
``settle``     ``settle_time_s`` the SLM's measured settle time (``relax_time_s``, ...)
``dark``       ``dark_frame`` (H, W) float32 counts, ``gain_counts_per_electron``,
               ``read_noise_counts``, ``dark_level_counts``; ``dark_offset_counts`` and
               ``dark_rate_counts_per_s`` (H, W): dark = offset + rate · exposure
               (``dark_model``, ``dark_at``), ``hot_pixel_mask`` (H, W) uint8
``geometry``   ``model_to_camera`` (2, 3) float64, the grating-spot fit: model Fourier-grid
               pixel (col, row) of the N x N grid -> camera pixel (x, y); ``size`` (N),
               ``block`` (s); centre, scale, rotation... derived on read
``lut``        ``phase_response_rad`` (2**bitdepth,) delay of each grey level, radians,
               relative to the top level (``devices.phase`` convention)
``source``     ``waist_px``, ``center_px`` (x, y) offset from the SLM centre, SLM pixels;
               ``beam_model`` (``calibration.source_beam``) and its ``power`` or
               ``clip_radius_px`` (absent in older files: a Gaussian)
``wavefront``  ``zernike_noll_rad`` {Noll index: radians}, ``radius_px``,
               ``center_shift_px`` (x, y): the spots' centroid offset it fitted
``model``      the encoded-diffraction model fit: ``gain``, ``background``, ...
``decoders``   ``decoder_files`` {name: {path, sha256}} of the decoders written beside the
               file, ``default_decoder``, ``best_decoder``, ``encoder`` (their signature),
               ``imaging_config`` (the ``ImagingConfig`` they were made with)
=============  ============================================================================

Derived on read, never stored twice: ``model_to_camera`` (the set's) is the geometry's
affine moved by the wavefront's ``center_shift_px``; ``affine_parameters`` its centre,
scale and rotation; ``cal.geometry["rotation_deg"]`` (``StepResult.derived``) those of the
geometry record's own affine.

File layout (format version 2, ``calibration.store_h5``): a group per record with
``values``, ``residuals``, ``data`` and ``devices`` subgroups; arrays are datasets,
numbers, strings and short lists native typed attributes, each with its units
(``rad``, ``px``, ``s``, ``counts``...: a dataset's ``units`` attribute, an attribute's
``<name>_units``, the convention of ``simulation.h5attrs``); the file's ``devices`` and
``provenance`` (``simulation.provenance``) groups. Version 1 files (JSON string
attributes, the centre correction written into the geometry record) are read and
converted.

``imaging_config`` (the decoders' configuration, else the model's) and ``decoder_file``
say what a run must use with this calibration; ``device_differences`` compares the
recorded SLM and camera identities with an opened bench's.

A step that has not run is ``None`` (``cal.geometry is None``). ``save`` writes to a
temporary name and renames it over the target, so a crash never leaves half a file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calibration import step_registry as registry
from calibration.store_h5 import read_mapping, read_mapping_v1, write_mapping
from simulation.atomic import atomic_path
from simulation.h5attrs import get_attr, set_attr

__all__ = [
    "CalibrationSet",
    "StepResult",
    "CalibrationError",
    "STEPS",  # noqa: F822 - the module's __getattr__ (read from the registry)
    "FORMAT",
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "FILE_NAME",
    "code_version",
    "file_sha256",
    "IDENTITY_KEYS",
]

log = logging.getLogger(__name__)

FORMAT = "hil-calibration"
FORMAT_VERSION = 2  # 2: native typed attributes with units; 1: JSON string attributes
READ_VERSIONS = (1, 2)
FILE_NAME = "calibration.h5"
# the parts of a device's info() that identify it (compared by ``device_differences``)
IDENTITY_KEYS = ("device_id", "identity", "serial", "backend", "slmsuite_class", "shape",
                 "bitdepth", "pitch_um", "wav_um")
_FILE_GROUPS = ("devices", "provenance")  # the file's own groups; every other is a record


def __getattr__(name: str) -> Any:
    if name == "STEPS":  # the records of the registered steps, in bench-day order
        return registry.record_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CalibrationError(ValueError):
    """A calibration file that is missing, corrupt or of another format version."""


def code_version() -> str:
    """Package version plus the git commit of the working tree, when there is one
    (``simulation.provenance.code_label``: ``0.1.0+gc28c6cf[.dirty]``)."""
    from simulation.provenance import code_label

    return code_label()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if hasattr(x, "detach"):
        return x.detach().cpu().tolist()
    return x


def _units(record: str):  # noqa: ANN202 - a units callable for store_h5
    return lambda key: registry.value_units(record, key)


class MissingCalibrationValue(KeyError, ValueError):
    """A calibration file lacks a value a step needs: the user's file, not a bug.

    A ``KeyError`` for code that looks values up, a ``ValueError`` so that the command
    line reports it as one line (``hil.cli`` treats bare ``KeyError`` as a bug).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class StepResult:
    """One calibration step: fitted values, residuals, source data and provenance."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    residuals: dict[str, Any] = field(default_factory=dict)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    code_version: str = field(default_factory=code_version)
    devices: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """A stored value, else one its step derives on read (``derived``)."""
        if key in self.values:
            return self.values[key]
        derived = self.derived()
        if key in derived:
            return derived[key]
        raise MissingCalibrationValue(
            f"calibration step {self.name!r} has no value {key!r} "
            f"(it has {sorted(self.values)}): re-run that step (hil calibrate --steps "
            f"{self.name})"
        )

    def derived(self) -> dict[str, Any]:
        """The values its step computes from this record when read (never stored: e.g. the
        geometry's centre, scale and rotation from its affine)."""
        return registry.derived_values(self)

    # HDF5 (store_h5): arrays as datasets, scalars as typed attributes with units
    def _write(self, g: h5py.Group) -> None:
        set_attr(g.attrs, "time", float(self.time), units="s since 1970-01-01 UTC")
        set_attr(g.attrs, "code_version", str(self.code_version))
        for part in ("values", "residuals", "data"):
            write_mapping(g.create_group(part, track_order=True), getattr(self, part),
                          _units(self.name), f"{self.name}/{part}")
        write_mapping(g.create_group("devices", track_order=True), self.devices,
                      _units("devices"), f"{self.name}/devices")

    @classmethod
    def _read(cls, name: str, g: h5py.Group, version: int) -> StepResult:
        import json

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
        return cls(name=name, values=values, residuals=parts["residuals"], data=parts["data"],
                   time=get_attr(g.attrs, "time", "float", where=where),
                   code_version=get_attr(g.attrs, "code_version", "str", where=where),
                   devices=devices)


def _upgrade_v1(records: dict[str, StepResult]) -> None:
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


class CalibrationSet:
    """All calibration records of one bench; a record that has not been made is ``None``.

    Records are attributes (``cal.geometry``) for every record a registered step produces
    (``step_registry.record_names``). A file may hold a record of a step this process has
    not registered (a plug-in's): it is kept, saved again and listed, never dropped.
    """

    dark: StepResult | None
    geometry: StepResult | None
    lut: StepResult | None
    source: StepResult | None
    wavefront: StepResult | None
    model: StepResult | None
    decoders: StepResult | None
    settle: StepResult | None

    def __init__(self, devices: dict[str, Any] | None = None, **steps: StepResult) -> None:
        object.__setattr__(self, "_records", {})
        self.devices: dict[str, Any] = dict(devices or {})
        self.created = time.time()
        self.path: Path | None = None  # the file it was loaded from or saved to
        for name, step in steps.items():
            self.set(name, step)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and name in registry.record_names():
            return self._records.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name in registry.record_names():
            if value is None:
                self._records.pop(name, None)
            else:
                self.set(name, value)
            return
        object.__setattr__(self, name, value)

    # steps
    def set(self, name: str, step: StepResult) -> None:
        """Store a record (replacing an earlier one). Values its step derives on read
        (``StepResult.derived``) are not kept: they would be stored twice."""
        names = registry.record_names()
        if name not in names:
            raise ValueError(f"name: expected one of {names}, got {name!r}")
        if not isinstance(step, StepResult):
            raise TypeError(f"step: expected a StepResult, got {type(step).__name__}")
        step.name = name
        for key in step.derived():
            step.values.pop(key, None)
        self._records[name] = step

    def record(self, name: str) -> StepResult | None:
        """Record ``name`` (also one of a step not registered here), None when absent."""
        return self._records.get(name)

    def steps(self) -> list[str]:
        """Names of the records present, in bench-day order (unregistered ones last)."""
        names = registry.record_names()
        return [n for n in names if n in self._records] + \
            sorted(n for n in self._records if n not in names)

    def require(self, name: str) -> StepResult:
        """The step's result, or a clear error naming the step to run first."""
        step = self._records.get(name)
        if step is None:
            producer = registry.step_for_record(name)
            run = producer.name if producer is not None else name
            raise CalibrationError(
                f"calibration step {name!r} has not been run (steps present: "
                f"{self.steps() or 'none'}); run `hil calibrate ... --steps {run}` first"
            )
        return step

    # convenience accessors (None when the step has not run)
    @property
    def dark_frame(self) -> np.ndarray | None:
        return None if self.dark is None else np.asarray(self.dark["dark_frame"], np.float32)

    @property
    def dark_model(self) -> Any:
        """The background at any exposure: a ``capture.DarkModel`` (offset + rate ·
        exposure) when the dark step measured one, else the single dark frame (or None)."""
        if self.dark is None or "dark_rate_counts_per_s" not in self.dark.values:
            return self.dark_frame
        from calibration.capture import DarkModel

        return DarkModel(self.dark["dark_offset_counts"], self.dark["dark_rate_counts_per_s"],
                         self.dark.values.get("hot_pixel_mask"))

    def dark_at(self, exposure_s: float) -> np.ndarray | None:
        """The dark frame (float32 counts) to subtract at ``exposure_s`` (None: no dark)."""
        d = self.dark_model
        if d is None or not hasattr(d, "at"):
            return d
        return d.at(float(exposure_s)).astype(np.float32)

    @property
    def model_to_camera(self) -> np.ndarray | None:
        """The geometry's affine (its grating-spot fit) with its centre moved by the
        wavefront step's fitted spot shift (``center_shift_px``) when that step ran: the
        aberrated PSF offsets the spots' centroids. Derived on read from both records."""
        if self.geometry is None:
            return None
        from calibration.geometry import shift_center

        a = np.asarray(self.geometry["model_to_camera"], dtype=np.float64).reshape(2, 3)
        shift = None if self.wavefront is None else self.wavefront.values.get("center_shift_px")
        if shift is None:
            return a.copy()
        dx, dy = np.asarray(shift, dtype=np.float64).reshape(2)
        return shift_center(a, dx, dy)

    @property
    def affine_parameters(self) -> dict[str, Any] | None:
        """Centre, scale, rotation, mirror and shear of ``model_to_camera``
        (``calibration.geometry.affine_parameters``); None without a geometry."""
        a = self.model_to_camera
        if a is None:
            return None
        from calibration.geometry import affine_parameters

        return affine_parameters(a, self.grid_size)

    @property
    def grid_size(self) -> int | None:
        return None if self.geometry is None else int(self.geometry["size"])

    @property
    def block(self) -> int | None:
        return None if self.geometry is None else int(self.geometry["block"])

    @property
    def phase_response_rad(self) -> np.ndarray | None:
        return None if self.lut is None else np.asarray(self.lut["phase_response_rad"], float)

    @property
    def settle_time_s(self) -> float | None:
        """The SLM settle time measured by a ``settle`` step (e.g. imported from slmsuite)."""
        return None if self.settle is None else float(self.settle["settle_time_s"])

    @property
    def zernike_noll_rad(self) -> dict[int, float] | None:
        return None if self.wavefront is None else dict(self.wavefront["zernike_noll_rad"])

    @property
    def imaging_config(self) -> Any:
        """The ``ImagingConfig`` the decoders (else the model) were made with; None when no
        step records one (a calibration made before they were recorded)."""
        from calibration.imaging_config import ImagingConfig

        for name in ("decoders", "model"):
            step = getattr(self, name)
            if step is not None and isinstance(step.values.get("imaging_config"), dict):
                return ImagingConfig.from_dict(step.values["imaging_config"],
                                               what=f"calibration step {name!r} imaging_config")
        return None

    def decoder_file(self, name: str = "default") -> Path:
        """The path of a decoder written by the decoders step: "default" (the step's
        ``default_decoder``), "best", "twin" or "capture"; clear errors when absent."""
        step = self.require("decoders")
        if name in ("default", "best"):
            name = str(step.values.get(f"{name}_decoder", "twin"))
        files = step.values.get("decoder_files") or {}
        rel = (files.get(name) or {}).get("path") or step.values.get(f"{name}_path")
        if rel is None:
            raise CalibrationError(f"calibration: no {name!r} decoder recorded (it has "
                                   f"{sorted(files) or 'none'}); run `hil calibrate ... "
                                   "--steps decoders` with an output directory")
        if self.path is None:
            raise CalibrationError("calibration: not loaded from a file, so its decoder files "
                                   "cannot be found")
        path = self.path.parent / str(rel)
        if not path.is_file():
            raise FileNotFoundError(f"calibration: its {name} decoder {path} is missing")
        return path

    def decoder_record(self, path: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
        """(name, {path, sha256}) of the decoders step's file with the same content as
        ``path``; None when the calibration did not write it."""
        if self.decoders is None:
            return None
        files = self.decoders.values.get("decoder_files") or {}
        digest = file_sha256(path)
        for name, rec in files.items():
            if isinstance(rec, dict) and rec.get("sha256") == digest:
                return name, rec
        return None

    def device_differences(self, devices: dict[str, Any]) -> list[str]:
        """One line per identity (``IDENTITY_KEYS``) of the SLM or camera where the opened
        bench's ``devices`` (``device_identities``) differ from those recorded here."""
        out = []
        for kind in ("slm", "camera"):
            mine, theirs = self.devices.get(kind), devices.get(kind)
            if not isinstance(mine, dict) or not isinstance(theirs, dict):
                continue
            for key in IDENTITY_KEYS:
                if key in mine and key in theirs \
                        and _jsonable(mine[key]) != _jsonable(theirs[key]):
                    out.append(f"{kind} {key}: calibration {mine[key]!r}, bench "
                               f"{theirs[key]!r}")
        return out

    # files
    @staticmethod
    def file_path(path: str | os.PathLike) -> Path:
        """``path`` itself when it names an ``.h5`` file, else ``path/calibration.h5``."""
        p = Path(path)
        return p if p.suffix in (".h5", ".hdf5") else p / FILE_NAME

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary name in the same directory, then rename)."""
        from simulation.provenance import code_label, provenance

        target = self.file_path(path)
        record = provenance()
        with atomic_path(target) as tmp, h5py.File(tmp, "w", track_order=True) as f:
            set_attr(f.attrs, "format", FORMAT)
            set_attr(f.attrs, "format_version", FORMAT_VERSION)
            set_attr(f.attrs, "created", float(self.created), units="s since 1970-01-01 UTC")
            set_attr(f.attrs, "saved", time.time(), units="s since 1970-01-01 UTC")
            set_attr(f.attrs, "code_version", code_label(record))
            write_mapping(f.create_group("devices", track_order=True), self.devices,
                          _units("devices"), "devices")
            write_mapping(f.create_group("provenance", track_order=True), record,
                          _units("provenance"), "provenance")
            for name in self.steps():
                self._records[name]._write(f.create_group(name, track_order=True))
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationSet:
        """Read a calibration (format version 2, or 1 from before typed attributes);
        clear errors for a missing, corrupt or foreign file."""
        import json

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
                records = {name: StepResult._read(name, f[name], ver) for name in f
                           if name not in _FILE_GROUPS and isinstance(f[name], h5py.Group)}
            except (KeyError, ValueError, OSError, TypeError) as exc:
                raise CalibrationError(f"calibration: {p} is corrupt ({exc})") from exc
        if ver == 1:
            _upgrade_v1(records)
        known = registry.record_names()
        for name, step in records.items():
            if name in known:
                out.set(name, step)
            else:
                log.warning("calibration: %s holds step %r, which no registered step "
                            "produces; kept as it is", p, name)
                out._records[name] = step
        return out

    def summary(self) -> dict[str, Any]:
        """Step -> its scalar residuals, for reports and logs."""
        return {n: {k: v for k, v in self._records[n].residuals.items()
                    if not isinstance(v, np.ndarray)} for n in self.steps()}

    def __repr__(self) -> str:
        return f"<CalibrationSet steps={self.steps()}>"
