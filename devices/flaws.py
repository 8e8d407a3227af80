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
  zero outside it: the convention of the twin's ``simulation.zernike``, computed by
  the bench's own ``devices.sim_zernike`` (never the code the calibration fits with);
* camera dark level (counts, 0.5-3 % of full scale) and gain (counts per
  photoelectron, nominal times [0.8, 1.25]).

Flaws the twin does not model, set by the bench file's ``[sim_flaws]`` table (each off
by default; ``with_sim_flaws``); their seeded details come from a second stream of the
same seed, so switching one on does not change the draws above:

* ``crosstalk_sigma_px``: the displayed delay blurred by a Gaussian of that sigma (SLM
  pixels), fringing fields included in the flyback at every 2*pi wrap;
* ``phase_span_variation``: the delay scaled by 1 + v * s(x, y), s a seeded smooth
  (quadratic) map with peak-to-peak 1 over the panel;
* ``flicker_rad_rms``: every frame, the delay scaled by 1 + e / (2*pi), e normal with
  that rms (so the flicker is that many radians rms at a 2*pi delay, none at grey 0);
* ``settle_tau_s``: the liquid crystal relaxes as 1 - exp(-dt / tau) towards each new
  pattern, whatever ``[slm] settle_time_s`` (what the software waits) says;
* ``high_order_aberration_rad_rms``: Noll 9-28 on the same disk, coefficients drawn with
  a 1 / (n - 1) fall-off in radial order n and scaled to exactly that rms;
