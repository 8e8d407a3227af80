"""Quality gates of the calibration steps: each step checks its own fit and stops with a
diagnosis a physicist can act on.

A gate that fails raises ``CalibrationQualityError`` (a ``CalibrationError``), whose one
line names the step, the quantity, the measured value, the limit and what to do, e.g.::

    calibration step lut: rms of the order powers about the two-level model 0.1059
    (limit 0.06); the binary gratings do not follow the model: stray light in the order
    windows, pixel crosstalk (...) or a saturated zero order; block stray light, ...

The limits are module constants (``LIMITS``), stated once; a step reads them from here.
``frame_exposure_check`` is the gate the geometry, lut and wavefront steps run after
setting their exposure (too many saturated pixels or too little signal stops the step);
they record its measurements in their residuals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calibration.store import CalibrationError

__all__ = ["CalibrationQualityError", "LIMITS", "check_finite", "check_max", "check_min",
           "saturated_fraction", "frame_exposure_check"]

LIMITS: dict[str, float] = {
    # any step, on the frame it exposes for
    "saturated_fraction": 0.002,     # of the frame's pixels at >= 98 % of full scale
    "min_peak_fraction": 0.05,       # brightest signal above dark, fraction of full scale
    # settle: the distance between two frames of one settled pattern, as a fraction of the
    # A -> B switch. Above it the frames are too noisy to see the switch: on the realistic
    # robustness benches (docs/results/robustness-sim-realistic) floors up to 0.13 measured
    # 33-50 ms for a panel with tau = 4 ms, while low light (0.92-0.95) and four other
    # rows (0.257-0.374) measured 0-2.7 ms
    "settle_noise_floor": 0.25,
    # dark
    "dark_level_fraction": 0.25,     # mean dark level, fraction of full scale
    "dark_structure_ratio": 8.0,     # spatial std of the dark frame / read noise
    "ptc_rel_rms": 0.35,             # photon transfer curve: relative rms of V = g S + c
    # geometry
    "geometry_rms_px": 0.5,          # rms residual of the spots about the affine
    "geometry_inlier_fraction": 0.6,  # of the spots found
    "min_px_per_model_px": 1.0,      # camera pixels per model pixel (below: undersampled)
    # lut
    "lut_power_rms": 0.06,           # rms of the normalised order powers about the model
    "lut_min_span_2pi": 0.75,        # the grey range must reach this fraction of 2 pi
    # wavefront
    "wavefront_rel_rms": 0.35,       # relative rms residual of the diversity frames
    # model
    "model_rel_rms": 0.8,            # relative rms residual after the model fit
    "model_min_correlation": 0.5,    # mean correlation of measured and fitted patterns
    # decoders: the best decoder's SSIM on held-out captured speckles over the twin-trained
    # decoder's on the twin's own patterns of the same speckles. Set from the 58 calibrated
    # rows of the two robustness tables (docs/results/robustness-sim, -sim-realistic):
    # every handled row measured 0.73-1.06; the three rows that ran but decoded MNIST at
    # 0.33-0.81 of their default bench measured 0.24, 0.46 and 0.66
    "decoders_min_ratio": 0.7,
}


class CalibrationQualityError(CalibrationError):
    """A calibration step whose own check failed: step, quantity, measured value, limit
    and the advice, in one line (``str(exc)``), and as attributes for programs."""

    def __init__(self, step: str, quantity: str, measured: Any, limit: str, advice: str
                 ) -> None:
        self.step, self.quantity, self.measured = step, quantity, measured
        self.limit, self.advice = limit, advice
        value = _fmt(measured)
        super().__init__(f"calibration step {step}: {quantity} {value} ({limit}); {advice}")


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "NaN" if not math.isfinite(float(v)) else f"{float(v):.4g}"
    return str(v)


def check_finite(step: str, quantity: str, value: Any, advice: str) -> None:
    """Refuse NaN or infinite values (any element of ``value``)."""
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)].ravel()[0]
        raise CalibrationQualityError(step, quantity, float(bad), "expected a finite value",
                                      advice)


def check_max(step: str, quantity: str, measured: float, limit: float, advice: str) -> None:
    """Refuse ``measured`` above ``limit`` (NaN is refused too)."""
    m = float(measured)
    if not math.isfinite(m) or m > limit:
        raise CalibrationQualityError(step, quantity, m, f"limit {limit:.4g}", advice)


def check_min(step: str, quantity: str, measured: float, limit: float, advice: str) -> None:
    """Refuse ``measured`` below ``limit`` (NaN is refused too)."""
    m = float(measured)
    if not math.isfinite(m) or m < limit:
        raise CalibrationQualityError(step, quantity, m, f"at least {limit:.4g} needed",
                                      advice)


def saturated_fraction(frame: np.ndarray, full_scale: float) -> float:
    """Fraction of the frame's pixels at or above 98 % of ``full_scale``."""
    f = np.asarray(frame)
    return float(np.count_nonzero(f >= 0.98 * float(full_scale))) / max(f.size, 1)


def frame_exposure_check(step: str, camera: Any, dark: Any = None, *,
                         frame: np.ndarray | None = None) -> dict[str, float]:
    """Check one frame (``frame``, or a new one from ``camera``) at the exposure a step set:
    refuse when more than ``LIMITS["saturated_fraction"]`` of the pixels saturate or the
    brightest pixel (dark subtracted, known hot pixels repaired) is below
    ``LIMITS["min_peak_fraction"]`` of full scale.
    Returns the measured ``saturated_fraction``, ``peak_fraction`` and ``exposure_s``.
    """
    fs = float(2 ** int(camera.bitdepth) - 1)
    from calibration.capture import DarkModel, dark_for

    f = np.array(camera.get_image() if frame is None else frame, dtype=np.float64)
    exposure = float(camera.get_exposure())
    hot = dark.hot if isinstance(dark, DarkModel) else None  # known hot pixels: left out
    sat = saturated_fraction(f if hot is None else f[~hot], fs)
    d = dark_for(dark, camera)
    base = 0.0 if d is None else float(np.median(d))
    if d is not None:
        f -= d
        if hot is not None:
            dark.repair(f)
    peak = float(f.max()) / max(fs - base, 1.0)
    check_max(step, "saturated pixels (fraction of the frame)", sat,
              LIMITS["saturated_fraction"],
              f"the frame saturates at the shortest usable exposure ({exposure:.3g} s): "
              "lower the laser power or add an ND filter")
    check_min(step, "peak signal above dark (fraction of full scale)", peak,
              LIMITS["min_peak_fraction"],
              f"too little light at exposure {exposure:.3g} s: check that the laser is on, "
              "the beam block is out and the camera sits in the Fourier plane")
    return {"saturated_fraction": sat, "peak_fraction": peak, "exposure_s": exposure}
