"""Zernike polynomials for the simulated bench's aberrations (numpy + scipy), Noll-indexed.

The simulated bench must not share code with the calibration that fits it (no "inverse
crime"): the twin and the fit use ``simulation.zernike``; the simulated optics use this
independent implementation. The radial polynomials come from Jacobi polynomials
(``scipy.special.eval_jacobi``: R_n^m(rho) = (-1)^k rho^m P_k^(m,0)(1 - 2 rho^2),
k = (n - m) / 2) instead of the factorial sum, and Noll's index from its closed form.

Same conventions as the twin (so that the fitted Noll 4-8 terms mean the same thing):
Noll's ordering (J. Opt. Soc. Am. 66, 207 (1976)), rms 1 over the unit disk, the disk
inscribed in the (rows, cols) grid and centred on it, zero outside the disk, x along
columns and y along rows, theta = atan2(y, x). Any Noll index >= 1 is available.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import eval_jacobi

# the pixel grid is shared (a coordinate convention, not the twin's Zernike code)
from simulation.pixel_grid import centred_coords

__all__ = ["noll_nm", "zernike_polynomial", "zernike_phase"]


def noll_nm(j: int) -> tuple[int, int]:
    """(n, m) of Noll index ``j`` >= 1; m > 0 cosine, m < 0 sine (even j: cosine)."""
    if not isinstance(j, (int, np.integer)) or isinstance(j, bool) or j < 1:
        raise ValueError(f"j: expected a Noll index (integer >= 1), got {j!r}")
    j = int(j)
    n = max(0, math.ceil((-3 + math.sqrt(1 + 8 * j)) / 2) - 1)
    while (n + 1) * (n + 2) // 2 < j:  # smallest n with (n + 1)(n + 2) / 2 >= j
        n += 1
    first = n * (n + 1) // 2 + 1  # Noll index of the first term of order n
    pos = j - first  # 0-based within the order
    # |m| of the (pos)th term: n even -> 0, 2, 2, 4, 4, ...; n odd -> 1, 1, 3, 3, ...
    am = 2 * ((pos + 1) // 2) if n % 2 == 0 else 2 * (pos // 2) + 1
    if am == 0:
        return n, 0
    return n, (am if j % 2 == 0 else -am)


def zernike_polynomial(j: int, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Noll-normalised Z_j at polar coordinates (float64), zero where rho > 1."""
    n, m = noll_nm(j)
    am = abs(m)
    k = (n - am) // 2
    rho = np.asarray(rho, dtype=np.float64)
    radial = (-1.0) ** k * rho**am * eval_jacobi(k, am, 0, 1.0 - 2.0 * rho**2)
    if m == 0:
        z = math.sqrt(n + 1) * radial
    else:
        ang = np.cos(am * theta) if m > 0 else np.sin(am * theta)
        z = math.sqrt(2 * (n + 1)) * radial * ang
    return np.where(rho <= 1.0, z, 0.0)


def zernike_phase(coefficients: dict[int, float], shape: tuple[int, int]) -> np.ndarray:
    """sum_j c_j Z_j (radians) on a (rows, cols) grid, float32; disk inscribed, centred."""
    rows, cols = int(shape[0]), int(shape[1])
    r = min(rows, cols) / 2
    y = centred_coords(rows) / r
    x = centred_coords(cols) / r
    rho = np.hypot(x[None, :], y[:, None])
    theta = np.arctan2(y[:, None], x[None, :])
    out = np.zeros((rows, cols), dtype=np.float64)
    for j, c in coefficients.items():
        if c:
            out += float(c) * zernike_polynomial(int(j), rho, theta)
    return out.astype(np.float32)
