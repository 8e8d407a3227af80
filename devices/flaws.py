"""The hidden flaws of a simulated bench, drawn from one seed.

Calibration must recover these from captures alone; they are exposed only through
``Bench.truth`` (``Flaws.truth()``), a plain dict for tests. Ranges:

* camera geometry: rotation within +-5 degrees, scale (effective focal length) within
  +-10 %, offset of the optical axis within +-``max_offset_px`` camera pixels;
* SLM phase response: delay(g) = 2*pi * span * (g / B)**power, span in [0.9, 1.1]
  (the grey range is not exactly 2*pi), power in [0.8, 1.25] (non-linear);
* source amplitude: Gaussian exp(-r**2 / waist**2), waist within [0.35, 0.7] of the
  smaller SLM side, centre within +-5 % of the SLM size;
* aberrations: Noll terms 4-8 (defocus, astigmatism, coma), each normal with
  ``aberration_rms_rad`` standard deviation, on the unit disk inscribed in the SLM and
  zero outside it (``simulation.zernike``'s convention, which the calibration twin uses);
* camera dark level (counts, 0.5-3 % of full scale) and gain (counts per
  photoelectron, nominal times [0.8, 1.25]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Flaws", "draw_flaws", "no_flaws"]

ZERNIKE_TERMS = (4, 5, 6, 7, 8)


@dataclass(frozen=True)
class Flaws:
    rotation_deg: float = 0.0
    scale: float = 1.0
    offset_px: tuple[float, float] = (0.0, 0.0)
    gamma_span: float = 1.0
    gamma_power: float = 1.0
    source_waist_frac: float = 0.0  # 0: uniform illumination
    source_center_frac: tuple[float, float] = (0.0, 0.0)
    zernike_rad: dict[int, float] = field(default_factory=dict)
    dark_level_frac: float = 0.0
    gain_factor: float = 1.0

    def gamma_2pi(self, bitdepth: int) -> np.ndarray:
        """Per grey level delay in units of 2*pi (slmsuite's ``gamma_sim`` convention)."""
        b = 2**bitdepth
        return self.gamma_span * (np.arange(b) / b) ** self.gamma_power

    def phase_response_rad(self, bitdepth: int) -> np.ndarray:
        """Delay of each grey level relative to the top level, radians (our convention).

        For an ideal SLM this is ``devices.phase.ideal_phase_response``.
        """
        g = self.gamma_2pi(bitdepth)
        return 2 * np.pi * (g[-1] - g)

    def source_amplitude(self, shape: tuple[int, int]) -> np.ndarray:
        rows, cols = shape
        if self.source_waist_frac <= 0:
            return np.ones(shape, dtype=np.float32)
        y = np.arange(rows) - (rows - 1) / 2 - self.source_center_frac[1] * rows
        x = np.arange(cols) - (cols - 1) / 2 - self.source_center_frac[0] * cols
        w = self.source_waist_frac * min(rows, cols)
        r2 = x[None, :] ** 2 + y[:, None] ** 2
        return np.exp(-r2 / w**2).astype(np.float32)

    def aberration_rad(self, shape: tuple[int, int]) -> np.ndarray:
        if not self.zernike_rad:
            return np.zeros(shape, dtype=np.float32)
        from simulation.zernike import zernike_sum  # devices -> simulation, sim backends only

        return zernike_sum(self.zernike_rad, shape).numpy()

    def truth(self, *, slm_shape: tuple[int, int], slm_bitdepth: int,
              camera_full_scale: int, counts_per_electron: float,
              affine: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
        rows, cols = slm_shape
        t: dict[str, Any] = {
            "camera_rotation_deg": self.rotation_deg,
            "camera_scale": self.scale,
            "camera_offset_px": tuple(self.offset_px),
            "slm_gamma_span": self.gamma_span,
            "slm_gamma_power": self.gamma_power,
            "slm_phase_response_rad": self.phase_response_rad(slm_bitdepth),
            "source_waist_px": self.source_waist_frac * min(rows, cols),
            "source_center_px": (self.source_center_frac[0] * cols,
                                 self.source_center_frac[1] * rows),
            "zernike_noll_rad": dict(self.zernike_rad),
            "zernike_radius_px": min(rows, cols) / 2,  # unit disk, centred on the SLM
            "zernike_outside_disk": "zero",  # simulation.zernike default (extend=False)
            "dark_level_counts": self.dark_level_frac * camera_full_scale,
            "gain_counts_per_electron": counts_per_electron * self.gain_factor,
        }
        if affine is not None:
            t["camera_affine_M"] = np.asarray(affine[0], dtype=float)
            t["camera_affine_b"] = np.asarray(affine[1], dtype=float)
        return t


def no_flaws() -> Flaws:
    """An ideal bench: every flaw at its neutral value."""
    return Flaws()


def draw_flaws(seed: int, *, max_offset_px: float = 8.0,
               aberration_rms_rad: float = 0.5) -> Flaws:
    """Draw every hidden flaw from ``seed`` (same seed, same bench)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF1A5]))
    u = rng.uniform
    return Flaws(
        rotation_deg=float(u(-5, 5)),
        scale=float(u(0.9, 1.1)),
        offset_px=(float(u(-max_offset_px, max_offset_px)),
                   float(u(-max_offset_px, max_offset_px))),
        gamma_span=float(u(0.9, 1.1)),
        gamma_power=float(np.exp(u(np.log(0.8), np.log(1.25)))),
        source_waist_frac=float(u(0.35, 0.7)),
        source_center_frac=(float(u(-0.05, 0.05)), float(u(-0.05, 0.05))),
        zernike_rad={j: float(rng.normal(0, aberration_rms_rad)) for j in ZERNIKE_TERMS},
        dark_level_frac=float(u(0.005, 0.03)),
        gain_factor=float(np.exp(u(np.log(0.8), np.log(1.25)))),
    )
