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
known and corrects the centre (``shift_center``).
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
from calibration.geometry import affine_parameters, check_affine
from calibration.store import StepResult

__all__ = ["calibrate_geometry", "locate_spot", "fit_affine", "shift_center"]

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


def fit_affine(model_pts: np.ndarray, camera_pts: np.ndarray,
               threshold_px: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust affine model -> camera (``cv2.estimateAffine2D``, LMEDS) refined by least
    squares on the inliers. Returns (2x3 affine, inlier mask)."""
    src = np.asarray(model_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(camera_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 3:
        raise ValueError(f"model_pts, camera_pts: expected >= 3 matching points, got "
                         f"{len(src)} and {len(dst)}")
    a, inl = cv2.estimateAffine2D(src, dst, method=cv2.LMEDS)
    if a is None:
        raise RuntimeError("geometry: OpenCV found no affine for the detected spots")
    pred = src @ a[:, :2].T + a[:, 2]
    inliers = np.linalg.norm(pred - dst, axis=1) < max(threshold_px, 1e-6)
    if inliers.sum() < 3:
        inliers = inl.ravel().astype(bool)
    design = np.hstack([src[inliers], np.ones((int(inliers.sum()), 1))])
    sol, *_ = np.linalg.lstsq(design, dst[inliers], rcond=None)
    return sol.T.copy(), inliers


def shift_center(model_to_camera: Any, dx_px: float, dy_px: float) -> np.ndarray:
    """The same affine moved by (dx, dy) camera pixels."""
    a = check_affine(model_to_camera).copy()
    a[:, 2] += (dx_px, dy_px)
    return a


def calibrate_geometry(bench: Any, *, size: int = 32, dark: np.ndarray | None = None,
                       grid: int = 5, span: float = 0.7, averaging: int = 2,
                       probe_k: float | None = None) -> StepResult:
    """Measure ``model_to_camera`` for an N x N model grid (``size``) on this bench.

    ``span`` is the fraction of the smaller camera side the spot grid covers. A first pair
    of gratings (±``probe_k`` model pixels, default N/4) gives the rough scale used to
    choose the grid; the exposure is set on the first spot.
    """
    slm, cam = bench.slm, bench.camera
    if grid < 2:
        raise ValueError(f"grid: expected an integer >= 2, got {grid!r}")
    if not 0 < span < 1:
        raise ValueError(f"span: expected a fraction in (0, 1), got {span!r}")
    block = int(slm.block_size((size, size)))
    if block < 1:
        raise ValueError(f"size: the SLM {slm.shape} cannot show a {size}x{size} model grid")
    exposure0 = float(cam.get_exposure())
    k0 = float(size) / 4 if probe_k is None else float(probe_k)

    def spot(kx: float, ky: float) -> tuple[float, float]:
        slm.set_phase(grating_phase(slm, kx, ky, size, block))
        cam.flush()
        try:  # each frame is reduced to its spot position at once
            return locate_spot(capture_float(cam, averaging, dark), radius=radius)
        finally:
            bar.update()

    radius = 8
    # 2 probe spots, then the grid (its centre, the zero order, is not captured)
    with progress_bar(2 + grid * grid - (grid % 2), "geometry") as bar:
        slm.set_phase(grating_phase(slm, k0, 0, size, block))
        autoexpose(cam, dark, target=0.6)
        p_plus, p_minus = np.array(spot(k0, 0)), np.array(spot(-k0, 0))
        scale0 = float(np.linalg.norm(p_plus - p_minus) / (2 * k0))
        radius = int(np.clip(round(3 * scale0), 6, 20))
        kmax = span * min(cam.shape) / 2 / scale0
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
                model.append((size / 2 + kx, size / 2 + ky))
    cam.set_exposure(exposure0)
    model_pts, cam_pts = np.array(model), np.array(camera)
    a, inliers = fit_affine(model_pts, cam_pts)
    res = cam_pts - (model_pts @ a[:, :2].T + a[:, 2])
    rms = float(np.sqrt(np.mean(np.sum(res[inliers] ** 2, axis=1))))
    params = affine_parameters(a, size)
    log.info("geometry: scale %.4f px/model px, rotation %.3f deg, centre (%.2f, %.2f), "
             "rms residual %.3f px (%d/%d spots)", params["scale"], params["rotation_deg"],
             params["center_x"], params["center_y"], rms, int(inliers.sum()), len(inliers))
    return StepResult(
        name="geometry",
        values={"model_to_camera": a, "size": int(size), "block": block, **params},
        residuals={"rms_px": rms, "max_px": float(np.abs(res[inliers]).max()),
                   "n_spots": len(inliers), "n_inliers": int(inliers.sum()),
                   "point_residuals_px": res},
        data={"model_pts": model_pts, "camera_pts": cam_pts},
        devices=device_identities(bench),
    )
