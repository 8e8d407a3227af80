"""The sensor: what a camera records of a complex field, and the decoder's input.

The paper's sensor is noiseless and records the magnitude |E| (docs/paper.md §Encoder);
a real camera records intensity |E|² with shot noise, read noise, a dark level,
finite bit depth (saturation) and possibly binning. `SensorModel` does both:
with its defaults it is the paper's sensor, and it stays differentiable while
no noise is drawn.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ._checks import check_choice, check_finite, check_positive

__all__ = ["SensorModel", "normalise_channels", "normalise_for_decoder"]


class SensorModel(nn.Module):
    """Field (…, H, W) complex -> sensor pattern (…, H/b, W/b) float32.

    Parameters
    ----------
    mode : "magnitude" (the paper) or "intensity".
    photons : mean photon count per pattern (all pixels together); ``None`` for no
        shot noise. Poisson noise is drawn on the intensity scaled to this budget.
    read_noise : standard deviation of Gaussian read noise, in photo-electrons.
    dark_level : constant offset added before quantisation (electrons); it is
        subtracted again after, as the bench does with a dark frame.
    bit_depth : ADC bits; counts are rounded and clipped to [0, 2**bits - 1]
        (saturation). ``full_well`` electrons map to the top of the range
        (default: the top of the range, i.e. one electron per count).
    binning : sum b×b pixel blocks.
    seed : seed of the noise generator (each call draws new noise from it).

    With photons/read noise/bit depth set, the output is in photo-electron
    units (intensity) or their square root (magnitude), with the dark level
    subtracted and negative values clipped: magnitude = sqrt(max(I − dark, 0)).
    """

    def __init__(
        self,
        mode: Literal["magnitude", "intensity"] = "magnitude",
        *,
        photons: float | None = None,
        read_noise: float = 0.0,
        dark_level: float = 0.0,
        bit_depth: int | None = None,
        full_well: float | None = None,
        binning: int = 1,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.mode = check_choice(mode, "mode", ("magnitude", "intensity"))
        if photons is not None:
            check_positive(photons, "photons")
        check_positive(read_noise, "read_noise", allow_zero=True)
        check_positive(dark_level, "dark_level", allow_zero=True)
        if bit_depth is not None:
            check_positive(bit_depth, "bit_depth", integer=True)
            if bit_depth > 32:
                raise ValueError(f"bit_depth: expected at most 32 bits, got {bit_depth}")
        if full_well is not None:
            check_positive(full_well, "full_well")
        check_positive(binning, "binning", integer=True)
        self.photons, self.read_noise, self.dark_level = photons, read_noise, dark_level
        self.bit_depth, self.full_well, self.binning = bit_depth, full_well, binning
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    @property
    def noisy(self) -> bool:
        return (self.photons is not None or self.read_noise > 0 or self.bit_depth is not None
                or self.dark_level > 0)

    def config(self) -> dict:
        """The settings, as plain values (used in encoder signatures and records)."""
        return {"mode": self.mode, "photons": self.photons, "read_noise": self.read_noise,
                "dark_level": self.dark_level, "bit_depth": self.bit_depth,
                "full_well": self.full_well, "binning": self.binning}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            g = torch.Generator(device=device)
            if self.seed is None:
                g.seed()
            else:
                g.manual_seed(self.seed)
            self._generators[device] = g
        return self._generators[device]

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        intensity = field.real**2 + field.imag**2 if field.is_complex() else field**2
        intensity = intensity.to(torch.float32)
        if self.binning > 1:
            b = self.binning
            h, w = intensity.shape[-2:]
            if h % b or w % b:
                raise ValueError(f"binning: {b} does not divide the pattern size {h}x{w}")
            intensity = intensity.reshape(*intensity.shape[:-2], h // b, b, w // b, b).sum((-3, -1))
        if not self.noisy:
            return intensity.sqrt() if self.mode == "magnitude" else intensity
        return self._detect(intensity)

    def _detect(self, intensity: torch.Tensor) -> torch.Tensor:
        g = self._generator(intensity.device)
        counts = intensity
        if self.photons is not None:
            total = intensity.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
            counts = torch.poisson(intensity * (self.photons / total), generator=g)
        counts = counts + self.dark_level
        if self.read_noise > 0:
            noise = torch.randn(counts.shape, generator=g, device=counts.device)
            counts = counts + self.read_noise * noise
        if self.bit_depth is not None:
            top = float(2**self.bit_depth - 1)
            gain = top / self.full_well if self.full_well else 1.0  # counts per electron
            counts = torch.round(counts * gain).clamp(0.0, top) / gain
        signal = (counts - self.dark_level).clamp_min(0.0)
        return signal.sqrt() if self.mode == "magnitude" else signal


def _check_patterns(patterns) -> torch.Tensor:
    if not isinstance(patterns, torch.Tensor):
        raise TypeError(f"patterns: expected a torch tensor, got {type(patterns).__name__}")
    if patterns.ndim != 4:
        raise ValueError(f"patterns: expected shape (B, C, H, W), got {tuple(patterns.shape)}")
    if patterns.is_complex() or not patterns.is_floating_point():
        raise TypeError(f"patterns: expected real floating-point values, got {patterns.dtype}")
    return patterns.to(torch.float32)


def normalise_channels(patterns: torch.Tensor, *, out: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Per-channel min–max to [−1, 1], flattened channel-major: (B, C, H, W) -> (B, C·H·W).

    One pass for the extrema and one fused multiply-add (into ``out`` when given,
    a float32 buffer of at least B·C·H·W elements: the decoder reuses one); a NaN
    or infinite value anywhere shows up in a channel's extrema and is refused.
    This is the layout the decoder computes in; `normalise_for_decoder` is the
    paper's layout.
    """
    p = _check_patterns(patterns)
    b, c, h, w = p.shape
    flat = p.reshape(b * c, h * w)
    lo, hi = torch.aminmax(flat, dim=1)
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        check_finite(p, "patterns")  # names the count of bad values
    scale = 2.0 / (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)
    if out is not None:
        out = out.view(-1)[: b * c * h * w].view(b * c, h * w)
    res = torch.addcmul((-1.0 - lo * scale)[:, None], flat, scale[:, None], out=out)
    return res.clamp_(-1.0, 1.0).view(b, c * h * w)  # rounding may step an ulp outside


def normalise_for_decoder(patterns: torch.Tensor) -> torch.Tensor:
    """Sensor patterns (B, C, H, W) -> decoder input (B, C·H·W) (docs/paper.md §Encoder).

    Each channel of each pattern is min–max normalised to [−1, 1]; the channels
    are placed side by side (an H × C·W image, channel 0 on the left) and
    flattened row-major. A flat channel (max = min) maps to −1.
    """
    b, c, h, w = _check_patterns(patterns).shape
    x = normalise_channels(patterns).reshape(b, c, h, w)
    return x.permute(0, 2, 1, 3).reshape(b, c * h * w)
