"""Camera <-> model geometry: where the model's Fourier grid lies on the camera.

Convention (used by the whole house): ``model_to_camera`` is a 2x3 affine ``A`` with

    [x_cam, y_cam]^T = A @ [col, row, 1]^T

where (col, row) are pixel indices of the N x N model Fourier grid (``fftshift`` order:
zero frequency at (N/2, N/2)) and (x_cam, y_cam) are camera pixel indices (x along
columns, y along rows, pixel centres at integers). The nominal map (no calibration) is
λ·f/(N·s·p_slm·p_cam) camera pixels per model pixel, zero frequency at the camera centre
(W/2, H/2), no rotation; the calibrated one is measured by ``calibrate_geometry``
(grating spots + OpenCV affine, in ``calibration.registration``).

This module is the one home of the affine maths: checking one (``check_affine``),
sampling the camera on the model grid (``camera_to_model``), the nominal map, the map
from a slmsuite-style Fourier calibration (``affine_from_fourier``, also the simulated
bench's truth), fitting one to matched points (``fit_affine``), moving its centre
(``shift_center``, ``shifted_window``), checking its window lies on the camera
(``check_window``) and reading its parameters (``affine_parameters``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from simulation.validate import check_count, check_number

__all__ = ["camera_to_model", "nominal_model_to_camera", "affine_parameters", "check_affine",
           "affine_from_fourier", "fit_affine", "shift_center", "shifted_window",
           "check_window"]


def check_affine(model_to_camera: Any, name: str = "model_to_camera") -> np.ndarray:
    """A finite, invertible 2x3 affine as float64, or a ValueError naming ``name``."""
    a = np.asarray(model_to_camera, dtype=np.float64)
    if a.shape != (2, 3):
        raise ValueError(f"{name}: expected a 2x3 affine matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite values, got {a.tolist()}")
    if abs(np.linalg.det(a[:, :2])) < 1e-9:
        raise ValueError(f"{name}: expected an invertible affine, got {a.tolist()}")
    return a


def camera_to_model(frames: Any, model_to_camera: Any, size: int = 32) -> np.ndarray:
    """Sample camera frames at the model grid positions: (B, H, W) -> float32 (B, size, size).

    Each model pixel (col, row) takes the camera value at ``model_to_camera @ (col, row, 1)``
    by bilinear interpolation (``cv2.warpAffine`` with ``WARP_INVERSE_MAP``): it
    **point-samples**, like the model's DFT samples the continuous far field; it does not
    integrate over the model pixel's footprint. Positions outside the frame give 0.
    A single frame (H, W) is accepted and returned as (1, size, size). Frames may be any
    real dtype (counts, magnitudes); the result is float32.
    """
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    f = np.asarray(frames)
    if f.ndim == 2:
        f = f[None]
    if f.ndim != 3 or f.shape[1] < 2 or f.shape[2] < 2:
        raise ValueError(f"frames: expected (B, H, W) or (H, W) camera frames, got shape "
                         f"{np.shape(frames)}")
    if f.dtype.kind not in "iuf":
        raise ValueError(f"frames: expected a real numeric dtype, got {f.dtype}")
    size = check_count(size, "size")
    a = check_affine(model_to_camera)
    out = np.empty((f.shape[0], int(size), int(size)), dtype=np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for i in range(f.shape[0]):
        src = np.ascontiguousarray(f[i], dtype=np.float32)
        out[i] = cv2.warpAffine(src, a, (int(size), int(size)), flags=flags,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if not np.all(np.isfinite(out)):
        raise ValueError("frames: expected finite values, got NaN or infinite samples")
    return out


def _xy(v: Any) -> tuple[float, float]:
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v), float(v)
    x, y = v
    return float(x), float(y)


def nominal_model_to_camera(slm: Any, camera: Any, size: int, block: int,
                            focal_length_um: float) -> np.ndarray:
    """The uncalibrated geometry: λ·f/(N·s·p_slm·p_cam) camera px per model px, centred.

    ``slm`` needs ``wav_um`` and ``pitch_um`` (x, y); ``camera`` needs ``shape``
    (rows, cols) and ``pitch_um``. Zero frequency (N/2, N/2) goes to the camera centre
    (W/2, H/2); no rotation, no shear.
    """
    if int(size) < 1 or int(block) < 1:
        raise ValueError(f"size, block: expected integers >= 1, got {size!r}, {block!r}")
    f = check_number(focal_length_um, "focal_length_um")
    psx, psy = _xy(slm.pitch_um)
    pcx, pcy = _xy(camera.pitch_um)
    wav = float(slm.wav_um)
    sx = wav * f / (size * block * psx * pcx)
    sy = wav * f / (size * block * psy * pcy)
    rows, cols = camera.shape[:2]
    cx, cy = cols / 2.0, rows / 2.0
    return np.array([[sx, 0.0, cx - sx * size / 2.0],
                     [0.0, sy, cy - sy * size / 2.0]], dtype=np.float64)


def affine_parameters(model_to_camera: Any, size: int = 32) -> dict[str, Any]:
    """Centre (camera px of model (N/2, N/2)), mean scale, rotation (degrees, ccw in the
    image's x-y axes), ``mirrored`` and shear/anisotropy of an affine, for reports and
    tolerances.

    A mirrored camera (negative determinant) is read as a camera whose x axis is reversed
    after the rotation: ``A = diag(-1, 1) · R(rotation) · S`` with S symmetric positive;
    ``rotation_deg`` is that R's angle, ``mirrored`` True (the rotation formula applied to
    a reflection itself returns noise).
    """
    a = check_affine(model_to_camera)
    m = a[:, :2]
    c = a @ np.array([size / 2.0, size / 2.0, 1.0])
    mirrored = bool(np.linalg.det(m) < 0)
    mr = np.diag([-1.0, 1.0]) @ m if mirrored else m
    sx = float(np.hypot(m[0, 0], m[1, 0]))
    sy = float(np.hypot(m[0, 1], m[1, 1]))
    rot = float(np.degrees(np.arctan2(mr[1, 0] - mr[0, 1], mr[0, 0] + mr[1, 1])))
    return {"center_x": float(c[0]), "center_y": float(c[1]), "scale": float(np.sqrt(sx * sy)),
            "scale_x": sx, "scale_y": sy, "rotation_deg": rot, "mirrored": mirrored,
            "shear": float((mr[:, 0] @ mr[:, 1]) / (sx * sy))}


def affine_from_fourier(M: Any, b: Any, slm: Any, size: int, block: int) -> np.ndarray:
    """``model_to_camera`` from a slmsuite-style Fourier map ij = M·kxy + b.

    kxy is the normalised k-space of the SLM (radians of deflection, slmsuite's "kxy");
    model Fourier pixel (col, row) of an N-grid in s×s blocks is at
    kxy = ((col − N/2)·λ/(N·s·p_x), (row − N/2)·λ/(N·s·p_y)). Used with a simulated
    bench's truth, or with slmsuite's own ``FourierSLM`` calibration (``M``, ``b``).
    """
    m = np.asarray(M, dtype=np.float64).reshape(2, 2)
    b = np.asarray(b, dtype=np.float64).reshape(2)
    px, py = (float(v) for v in np.broadcast_to(np.asarray(slm.pitch_um, float), (2,)))
    n, s, wav = int(size), int(block), float(slm.wav_um)
    lin = m @ np.diag([wav / (n * s * px), wav / (n * s * py)])
    return np.hstack([lin, (b - lin @ [n / 2, n / 2])[:, None]])


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


def shifted_window(model_to_camera: np.ndarray, shift: tuple[float, float], size: int
                   ) -> np.ndarray:
    """The map of a pattern moved by ``shift`` model pixels (a steering grating)."""
    lin = model_to_camera[:, :2]
    c = model_to_camera @ np.array([size / 2, size / 2, 1.0]) + lin @ np.asarray(shift, float)
    return np.hstack([lin, (c - lin @ [size / 2, size / 2])[:, None]])


def check_window(model_to_camera: np.ndarray, size: int, camera_shape: Sequence[int],
                 what: str = "window") -> None:
    """Refuse a model window whose corners fall outside the camera frame."""
    rows, cols = (int(v) for v in camera_shape[:2])
    n = int(size)
    corners = np.array([[0, 0, 1], [n - 1, 0, 1], [0, n - 1, 1], [n - 1, n - 1, 1]], float)
    xy = corners @ model_to_camera.T
    if xy.min() < -0.5 or xy[:, 0].max() > cols - 0.5 or xy[:, 1].max() > rows - 0.5:
        raise ValueError(
            f"geometry: the {n}x{n} window of {what} falls outside the {rows}x{cols} camera "
            f"(corners x {xy[:, 0].min():.0f}...{xy[:, 0].max():.0f}, y "
            f"{xy[:, 1].min():.0f}...{xy[:, 1].max():.0f}); use a smaller steering grating "
            "or split shift")
