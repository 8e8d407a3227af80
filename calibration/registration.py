"""Step 2: camera <-> model geometry from displayed gratings (OpenCV).

Each blazed grating of model frequency (kx, ky) (``capture.grating_phase``) puts one
bright first-order spot at model pixel (N/2 + kx, N/2 + ky). Gratings are shown one at
a time, so every spot is matched to its grating without any lattice search or parity
marker; a 5 x 5 grid of frequencies spanning ~70 % of the camera gives the lever arm for
scale and rotation. Spots are found with OpenCV (``GaussianBlur`` + ``minMaxLoc``) and
located to sub-pixel precision by an iterated, background-subtracted centroid
(``cv2.moments``); the affine is fitted with ``cv2.estimateAffine2D`` (LMEDS, robust to
a bad spot) and refined by least squares on the inliers.

Every spot is the same point-spread function shifted, so scale, rotation and shear are
unbiased; the centre carries the PSF's centroid offset (the "G-tilt" of the
aberrations). ``calibration.wavefront`` measures that offset once the aberrations are
known and corrects the centre (``calibration.geometry.shift_center``).
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from calibration.capture import (
    autoexpose,
    capture_float,
    device_identities,
    grating_phase,
    progress_bar,
)
from calibration.geometry import affine_parameters, fit_affine
from calibration.store import StepResult
from simulation.validate import check_count

__all__ = ["calibrate_geometry", "locate_spot", "diffraction_order", "alignment_shift"]

log = logging.getLogger(__name__)


def locate_spot(frame: np.ndarray, radius: int = 8, iterations: int = 3) -> tuple[float, float]:
    """Sub-pixel (x, y) of the brightest spot of a dark-subtracted frame."""
    img = np.ascontiguousarray(frame, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"frame: expected a 2-D image, got shape {img.shape}")
    blur = cv2.GaussianBlur(img, (0, 0), 1.0)
    _, peak, _, (px, py) = cv2.minMaxLoc(blur)
    if not peak > 0:
        raise ValueError("frame: no spot found (no positive signal)")
    h, w = img.shape
    cx, cy = float(px), float(py)
    for _ in range(iterations):
        x0, y0 = int(round(cx)) - radius, int(round(cy)) - radius
        x1, y1 = x0 + 2 * radius + 1, y0 + 2 * radius + 1
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"spot at ({cx:.1f}, {cy:.1f}) too close to the frame edge")
        win = img[y0:y1, x0:x1]
        border = np.concatenate([win[0], win[-1], win[1:-1, 0], win[1:-1, -1]])
        win = np.maximum(win - float(np.median(border)), 0)
        m = cv2.moments(win)
        if m["m00"] <= 0:
            raise ValueError(f"spot at ({cx:.1f}, {cy:.1f}): empty window")
        nx, ny = x0 + m["m10"] / m["m00"], y0 + m["m01"] / m["m00"]
        done = abs(nx - cx) < 1e-3 and abs(ny - cy) < 1e-3
        cx, cy = nx, ny
        if done:
            break
    return cx, cy


def _spot_power(frame: np.ndarray, xy: np.ndarray, radius: float) -> float:
    """Peak of the blurred frame within ``radius`` px of ``xy`` (0 outside the frame)."""
    h, w = frame.shape
    x0, x1 = max(0, int(xy[0] - radius)), min(w, int(xy[0] + radius) + 1)
    y0, y1 = max(0, int(xy[1] - radius)), min(h, int(xy[1] + radius) + 1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    win = cv2.GaussianBlur(np.ascontiguousarray(frame[y0:y1, x0:x1], np.float32), (0, 0), 1.0)
    return float(win.max())


def _spot_radius(px_per_model_px: float) -> int:
    """The centroid window (camera px) for spots at this scale: 3 model pixels, 6 to 20."""
    return int(np.clip(round(3 * px_per_model_px), 6, 20))


def _without_zero_order(frame: np.ndarray, zero_xy: np.ndarray, radius: float) -> np.ndarray:
    """A copy of ``frame`` with a disc of ``radius`` px about the zero order set to the
    frame's median (so the brightest spot found is a diffracted one)."""
    h, w = frame.shape
    x0, x1 = max(0, int(zero_xy[0] - radius)), min(w, int(zero_xy[0] + radius) + 2)
    y0, y1 = max(0, int(zero_xy[1] - radius)), min(h, int(zero_xy[1] + radius) + 2)
    out = np.array(frame, dtype=np.float64)
    if x1 > x0 and y1 > y0:
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disc = (xx - zero_xy[0]) ** 2 + (yy - zero_xy[1]) ** 2 <= radius**2
        out[y0:y1, x0:x1][disc] = float(np.median(frame))
    return out


