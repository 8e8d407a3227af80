"""``CalibrationSet``: what a calibration run fitted, in one versioned HDF5 file.

A calibration is a directory (``DIR/calibration.h5``; the report and figures sit beside
it) or the ``.h5`` file itself. Each step that ran is a ``StepResult``:

* ``values``: what was fitted (numbers, lists, dicts and numpy arrays);
* ``residuals``: how well (rms errors, per-point residuals);
* ``data``: the data it came from, or a summary (arrays);
* ``time``, ``code_version`` and ``devices`` (the identities of the SLM and camera).

Steps (``STEPS``) and the values the rest of the house reads:

=============  ============================================================================
``dark``       ``dark_frame`` (H, W) float32 counts, ``gain_counts_per_electron``,
               ``read_noise_counts``, ``dark_level_counts``; ``dark_offset_counts`` and
               ``dark_rate_counts_per_s`` (H, W): dark = offset + rate · exposure
               (``dark_model``, ``dark_at``), ``hot_pixel_mask`` (H, W) uint8
``geometry``   ``model_to_camera`` (2, 3) float64: model Fourier-grid pixel (col, row) of
               the N x N grid -> camera pixel (x, y); ``size`` (N), ``block`` (s)
``lut``        ``phase_response_rad`` (2**bitdepth,) delay of each grey level, radians,
               relative to the top level (``devices.phase`` convention)
``source``     ``waist_px``, ``center_px`` (x, y) offset from the SLM centre, SLM pixels
``wavefront``  ``zernike_noll_rad`` {Noll index: radians}, ``radius_px``
``model``      the encoded-diffraction model fit: ``gain``, ``background``, ...
``decoders``   ``decoder_files`` {name: {path, sha256}} of the decoders written beside the
               file, ``default_decoder``, ``best_decoder``, ``encoder`` (their signature),
               ``imaging_config`` (the ``ImagingConfig`` they were made with)
``settle``     ``settle_time_s`` the SLM's measured settle time (``relax_time_s``, ...)
=============  ============================================================================

``imaging_config`` (the decoders' configuration, else the model's) and ``decoder_file``
say what a run must use with this calibration; ``device_differences`` compares the
recorded SLM and camera identities with an opened bench's.

A step that has not run is ``None`` (``cal.geometry is None``). ``save`` writes to a
temporary name and renames it over the target, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simulation.atomic import atomic_path

__all__ = [
    "CalibrationSet",
    "StepResult",
    "CalibrationError",
    "STEPS",
    "FORMAT",
    "FORMAT_VERSION",
    "FILE_NAME",
    "code_version",
    "file_sha256",
    "IDENTITY_KEYS",
]

FORMAT = "hil-calibration"
FORMAT_VERSION = 1
FILE_NAME = "calibration.h5"
STEPS = ("dark", "geometry", "lut", "source", "wavefront", "model", "decoders", "settle")
# the parts of a device's info() that identify it (compared by ``device_differences``)
IDENTITY_KEYS = ("device_id", "identity", "serial", "backend", "slmsuite_class", "shape",
                 "bitdepth", "pitch_um", "wav_um")


class CalibrationError(ValueError):
    """A calibration file that is missing, corrupt or of another format version."""


def code_version() -> str:
    """Package version plus the git commit of the working tree, when there is one."""
    try:
        from importlib.metadata import version

        v = version("hil-diffraction")
    except Exception:  # noqa: BLE001 - not installed
        v = "unknown"
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            v += "+g" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return v


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
        try:
            return self.values[key]
        except KeyError:
            raise MissingCalibrationValue(
                f"calibration step {self.name!r} has no value {key!r} "
                f"(it has {sorted(self.values)}): re-run that step (hil calibrate --steps "
                f"{self.name})"
            ) from None

    # HDF5 (de)serialisation: arrays as datasets, everything else as JSON attributes
    def _write(self, g: h5py.Group) -> None:
        g.attrs["time"] = float(self.time)
        g.attrs["code_version"] = str(self.code_version)
        g.attrs["devices"] = json.dumps(_jsonable(self.devices))
        for part in ("values", "residuals", "data"):
            sub = g.create_group(part)
            scalars = {}
            for k, v in getattr(self, part).items():
                if hasattr(v, "detach"):
                    v = v.detach().cpu().numpy()
                if isinstance(v, np.ndarray) and v.ndim > 0:
                    sub.create_dataset(k, data=v, compression="gzip" if v.size > 4096 else None)
                else:
                    scalars[k] = _jsonable(v)
            sub.attrs["json"] = json.dumps(scalars)

    @classmethod
    def _read(cls, name: str, g: h5py.Group) -> StepResult:
        parts: dict[str, dict[str, Any]] = {}
        for part in ("values", "residuals", "data"):
            sub = g[part]
            d: dict[str, Any] = json.loads(sub.attrs["json"])
            for k in sub:
                d[k] = np.asarray(sub[k][()])
            parts[part] = d
        values = parts["values"]
        if name == "wavefront" and "zernike_noll_rad" in values:  # JSON keys are strings
            values["zernike_noll_rad"] = {int(k): float(v)
                                          for k, v in values["zernike_noll_rad"].items()}
        return cls(name=name, values=values, residuals=parts["residuals"], data=parts["data"],
                   time=float(g.attrs["time"]), code_version=str(g.attrs["code_version"]),
                   devices=json.loads(g.attrs["devices"]))


class CalibrationSet:
    """All calibration steps of one bench; a step that has not run is ``None``."""

    dark: StepResult | None
    geometry: StepResult | None
    lut: StepResult | None
    source: StepResult | None
    wavefront: StepResult | None
    model: StepResult | None
    decoders: StepResult | None
    settle: StepResult | None

    def __init__(self, devices: dict[str, Any] | None = None, **steps: StepResult) -> None:
        self.devices: dict[str, Any] = dict(devices or {})
        self.created = time.time()
        self.path: Path | None = None  # the file it was loaded from or saved to
        for name in STEPS:
            setattr(self, name, None)
        for name, step in steps.items():
            self.set(name, step)

    # steps
    def set(self, name: str, step: StepResult) -> None:
        """Store a step's result (replacing an earlier one)."""
        if name not in STEPS:
            raise ValueError(f"name: expected one of {STEPS}, got {name!r}")
        if not isinstance(step, StepResult):
            raise TypeError(f"step: expected a StepResult, got {type(step).__name__}")
        step.name = name
        setattr(self, name, step)

    def steps(self) -> list[str]:
        """Names of the steps that have run, in bench-day order."""
        return [n for n in STEPS if getattr(self, n) is not None]

    def require(self, name: str) -> StepResult:
        """The step's result, or a clear error naming the step to run first."""
        step = getattr(self, name, None)
        if step is None:
            raise CalibrationError(
                f"calibration step {name!r} has not been run (steps present: "
                f"{self.steps() or 'none'}); run `hil calibrate ... --steps {name}` first"
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
        if self.geometry is None:
            return None
        return np.asarray(self.geometry["model_to_camera"], dtype=np.float64).reshape(2, 3)

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
        target = self.file_path(path)
        with atomic_path(target) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created"] = float(self.created)
            f.attrs["saved"] = time.time()
            f.attrs["code_version"] = code_version()
            f.attrs["devices"] = json.dumps(_jsonable(self.devices))
            for name in self.steps():
                getattr(self, name)._write(f.create_group(name))
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationSet:
        """Read a calibration; clear errors for a missing, corrupt or foreign file."""
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
            if fmt != FORMAT:
                raise CalibrationError(
                    f"calibration: {p} is not a calibration file (format {fmt!r}, "
                    f"expected {FORMAT!r})"
                )
            ver = int(f.attrs.get("format_version", -1))
            if ver != FORMAT_VERSION:
                raise CalibrationError(
                    f"calibration: {p} has format version {ver}, this code reads version "
                    f"{FORMAT_VERSION}; recalibrate or use a matching release"
                )
            try:
                out = cls(devices=json.loads(f.attrs.get("devices", "{}")))
                out.created = float(f.attrs.get("created", 0.0))
                out.path = p
                for name in STEPS:
                    if name in f:
                        out.set(name, StepResult._read(name, f[name]))
            except (KeyError, ValueError, OSError, TypeError) as exc:
                raise CalibrationError(f"calibration: {p} is corrupt ({exc})") from exc
        return out

    def summary(self) -> dict[str, Any]:
        """Step -> its scalar residuals, for reports and logs."""
        return {n: {k: v for k, v in getattr(self, n).residuals.items()
                    if not isinstance(v, np.ndarray)} for n in self.steps()}

    def __repr__(self) -> str:
        return f"<CalibrationSet steps={self.steps()}>"
