"""What every calibration routine does with the bench: patterns, exposure, dark frames.

Routines talk to the bench only through the device interface (``slm.set_phase``,
``camera.get_image``, ``camera.set_exposure``, ``laser.output_on/off``), so they run
unchanged on the simulated bench and on hardware. Patterns are drawn at full SLM
resolution in *model units*: a grating of model frequency (kx, ky) puts its first order
at model pixel (N/2 + kx, N/2 + ky) of the N x N model Fourier grid.

Memory: frames are reduced as they arrive, never stacked. ``capture_float`` averages
into one running sum, ``RunningMoments`` keeps a per-pixel mean and variance (Welford)
over any number of frames, and ``capture_patterns`` turns each image's frames into its
(C, N, N) model-grid pattern before the next image is shown, so a step holds a few
frames at most whatever the number of captures.

Progress: ``progress_bar(total, desc)`` is a ``tqdm.auto`` bar counting captures,
shown while ``show_progress(True)`` is active (``run_calibration(progress=True)``),
silent otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

__all__ = [
    "slm_grid",
    "grating_phase",
    "autoexpose",
    "capture_float",
    "DarkModel",
    "dark_for",
    "laser_off",
    "laser_on",
    "device_identities",
    "full_scale",
    "RunningMoments",
    "capture_patterns",
    "progress_bar",
    "show_progress",
]

log = logging.getLogger(__name__)

_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("calibration_progress",
                                                                  default=False)


@contextlib.contextmanager
def show_progress(enabled: bool = True) -> Iterator[None]:
    """Show (or hide) the calibration routines' progress bars inside the block."""
    token = _PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def progress_bar(total: int | None, desc: str, unit: str = "capture") -> Any:
    """A ``tqdm.auto`` bar of ``total`` ``unit``s, disabled unless ``show_progress``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not _PROGRESS.get(),
                dynamic_ncols=True)


class RunningMoments:
    """Per-pixel mean and variance of frames added one at a time (float64).

    ``add(frame)`` folds one frame in: a running sum (``mean`` is then bit-identical to
    ``np.mean`` of the stacked frames along their first axis, which sums in order) and
    Welford's update of the squared deviations (``variance(ddof)`` matches
    ``np.var(stack, axis=0, ddof=ddof)`` to rounding). Any number of frames costs four
    frame-sized arrays.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self._sum = np.zeros(shape, dtype=np.float64)
        self._wmean = np.zeros(shape, dtype=np.float64)
        self._m2 = np.zeros(shape, dtype=np.float64)
        self._delta = np.empty(shape, dtype=np.float64)

    def add(self, frame: np.ndarray) -> None:
        """Fold one frame into the running moments."""
        f = np.asarray(frame)
        if f.shape != self._sum.shape:
            raise ValueError(f"frame: expected shape {self._sum.shape}, got {f.shape}")
        self.count += 1
        self._sum += f
        np.subtract(f, self._wmean, out=self._delta)
        self._wmean += self._delta / self.count
        self._delta *= f - self._wmean
        self._m2 += self._delta

    @property
    def mean(self) -> np.ndarray:
        """Per-pixel mean of the frames added."""
        if self.count == 0:
            raise ValueError("frames: no frame added yet")
        return self._sum / self.count

    def variance(self, ddof: int = 0) -> np.ndarray:
        """Per-pixel variance with ``ddof`` delta degrees of freedom."""
        if self.count - ddof <= 0:
            raise ValueError(f"ddof: expected fewer than the {self.count} frames added, "
                             f"got {ddof}")
        return self._m2 / (self.count - ddof)


def slm_grid(slm: Any) -> tuple[np.ndarray, np.ndarray]:
    """SLM pixel coordinates (X, Y) relative to the SLM centre, float64 (rows, cols)."""
    from simulation.pixel_grid import centred_coords

    rows, cols = slm.shape
    return np.meshgrid(centred_coords(cols), centred_coords(rows))


def grating_phase(slm: Any, kx: float, ky: float, size: int, block: int) -> np.ndarray:
    """Blazed grating (radians, float32, SLM shape) steering light by (kx, ky) model pixels."""
    x, y = slm_grid(slm)
    period = float(size * block)
    return (2 * np.pi * (kx * x + ky * y) / period).astype(np.float32)


def full_scale(camera: Any) -> float:
    """The largest count the camera reports."""
    return float(2 ** int(camera.bitdepth) - 1)


