"""Optics of the digital twin: the model grid, lens and vortex phases, object
insertion, and propagation (centred Fraunhofer and band-limited angular spectrum).

The paper's grid is dimensionless (docs/paper.md §Encoder): N = 32 samples of
x = -xmax ... xmax - dx with xmax = 10, so the grid is FFT-centred; the lens phase
is -R²/8 and the object is a pure phase exp(i·depth·A) with depth π/2.

Sign convention: a phase φ multiplies the field by exp(+iφ) everywhere in this
package; the SLM layer (`devices`) is where it is mapped to grey levels.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ._checks import check_positive

__all__ = [
    "model_grid",
    "lens_phase",
    "vortex_phase",
    "phase_object",
    "fraunhofer",
    "AngularSpectrum",
]


def model_grid(
    n: int = 32, xmax: float = 10.0, *, endpoint: bool = False, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y) coordinates of the n×n model grid, rows along y (numpy meshgrid order).

    With ``endpoint=False`` (the encoder grid) x runs from -xmax to xmax - 2·xmax/n;
    with ``endpoint=True`` (the speckle generator's grid) it ends at +xmax.
    """
    check_positive(n, "n", integer=True)
    check_positive(xmax, "xmax")
    if endpoint:
        x = torch.linspace(-xmax, xmax, n, dtype=dtype)
    else:
        x = torch.arange(n, dtype=dtype) * (2.0 * xmax / n) - xmax
    Y, X = torch.meshgrid(x, x, indexing="ij")
    return X, Y


def lens_phase(n: int = 32, xmax: float = 10.0, focal: float = 8.0) -> torch.Tensor:
    """Quadratic lens phase -R²/focal in radians (the paper: focal = fλ/10 = 8)."""
    check_positive(focal, "focal")
    X, Y = model_grid(n, xmax)
    return -(X**2 + Y**2) / focal


def vortex_phase(charge: int, n: int = 32, xmax: float = 10.0) -> torch.Tensor:
    """Vortex phase m·θ in radians, θ = atan2(y, x)."""
    if isinstance(charge, bool) or not isinstance(charge, int):
        raise TypeError(f"charge: expected an integer topological charge, got {charge!r}")
    X, Y = model_grid(n, xmax)
    return charge * torch.atan2(Y, X)


def phase_object(images: torch.Tensor, depth: float = math.pi / 2) -> torch.Tensor:
    """The object as a pure phase: exp(i·depth·A), complex64, amplitude 1."""
    return torch.polar(torch.ones_like(images), depth * images)


def fraunhofer(field: torch.Tensor) -> torch.Tensor:
    """Centred 2-D DFT over the last two axes: fftshift(fft2(fftshift(field))).

    This is the lens Fourier plane of the paper's ``myfft2``; no normalisation,
    so a 32×32 unit field gives a peak of 1024.

    For even sizes both shifts are a checkerboard of signs, C = (−1)^(row+col), on
    either side of the DFT: fftshift(fft2(fftshift(f))) = C·fft2(C·f) exactly (the
    two half-size phase factors cancel). Two sign flips cost less than the two
    copies of ``fftshift`` (measured on 4,096 two-channel 32×32 fields: the shifts
    took twice the time of the DFT). Odd sizes use the shifts.
    """
    h, w = field.shape[-2:]
    if h % 2 or w % 2:
        shifted = torch.fft.fftshift(field, dim=(-2, -1))
        return torch.fft.fftshift(torch.fft.fft2(shifted), dim=(-2, -1))
    c = _checkerboard(h, w, field.device, field.real.dtype if field.is_complex()
                      else field.dtype)
    out = torch.fft.fft2(field * c)
    return out.mul_(c) if not out.requires_grad else out * c


@functools.lru_cache(maxsize=16)
def _checkerboard(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(−1)^(row+col) on an h×w grid (read-only: shared between calls)."""
    r = torch.arange(h, device=device)[:, None] + torch.arange(w, device=device)[None, :]
    return (1 - 2 * (r % 2)).to(dtype)


class AngularSpectrum(nn.Module):
    """Band-limited angular-spectrum propagation over a finite distance.

    Matsushima & Shimobaba's band limit (2009) removes the frequencies whose
    transfer-function phase would alias on the padded grid. The field is
    zero-padded by ``pad`` (2 = twice the size) and cropped back, so the
    convolution is linear, not circular. Units are the caller's, as long as
    they agree (e.g. µm for ``pitch``, ``wavelength`` and ``distance``).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        pitch: float,
        wavelength: float,
        distance: float,
        *,
        pad: int = 2,
        band_limit: bool = True,
    ) -> None:
        super().__init__()
        check_positive(pitch, "pitch")
        check_positive(wavelength, "wavelength")
        check_positive(pad, "pad", integer=True)
        if not isinstance(distance, int | float) or not math.isfinite(distance):
            raise TypeError(f"distance: expected a finite number, got {distance!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.pad = pad
        ny, nx = (s * pad for s in self.shape)
        fy = torch.fft.fftfreq(ny, d=pitch, dtype=torch.float64)
        fx = torch.fft.fftfreq(nx, d=pitch, dtype=torch.float64)
        FY, FX = torch.meshgrid(fy, fx, indexing="ij")
        arg = 1.0 / wavelength**2 - FX**2 - FY**2
        kz = 2 * math.pi * torch.sqrt(arg.clamp(min=0.0))
        H = torch.polar(torch.ones_like(kz), kz * distance)
        H = torch.where(arg > 0, H, torch.zeros_like(H))  # evanescent waves dropped
        if band_limit and distance != 0:
            fmax_x = 1.0 / (wavelength * math.sqrt((2 * distance / (nx * pitch)) ** 2 + 1))
            fmax_y = 1.0 / (wavelength * math.sqrt((2 * distance / (ny * pitch)) ** 2 + 1))
            keep = (FX.abs() < fmax_x) & (FY.abs() < fmax_y)
            H = H * keep
        self.register_buffer("transfer", H.to(torch.complex64))

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        if tuple(field.shape[-2:]) != self.shape:
            raise ValueError(
                f"field: expected last two dimensions {self.shape}, got {tuple(field.shape[-2:])}"
            )
        ny, nx = self.shape
        py, px = ny * (self.pad - 1), nx * (self.pad - 1)
        top, left = py // 2, px // 2
        padded = nn.functional.pad(field, (left, px - left, top, py - top))
        out = torch.fft.ifft2(torch.fft.fft2(padded) * self.transfer)
        return out[..., top : top + ny, left : left + nx]
