"""Camera <-> model geometry: where the model's Fourier grid lies on the camera.

Convention (used by the whole house): ``model_to_camera`` is a 2x3 affine ``A`` with

    [x_cam, y_cam]^T = A @ [col, row, 1]^T

where (col, row) are pixel indices of the N x N model Fourier grid (``fftshift`` order:
zero frequency at (N/2, N/2)) and (x_cam, y_cam) are camera pixel indices (x along
columns, y along rows, pixel centres at integers). The nominal map (no calibration) is
λ·f/(N·s·p_slm·p_cam) camera pixels per model pixel, zero frequency at the camera centre
(W/2, H/2), no rotation; the calibrated one is measured by ``calibrate_geometry``
(grating spots + OpenCV affine, in ``calibration.registration``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["camera_to_model", "nominal_model_to_camera", "affine_parameters", "check_affine"]


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
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size: expected an integer >= 1, got {size!r}")
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
    f = float(focal_length_um)
    if not np.isfinite(f) or f <= 0:
        raise ValueError(f"focal_length_um: expected a number > 0, got {focal_length_um!r}")
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