class DarkModel:
    """The camera's background as a function of exposure: ``offset + rate · exposure_s``
    per pixel (counts; counts per second), from dark frames at two exposures.

    A background that grows with exposure (dark current, room light that reaches the
    camera with the beam blocked) is removed correctly at every exposure a step sets,
    which one dark frame taken at one exposure cannot do.
    """

    def __init__(self, offset_counts: np.ndarray, rate_counts_per_s: np.ndarray,
                 hot_pixels: np.ndarray | None = None) -> None:
        self.offset = np.asarray(offset_counts, dtype=np.float64)
        self.rate = np.asarray(rate_counts_per_s, dtype=np.float64)
        if self.offset.shape != self.rate.shape:
            raise ValueError(f"rate_counts_per_s: expected the offset's shape "
                             f"{self.offset.shape}, got {self.rate.shape}")
        self.hot = None
        if hot_pixels is not None:
            hot = np.asarray(hot_pixels).astype(bool)
            if hot.shape != self.offset.shape:
                raise ValueError(f"hot_pixels: expected the offset's shape "
                                 f"{self.offset.shape}, got {hot.shape}")
            self.hot = hot if hot.any() else None

    def repair(self, frame: np.ndarray,
               box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Replace the hot pixels of a dark-subtracted frame by their 3 x 3 median (in
        place; returns it). Hot pixels carry their own noise, which no dark removes.
        ``box`` = (r0, r1, c0, c1): ``frame`` is that window of the camera."""
        hot = self.hot
        if hot is not None and box is not None:
            r0, r1, c0, c1 = box
            hot = hot[r0:r1, c0:c1]
        if hot is not None and hot.any():
            med = cv2.medianBlur(np.ascontiguousarray(frame, dtype=np.float32), 3)
            frame[hot] = med[hot]
        return frame

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.offset.shape)

    def at(self, exposure_s: float) -> np.ndarray:
        """The dark frame (float64 counts) at ``exposure_s``."""
        return self.offset + self.rate * float(exposure_s)


def dark_for(dark: Any, camera: Any) -> np.ndarray | None:
    """The dark frame to subtract at the camera's current exposure: ``dark.at(exposure)``
    for a ``DarkModel``, the array itself otherwise (None stays None)."""
    if dark is None:
        return None
    if isinstance(dark, DarkModel):
        return dark.at(float(camera.get_exposure()))
    return np.asarray(dark)


def capture_float(camera: Any, n: int = 1, dark: Any = None) -> np.ndarray:
    """Mean of ``n`` frames as float64, dark subtracted when given (an array, or a
    ``DarkModel`` evaluated at the camera's exposure)."""
    acc = np.zeros(camera.shape, dtype=np.float64)
    for _ in range(int(n)):
        acc += camera.get_image()
    acc /= n
    d = dark_for(dark, camera)
    if d is not None:
        acc -= d
    if isinstance(dark, DarkModel):
        dark.repair(acc)
    return acc


def capture_patterns(imager: Any, images: Any, *, desc: str = "capture",
                     drift: Any = None) -> np.ndarray:
    """Model-grid patterns (B, C, N, N) float32 of ``images`` through a ``BenchImager``.

    Equal to ``imager.capture(images).patterns``, but each image's raw frames are reduced
    to its pattern (``frames_to_patterns``) before the next image is shown: memory is
    the patterns plus one image's frames, not every frame of the set. Shows a progress
    bar of captured frames. ``drift``: a started ``calibration.drift.DriftTracker`` of
    this imager; its reference is shown every K images and the windows follow the
    camera image's drift (``DriftTracker.capture_frames``: images counted across calls).
    """
    imgs = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images,
                      dtype=np.float32)
    if imgs.ndim == 2:
        imgs = imgs[None]
    n = int(imager.size)
    if imgs.ndim != 3 or imgs.shape[1:] != (n, n):
        raise ValueError(f"images: expected shape (B, {n}, {n}), got {imgs.shape}")
    if drift is not None and drift.imager is not imager:
        raise ValueError("drift: expected a DriftTracker of the imager given")
    out = np.empty((len(imgs), int(imager.channels), n, n), dtype=np.float32)
    per_image = int(getattr(imager, "frames_per_image", 1))
    grab = imager.capture_frames if drift is None else drift.capture_frames
    with progress_bar(len(imgs) * per_image, desc, unit="frame") as bar:
        for i in range(len(imgs)):
            frames, _ = grab(imgs[i])
            out[i] = imager.frames_to_patterns(frames)[0]
            bar.update(per_image)
    return out


def autoexpose(camera: Any, dark: Any = None, *, target: float = 0.6,
               tol: float = 0.1, attempts: int = 8, percentile: float = 100.0,
               bounds_s: tuple[float, float] = (1e-7, 10.0)) -> float:
    """Set the exposure so the brightest signal sits at ``target`` of full scale.

    Counts are assumed linear in exposure (what a camera is); a saturated frame quarters
    the exposure. The signal is the frame minus the dark (``dark_for``: a ``DarkModel``
    at the exposure tried); a ``DarkModel``'s hot pixels are left out. Returns the
    exposure set (seconds).
    """
    fs = full_scale(camera)
    exp = float(camera.get_exposure())
    hot = dark.hot if isinstance(dark, DarkModel) else None
    for _ in range(attempts):
        d = dark_for(dark, camera)
        base = 0.0 if d is None else float(np.median(d))
        frame = camera.get_image().astype(np.float64)
        # hot pixels (known from the dark step) neither saturate nor light the frame
        peak = float(np.percentile(frame if hot is None else frame[~hot], percentile))
        if d is not None:
            frame -= d
            if hot is not None:
                dark.repair(frame)
            signal = float(np.percentile(frame, percentile))
        else:
            signal = peak
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
