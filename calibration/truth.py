"""Achieved errors of a calibration against a simulated bench's hidden truth.

``errors_vs_truth(cal, bench)`` compares every step present with ``bench.truth`` (the
hidden flaws of ``devices``' simulated bench, never used by the routines themselves)
and returns the numbers the tolerances are stated in: centre error (camera px), scale
error (%), rotation error (degrees), LUT rms (rad), wavefront rms (rad), gain error (%).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calibration.store import CalibrationSet
from simulation.pixel_grid import block_centre_coords

__all__ = ["errors_vs_truth", "truth_model_to_camera", "pupil_wavefront_error",
           "effective_center_error_px", "beam_intensity", "beam_weighted_span"]


def truth_model_to_camera(bench: Any, size: int = 32, block: int | None = None) -> np.ndarray:
    """The true ``model_to_camera`` of a simulated bench (from its hidden k-space affine)."""
    from calibration.geometry import affine_from_fourier

    t = bench.truth
    s = int(block or bench.slm.block_size((size, size)))
    return affine_from_fourier(t["camera_affine_M"], t["camera_affine_b"], bench.slm, size, s)


def errors_vs_truth(cal: CalibrationSet, bench: Any) -> dict[str, float]:
    """Errors of each calibrated quantity against ``bench.truth`` (empty for a real bench):
    the ``truth`` comparison of every registered step with a record in ``cal``
    (``calibration.step_registry``; the built-ins' are in ``calibration.steps``)."""
    from calibration import step_registry

    t = getattr(bench, "truth", None) or {}
    if not t:
        return {}
    out: dict[str, float] = {}
    for step in step_registry.registered_steps():
        compare = step_registry.resolve(step.truth)
        if compare is not None and any(cal.record(r) is not None for r in step.produces):
            out.update(compare(cal, t, bench))
    return out


def pupil_wavefront_error(cal: CalibrationSet, t: dict[str, Any],
                          slm_shape: tuple[int, int], samples: int = 128) -> dict[str, Any]:
    """The fitted minus the true aberrations (all of them, the fitted orders and beyond)
    where the light is: weighted by the true beam's intensity on the SLM.

    Returns ``rms_rad``, the weighted rms with piston and tilt removed, and
    ``tilt_rad_per_px`` (x, y), the weighted tilt of the difference. The coefficient rms
    (``wavefront_rms_rad``) also counts the wavefront outside the beam, which no
    measurement through the beam can see: a beam clipped to 0.7 of the Zernike disk
    leaves its outer ring unobserved, and the fitted terms are free there. A tilt moves
    the spot as the geometry's centre does (``effective_center_error_px``).
    """
    from simulation.zernike import zernike

    rows, cols = (int(v) for v in slm_shape)
    w2d, d = beam_intensity(t, slm_shape, samples)
    y = block_centre_coords(rows, d, xp=torch)
    x = block_centre_coords(cols, d, xp=torch)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    radius = float(t.get("zernike_radius_px", min(rows, cols) / 2))
    rho, theta = torch.hypot(xx, yy) / radius, torch.atan2(yy, xx)
    fit = cal.zernike_noll_rad
    true = {**t["zernike_noll_rad"], **(t.get("high_order_noll_rad") or {})}
    diff = torch.zeros_like(xx)
    for j in set(fit) | set(true):
        c = float(fit.get(j, 0.0)) - float(true.get(j, 0.0))
        if c:
            diff = diff + c * zernike(int(j), rho, theta)
    w = w2d.ravel()
    keep = w > 1e-6 * w.max()
    basis = np.stack([np.ones_like(w), xx.ravel().numpy(), yy.ravel().numpy()], axis=1)[keep]
    sw = np.sqrt(w[keep])
    e = diff.ravel().numpy()[keep]
    coef, *_ = np.linalg.lstsq(basis * sw[:, None], e * sw, rcond=None)
    res = e - basis @ coef
    return {"rms_rad": float(np.sqrt(np.sum(w[keep] * res**2) / np.sum(w[keep]))),
            "tilt_rad_per_px": (float(coef[1]), float(coef[2]))}


def effective_center_error_px(cal: CalibrationSet, bench: Any, tilt_rad_per_px: Any
                              ) -> float:
    """Error of where the twin puts the spot (camera px): the calibrated centre plus the
    spot shift of the fitted wavefront's tilt over the beam, against the same for the
    truth. A wavefront tilt of g rad per SLM pixel moves the far field by g / (2 pi)
    cycles per pixel, g N s / (2 pi) model pixels; with the beam clipped inside the
    Zernike disk, the Noll terms' tilt over the beam and the centre are one observable."""
    from calibration.geometry import affine_parameters

    n, s = cal.grid_size, cal.block
    a = np.asarray(cal.model_to_camera, dtype=float)
    p = affine_parameters(a, n)
    q = affine_parameters(truth_model_to_camera(bench, n, s), n)
    shift_model = np.asarray(tilt_rad_per_px, dtype=float) * n * s / (2 * np.pi)
    shift_cam = a[:, :2] @ shift_model
    return float(np.hypot(p["center_x"] + shift_cam[0] - q["center_x"],
                          p["center_y"] + shift_cam[1] - q["center_y"]))


def beam_intensity(t: dict[str, Any], slm_shape: tuple[int, int], samples: int = 128
                   ) -> tuple[np.ndarray, int]:
    """The true beam's intensity on the SLM, sampled every ``d`` pixels (and ``d``)."""
    from calibration.source_beam import beam_amplitude

    rows, cols = (int(v) for v in slm_shape)
    d = max(1, max(rows, cols) // samples)
    y = block_centre_coords(rows, d, xp=torch)
    x = block_centre_coords(cols, d, xp=torch)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    waist = float(t.get("source_waist_px") or 0.0)
    if waist <= 0:
        return np.ones(tuple(xx.shape)), d
    shape = t.get("source_shape", "gaussian")
    cx, cy = (float(v) for v in t["source_center_px"])
    amp = beam_amplitude(
        xx, yy, waist_px=waist, cx=cx, cy=cy,
        power=float(t.get("source_supergaussian_power", 1.0))
        if shape == "supergaussian" else 1.0,
        clip_radius_px=float(t["source_clip_radius_px"]) if shape == "clipped" else None)
    return (amp**2).numpy(), d


def beam_weighted_span(t: dict[str, Any], slm_shape: tuple[int, int]) -> float:
    """The panel's delay factor (``slm_span_map``, 1 where uniform) averaged over the true
    beam's intensity: what the lut step's order powers see of a panel whose grey -> phase
    span varies across it (``phase_span_variation``)."""
    span = t.get("slm_span_map")
    if span is None:
        return 1.0
    w, d = beam_intensity(t, slm_shape)
    m = np.asarray(span, dtype=float)[d // 2::d, d // 2::d][:w.shape[0], :w.shape[1]]
    return float(np.sum(m * w) / np.sum(w))
