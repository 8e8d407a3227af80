"""How the encoder is shown and captured: one frozen, validated configuration, and its layout.

``ImagingConfig`` holds every setting of ``calibration.imaging.BenchImager`` that is not
the bench, the calibration or the encoder (docs/architecture.md §Twin-and-bench-decoders):
model grid, mode, steering grating, margin, mask sampling, pixel envelope, geometry,
exposure, averaging, retries, LUT and aberration use. It is immutable, checked when made
(a bad value raises ``ValueError``
naming the field), written to JSON with ``to_dict`` and read back with ``from_dict``
(unknown keys refused). A calibration records the configuration its model and decoders
used; ``differences`` lists the settings that change the sensor patterns
(``PATTERN_FIELDS``) where two configurations disagree, one line each.

``EncoderSpec`` is the encoder as the bench shows it: the (C, N, N) model masks, their
vortex charges (or None for a learned mask), ``xmax``, ``focal`` and the object's phase
depth, with the same ``mask_sha256`` as ``simulation``'s encoder signature, so that a mask
file and a decoder can be compared (``signature_differences``).

``plan_layout(slm_shape, channels, config)`` is the pure part of the SLM layout: block
size, the square of each channel, its steering grating and the shift of its camera
window. It needs no bench and is tested alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulation.validate import WrongKind, check_count, check_number

__all__ = ["ImagingConfig", "EncoderSpec", "ImagingLayout", "plan_layout", "PATTERN_FIELDS",
           "imaging_config_for"]

_MODES = ("sequential", "split")
_MARGINS = ("grating", "flat")
_SAMPLINGS = ("blocks", "analytic")
_GEOMETRIES = ("calibrated", "nominal")

# the settings that change what a decoder sees: a calibration's decoders are valid only for
# captures made with the same values (exposure, averaging, retries, flush and the geometry
# source change noise or robustness, not the patterns' layout)
PATTERN_FIELDS = ("size", "mode", "grating", "split_shift", "margin", "margin_period_px",
                  "mask_sampling", "pixel_envelope", "apply_lut", "correct_aberrations")


def _int(name: str, v: Any, lo: int) -> int:
    return check_count(v, name, lo)


def _float(name: str, v: Any, *, positive: bool = True) -> float:
    """``check_number`` (> 0); with ``positive=False`` any finite number (a signed
    grating frequency)."""
    if positive:
        return check_number(v, name)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise WrongKind(f"{name}: expected a number, got {type(v).__name__}")
    if not math.isfinite(float(v)):
        raise ValueError(f"{name}: expected a finite number, got {v!r}")
    return float(v)


def _choice(name: str, v: Any, options: Sequence[str]) -> str:
    if v not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {v!r}")
    return str(v)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name}: expected true or false, got {v!r}")
    return bool(v)


@dataclass(frozen=True)
class ImagingConfig:
    """How the encoder is shown on the SLM and captured (see the module docstring).

    size : the model grid N.
    mode : "sequential" (one capture per channel, whole SLM) or "split" (channels side by
        side on SLM bands, one capture).
    grating : sequential mode's steering grating: "auto" (0.75·N model pixels along x and
        y, clear of the zero order), None (none) or (fx, fy) cycles per SLM pixel, |f| < 0.5.
    split_shift : split mode's channel separation, model pixels (None: 1.5·N).
    margin, margin_period_px : what the SLM shows outside the object square ("grating": a
        blazed grating of that period along the diagonal; "flat": zero phase).
    mask_sampling : "blocks" (model masks in s×s blocks) or "analytic" (vortex masks
        evaluated at every SLM pixel; vortex encoders only).
    pixel_envelope : divide the captured patterns by the envelope of s×s blocks.
    geometry : None (calibrated when the calibration has it, else nominal), "calibrated",
        "nominal" or a 2×3 ``model_to_camera`` affine.
    focal_length_um : the lens focal length for the nominal geometry (None: the camera's).
    exposure_s : camera exposure set by ``BenchImager.prepare`` (None keeps the camera's).
    averaging : frames averaged per capture. retries : extra attempts after a device error.
    flush : flush the camera before each capture.
    apply_lut : load the calibration's phase response onto the SLM (``prepare``).
    correct_aberrations : subtract the calibration's fitted aberration.
    """

    size: int = 32
    mode: str = "sequential"
    grating: tuple[float, float] | str | None = "auto"
    split_shift: float | None = None
    margin: str = "grating"
    margin_period_px: float = 4.0
    mask_sampling: str = "blocks"
    pixel_envelope: bool = True
    geometry: str | tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    focal_length_um: float | None = None
    exposure_s: float | None = None
    averaging: int = 1
    retries: int = 2
    flush: bool = True
    apply_lut: bool = True
    correct_aberrations: bool = True

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "size", _int("size", self.size, 2))
        put(self, "mode", _choice("mode", self.mode, _MODES))
        g = self.grating
        if isinstance(g, str):
            if g != "auto":
                raise ValueError(f"grating: expected 'auto', None or (fx, fy), got {g!r}")
        elif g is not None:
            if isinstance(g, (str, bytes)) or not isinstance(g, Sequence) or len(g) != 2:
                raise ValueError(f"grating: expected 'auto', None or (fx, fy) cycles per SLM "
                                 f"pixel, got {g!r}")
            fx, fy = (_float("grating", v, positive=False) for v in g)
            if abs(fx) >= 0.5 or abs(fy) >= 0.5:
                raise ValueError(f"grating: expected |fx|, |fy| < 0.5 cycles per SLM pixel "
                                 f"(Nyquist), got {g!r}")
            put(self, "grating", (fx, fy))
        if self.split_shift is not None:
            put(self, "split_shift", _float("split_shift", self.split_shift))
        put(self, "margin", _choice("margin", self.margin, _MARGINS))
        period = _float("margin_period_px", self.margin_period_px)
        if period < 2:
            raise ValueError(f"margin_period_px: expected a period >= 2 SLM pixels, got "
                             f"{self.margin_period_px!r}")
        put(self, "margin_period_px", period)
        put(self, "mask_sampling", _choice("mask_sampling", self.mask_sampling, _SAMPLINGS))
        put(self, "pixel_envelope", _bool("pixel_envelope", self.pixel_envelope))
        geo = self.geometry
        if isinstance(geo, str):
            _choice("geometry", geo, _GEOMETRIES)
        elif geo is not None:
            a = np.asarray(geo, dtype=float) if not isinstance(geo, (str, bytes)) else None
            if a is None or a.shape != (2, 3) or not np.all(np.isfinite(a)):
                raise ValueError(f"geometry: expected 'calibrated', 'nominal', None or a finite "
                                 f"2x3 model_to_camera affine, got {geo!r}")
            put(self, "geometry", tuple(tuple(float(v) for v in row) for row in a))
        if self.focal_length_um is not None:
            put(self, "focal_length_um", _float("focal_length_um", self.focal_length_um))
        if self.exposure_s is not None:
            put(self, "exposure_s", _float("exposure_s", self.exposure_s))
        put(self, "averaging", _int("averaging", self.averaging, 1))
        put(self, "retries", _int("retries", self.retries, 0))
        put(self, "flush", _bool("flush", self.flush))
        put(self, "apply_lut", _bool("apply_lut", self.apply_lut))
        put(self, "correct_aberrations", _bool("correct_aberrations", self.correct_aberrations))

    def replace(self, **changes: Any) -> ImagingConfig:
        """A copy with ``changes`` (validated again); unknown names are refused."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"imaging config: unknown settings {sorted(unknown)}; expected "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (tuples become lists)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, what: str = "imaging config") -> ImagingConfig:
        """Read ``to_dict``'s output back; unknown keys are refused, naming ``what``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{what}: expected a mapping of settings, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{what}: unknown settings {unknown}; expected some of "
                             f"{sorted(names)}")
        kw = dict(d)
        if isinstance(kw.get("grating"), list):
            kw["grating"] = tuple(kw["grating"])
        try:
            return cls(**kw)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from exc

    def differences(self, other: ImagingConfig, fields: Sequence[str] = PATTERN_FIELDS
                    ) -> list[str]:
        """One line per setting of ``fields`` where ``other`` (the reference) differs."""
        out = []
        for name in fields:
            mine, ref = getattr(self, name), getattr(other, name)
            if mine != ref:
                out.append(f"{name}: {_show(ref)} there, {_show(mine)} here")
        return out


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v)


def mask_digest(masks_rad: np.ndarray) -> str:
    """The 16-hex ``mask_sha256`` of ``simulation``'s encoder signature, for (C, N, N)."""
    a = np.ascontiguousarray(np.asarray(masks_rad, dtype=np.float32))
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class EncoderSpec:
    """The encoder as the bench shows it (see the module docstring).

    masks_rad : float32 (C, N, N) model masks, radians. charges : vortex charges or None
    (learned). xmax, focal : the model optics of a vortex mask (its lens −R²/focal on x
    from −xmax). phase_depth : the object's phase (phase_depth·A). source : where it came
    from (for messages and records).
    """

    masks_rad: np.ndarray
    charges: tuple[int, ...] | None = None
    xmax: float = 10.0
    focal: float = 8.0
    phase_depth: float = math.pi / 2
    source: str = "encoder"

    def __post_init__(self) -> None:
        m = self.masks_rad
        if hasattr(m, "detach"):
            m = m.detach().cpu().numpy()
        m = np.asarray(m, dtype=np.float32)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[-1] != m.shape[-2] or m.shape[0] < 1:
            raise ValueError(f"{self.source}: expected masks of shape (C, N, N), got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"{self.source}: expected finite mask phases in radians")
        m = m.copy()
        m.setflags(write=False)
        object.__setattr__(self, "masks_rad", m)
        if self.charges is not None:
            ch = tuple(int(c) for c in self.charges)
            if len(ch) != m.shape[0]:
                raise ValueError(f"{self.source}: {len(ch)} charges {list(ch)} for "
                                 f"{m.shape[0]} mask channels")
            object.__setattr__(self, "charges", ch)
        object.__setattr__(self, "xmax", _float("xmax", self.xmax))
        object.__setattr__(self, "focal", _float("focal", self.focal))
        object.__setattr__(self, "phase_depth", _float("phase_depth", self.phase_depth))

    @property
    def channels(self) -> int:
        return int(self.masks_rad.shape[0])

    @property
    def size(self) -> int:
        return int(self.masks_rad.shape[-1])

    @property
    def mask_sha256(self) -> str:
        return mask_digest(self.masks_rad)

    @classmethod
    def vortex(cls, charges: Sequence[int] = (1, 3), *, size: int = 32, xmax: float = 10.0,
               focal: float = 8.0, phase_depth: float = math.pi / 2) -> EncoderSpec:
        """The twin's vortex + lens encoder (``simulation.DualVortexEncoder``)."""
        from simulation import DualVortexEncoder

        charges = tuple(int(c) for c in charges)
        if not charges:
            raise ValueError("charges: expected at least one topological charge")
        enc = DualVortexEncoder(charges, size=int(size), xmax=xmax, focal=focal,
                                phase_depth=phase_depth)
        return cls.from_encoder(enc, source=f"vortex {list(charges)}")

    @classmethod
    def from_encoder(cls, encoder: Any, *, source: str | None = None) -> EncoderSpec:
        """From a ``simulation`` encoder (``masks_rad``, ``phase_depth``[, charges...])."""
        learnable = bool(getattr(encoder, "learnable", False))
        charges = None if learnable else getattr(encoder, "charges", None)
        return cls(encoder.masks_rad, charges=charges,
                   xmax=float(getattr(encoder, "xmax", 10.0)),
                   focal=float(getattr(encoder, "focal", 8.0)),
                   phase_depth=float(getattr(encoder, "phase_depth", math.pi / 2)),
                   source=source or str(getattr(encoder, "name", "encoder")))

    @classmethod
    def from_mask(cls, mask: Any, *, source: str = "mask") -> EncoderSpec:
        """From a mask file's contents (``hil.masks.PhaseMask``: ``phase_stack()``,
        ``charges``, ``xmax``, ``focal``, ``phase_depth``)."""
        charges = getattr(mask, "charges", "learned")
        charges = None if isinstance(charges, str) else tuple(int(c) for c in charges)
        return cls(mask.phase_stack(), charges=charges,
                   xmax=float(getattr(mask, "xmax", 10.0)),
                   focal=float(getattr(mask, "focal", 8.0)),
                   phase_depth=float(getattr(mask, "phase_depth", math.pi / 2)),
                   source=source)

    def with_masks(self, masks_rad: Any) -> EncoderSpec:
        """Other masks of the same shape (a mask being trained): a learned encoder."""
        new = EncoderSpec(masks_rad, charges=None, xmax=self.xmax, focal=self.focal,
                          phase_depth=self.phase_depth, source=self.source)
        if new.masks_rad.shape != self.masks_rad.shape:
            raise ValueError(f"masks_rad: expected shape {self.masks_rad.shape}, got "
                             f"{new.masks_rad.shape}")
        return new

    def signature_differences(self, signature: Mapping[str, Any] | None) -> list[str]:
        """One line per way this encoder differs from a decoder's encoder signature.

        Compared: channel count, grid, mask hash and phase depth (and, for a vortex
        signature, the charges, xmax and focal). An empty or missing signature gives
        nothing to compare.
        """
        sig = dict(signature or {})
        out = []

        def differ(name: str, decoder_v: Any, mine: Any) -> None:
            out.append(f"{name}: the decoder's encoder has {_show(decoder_v)}, the "
                       f"{self.source} {_show(mine)}")

        if "channels" in sig and int(sig["channels"]) != self.channels:
            differ("channels", int(sig["channels"]), self.channels)
        if "size" in sig and int(sig["size"]) != self.size:
            differ("grid", int(sig["size"]), self.size)
        if "charges" in sig and self.charges is not None \
                and tuple(int(c) for c in sig["charges"]) != self.charges:
            differ("charges", tuple(int(c) for c in sig["charges"]), self.charges)
        if "phase_depth" in sig and not math.isclose(float(sig["phase_depth"]),
                                                     self.phase_depth, rel_tol=1e-6):
            differ("phase_depth", float(sig["phase_depth"]), self.phase_depth)
        for name in ("xmax", "focal"):
            if name in sig and self.charges is not None and not math.isclose(
                    float(sig[name]), getattr(self, name), rel_tol=1e-6):
                differ(name, float(sig[name]), getattr(self, name))
        if not out and "mask_sha256" in sig and sig["mask_sha256"] != self.mask_sha256:
            differ("mask_sha256", sig["mask_sha256"], self.mask_sha256)
        return out

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "channels": self.channels, "size": self.size,
                "charges": list(self.charges) if self.charges is not None else "learned",
                "xmax": self.xmax, "focal": self.focal, "phase_depth": self.phase_depth,
                "mask_sha256": self.mask_sha256}


@dataclass(frozen=True)
class ImagingLayout:
    """Where each channel sits on the SLM (``plan_layout``'s result).

    block : s, SLM pixels per model pixel. side : N·s. band_cols : SLM columns per channel
    (split) or all. origins : per channel (row, col) of its object square. gratings : per
    channel (fx, fy) cycles per SLM pixel. shifts : per channel, the move of its pattern in
    model pixels (x, y). frames_per_image : captures per image.
    """

    block: int
    side: int
    band_cols: int
    origins: tuple[tuple[int, int], ...]
    gratings: tuple[tuple[float, float], ...]
    shifts: tuple[tuple[float, float], ...]
    frames_per_image: int


def plan_layout(slm_shape: Sequence[int], channels: int, config: ImagingConfig
                ) -> ImagingLayout:
    """The SLM layout of ``channels`` encoder channels on an SLM of ``slm_shape`` (rows,
    cols) under ``config``; pure (no device). Raises ``ValueError`` when the model grid
    does not fit."""
    rows, cols = (int(v) for v in tuple(slm_shape)[:2])
    c_n = _int("channels", channels, 1)
    n = config.size
    split = config.mode == "split"
    band_cols = cols // c_n if split else cols
    block = min(rows // n, band_cols // n)
    if block < 1:
        raise ValueError(
            f"slm: the {n}x{n} model grid does not fit the SLM ({rows}x{cols} px"
            + (f", bands of {band_cols} columns" if split else "") + ")")
    side = n * block
    if split:
        shift = 1.5 * n if config.split_shift is None else config.split_shift
        shifts = tuple(((k - (c_n - 1) / 2) * shift, 0.0) for k in range(c_n))
        gratings = tuple((dxm / side, dym / side) for dxm, dym in shifts)
        origins = tuple(((rows - side) // 2, k * band_cols + (band_cols - side) // 2)
                        for k in range(c_n))
    else:
        g = config.grating
        if g == "auto":
            g = (0.75 * n / side, 0.75 * n / side)
        elif g is None:
            g = (0.0, 0.0)
        gratings = (tuple(g),) * c_n
        shifts = ((g[0] * side, g[1] * side),) * c_n
        origins = (((rows - side) // 2, (cols - side) // 2),) * c_n
    return ImagingLayout(block=block, side=side, band_cols=band_cols, origins=origins,
                         gratings=gratings, shifts=shifts,
                         frames_per_image=1 if split else c_n)


def imaging_config_for(imaging: ImagingConfig | None, size: int) -> ImagingConfig:
    """``imaging`` (default ``ImagingConfig(size=size)``), refused when its grid is not
    ``size``."""
    if imaging is None:
        return ImagingConfig(size=size)
    if not isinstance(imaging, ImagingConfig):
        raise TypeError(f"imaging: expected an ImagingConfig, got {type(imaging).__name__}")
    if imaging.size != size:
        raise ValueError(f"imaging: its model grid is {imaging.size}, the calibration's "
                         f"size is {size}")
    return imaging
