"""Pieces of the SLM layout and of the camera map used by ``calibration.imaging``.

* ``vortex_masks_full``: a vortex encoder evaluated analytically at every SLM pixel;
* ``blocks``: s×s block upsampling of model-grid arrays;
* ``pixel_envelope``: the far-field envelope of s×s blocks at the model's Fourier pixels;
* ``aberration_correction``: minus the calibration's fitted Zernike aberration;
* ``affine_from_fourier``: ``model_to_camera`` from a slmsuite-style Fourier map;
* ``resolve_geometry``, ``shifted_window``, ``check_window``: the camera window of each
  channel (calibrated, nominal or given; moved by its steering grating; inside the frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.geometry import check_affine, nominal_model_to_camera

__all__ = ["vortex_masks_full", "blocks", "pixel_envelope", "aberration_correction",
           "affine_from_fourier", "resolve_geometry", "shifted_window", "check_window"]


def pixel_envelope(size: int, block: int) -> np.ndarray:
    """d(i)·d(j), d(j) = |sin(πj/N) / (s·sin(πj/(N·s)))| for j = −N/2 … N/2 − 1; (N, N).

    The far field of a field made of s×s constant blocks, sampled at the model's Fourier
    pixels, is the model's DFT times this envelope (times s²).
    """
    n, s = int(size), int(block)
    j = np.arange(n, dtype=np.float64) - n / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.abs(np.sin(np.pi * j / n) / (s * np.sin(np.pi * j / (n * s))))
    d[j == 0] = 1.0
    return np.outer(d, d).astype(np.float32)


def vortex_masks_full(charges: Sequence[int], size: int, block: int, *, xmax: float = 10.0,
                      focal: float = 8.0) -> np.ndarray:
    """Lens −R²/focal + m·θ evaluated at every SLM pixel of an (N·s)² square.

    SLM pixel (r, c) of the square sits at model coordinate u = (c + 0.5)/s − 0.5 (block
    centres at integer model indices), x = −xmax + u·2·xmax/N, as ``simulation.model_grid``.
    Returns float32 (C, N·s, N·s) radians.
    """
    n, s = int(size), int(block)
    dx = 2.0 * xmax / n
    u = (np.arange(n * s, dtype=np.float64) + 0.5) / s - 0.5
    x = -xmax + u * dx
    X, Y = np.meshgrid(x, x)
    lens = -(X**2 + Y**2) / focal
    theta = np.arctan2(Y, X)
    return np.stack([lens + int(m) * theta for m in charges]).astype(np.float32)


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


def blocks(a: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(a, s, axis=-2), s, axis=-1)


def aberration_correction(calibration: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """Minus the fitted aberration (calibration's Zernike step), on the whole SLM."""
    z = getattr(calibration, "zernike_noll_rad", None) if calibration is not None else None
    if not z:
        return None
    from simulation.zernike import zernike_sum

    radius = None
    step = getattr(calibration, "wavefront", None)
    if step is not None and "radius_px" in getattr(step, "values", {}):
        radius = float(step["radius_px"])
    ab = zernike_sum(z, shape, radius=radius).numpy()
    return (-ab).astype(np.float32)


def resolve_geometry(geometry: Any, calibration: Any, slm: Any, camera: Any, size: int,
                     block: int, focal_length_um: float | None = None
                     ) -> tuple[str, np.ndarray]:
    """(source, model_to_camera) for an N-grid in s×s blocks, before any steering.

    ``geometry``: None (calibrated if the calibration has it, else nominal),
    "calibrated", "nominal" or a 2×3 array. A calibration made for another block size or
    grid is rescaled about its zero frequency.
    """
    n, s = int(size), int(block)
    cal_a = getattr(calibration, "model_to_camera", None) if calibration is not None else None
    if geometry is None:
        geometry = "calibrated" if cal_a is not None else "nominal"
    if not isinstance(geometry, str):
        return "given", check_affine(geometry, "geometry")
    if geometry == "calibrated":
        if cal_a is None:
            raise ValueError("geometry: 'calibrated' needs a calibration with a geometry step; "
                             "run `hil calibrate --steps geometry`")
        a = check_affine(cal_a)
        cal_block = getattr(calibration, "block", None) or s
        cal_size = getattr(calibration, "grid_size", None) or n
        lin = a[:, :2] * (cal_block * cal_size) / (s * n)
        centre = a @ np.array([cal_size / 2, cal_size / 2, 1.0])
        return "calibrated", np.hstack([lin, (centre - lin @ [n / 2, n / 2])[:, None]])
    if geometry == "nominal":
        f_um = focal_length_um
        if f_um is None and hasattr(camera, "focal_length_mm"):
            f_um = 1000.0 * float(camera.focal_length_mm)
        if f_um is None:
            raise ValueError("focal_length_um: the nominal geometry needs the lens focal length "
                             "(or calibrate the geometry)")
        return "nominal", nominal_model_to_camera(slm, camera, n, s, f_um)
    raise ValueError(f"geometry: expected 'calibrated', 'nominal' or a 2x3 affine, got "
                     f"{geometry!r}")


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
