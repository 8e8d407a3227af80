"""Achieved errors of a calibration against a simulated bench's hidden truth.

``errors_vs_truth(cal, bench)`` compares every step present with ``bench.truth`` (the
hidden flaws of ``devices``' simulated bench, never used by the routines themselves)
and returns the numbers the tolerances are stated in: centre error (camera px), scale
error (%), rotation error (degrees), LUT rms (rad), wavefront rms (rad), gain error (%).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibration.geometry import affine_parameters
from calibration.store import CalibrationSet

__all__ = ["errors_vs_truth", "truth_model_to_camera"]


def truth_model_to_camera(bench: Any, size: int = 32, block: int | None = None) -> np.ndarray:
    """The true ``model_to_camera`` of a simulated bench (from its hidden k-space affine)."""
    t = bench.truth
    m = np.asarray(t["camera_affine_M"], dtype=float)
    b = np.asarray(t["camera_affine_b"], dtype=float).ravel()
    slm = bench.slm
    s = int(block or slm.block_size((size, size)))
    px, py = (float(v) for v in np.broadcast_to(np.asarray(slm.pitch_um, float), (2,)))
    lin = m @ np.diag([slm.wav_um / (size * s * px), slm.wav_um / (size * s * py)])
    return np.hstack([lin, (b - lin @ [size / 2, size / 2])[:, None]])


def errors_vs_truth(cal: CalibrationSet, bench: Any) -> dict[str, float]:
    """Errors of each calibrated quantity against ``bench.truth`` (empty for a real bench)."""
    t = getattr(bench, "truth", None) or {}
    if not t:
        return {}
    out: dict[str, float] = {}
    if cal.dark is not None:
        out["gain_error_pct"] = 100 * (cal.dark["gain_counts_per_electron"]
                                       / t["gain_counts_per_electron"] - 1)
        out["dark_level_error_counts"] = cal.dark["dark_level_counts"] - t["dark_level_counts"]
    if cal.geometry is not None and "camera_affine_M" in t:
        n = cal.grid_size
        p = affine_parameters(cal.model_to_camera, n)
        q = affine_parameters(truth_model_to_camera(bench, n, cal.block), n)
        out["center_error_px"] = float(np.hypot(p["center_x"] - q["center_x"],
                                                p["center_y"] - q["center_y"]))
        out["scale_error_pct"] = 100 * (p["scale"] / q["scale"] - 1)
        out["rotation_error_deg"] = p["rotation_deg"] - q["rotation_deg"]
    if cal.lut is not None:
        e = cal.phase_response_rad - np.asarray(t["slm_phase_response_rad"], float)
        out["lut_rms_rad"] = float(np.sqrt(np.mean(e**2)))
    if cal.wavefront is not None:
        # every aberration the bench has, the fitted orders and beyond (terms the fit did
        # not reach count as error: the residual wavefront the twin lacks)
        z = cal.zernike_noll_rad
        tz = {**t["zernike_noll_rad"], **(t.get("high_order_noll_rad") or {})}
        keys = set(z) | set(tz)
        out["wavefront_rms_rad"] = float(np.sqrt(sum((z.get(j, 0.0) - tz.get(j, 0.0)) ** 2
                                                     for j in keys)))
    if cal.source is not None:
        out["waist_error_pct"] = 100 * (cal.source["waist_px"] / t["source_waist_px"] - 1)
        c, tc = cal.source["center_px"], t["source_center_px"]
        out["source_center_error_px"] = float(np.hypot(c[0] - tc[0], c[1] - tc[1]))
    return out
