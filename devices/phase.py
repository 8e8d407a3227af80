"""Phase -> grey level: the sign convention, wrapping and the phase look-up table.

Sign convention (written once, here, and tested at the SLM boundary)
--------------------------------------------------------------------
``phase_rad`` is a phase *delay* in radians, the same quantity slmsuite's
``SLM.set_phase`` takes. On most LCoS SLMs a higher grey level (higher voltage)
gives a *smaller* delay, so, as in slmsuite, the grey level falls as the phase
rises (``PHASE_SIGN = -1``) and **zero phase is shown as the maximum grey level**
(255 on an 8-bit SLM). An ideal SLM with ``B = 2**bitdepth`` levels spanning 2*pi shows
grey level ``g`` as the delay ``2*pi*(B - 1 - g) / B`` (``ideal_phase_response``), and a
phase is rounded to the nearest level, wrapped modulo 2*pi. This is exactly what
``slmsuite.hardware.slms.slm.SLM.set_phase`` does with float input and no gamma,
so a mask looks the same whichever of the two layers writes it.

A measured response (calibration's grey -> phase curve) replaces the ideal one
through a look-up table (``lut_from_response``): ``lut[k]`` is the level whose
delay is nearest to ``2*pi*k/L``; phases are wrapped and rounded onto the ``L`` bins.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CHUNK",
    "finite_bounds",
    "PHASE_SIGN",
    "ZERO_PHASE_GREY",
    "grey_dtype",
    "ideal_phase_response",
    "lut_from_response",
    "phase_to_grey",
]

PHASE_SIGN = -1
"""Grey level moves against phase delay: increasing grey level = decreasing delay."""

ZERO_PHASE_GREY = "max"
"""Zero phase is displayed as the maximum grey level, 2**bitdepth - 1."""

_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: adding it rounds a float32 to an integer
_MAGIC_LIMIT = 2.0**21  # |scaled phase| below this: the mantissa holds the rounded integer


def grey_dtype(bitdepth: int) -> np.dtype:
    """uint8 up to 8 bits, uint16 above (slmsuite's choice)."""
    return np.dtype(np.uint8 if bitdepth <= 8 else np.uint16)


def ideal_phase_response(bitdepth: int) -> np.ndarray:
    """Delay (radians, float64) shown by each grey level of an ideal 2*pi SLM."""
    b = 2**bitdepth
    return 2 * np.pi * (b - 1 - np.arange(b)) / b


def lut_from_response(response_rad: np.ndarray, lut_size: int = 2**14) -> np.ndarray:
    """Look-up table from a measured response: delay (radians) shown by every grey level.

    ``response_rad[g]`` is the delay of level ``g`` (any offset; wrapped here). Each of the
    ``lut_size`` bins gets the level whose wrapped delay is nearest, circularly.
    """
    r = np.asarray(response_rad, dtype=np.float64).ravel()
    b = r.size
    if b < 2 or b & (b - 1):
        raise ValueError(
            f"response_rad: expected one delay per grey level (a power of two, >= 2), got {b}"
        )
    if not np.all(np.isfinite(r)):
        raise ValueError("response_rad: expected finite values, got NaN or infinite")
    if lut_size < 2 or lut_size & (lut_size - 1) or lut_size > 2**20:
        raise ValueError(f"lut_size: expected a power of two in [2, 2**20], got {lut_size}")
    wrapped = np.mod(r, 2 * np.pi)
    order = np.argsort(wrapped, kind="stable")
    s = wrapped[order]
    tiled = np.concatenate((s - 2 * np.pi, s, s + 2 * np.pi))
    grid = np.arange(lut_size) * (2 * np.pi / lut_size)
    index = np.searchsorted((tiled[:-1] + tiled[1:]) / 2, grid, side="right")
    bitdepth = int(np.log2(b))
    return order[np.mod(index, b)].astype(grey_dtype(bitdepth))


CHUNK = 1 << 16
"""Pixels per block: the float32 working set (256 KiB) stays in cache between steps."""


def finite_bounds(phase: np.ndarray) -> tuple[float, float]:
    """(min, max) of an array, block by block (one read); NaN if any value is NaN."""
    flat = np.ascontiguousarray(phase).reshape(-1)
    lo, hi = float("inf"), float("-inf")
    for i in range(0, flat.size, CHUNK):
        blk = flat[i:i + CHUNK]
        m, big = float(blk.min()), float(blk.max())
        if m != m or big != big:  # NaN (min and max propagate it)
            return float("nan"), float("nan")
        lo, hi = min(lo, m), max(hi, big)
    return lo, hi


def phase_to_grey(
    phase_rad: np.ndarray,
    bitdepth: int,
    lut: np.ndarray | None = None,
    *,
    out: np.ndarray | None = None,
    bounds: tuple[float, float] | None = None,
    copy_to: np.ndarray | None = None,
) -> np.ndarray:
    """Wrap and quantise a float phase (radians) into grey levels.

    Without ``lut`` the ideal response is used (rounded to the nearest level, the
    slmsuite result bit for bit); with ``lut`` the phase is rounded onto its bins.
    ``out`` (grey dtype, C-contiguous) avoids an allocation; ``bounds`` = (min, max) of
    the phase when the caller already knows them; ``copy_to`` (float32, same shape)
    receives a copy of the phase on the way, in the same pass.
    """
    phase = np.asarray(phase_rad)
    dtype = grey_dtype(bitdepth)
    if out is None:
        out = np.empty(phase.shape, dtype=dtype)
    levels = 2**bitdepth if lut is None else int(lut.size)
    scale = (PHASE_SIGN * levels if lut is None else levels) / (2 * np.pi)
    lo, hi = (float(phase.min()), float(phase.max())) if bounds is None else bounds
    shift = 1 if lut is None else 0  # slmsuite shifts by one level: zero phase -> top level
    fast = (phase.dtype == np.float32 and phase.flags.c_contiguous and out.flags.c_contiguous
            and max(abs(lo), abs(hi)) * abs(scale) < _MAGIC_LIMIT)
    if not fast:
        if copy_to is not None:
            np.copyto(copy_to, phase, casting="unsafe")
        # same float32 arithmetic as slmsuite for float32 input (huge values included)
        ftype = np.float32 if phase.dtype == np.float32 else np.float64
        index = np.rint(phase.astype(ftype, copy=False) * ftype(scale)).astype(np.int64)
        index = np.mod(index - shift, levels)
        if lut is None:
            np.copyto(out, index, casting="unsafe")
            return out
        return np.take(lut, index, out=out)
    src, dst = phase.reshape(-1), out.reshape(-1)
    keep = None if copy_to is None else copy_to.reshape(-1)
    scratch = np.empty(min(CHUNK, src.size), dtype=np.float32)
    f32 = np.float32(scale)
    need_mask = lut is None and (levels != 256 or dtype != np.uint8)
    one = dst.dtype.type(shift)
    mask = dst.dtype.type(levels - 1) if lut is None else None
    for i in range(0, src.size, CHUNK):
        blk = src[i:i + CHUNK]
        t = scratch[:blk.size]
        o = dst[i:i + CHUNK]
        if keep is not None:
            np.copyto(keep[i:i + CHUNK], blk)
        np.multiply(blk, f32, out=t)
        np.add(t, _MAGIC, out=t)  # round half to even, as np.rint; the integer is in the bits
        index = t.view(np.int32)
        if lut is None:
            # int32 -> grey dtype keeps the low bits (wraps modulo 2**8 or 2**16); the
            # one-level shift and the mask then run on the narrow array: slmsuite's result
            np.copyto(o, index, casting="unsafe")
            if shift:
                np.subtract(o, one, out=o)
            if need_mask:
                np.bitwise_and(o, mask, out=o)
        else:
            np.bitwise_and(index, levels - 1, out=index)
            np.take(lut, index, out=o)
    return out
