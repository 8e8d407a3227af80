"""Pieces of the SLM layout and of the camera map used by ``calibration.imaging``.

* ``vortex_masks_full``: a vortex encoder evaluated analytically at every SLM pixel;
* ``blocks``: s×s block upsampling of model-grid arrays;
* ``pixel_envelope``: the far-field envelope of s×s blocks at the model's Fourier pixels;
* ``aberration_correction``: minus the calibration's fitted Zernike aberration;
* ``resolve_geometry``: the camera map of the model window (calibrated, nominal or given).

The affine maths itself (Fourier maps, shifted and checked windows) is
``calibration.geometry``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.geometry import check_affine, nominal_model_to_camera

__all__ = ["vortex_masks_full", "blocks", "pixel_envelope", "aberration_correction",
           "resolve_geometry"]


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
