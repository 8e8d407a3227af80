"""Zernike polynomials on a unit-disk grid (torch), Noll-indexed.

Noll's ordering (J. Opt. Soc. Am. 66, 207 (1976)) starts at j = 1 (piston);
j = 2, 3 are tilts, 4 defocus, 5, 6 astigmatism, 7, 8 coma, 11 spherical.
Polynomials are normalised so that their mean square over the unit disk is 1
(the RMS of a coefficient-1 term is 1 radian when the coefficient is in radians).
Outside the disk the value is 0, or, with ``extend=True``, the polynomial continued
smoothly (an aberration over a rectangular aperture larger than the fitted disk).
"""

from __future__ import annotations

import math

import torch

from .pixel_grid import centred_coords

__all__ = ["noll_to_nm", "zernike", "zernike_sum", "unit_disk_grid"]


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order n and azimuthal frequency m (signed) of Noll index ``j`` >= 1."""
    if not isinstance(j, int) or isinstance(j, bool) or j < 1:
        raise ValueError(f"j: expected a Noll index (integer >= 1), got {j!r}")
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    k = j - n * (n + 1) // 2  # 1-based position within the radial order
    # |m| takes the values of the same parity as n; Noll pairs them, starting at the lowest
    mags = [m for m in range(n % 2, n + 1, 2) for _ in ((0,) if m == 0 else (0, 1))]
    m = mags[k - 1]
    if m != 0:
        m = m if j % 2 == 0 else -m  # even j: cosine term, odd j: sine term
    return n, m


def unit_disk_grid(
    shape: tuple[int, int],
    *,
    center: tuple[float, float] = (0.0, 0.0),
    radius: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Polar coordinates (rho, theta) of a (rows, cols) pixel grid.

    ``radius`` (pixels) defaults to half the smaller side; ``center`` is the disk
    centre's offset from the grid centre in pixels, (x, y).
    """
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"shape: expected two positive sizes, got {shape!r}")
    r = min(rows, cols) / 2 if radius is None else float(radius)
    if not r > 0:
        raise ValueError(f"radius: expected a number > 0, got {radius!r}")
    y = (centred_coords(rows, xp=torch) - center[1]) / r
    x = (centred_coords(cols, xp=torch) - center[0]) / r
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.hypot(xx, yy).to(dtype), torch.atan2(yy, xx).to(dtype)


def zernike(j: int, rho: torch.Tensor, theta: torch.Tensor, *,
            extend: bool = False) -> torch.Tensor:
    """Noll-normalised Zernike polynomial ``j`` at polar coordinates.

    Zero where rho > 1, unless ``extend`` (then the polynomial continues outside).
    """
    n, m = noll_to_nm(j)
    am = abs(m)
    radial = torch.zeros_like(rho)
    for k in range((n - am) // 2 + 1):
        f = math.factorial
        c = (-1) ** k * f(n - k) / (f(k) * f((n + am) // 2 - k) * f((n - am) // 2 - k))
        radial = radial + c * rho ** (n - 2 * k)
    if m == 0:
        z = math.sqrt(n + 1) * radial
    elif m > 0:
        z = math.sqrt(2 * (n + 1)) * radial * torch.cos(am * theta)
    else:
        z = math.sqrt(2 * (n + 1)) * radial * torch.sin(am * theta)
    if extend:
        return z
    return torch.where(rho <= 1, z, torch.zeros_like(z))


def zernike_sum(
    coefficients: dict[int, float],
    shape: tuple[int, int],
    *,
    center: tuple[float, float] = (0.0, 0.0),
    radius: float | None = None,
    extend: bool = False,
) -> torch.Tensor:
    """sum_j c_j Z_j on a (rows, cols) grid, float32; coefficients keyed by Noll index."""
    rho, theta = unit_disk_grid(shape, center=center, radius=radius, dtype=torch.float32)
    out = torch.zeros(rho.shape, dtype=torch.float32)
    for j, c in coefficients.items():
        out = out + float(c) * zernike(int(j), rho, theta, extend=extend)
    return out.to(torch.float32)
