"""``CalibrationSet``: what a calibration run fitted, one record per step, in one file.

A calibration is a directory (``DIR/calibration.h5``; the report and figures sit beside
it) or the ``.h5`` file itself. Each step that ran is a ``StepResult``
(``calibration.store_step``: ``values``, ``residuals``, ``data``, ``time``,
``code_version`` and ``devices``).

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

The file (format version 2; version 1 is read and converted) is
``calibration.store_file``'s, a mapping's layout in it ``calibration.store_h5``'s.
``imaging_config`` (the decoders' configuration, else the model's) and ``decoder_file``
say what a run must use with this calibration; ``device_differences`` compares the
recorded SLM and camera identities with an opened bench's (``calibration.store_links``).

A step that has not run is ``None`` (``cal.geometry is None``). ``save`` writes to a
temporary name and renames it over the target, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from calibration import step_registry as registry
from calibration import store_file, store_links
from calibration.store_file import FILE_NAME, FORMAT, FORMAT_VERSION, READ_VERSIONS
from calibration.store_links import IDENTITY_KEYS, file_sha256
from calibration.store_step import (
    CalibrationError,
    MissingCalibrationValue,  # noqa: F401 - re-exported (moved to store_step)
    StepResult,
    code_version,
)

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


def __getattr__(name: str) -> Any:
    if name == "STEPS":  # the records of the registered steps, in bench-day order
        return registry.record_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        return store_links.decoder_path(self.require("decoders"), self.path, name)

    def decoder_record(self, path: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
        """(name, {path, sha256}) of the decoders step's file with the same content as
        ``path``; None when the calibration did not write it."""
        if self.decoders is None:
            return None
        return store_links.matching_decoder(self.decoders, path)

    def device_differences(self, devices: dict[str, Any]) -> list[str]:
        """One line per identity (``IDENTITY_KEYS``) of the SLM or camera where the opened
        bench's ``devices`` (``device_identities``) differ from those recorded here."""
        return store_links.device_differences(self.devices, devices)

    # files (calibration.store_file)
    @staticmethod
    def file_path(path: str | os.PathLike) -> Path:
        """``path`` itself when it names an ``.h5`` file, else ``path/calibration.h5``."""
        return store_file.file_path(path)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary name in the same directory, then rename)."""
        return store_file.save_set(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationSet:
        """Read a calibration (format version 2, or 1 from before typed attributes);
        clear errors for a missing, corrupt or foreign file."""
        return store_file.load_set(cls, path)

    def summary(self) -> dict[str, Any]:
        """Step -> its scalar residuals, for reports and logs."""
        return {n: {k: v for k, v in self._records[n].residuals.items()
                    if not isinstance(v, np.ndarray)} for n in self.steps()}

    def __repr__(self) -> str:
        return f"<CalibrationSet steps={self.steps()}>"
