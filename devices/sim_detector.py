"""The simulated camera's detector-side pieces that need more than one line: the ghost
(a reflection off a window) and the shot noise. ``devices.sim_camera`` applies them in
the order of the light path."""

from __future__ import annotations

import numpy as np

from devices.flaws import Flaws

__all__ = ["ghost", "shot_noise", "GAUSSIAN_ABOVE_E"]

GAUSSIAN_ABOVE_E = 1000.0
"""Mean photoelectrons above which shot noise is drawn as Gaussian (mean, sqrt(mean))."""


def ghost(img: np.ndarray, flaws: Flaws) -> np.ndarray:
    """A displaced, blurred copy of ``img`` (same total inside the frame), cheaply: on a
    grid coarser by up to 4 (the blur is at least 1 % of the camera)."""
    from scipy.ndimage import gaussian_filter, shift

    rows, cols = img.shape
    k = max(1, min(4, min(rows, cols) // 128))
    r, c = rows // k * k, cols // k * k
    small = img[:r, :c].reshape(r // k, k, c // k, k).mean(axis=(1, 3))
    sigma = flaws.ghost_blur_frac * min(rows, cols) / k
    small = gaussian_filter(small, sigma, mode="constant")
    dy, dx = flaws.ghost_offset_frac[1] * rows / k, flaws.ghost_offset_frac[0] * cols / k
    small = shift(small, (dy, dx), order=1, mode="constant")
    out = np.zeros_like(img)
    out[:r, :c] = np.repeat(np.repeat(small, k, axis=0), k, axis=1)
    return out


def shot_noise(rng: np.random.Generator, electrons: np.ndarray) -> np.ndarray:
    """Poisson draw of every pixel's photoelectrons (float64).

    Pixels with more than ``GAUSSIAN_ABOVE_E`` expected electrons use the Gaussian limit
    (rounded), which is ten times cheaper and indistinguishable there.
    """
    big = electrons > GAUSSIAN_ABOVE_E
    if not big.any():
        return rng.poisson(electrons).astype(np.float64)
    out = np.empty_like(electrons)
    small = ~big
    out[small] = rng.poisson(electrons[small])
    lam = electrons[big]
    out[big] = np.rint(lam + np.sqrt(lam) * rng.standard_normal(lam.size))
    return out