* ``source_shape``: "gaussian", "supergaussian" (amplitude exp(-(r/w)**(2p)), p drawn in
  [1.5, 3]) or "clipped" (the Gaussian cut by a circular aperture of radius 0.8-1.0 times the
  smaller of w and half the SLM's smaller side);
* ``power_fluctuation_rms``: laser power times 1 + normal(0, rms) every frame;
* ``drift_px_per_kframe``: the camera image moves that many camera pixels per 1,000
  frames delivered, in a seeded direction;
* ``camera_nonlinearity`` c: counts x -> x - c * x**2 / full scale (c at full scale);
* ``hot_pixel_fraction``: that fraction of camera pixels with a seeded extra offset,
  log-uniform in [2 %, 100 %] of full scale, whatever the exposure or laser;
* ``vignetting`` v: signal times 1 - v * (r / r_corner)**2 about the camera centre;
* ``background_counts_per_s``: uniform stray light, counts per second of exposure (shot
  noise included), present with the laser off;
* ``ghost_fraction``: a displaced, blurred copy of the signal (a reflection off a
  window) carrying that fraction of it; seeded offset 5-15 % of the camera size, blur
  sigma 1-3 %;
* overrides of the draws: ``camera_rotation_deg``, ``camera_mirror`` (camera x flipped
  about the optical axis), ``slm_phase_span`` (grey range in units of 2*pi).

Everything here is the simulated bench's own code: no module under ``calibration/`` or
``simulation/`` imports it, and it imports nothing of theirs (``tests/test_devices_flaws``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devices.sim_zernike import noll_nm, zernike_phase
from simulation.pixel_grid import centre_index, centred_coords, unit_span_coords

__all__ = ["Flaws", "draw_flaws", "with_sim_flaws", "SOURCE_SHAPES"]

ZERNIKE_TERMS = (4, 5, 6, 7, 8)
HIGH_ORDER_TERMS = tuple(range(9, 29))  # Noll 9-28: radial orders 3-6 beyond the fitted ones
SOURCE_SHAPES = ("gaussian", "supergaussian", "clipped")


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
    # [sim_flaws]: flaws outside the twin (all off by default), and their seeded details
    crosstalk_sigma_px: float = 0.0
    phase_span_variation: float = 0.0
    span_map_coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    flicker_rad_rms: float = 0.0
    settle_tau_s: float = 0.0
    high_order_rad: dict[int, float] = field(default_factory=dict)
    source_shape: str = "gaussian"
    supergaussian_power: float = 2.0
    clip_radius_frac: float = 1.0
    power_fluctuation_rms: float = 0.0
    drift_px_per_kframe: float = 0.0
    drift_direction_deg: float = 0.0
    camera_nonlinearity: float = 0.0
    hot_pixel_fraction: float = 0.0
    hot_pixel_seed: int = 0
    vignetting: float = 0.0
    background_counts_per_s: float = 0.0
    ghost_fraction: float = 0.0
    ghost_offset_frac: tuple[float, float] = (0.0, 0.0)
    ghost_blur_frac: float = 0.0
    camera_mirror: bool = False

    @property
    def slm_dynamic(self) -> bool:
        """Any SLM-side flaw applied per frame (crosstalk, span map, flicker, true settle)."""
        return bool(self.crosstalk_sigma_px or self.phase_span_variation
                    or self.flicker_rad_rms or self.settle_tau_s)

    @property
    def camera_side(self) -> bool:
        """Any camera-side flaw applied per frame."""
        return bool(self.power_fluctuation_rms or self.drift_px_per_kframe
                    or self.camera_nonlinearity or self.hot_pixel_fraction or self.vignetting
                    or self.background_counts_per_s or self.ghost_fraction)

    def drift_px(self, frames: int) -> tuple[float, float]:
        """Image shift (x, y) in camera pixels after ``frames`` frames delivered."""
        d = self.drift_px_per_kframe * frames / 1000.0
        a = np.radians(self.drift_direction_deg)
        return float(d * np.cos(a)), float(d * np.sin(a))

    def span_map(self, shape: tuple[int, int]) -> np.ndarray:
        """Factor on the delay across the panel: 1 + v * s, s smooth, peak-to-peak 1."""
        if not self.phase_span_variation:
            return np.ones(shape, dtype=np.float32)
        rows, cols = shape
        y = unit_span_coords(rows)[:, None]
        x = unit_span_coords(cols)[None, :]
        ax, ay, axx, ayy, axy = self.span_map_coeffs
        s = ax * x + ay * y + axx * x**2 + ayy * y**2 + axy * x * y
        s = np.broadcast_to(s, shape)
        s = (s - (s.max() + s.min()) / 2) / max(float(np.ptp(s)), 1e-12)
        return (1.0 + self.phase_span_variation * s).astype(np.float32)

    def hot_pixels(self, shape: tuple[int, int], full_scale: float
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the hot pixels and their extra counts."""
        n_px = int(shape[0]) * int(shape[1])
        n = int(round(self.hot_pixel_fraction * n_px))
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rng = np.random.default_rng(np.random.SeedSequence([self.hot_pixel_seed, 0x407]))
        idx = np.sort(rng.choice(n_px, size=n, replace=False))
        counts = full_scale * np.exp(rng.uniform(np.log(0.02), 0.0, size=n))
        return idx.astype(np.int64), counts

    def vignetting_map(self, shape: tuple[int, int]) -> np.ndarray:
        rows, cols = shape
        if not self.vignetting:
            return np.ones(shape, dtype=np.float64)
        y, x = centred_coords(rows), centred_coords(cols)
        corner2 = centre_index(cols) ** 2 + centre_index(rows) ** 2  # corner pixel's r²
        r2 = (x[None, :] ** 2 + y[:, None] ** 2) / corner2
        return 1.0 - self.vignetting * r2

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
        y = centred_coords(rows) - self.source_center_frac[1] * rows
        x = centred_coords(cols) - self.source_center_frac[0] * cols
        w = self.source_waist_frac * min(rows, cols)
        r2 = x[None, :] ** 2 + y[:, None] ** 2
        if self.source_shape == "supergaussian":
            return np.exp(-((r2 / w**2) ** self.supergaussian_power)).astype(np.float32)
        amp = np.exp(-r2 / w**2)
        if self.source_shape == "clipped":
            amp = np.where(r2 <= self.clip_radius_px(shape) ** 2, amp, 0.0)
        return amp.astype(np.float32)

    def clip_radius_px(self, shape: tuple[int, int]) -> float:
        """Radius of the aperture that cuts a "clipped" source (SLM pixels)."""
        w = self.source_waist_frac * min(shape)
        return self.clip_radius_frac * min(w, min(shape) / 2)

    def aberration_rad(self, shape: tuple[int, int]) -> np.ndarray:
        """Noll 4-8 plus any high-order terms (devices.sim_zernike, not the twin's code)."""
        terms = {**self.zernike_rad, **self.high_order_rad}
        if not any(terms.values()):
            return np.zeros(shape, dtype=np.float32)
        return zernike_phase(terms, shape)

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
        t.update(self.sim_flaws_truth(slm_shape))
        return t

    def sim_flaws_truth(self, slm_shape: tuple[int, int]) -> dict[str, Any]:
        """The ``[sim_flaws]`` truth: every key by its bench-file name, plus the details."""
        ho = dict(self.high_order_rad)
        return {
            "crosstalk_sigma_px": self.crosstalk_sigma_px,
            "phase_span_variation": self.phase_span_variation,
            "slm_span_map": self.span_map(slm_shape),
            "flicker_rad_rms": self.flicker_rad_rms,
            "settle_tau_s": self.settle_tau_s,
            "high_order_aberration_rad_rms": float(np.sqrt(sum(c * c for c in ho.values()))),
            "high_order_noll_rad": ho,
            "source_shape": self.source_shape,
            "source_supergaussian_power": self.supergaussian_power,
            "source_clip_radius_px": self.clip_radius_px(slm_shape),
            "power_fluctuation_rms": self.power_fluctuation_rms,
            "drift_px_per_kframe": self.drift_px_per_kframe,
            "drift_direction_deg": self.drift_direction_deg,
            "camera_nonlinearity": self.camera_nonlinearity,
            "hot_pixel_fraction": self.hot_pixel_fraction,
            "vignetting": self.vignetting,
            "background_counts_per_s": self.background_counts_per_s,
            "ghost_fraction": self.ghost_fraction,
            "ghost_offset_frac": tuple(self.ghost_offset_frac),
            "ghost_blur_frac": self.ghost_blur_frac,
            "camera_mirror": self.camera_mirror,
            "slm_phase_span": self.gamma_span,
        }


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


def with_sim_flaws(base: Flaws, seed: int, sim_flaws: dict[str, Any] | None) -> Flaws:
    """``base`` with the ``[sim_flaws]`` settings (None or {}: unchanged).

    The seeded details (drift direction, span map, high-order coefficients, source
    parameters, hot pixels, ghost) come from their own stream of ``seed``, drawn in a
    fixed order whatever is switched on, so one flaw's details do not depend on another.
    """
    if not sim_flaws:
        return base
    unknown = set(sim_flaws) - _SIM_FLAW_KEYS
    if unknown:
        raise ValueError(f"sim_flaws: unknown keys {sorted(unknown)}; known: "
                         f"{sorted(_SIM_FLAW_KEYS)}")
    shape = sim_flaws.get("source_shape", "gaussian")
    if shape not in SOURCE_SHAPES:
        raise ValueError(f"sim_flaws.source_shape: expected one of {SOURCE_SHAPES}, "
                         f"got {shape!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5F1A]))
    u = rng.uniform
    drift_dir = float(u(0.0, 360.0))
    span_coeffs = tuple(float(v) for v in rng.normal(0.0, 1.0, 5))
    raw_ho = {j: float(rng.normal(0.0, 1.0)) / (noll_nm(j)[0] - 1) for j in HIGH_ORDER_TERMS}
    sg_power = float(u(1.5, 3.0))
    clip = float(u(0.8, 1.0))
    hot_seed = int(rng.integers(0, 2**31 - 1))
    g_ang, g_dist = float(u(0.0, 2 * np.pi)), float(u(0.05, 0.15))
    g_blur = float(u(0.01, 0.03))

    ho_rms = float(sim_flaws.get("high_order_aberration_rad_rms", 0.0))
    norm = float(np.sqrt(sum(c * c for c in raw_ho.values())))
    high_order = {j: c * ho_rms / norm for j, c in raw_ho.items()} if ho_rms else {}
    changes: dict[str, Any] = dict(
        crosstalk_sigma_px=float(sim_flaws.get("crosstalk_sigma_px", 0.0)),
        phase_span_variation=float(sim_flaws.get("phase_span_variation", 0.0)),
        span_map_coeffs=span_coeffs,
        flicker_rad_rms=float(sim_flaws.get("flicker_rad_rms", 0.0)),
        settle_tau_s=float(sim_flaws.get("settle_tau_s", 0.0)),
        high_order_rad=high_order,
        source_shape=shape,
        supergaussian_power=sg_power,
        clip_radius_frac=clip,
        power_fluctuation_rms=float(sim_flaws.get("power_fluctuation_rms", 0.0)),
        drift_px_per_kframe=float(sim_flaws.get("drift_px_per_kframe", 0.0)),
        drift_direction_deg=drift_dir,
        camera_nonlinearity=float(sim_flaws.get("camera_nonlinearity", 0.0)),
        hot_pixel_fraction=float(sim_flaws.get("hot_pixel_fraction", 0.0)),
        hot_pixel_seed=hot_seed,
        vignetting=float(sim_flaws.get("vignetting", 0.0)),
        background_counts_per_s=float(sim_flaws.get("background_counts_per_s", 0.0)),
        ghost_fraction=float(sim_flaws.get("ghost_fraction", 0.0)),
        ghost_offset_frac=(g_dist * float(np.cos(g_ang)), g_dist * float(np.sin(g_ang))),
        ghost_blur_frac=g_blur,
        camera_mirror=bool(sim_flaws.get("camera_mirror", False)),
    )
    if sim_flaws.get("camera_rotation_deg") is not None:
        changes["rotation_deg"] = float(sim_flaws["camera_rotation_deg"])
    if sim_flaws.get("slm_phase_span") is not None:
        changes["gamma_span"] = float(sim_flaws["slm_phase_span"])
    if shape != "gaussian" and base.source_waist_frac <= 0:
        changes["source_waist_frac"] = 0.5  # a shaped source needs a size: half the SLM
    return dataclasses.replace(base, **changes)


_SIM_FLAW_KEYS = {
    "crosstalk_sigma_px", "phase_span_variation", "flicker_rad_rms", "settle_tau_s",
    "high_order_aberration_rad_rms", "source_shape", "power_fluctuation_rms",
    "drift_px_per_kframe", "camera_nonlinearity", "hot_pixel_fraction", "vignetting",
    "background_counts_per_s", "ghost_fraction", "camera_rotation_deg", "camera_mirror",
    "slm_phase_span",
}
