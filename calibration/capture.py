"""What every calibration routine does with the bench: patterns, exposure, dark frames.

Routines talk to the bench only through the device interface (``slm.set_phase``,
``camera.get_image``, ``camera.set_exposure``, ``laser.output_on/off``), so they run
unchanged on the simulated bench and on hardware. Patterns are drawn at full SLM
resolution in *model units*: a grating of model frequency (kx, ky) puts its first order
at model pixel (N/2 + kx, N/2 + ky) of the N x N model Fourier grid.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "slm_grid",
    "grating_phase",
    "autoexpose",
    "capture_float",
    "laser_off",
    "laser_on",
    "device_identities",
    "full_scale",
]

log = logging.getLogger(__name__)


def slm_grid(slm: Any) -> tuple[np.ndarray, np.ndarray]:
    """SLM pixel coordinates (X, Y) relative to the SLM centre, float64 (rows, cols)."""
    rows, cols = slm.shape
    y = np.arange(rows, dtype=np.float64) - (rows - 1) / 2
    x = np.arange(cols, dtype=np.float64) - (cols - 1) / 2
    return np.meshgrid(x, y)


def grating_phase(slm: Any, kx: float, ky: float, size: int, block: int) -> np.ndarray:
    """Blazed grating (radians, float32, SLM shape) steering light by (kx, ky) model pixels."""
    x, y = slm_grid(slm)
    period = float(size * block)
    return (2 * np.pi * (kx * x + ky * y) / period).astype(np.float32)


def full_scale(camera: Any) -> float:
    """The largest count the camera reports."""
    return float(2 ** int(camera.bitdepth) - 1)


def capture_float(camera: Any, n: int = 1, dark: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``n`` frames as float64, dark frame subtracted when given."""
    acc = np.zeros(camera.shape, dtype=np.float64)
    for _ in range(int(n)):
        acc += camera.get_image()
    acc /= n
    if dark is not None:
        acc -= dark
    return acc


def autoexpose(camera: Any, dark: np.ndarray | None = None, *, target: float = 0.6,
               tol: float = 0.1, attempts: int = 8, percentile: float = 100.0,
               bounds_s: tuple[float, float] = (1e-7, 10.0)) -> float:
    """Set the exposure so the brightest signal sits at ``target`` of full scale.

    Counts are assumed linear in exposure (what a camera is); a saturated frame halves
    the exposure. Returns the exposure set (seconds).
    """
    fs = full_scale(camera)
    base = 0.0 if dark is None else float(np.median(dark))
    exp = float(camera.get_exposure())
    for _ in range(attempts):
        frame = camera.get_image().astype(np.float64)
        peak = float(np.percentile(frame, percentile))
        signal = peak - base
        if peak >= fs * 0.98:
            exp = max(bounds_s[0], exp / 4)
        elif signal <= 0.02 * fs:
            exp = min(bounds_s[1], exp * 8)
        else:
            if abs(signal / (fs - base) - target) < tol:
                return exp
            exp = float(np.clip(exp * target * (fs - base) / signal, *bounds_s))
        exp = float(camera.set_exposure(exp))
    log.warning("autoexpose: did not settle within %d attempts (exposure %.3g s)", attempts, exp)
    return exp


@contextlib.contextmanager
def laser_off(bench: Any) -> Iterator[bool]:
    """Turn the laser output off for the block (and back on after if it was on).

    Yields False when the bench has no laser controller (the caller must block the beam).
    """
    laser = getattr(bench, "laser", None)
    if laser is None:
        yield False
        return
    was_on = bool(laser.is_output_on())
    laser.output_off()
    try:
        yield True
    finally:
        if was_on:
            laser.output_on()


@contextlib.contextmanager
def laser_on(bench: Any) -> Iterator[None]:
    """Make sure the laser output is on for the block (restored after)."""
    laser = getattr(bench, "laser", None)
    if laser is None:
        yield
        return
    was_on = bool(laser.is_output_on())
    if not was_on:
        laser.output_on()
    try:
        yield
    finally:
        if not was_on:
            laser.output_off()


def device_identities(bench: Any) -> dict[str, Any]:
    """``info()`` of every device of the bench, JSON-friendly, never failing."""
    out: dict[str, Any] = {}
    for name in ("slm", "camera", "laser", "power_meter"):
        dev = getattr(bench, name, None)
        if dev is None:
            continue
        try:
            out[name] = dev.info()
        except Exception as exc:  # noqa: BLE001 - identity is best effort
            out[name] = {"error": str(exc)}
    return out
