"""Our ``Camera`` base class: checks, retries, time-outs, averaging, capture records.

A backend implements ``_get_image_hw(timeout_s)`` (one raw frame, or ``FrameDropped`` /
``DeviceTimeout`` / ``DeviceDisconnected``), ``_set_exposure_hw(s)``, ``_get_exposure_hw()``,
``_close_hw()`` and optionally ``_flush_hw(timeout_s)``; everything else lives here.

Bounded time: the exposure is at most ``MAX_EXPOSURE_S`` and a time-out at most
``MAX_TIMEOUT_S`` (``devices._common``); ``frame_deadline_s`` (exposure + time-out + a
grace of at most ``MAX_GRACE_S``) is the longest a watchdog waits for one frame.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from devices._common import (
    MAX_EXPOSURE_S,
    MAX_TIMEOUT_S,
    _bounded,
    _Device,
    _pair,
)
from devices.errors import DeviceDisconnected, DeviceError, DeviceTimeout, FrameDropped
from devices.phase import grey_dtype

__all__ = ["Camera", "CaptureInfo", "MAX_GRACE_S"]

MAX_GRACE_S = 5.0  # extra wait of a watchdog beyond exposure + time-out


@dataclass(frozen=True)
class CaptureInfo:
    """What one ``get_image`` call returned: the metadata a capture carries."""

    exposure_s: float
    averaging: int
    timestamp: float  # time.time() when the (last) frame arrived
    device_id: str
    dropped_frames: int
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Camera(_Device):
    """A camera: ``get_image`` returns one frame in the camera's integer dtype.

    ``averaging=n`` grabs ``n`` frames and returns their mean rounded to the nearest
    count, in the same dtype, so counts keep one scale whatever the averaging (slmsuite
    sums instead). A dropped frame is retried up to ``capture_attempts`` times in all,
    then ``DeviceError``; no frame within ``timeout_s`` (plus the exposure) raises
    ``DeviceTimeout``; a lost device raises ``DeviceDisconnected``, now and on every
    later call. ``last_capture_info`` describes the last capture.
    """

    kind = "camera"

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        bitdepth: int = 8,
        pitch_um: float | tuple[float, float] = 5.0,
        name: str = "camera",
        device_id: str = "",
        backend: str = "",
        capture_attempts: int = 5,
        timeout_s: float = 1.0,
        flush_frames: int = 2,
    ) -> None:
        super().__init__(name=name, device_id=device_id or name, backend=backend)
        rows, cols = (int(v) for v in shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"shape: expected (rows, cols) > 0, got {shape!r}")
        if not 1 <= int(bitdepth) <= 16:
            raise ValueError(f"bitdepth: expected an integer in [1, 16], got {bitdepth!r}")
        if int(capture_attempts) < 1:
            raise ValueError(f"capture_attempts: expected an integer >= 1, got {capture_attempts}")
        self.shape = (rows, cols)
        self.bitdepth = int(bitdepth)
        self.dtype = grey_dtype(self.bitdepth)
        self.pitch_um = _pair(pitch_um, "pitch_um")
        self.capture_attempts = int(capture_attempts)
        self.timeout_s = _bounded(timeout_s, "timeout_s", MAX_TIMEOUT_S)
        self.flush_frames = int(flush_frames)
        self.last_capture_info: CaptureInfo | None = None
        self.frames_dropped_total = 0

    # exposure
    def set_exposure(self, exposure_s: float) -> float:
        """Set the integration time (seconds); returns what the device reports back.

        Refused (``ValueError``) unless ``0 < exposure_s <= MAX_EXPOSURE_S``.
        """
        self._check_usable()
        s = _bounded(exposure_s, "exposure_s", MAX_EXPOSURE_S)
        self._call(self._set_exposure_hw, s)
        return self.get_exposure()

    def get_exposure(self) -> float:
        """The integration time in seconds, read from the device."""
        self._check_usable()
        return float(self._call(self._get_exposure_hw))

    @property
    def exposure_s(self) -> float:
        return self.get_exposure()

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except DeviceDisconnected as exc:
            raise self._mark_disconnected(exc) from exc

    # capture
    def _grab(self, timeout_s: float) -> tuple[np.ndarray, int]:
        dropped = 0
        last: Exception | None = None
        for _ in range(self.capture_attempts):
            t0 = time.perf_counter()
            try:
                frame = self._get_image_hw(timeout_s)
            except FrameDropped as exc:
                dropped += 1
                self.frames_dropped_total += 1
                last = exc
                continue
            except DeviceTimeout as exc:
                waited = time.perf_counter() - t0
                raise DeviceTimeout(
                    f"camera '{self.name}': no frame within {timeout_s:.3g} s (waited "
                    f"{waited:.3g} s; exposure {self._exposure_hint()}); check the trigger, "
                    f"cable and exposure, or raise timeout_s ({exc})"
                ) from exc
            except DeviceDisconnected as exc:
                raise self._mark_disconnected(exc) from exc
            if frame.shape != self.shape:
                raise DeviceError(
                    f"camera '{self.name}': frame of shape {frame.shape}, expected {self.shape}"
                )
            if frame.dtype != self.dtype:
                frame = frame.astype(self.dtype)
            return frame, dropped
        raise DeviceError(
            f"camera '{self.name}': {dropped} frames dropped in a row "
            f"(capture_attempts={self.capture_attempts}); last error: {last}"
        ) from last

    def frame_deadline_s(self, timeout_s: float) -> float:
        """The longest wait for one frame: exposure + ``timeout_s`` + a bounded grace.

        The exposure the driver reports counts up to ``MAX_EXPOSURE_S`` (a driver
        reporting more cannot stretch the wait), the grace is ``min(timeout_s,
        MAX_GRACE_S)``: at most ``MAX_EXPOSURE_S + MAX_TIMEOUT_S + MAX_GRACE_S`` in all.
        """
        try:
            exposure = float(self._get_exposure_hw())
        except Exception:  # noqa: BLE001 - an unreadable exposure counts as the maximum
            exposure = MAX_EXPOSURE_S
        if not exposure >= 0:  # NaN or negative
            exposure = MAX_EXPOSURE_S
        t = min(float(timeout_s), MAX_TIMEOUT_S)
        return min(exposure, MAX_EXPOSURE_S) + t + min(t, MAX_GRACE_S)

    def _exposure_hint(self) -> str:
        try:
            return f"{float(self._get_exposure_hw()):.3g} s"
        except Exception:  # noqa: BLE001 - only for the message
            return "unknown"

    def get_image(self, averaging: int = 1, timeout_s: float | None = None) -> np.ndarray:
        """One frame (``averaging=1``) or the rounded mean of ``averaging`` frames.

        Returns a (rows, cols) array of the camera's integer dtype. ``timeout_s``
        (default: the camera's ``timeout_s``) is the wait for each frame beyond its exposure.
        """
        self._check_usable()
        if isinstance(averaging, bool) or not isinstance(averaging, (int, np.integer)):
            raise TypeError(f"averaging: expected an integer >= 1, got {averaging!r}")
        if averaging < 1:
            raise ValueError(f"averaging: expected an integer >= 1, got {averaging}")
        t = self.timeout_s if timeout_s is None else _bounded(timeout_s, "timeout_s",
                                                              MAX_TIMEOUT_S)
        t0 = time.perf_counter()
        frame, dropped = self._grab(t)
        if averaging > 1:
            acc = frame.astype(np.float64)
            for _ in range(int(averaging) - 1):
                f, d = self._grab(t)
                acc += f
                dropped += d
            acc /= averaging
            np.rint(acc, out=acc)
            frame = acc.astype(self.dtype)
        self.last_capture_info = CaptureInfo(
            exposure_s=float(self._get_exposure_hw()),
            averaging=int(averaging),
            timestamp=time.time(),
            device_id=self.device_id,
            dropped_frames=dropped,
            duration_s=time.perf_counter() - t0,
        )
        return frame

    def flush(self, timeout_s: float | None = None) -> None:
        """Discard frames already in the pipeline, so the next ``get_image`` is fresh."""
        self._check_usable()
        t = self.timeout_s if timeout_s is None else _bounded(timeout_s, "timeout_s",
                                                              MAX_TIMEOUT_S)
        try:
            self._flush_hw(t)
        except DeviceDisconnected as exc:
            raise self._mark_disconnected(exc) from exc

    def _flush_hw(self, timeout_s: float) -> None:
        for _ in range(self.flush_frames):
            self._grab(timeout_s)

    @abstractmethod
    def _get_image_hw(self, timeout_s: float) -> np.ndarray:
        """One raw frame of shape ``self.shape``; raise FrameDropped / DeviceTimeout."""

    @abstractmethod
    def _set_exposure_hw(self, exposure_s: float) -> None: ...

    @abstractmethod
    def _get_exposure_hw(self) -> float: ...

    def info(self) -> dict[str, Any]:
        """Identity and settings, JSON-friendly."""
        try:
            exposure = float(self._get_exposure_hw()) if not self._closed else None
        except Exception:  # noqa: BLE001 - info never fails
            exposure = None
        return {
            "kind": self.kind,
            "name": self.name,
            "device_id": self.device_id,
            "backend": self.backend,
            "shape": list(self.shape),
            "bitdepth": self.bitdepth,
            "dtype": str(self.dtype),
            "pitch_um": list(self.pitch_um),
            "exposure_s": exposure,
            "capture_attempts": self.capture_attempts,
            "timeout_s": self.timeout_s,
            "frames_dropped_total": self.frames_dropped_total,
        }
