"""Step 3: the SLM's phase response (grey level -> delay), from binary gratings.

The classic two-level measurement (slmsuite 0.5's ``pixel_calibrate`` idea): a binary
grating alternating the top grey level (zero delay) with level g diffracts, for a delay
difference Δ, a fraction cos²(Δ/2) of the light into the zero order and κ·sin²(Δ/2) into
the ±1 orders (κ = 8/π² ideally, times the pixel envelope). With the order powers
normalised by the top-level frame (P0 = 1, P1 = 0):

    P0(g) = (1 - η)·cos²(Δ/2) + η,    P1(g) = κ·(1 - η)·sin²(Δ/2)

where η is the unmodulated (zero-order leakage) fraction. κ follows from the regression
P1 = κ·(1 - P0); η from the deepest zero-order extinction; then Δ = 2·atan2(√s², √c²)
uses both orders (well conditioned at every Δ), is unfolded to a monotone curve over the
sampled levels and interpolated (PCHIP) to every level. Order powers are summed in
windows around the order positions predicted by the calibrated geometry.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator

from calibration.capture import (
    autoexpose,
    capture_float,
    device_identities,
    progress_bar,
    slm_grid,
)
from calibration.geometry import check_affine
from calibration.quality import LIMITS, check_finite, check_max, check_min, frame_exposure_check
from calibration.store import StepResult
from simulation.validate import check_count

__all__ = ["calibrate_phase_response", "unfold_delays", "order_powers", "disc_windows"]

log = logging.getLogger(__name__)


def disc_windows(shape: tuple[int, int], centres: np.ndarray, radius: float
                 ) -> list[tuple[slice, slice, np.ndarray]]:
    """For each (x, y) centre: the bounding box (row slice, column slice) of the pixels
    within ``radius`` px inside a frame of ``shape``, and the disc's mask on that box."""
    h, w = int(shape[0]), int(shape[1])
    out = []
    for cx, cy in np.asarray(centres, dtype=float).reshape(-1, 2):
        x0, x1 = max(0, int(np.floor(cx - radius)) - 1), min(w, int(np.ceil(cx + radius)) + 2)
        y0, y1 = max(0, int(np.floor(cy - radius)) - 1), min(h, int(np.ceil(cy + radius)) + 2)
        x0, y0 = min(x0, x1), min(y0, y1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out.append((slice(y0, y1), slice(x0, x1),
                    (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2))
    return out


def order_powers(frame: np.ndarray, centres: np.ndarray, radius: float,
                 windows: list[tuple[slice, slice, np.ndarray]] | None = None) -> np.ndarray:
    """Sum of a dark-subtracted frame in discs of ``radius`` px around each (x, y) centre.

    Only each disc's bounding box is read (``disc_windows``, precomputed by a caller
    that measures many frames); the sum runs over the disc's pixels in row order, as a
    full-frame mask would.
    """
    if windows is None:
        windows = disc_windows(frame.shape, centres, radius)
    return np.array([float(frame[sy, sx][m].sum()) for sy, sx, m in windows])


def unfold_delays(theta: np.ndarray) -> np.ndarray:
    """Turn folded delays θ in [0, π] (ordered by growing true delay) into a monotone Δ.

    Δ is one of θ, 2π − θ, 2π + θ, 4π − θ; each step takes the candidate not below the
    previous value (minus a small tolerance) that best continues the previous step.
    """
    t = np.asarray(theta, dtype=np.float64)
    out = np.empty_like(t)
    prev, step = 0.0, 0.0
    for i, th in enumerate(t):
        cands = np.array([th, 2 * np.pi - th, 2 * np.pi + th, 4 * np.pi - th])
        ok = cands >= prev - 0.05
        cands = cands[ok] if ok.any() else cands
        best = float(cands[np.argmin(np.abs(cands - (prev + step)))])
        step = max(best - prev, 0.0) if i else 0.0
        out[i] = prev = best
    return out


def _extinction_floor(p0: np.ndarray) -> float:
    """Zero-order floor η: the minimum of a parabola through the deepest extinction."""
    i = int(np.argmin(p0))
    lo, hi = max(0, i - 2), min(len(p0), i + 3)
    if hi - lo >= 3:
        c = np.polyfit(np.arange(lo, hi) - i, p0[lo:hi], 2)
        floor = c[2] - c[1] ** 2 / (4 * c[0]) if c[0] > 0 else p0[i]
    else:
        floor = p0[i]
    return float(np.clip(min(floor, p0[i]), 0.0, 0.5))


def calibrate_phase_response(bench: Any, model_to_camera: Any, *, size: int = 32,
                             dark: Any = None, level_step: int = 8,
                             order_spacing: float | None = None,
                             averaging: int = 1) -> StepResult:
    """Measure the delay of every grey level, relative to the top level (radians).

    ``level_step``: every how many grey levels a grating is shown (the rest are
    interpolated); ``order_spacing``: distance of the ±1 orders from the zero order in
    model pixels (default: 8, or more so that they sit >= 24 camera pixels apart). Uses
    ``model_to_camera`` (step 2) to find the orders on the camera. ``dark``: a dark
    frame or a ``capture.DarkModel`` (evaluated at the exposure set).

    Quality gates (``quality.LIMITS``): the exposure frame, a finite response, the rms of
    the order powers about the two-level model and the grey range reaching 2 pi.
    """
    slm, cam = bench.slm, bench.camera
    a = check_affine(model_to_camera)
    check_count(level_step, "level_step")
    block = int(slm.block_size((size, size)))
    px_per_model = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    if order_spacing is None:
        order_spacing = max(8.0, 24.0 / px_per_model)
    levels_n = 2 ** int(slm.bitdepth)
    top = levels_n - 1
    period = max(2, 2 * int(round(size * block / (2 * order_spacing))))
    k1 = size * block / period  # model pixels from the zero order to a first order
    centres = np.array([[size / 2, size / 2], [size / 2 + k1, size / 2],
                        [size / 2 - k1, size / 2]]) @ a[:, :2].T + a[:, 2]
    radius = 0.45 * k1 * px_per_model

    x, _ = slm_grid(slm)
    stripe = (np.floor((x - x.min()) / (period / 2)).astype(int) % 2).astype(bool)
    saved_response = getattr(slm, "phase_response_rad", None)
    levels = np.unique(np.concatenate([np.arange(top, -1, -int(level_step)), [0]]))[::-1]
    exposure0 = float(cam.get_exposure())
    powers = []
    windows = disc_windows(tuple(cam.shape), centres, radius)
    try:
        slm.set_phase_response(None)
        slm.set_grey_levels(np.full(slm.shape, top, slm.dtype))  # raw levels: no scaling
        autoexpose(cam, dark, target=0.7)
        exposure = frame_exposure_check("lut", cam, dark)
        with progress_bar(len(levels), "lut") as bar:
            for g in levels:
                shown = slm.set_grey_levels(np.where(stripe, g, top).astype(slm.dtype))
                if int(shown[stripe].ravel()[0]) != g:
                    raise RuntimeError(f"lut: the SLM showed level {int(shown[stripe][0])} "
                                       f"for {g}")
                cam.flush()
                # each frame is reduced to its three order powers at once
                p = order_powers(capture_float(cam, averaging, dark), centres, radius, windows)
                powers.append((p[0], p[1] + p[2]))
                bar.update()
    finally:
        slm.set_phase_response(saved_response)
        cam.set_exposure(exposure0)
    pw = np.array(powers)
    # cross-talk: a fraction eps of each order's PSF falls in each neighbouring window;
    # the top level (no grating) shows it as m1 = 2·eps·m0. Unmix the 2x2 system.
    eps = float(pw[0, 1] / (2 * pw[0, 0]))
    mix = np.array([[1.0, eps], [2 * eps, 1.0]])
    pw = np.linalg.solve(mix, pw.T).T
    ref = pw[0, 0]  # the top level: all light in the zero order
    p0, p1 = pw[:, 0] / ref, pw[:, 1] / ref
    kappa = float(np.sum(p1 * (1 - p0)) / np.sum((1 - p0) ** 2))
    eta = _extinction_floor(p0)
    c2 = np.clip((p0 - eta) / (1 - eta), 0, None)
    s2 = np.clip(p1 / (kappa * (1 - eta)), 0, None)
    theta = 2 * np.arctan2(np.sqrt(s2), np.sqrt(c2))
    delta = unfold_delays(theta)
    fit = PchipInterpolator(levels[::-1].astype(float), delta[::-1], extrapolate=True)
    response = fit(np.arange(levels_n, dtype=float))
    response -= response[top]
    pred0 = (1 - eta) * np.cos(delta / 2) ** 2 + eta
    pred1 = kappa * (1 - eta) * np.sin(delta / 2) ** 2
    rms_power = float(np.sqrt(np.mean((pred0 - p0) ** 2 + (pred1 - p1) ** 2)))
    log.info("lut: span %.3f x 2pi, kappa %.3f, leakage %.3f, power rms %.4f",
             response.max() / (2 * np.pi), kappa, eta, rms_power)
    check_finite("lut", "phase response", response,
                 "the order powers gave no delay (no light in the orders?): check the "
                 "geometry step and that the beam reaches the SLM")
    check_max("lut", "rms of the order powers about the two-level model", rms_power,
              LIMITS["lut_power_rms"],
              "the binary gratings do not follow the model: stray light in the order "
              "windows, pixel crosstalk (fringing at the stripe edges) or a saturated "
              "zero order; block stray light, lower the exposure, or try a longer grating "
              "period (a smaller order_spacing, e.g. 4)")
    check_min("lut", "grey range (units of 2 pi)", float(response.max()) / (2 * np.pi),
              LIMITS["lut_min_span_2pi"],
              "the SLM's grey levels do not reach 2 pi at this wavelength: load the "
              "vendor's LUT for this wavelength or raise the SLM's voltage range")
    return StepResult(
        name="lut",
        values={"phase_response_rad": response, "span_rad": float(response.max()),
                "kappa": kappa, "zero_order_leakage": eta},
        residuals={"power_rms": rms_power, "power_residual0": pred0 - p0,
                   "saturated_fraction": exposure["saturated_fraction"],
                   "power_residual1": pred1 - p1},
        data={"levels": levels, "p0": p0, "p1": p1, "delta_rad": delta},
        devices=device_identities(bench),
    )
