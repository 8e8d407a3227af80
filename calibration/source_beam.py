"""The source beam's amplitude on the SLM: the shape models the wavefront step fits.

A laser beam after an expander is a Gaussian, but real ones are often flattened
(a super-Gaussian from a beam shaper or a multimode diode) or cut by an aperture (the
expander's or the SLM's own clear aperture). A phase-diversity fit with only a Gaussian
source absorbs the difference as aberrations (the far-field rings of a hard aperture look
like defocus and spherical terms), so the step fits each of these models and keeps the
one the diversity frames support (``calibration.wavefront``):

* ``gaussian``: exp(-r² / w²);
* ``supergaussian``: exp(-(r² / w²)^p), p > 1 flattens the top;
* ``clipped``: the Gaussian times a circular aperture of radius R, centred on the beam.

r is measured from the beam centre (cx, cy), SLM pixels from the SLM's centre. The
aperture's edge is a logistic of width ``edge_px`` (a quarter of a pupil sample in the
twin: the area-weighted value of a sharp edge across one sample, to first order), so
the fit can move it; ``edge_px = 0`` gives the sharp edge.

``beam_amplitude`` is the one formula (torch, differentiable); the twin of the wavefront
step and the model step's source (``model_fit.source_amplitude``) both call it with the
values the source step stores (``source_values``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["BEAM_MODELS", "beam_amplitude", "source_values", "amplitude_from_values"]

BEAM_MODELS = ("gaussian", "supergaussian", "clipped")

MODEL_TEXT = {"gaussian": "gaussian exp(-r^2/waist^2)",
              "supergaussian": "supergaussian exp(-(r^2/waist^2)^power)",
              "clipped": "clipped gaussian exp(-r^2/waist^2), zero beyond clip_radius_px"}


def beam_amplitude(x: torch.Tensor, y: torch.Tensor, *, waist_px: Any, cx: Any, cy: Any,
                   power: Any = 1.0, clip_radius_px: Any = None,
                   edge_px: float = 0.0) -> torch.Tensor:
    """Amplitude at SLM coordinates (x, y) (pixels from the SLM centre).

    ``power`` 1 is a Gaussian; ``clip_radius_px`` None is no aperture. Tensors keep
    their gradients (the wavefront fit), plain numbers are fine (the model step).
    """
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    u = r2 / waist_px**2
    amp = torch.exp(-u) if _is_one(power) else torch.exp(-(u.clamp(min=1e-12) ** power))
    if clip_radius_px is not None:
        r = torch.sqrt(r2.clamp(min=1e-12))
        if edge_px > 0:
            amp = amp * torch.sigmoid((clip_radius_px - r) / edge_px)
        else:
            amp = torch.where(r <= clip_radius_px, amp, torch.zeros_like(amp))
    return amp


def _is_one(p: Any) -> bool:
    return not isinstance(p, torch.Tensor) and float(p) == 1.0


def source_values(model: str, waist_px: float, center_px: tuple[float, float], *,
                  power: float = 1.0, clip_radius_px: float | None = None) -> dict[str, Any]:
    """The source step's values for one fitted beam model (what ``amplitude_from_values``
    reads back)."""
    if model not in BEAM_MODELS:
        raise ValueError(f"model: expected one of {BEAM_MODELS}, got {model!r}")
    v: dict[str, Any] = {"waist_px": float(waist_px),
                         "center_px": [float(center_px[0]), float(center_px[1])],
                         "model": MODEL_TEXT[model], "beam_model": model}
    if model == "supergaussian":
        v["power"] = float(power)
    if model == "clipped":
        if clip_radius_px is None or not math.isfinite(float(clip_radius_px)):
            raise ValueError(f"clip_radius_px: expected a finite radius for a clipped beam, "
                             f"got {clip_radius_px!r}")
        v["clip_radius_px"] = float(clip_radius_px)
    return v


def amplitude_from_values(values: dict[str, Any], x: torch.Tensor, y: torch.Tensor
                          ) -> torch.Tensor:
    """The stored source (``source_values``; an older file without ``beam_model`` is a
    Gaussian) evaluated at (x, y), with the sharp aperture edge."""
    model = str(values.get("beam_model", "gaussian"))
    if model not in BEAM_MODELS:
        raise ValueError(f"source.beam_model: expected one of {BEAM_MODELS}, got {model!r}")
    cx, cy = (float(v) for v in values["center_px"])
    return beam_amplitude(
        x, y, waist_px=float(values["waist_px"]), cx=cx, cy=cy,
        power=float(values.get("power", 1.0)) if model == "supergaussian" else 1.0,
        clip_radius_px=float(values["clip_radius_px"]) if model == "clipped" else None)
