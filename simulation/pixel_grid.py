"""Pixel-centre coordinates of an array: the one home of the array-centred convention.

Why this module: the SLM-plane maps (source beam, aberrations, vignetting, gratings, the
wavefront fits) all measure pixels from the middle of the array, and each used to write
``np.arange(n) - (n - 1) / 2`` by hand; a half-pixel slip in one of them (``n / 2``
instead of ``(n - 1) / 2``) would shift a map against the others without failing a test.
Here the convention has a name, and ``tests/test_pixel_grid.py`` checks that no module of
``calibration``, ``devices`` or ``simulation`` writes it by hand. It imports only numpy
(no torch), so every package may use it, the simulated bench's flaw code included: a
coordinate convention is not a fitted model (``tests/test_devices_flaws_separation.py``).

Conventions (docs/glossary.md, "Pixel centres"):

* *array-centred* (``centred_coords``): pixel i of an n-pixel axis is at
  ``i - (n - 1) / 2`` pixels. The origin is the middle of the array: on the middle pixel
  for odd n, between the two middle pixels for even n. The coordinates are symmetric
  (``x[i] == -x[n - 1 - i]``) and sum to 0. ``centre_index(n) = (n - 1) / 2`` is the
  (fractional) index of that origin, and also the distance to the first or last pixel.
* *block centres* (``block_centre_coords``): the centres of the ``n // d`` whole blocks of
  d pixels, starting at pixel 0, in the array-centred coordinates above (a block's centre
  is the mean of its pixels' coordinates). Pixels left over when d does not divide n
  (``n % d``, at the high end) belong to no block, so the block grid is then not
  symmetric.
* *unit span* (``unit_span_coords``): pixel centres scaled end to end onto [-1, 1]
  (``np.linspace(-1, 1, n)``): the array-centred coordinates divided by
  ``centre_index(n)`` for n >= 2.

Not here, on purpose: the *model grid* of the twin (``simulation.optics.model_grid``) is
FFT-centred: sample i of N is at ``(i - N / 2) * dx``, so the origin (zero frequency in
``fftshift`` order) lies ON sample N/2. For even N that is half a sample above the
array-centred origin ``(N - 1) / 2``, and the grid runs from -xmax to xmax - dx
(asymmetric). The discrete Fourier transform needs its origin on a sample, so the two
conventions differ by design; never mix them without the half-sample shift.

Every function takes ``xp``, the array namespace (``numpy`` by default; pass ``torch`` for
tensors: ``centred_coords(n, xp=torch)``), and ``dtype`` (default ``xp.float64``). All
values are integers or half-integers, so they are exact in float64 and, below 2**23, in
float32: numpy and torch give the same numbers bit for bit.
"""

from __future__ import annotations

import operator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # typing only: this module never imports torch
    import torch

    Coords = np.ndarray | torch.Tensor

__all__ = ["centre_index", "centred_coords", "block_centre_coords", "unit_span_coords"]


def _size(n: Any, name: str, minimum: int) -> int:
    if isinstance(n, bool):
        raise TypeError(f"{name}: expected an integer, got {n!r}")
    try:
        v = operator.index(n)
    except TypeError:
        raise TypeError(f"{name}: expected an integer, got {n!r}") from None
    if v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {n!r}")
    return v


def centre_index(n: int) -> float:
    """(n - 1) / 2: the fractional index of the middle of an n-pixel axis, the origin of
    the array-centred coordinates (and the first and last pixels' distance from it)."""
    return (_size(n, "n", 0) - 1) / 2


def centred_coords(n: int, *, xp: ModuleType = np, dtype: Any = None) -> Coords:
    """Array-centred pixel-centre coordinates of an n-pixel axis: ``i - (n - 1) / 2``,
    i = 0 .. n - 1 (1-D, ``dtype`` default ``xp.float64``)."""
    n = _size(n, "n", 0)
    return xp.arange(n, dtype=xp.float64 if dtype is None else dtype) - centre_index(n)


def block_centre_coords(n: int, d: int, *, xp: ModuleType = np, dtype: Any = None) -> Coords:
    """Centres of the ``n // d`` whole d-pixel blocks of an n-pixel axis (blocks start at
    pixel 0), in array-centred pixel coordinates: ``k * d + (d - 1) / 2 - (n - 1) / 2``."""
    n, d = _size(n, "n", 0), _size(d, "d", 1)
    k = xp.arange(n // d, dtype=xp.float64 if dtype is None else dtype)
    return k * d + centre_index(d) - centre_index(n)


def unit_span_coords(n: int) -> np.ndarray:
    """Pixel centres of an n-pixel axis scaled onto [-1, 1] end to end (float64, numpy):
    ``np.linspace(-1, 1, n)``, i.e. ``centred_coords(n) / centre_index(n)`` up to
    rounding for n >= 2 (a single pixel is at -1, as in ``np.linspace``)."""
    return np.linspace(-1.0, 1.0, _size(n, "n", 0))