def diffraction_order(frame: np.ndarray, zero_xy: np.ndarray, spot_xy: np.ndarray,
                      *, max_order: int = 3, threshold: float = 0.1) -> int:
    """Which diffraction order of a blazed grating the brightest spot of ``frame`` is.

    A grating whose grey range spans more (or much less) than 2 pi puts most light into a
    higher order: the brightest spot at ``spot_xy`` is order m when the first order shows
    at ``zero_xy + (spot_xy - zero_xy) / m`` with at least ``threshold`` of the brightest
    spot's peak. Returns the smallest such m > 1, else 1.
    """
    f = np.asarray(frame, dtype=np.float64)
    z, p = np.asarray(zero_xy, float), np.asarray(spot_xy, float)
    d = p - z
    peak = _spot_power(f, p, 2.0)
    noise = float(np.std(f[: max(1, f.shape[0] // 16)]))  # a strip at the top edge
    for m in range(2, int(max_order) + 1):
        r = max(1.5, 0.25 * float(np.hypot(*d)) / m)
        if _spot_power(f, z + d / m, r) > max(threshold * peak, 5 * noise):
            return m
    return 1


def calibrate_geometry(bench: Any, *, size: int = 32, dark: Any = None,
                       grid: int = 5, span: float = 0.7, averaging: int = 2,
                       probe_k: float | None = None) -> StepResult:
    """Measure ``model_to_camera`` for an N x N model grid (``size``) on this bench.

    ``span`` is the fraction of the smaller camera side the spot grid covers. A first pair
    of gratings (±``probe_k`` model pixels, default N/4) after a flat phase (the zero
    order's position, masked out of every grating frame) gives the rough scale used to
    choose the grid and the diffraction order the gratings put most light into
    (``diffraction_order``: an SLM whose grey range is not 2 pi brightens a higher order;
    the spots are then matched to that order, recorded as ``diffraction_order``); the
    exposure is set on the first spot and checked (``quality.frame_exposure_check``).

    Quality gates (``quality.LIMITS``): enough spots found, the inlier fraction of the
    robust fit, camera pixels per model pixel (undersampling) and the rms residual of
    the spots about the affine.
    """
    from calibration.quality import (
        LIMITS,
        check_finite,
        check_max,
        check_min,
        frame_exposure_check,
    )

    slm, cam = bench.slm, bench.camera
    check_count(grid, "grid", 2)
    if not 0 < span < 1:
        raise ValueError(f"span: expected a fraction in (0, 1), got {span!r}")
    block = int(slm.block_size((size, size)))
    if block < 1:
        raise ValueError(f"size: the SLM {slm.shape} cannot show a {size}x{size} model grid")
    exposure0 = float(cam.get_exposure())
    k0 = float(size) / 4 if probe_k is None else float(probe_k)
    last: dict[str, np.ndarray] = {}

    def spot(kx: float, ky: float) -> tuple[float, float]:
        slm.set_phase(grating_phase(slm, kx, ky, size, block))
        cam.flush()
        try:  # each frame is reduced to its spot position at once (the probes' kept)
            frame = capture_float(cam, averaging, dark)
            last["frame"] = frame
            return locate_spot(_without_zero_order(frame, zero, radius), radius=radius)
        finally:
            bar.update()

    radius = 8
    # the zero order, then 2 probe spots, then the grid (its centre is not captured)
    with progress_bar(3 + grid * grid - (grid % 2), "geometry") as bar:
        # where the undiffracted light lands: masked out of every grating frame (pixel
        # crosstalk or a short grey range can make it brighter than the first order)
        slm.set_phase(np.zeros(slm.shape, np.float32))
        autoexpose(cam, dark, target=0.6)
        cam.flush()
        zero = np.array(locate_spot(capture_float(cam, averaging, dark), radius=radius))
        bar.update()
        slm.set_phase(grating_phase(slm, k0, 0, size, block))
        autoexpose(cam, dark, target=0.6)
        exposure = frame_exposure_check("geometry", cam, dark)
        p_plus = np.array(spot(k0, 0))
        frame_plus = last["frame"]
        p_minus = np.array(spot(-k0, 0))
        order = diffraction_order(frame_plus, zero, p_plus)
        if order != 1:
            log.warning("geometry: the gratings put most light into diffraction order %d "
                        "(the SLM's grey range is not 2 pi); the spots are matched to it",
                        order)
        last.clear()
        scale0 = float(np.linalg.norm(p_plus - p_minus) / (2 * k0 * order))
        radius = _spot_radius(scale0)
        kmax = span * min(cam.shape) / 2 / scale0 / order
        ks = np.linspace(-kmax, kmax, grid)
        model, camera = [], []
        for ky in ks:
            for kx in ks:
                if abs(kx) < 1e-9 and abs(ky) < 1e-9:
                    continue  # the zero order: no grating
                try:
                    camera.append(spot(kx, ky))
                except ValueError as exc:
                    log.warning("geometry: spot (%.1f, %.1f) not found: %s", kx, ky, exc)
                    continue
                model.append((size / 2 + order * kx, size / 2 + order * ky))
    cam.set_exposure(exposure0)
    n_shown = grid * grid - (grid % 2)
    check_min("geometry", "spots found", len(camera), max(4, int(0.5 * n_shown)),
              f"only {len(camera)} of {n_shown} grating spots were found on the camera: "
              "centre the camera on the Fourier plane or lower span")
    model_pts, cam_pts = np.array(model), np.array(camera)
    a, inliers = fit_affine(model_pts, cam_pts)
    check_finite("geometry", "affine fit of the spots", a,
                 "the spots found do not determine a map (too few distinct positions): "
                 "check that the camera sits in the Fourier plane and the gratings diffract")
    # spots that stay put whatever the grating: the brightest spot is not a first order
    check_min("geometry", "spot movement (camera px per model px of grating frequency)",
              float(np.sqrt(abs(np.linalg.det(a[:, :2])))), 0.1 * LIMITS["min_px_per_model_px"],
              "the spots do not move with the grating: the brightest spot is the zero order "
              "or a ghost, not the first order (the SLM's grey range far from 2 pi at this "
              "wavelength: load the vendor's LUT for it; or the patterns do not reach the "
              "SLM)")
    res = cam_pts - (model_pts @ a[:, :2].T + a[:, 2])
    rms = float(np.sqrt(np.mean(np.sum(res[inliers] ** 2, axis=1))))
    params = affine_parameters(a, size)
    log.info("geometry: scale %.4f px/model px, rotation %.3f deg%s, centre (%.2f, %.2f), "
             "rms residual %.3f px (%d/%d spots)", params["scale"], params["rotation_deg"],
             " (mirrored)" if params["mirrored"] else "",
             params["center_x"], params["center_y"], rms, int(inliers.sum()), len(inliers))
    check_min("geometry", "fraction of spots on one affine map", inliers.mean(),
              LIMITS["geometry_inlier_fraction"],
              "many spots are off the fitted map: stray light or a ghost brighter than the "
              "first order; block stray light (aperture at the Fourier plane) and re-run")
    check_min("geometry", "camera pixels per model pixel", params["scale"],
              LIMITS["min_px_per_model_px"],
              "the camera undersamples the model grid (its patterns alias): use a longer "
              "focal length, a camera with smaller pixels, or a smaller model grid (size)")
    check_max("geometry", "rms residual of the spots (camera px)", rms,
              LIMITS["geometry_rms_px"],
              "the spots do not lie on an affine grid: check for lens distortion, camera "
              "tilt or a ghost, and that the camera is in the Fourier plane")
    return StepResult(
        name="geometry",
        values={"model_to_camera": a, "size": int(size), "block": block,
                "diffraction_order": int(order), **params},
        residuals={"rms_px": rms, "max_px": float(np.abs(res[inliers]).max()),
                   "n_spots": len(inliers), "n_inliers": int(inliers.sum()),
                   "point_residuals_px": res,
                   "saturated_fraction": exposure["saturated_fraction"],
                   "peak_fraction": exposure["peak_fraction"]},
        data={"model_pts": model_pts, "camera_pts": cam_pts},
        devices=device_identities(bench),
    )


def alignment_shift(bench: Any, geometry: Any, *, dark: Any = None, averaging: int = 2,
                    n_spots: int = 4) -> dict[str, Any]:
    """How far the camera image has moved since the geometry step: (dx, dy) camera px.

    Shows ``n_spots`` of the geometry step's own gratings again (``geometry``: its
    ``StepResult``, whose ``model_pts``/``camera_pts`` are where each spot was then; the
    ones nearest the model centre first, which stay on the camera best), finds each spot
    as that step did (``locate_spot`` on the dark-subtracted frame, the zero order masked)
    and returns the median of (now − then): the same gratings and the same point-spread
    function, so the PSF's centroid offset cancels. ``spread_px`` is the largest distance
    of a spot's move from that median (a rotation or a scale change, or a bad spot, shows
    there). The camera's exposure is set as the geometry step set it (auto-exposure on a
    spot) and restored afterwards; the SLM is left showing the last grating.
    """
    slm, cam = bench.slm, bench.camera
    check_count(n_spots, "n_spots")
    missing = [k for k in ("model_pts", "camera_pts") if k not in geometry.data]
    if missing:  # an imported geometry (slmsuite's Fourier map) keeps no spots
        raise ValueError(f"geometry: the step recorded no {' or '.join(missing)} (imported, "
                         "not measured here), so its gratings cannot be shown again")
    model = np.asarray(geometry.data["model_pts"], dtype=np.float64).reshape(-1, 2)
    then = np.asarray(geometry.data["camera_pts"], dtype=np.float64).reshape(-1, 2)
    size, block = int(geometry["size"]), int(geometry["block"])
    order = int(geometry.values.get("diffraction_order", 1))
    pick = np.argsort(np.hypot(*(model - size / 2).T))[:int(n_spots)]
    exposure0 = float(cam.get_exposure())
    moves = []
    try:
        slm.set_phase(np.zeros(slm.shape, np.float32))
        cam.flush()
        zero = np.array(locate_spot(capture_float(cam, averaging, dark), radius=8))
        radius = _spot_radius(float(geometry.values.get("scale", 2.0)))  # as the step's grid
        for n, i in enumerate(pick):
            kx, ky = (model[i] - size / 2) / order
            slm.set_phase(grating_phase(slm, kx, ky, size, block))
            if n == 0:
                autoexpose(cam, dark, target=0.6)
            cam.flush()
            frame = capture_float(cam, averaging, dark)
            try:
                now = locate_spot(_without_zero_order(frame, zero, radius), radius=radius)
            except ValueError as exc:
                log.warning("alignment: spot %d not found (%s)", int(i), exc)
                continue
            moves.append(np.asarray(now) - then[i])
    finally:
        cam.set_exposure(exposure0)
    if not moves:
        raise ValueError("alignment: none of the geometry step's spots was found again: "
                         "the camera moved far, or the beam is blocked")
    moves = np.array(moves)
    shift = np.median(moves, axis=0)
    return {"dx_px": float(shift[0]), "dy_px": float(shift[1]), "n_spots": len(moves),
            "spread_px": float(np.max(np.hypot(*(moves - shift).T)))}
