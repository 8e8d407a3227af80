"""Our ``Camera`` base class: checks, retries, time-outs, averaging, capture records.

A backend implements ``_get_image_hw(timeout_s)`` (one raw frame, or ``FrameDropped`` /
``DeviceTimeout`` / ``DeviceDisconnected``), ``_set_exposure_hw(s)``, ``_get_exposure_hw()``,
``_close_hw()`` and optionally ``_flush_hw(timeout_s)``; everything else lives here.
``frame_request_hook`` (public, None by default) runs before each hardware frame request.

Bounded time: the exposure is at most ``MAX_EXPOSURE_S`` and a time-out at most
``MAX_TIMEOUT_S`` (``devices._common``, exported by ``devices``); ``frame_deadline_s``
(exposure + time-out + a grace of at most ``MAX_GRACE_S``) is the longest a watchdog waits
for one frame.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from devices._common import (
    MAX_EXPOSURE_S,
    MAX_TIMEOUT_S,
    _Device,
    _pair,
)
from devices.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    FrameDropped,
)
from devices.phase import grey_dtype
from simulation.validate import check_count, check_number

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
        capture_attempts = check_count(capture_attempts, "capture_attempts")
        self.shape = (rows, cols)
        self.bitdepth = int(bitdepth)
        self.dtype = grey_dtype(self.bitdepth)
        self.pitch_um = _pair(pitch_um, "pitch_um")
        self.capture_attempts = int(capture_attempts)
        self.timeout_s = check_number(timeout_s, "timeout_s", at_most=MAX_TIMEOUT_S,
                                      unit=" s")
        self.flush_frames = int(flush_frames)
        self.last_capture_info: CaptureInfo | None = None
        # time.perf_counter() at which the last frame's exposure started, where the backend
        # knows it (the simulated camera); None where it does not
        self.last_exposure_start: float | None = None
        self.frames_dropped_total = 0
        self.frame_rate_hz: float | None = None  # None: unknown (free-running or triggered)
        self.capture_settings: dict[str, Any] = {}  # what configure_capture applied

    # capture settings (bench-file keys [camera] roi, pixel_format, gain, trigger)
    CAPTURE_SETTINGS = ("roi", "pixel_format", "gain", "trigger")

    def configure_capture(self, **settings: Any) -> dict[str, Any]:
        """Apply capture settings through the backend's hooks; returns what was applied.

        ``roi`` = [x0, width, y0, height] (sensor pixels; the camera's ``shape`` follows),
        ``pixel_format`` (the driver's name, e.g. "Mono12"), ``gain`` (the driver's unit),
        ``trigger`` = "software" or "hardware" (the camera waits for the SLM's trigger
        line). None leaves a setting as the driver has it. A backend whose driver does not
        offer a setting refuses it (``ConfigError`` naming the key and the backend) before
        anything else is changed on the device.
        """
        self._check_usable()
        unknown = [k for k in settings if k not in self.CAPTURE_SETTINGS]
        if unknown:
            raise ConfigError(f"camera.{unknown[0]}: not a capture setting; known: "
                              f"{', '.join(self.CAPTURE_SETTINGS)}")
        asked = {k: v for k, v in settings.items() if v is not None}
        if "trigger" in asked and asked["trigger"] not in ("software", "hardware"):
            raise ConfigError(f'camera.trigger: expected "software" or "hardware", got '
                              f"{asked['trigger']!r}")
        if "roi" in asked:
            roi = asked["roi"]
            if (not isinstance(roi, (list, tuple)) or len(roi) != 4
                    or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               for v in roi)
                    or roi[0] < 0 or roi[2] < 0 or roi[1] < 1 or roi[3] < 1):
                raise ConfigError(f"camera.roi: expected [x0, width, y0, height] (integers, "
                                  f"x0, y0 >= 0, width, height >= 1), got {roi!r}")
            asked["roi"] = [int(v) for v in roi]
        missing = [k for k in asked if not self._offers(k)]
        if missing:
            k = missing[0]
            raise ConfigError(f"camera.{k}: the {self.backend or type(self).__name__} "
                              f"driver offers no {k} setting through slmsuite; remove the "
                              f"key and set it in the vendor's tool (or the driver's "
                              f"constructor arguments, [camera.args])")
        for k, v in asked.items():
            self._call(getattr(self, f"_set_{k}_hw"), v)
            self.capture_settings[k] = v
        if "roi" in asked:
            self.shape = tuple(int(v) for v in self._shape_hw())
        return dict(self.capture_settings)

    def _offers(self, setting: str) -> bool:
        """Whether the backend can apply a capture setting (override with the hooks)."""
        return False

    def _shape_hw(self) -> tuple[int, int]:
        return self.shape

    def _set_roi_hw(self, roi: list[int]) -> None:
        raise ConfigError("camera.roi: not offered by this backend")

    def _set_pixel_format_hw(self, fmt: str) -> None:
        raise ConfigError("camera.pixel_format: not offered by this backend")

    def _set_gain_hw(self, gain: float) -> None:
        raise ConfigError("camera.gain: not offered by this backend")

    def _set_trigger_hw(self, mode: str) -> None:
        raise ConfigError("camera.trigger: not offered by this backend")

    signals_exposure_end = False
    """True when the backend calls ``_exposure_over()`` as soon as a frame's exposure is
    over (before its readout); a pipelined capture then writes the next pattern at once."""
    exposure_end_event: Any = None  # a threading.Event set by _exposure_over (when given)

    def _exposure_over(self) -> None:
        """Backend hook: the current frame's exposure is over (the SLM may change)."""
        ev = self.exposure_end_event
        if ev is not None:
            ev.set()

    exposes_on_request = False
    """True when a frame's exposure starts when it is asked for (software trigger, the
    simulated camera); with ``trigger = "software"`` set through ``configure_capture``
    too. Else (free-running) it starts within one frame period after the request."""

    def exposure_end_estimate(self, t_request: float, previous_start: float | None = None
                              ) -> tuple[float, float] | None:
        """(start, end) of the exposure of a frame asked for at ``t_request``
        (``time.perf_counter()``), at the latest, or None when the camera's frame timing is
        unknown (``frame_rate_hz`` unset). ``previous_start``: the previous frame's start
        (a camera starts at most one exposure per frame period)."""
        if not self.frame_rate_hz:
            return None
        period = self.frame_period_s()
        try:
            exposure = float(self._get_exposure_hw())
        except Exception:  # noqa: BLE001 - unknown exposure: no estimate
            return None
        if self.exposes_on_request or self.capture_settings.get("trigger") == "software":
            start = t_request if previous_start is None else max(t_request,
                                                                 previous_start + period)
        else:  # free-running: the next exposure starts within a frame period
            start = t_request + period
        return start, start + exposure

    def frame_period_s(self) -> float:
        """The shortest time between two frames: 1 / ``frame_rate_hz``, and never less
        than the exposure (0 when neither is known)."""
        try:
            exposure = float(self._get_exposure_hw())
        except Exception:  # noqa: BLE001 - unknown exposure: the frame rate alone
            exposure = 0.0
        period = 1.0 / self.frame_rate_hz if self.frame_rate_hz else 0.0
        return max(period, exposure if math.isfinite(exposure) else 0.0)

    # exposure
    def set_exposure(self, exposure_s: float) -> float:
        """Set the integration time (seconds); returns what the device reports back.

        Refused (``ValueError``) unless ``0 < exposure_s <= MAX_EXPOSURE_S``.
        """
        self._check_usable()
        s = check_number(exposure_s, "exposure_s", at_most=MAX_EXPOSURE_S, unit=" s")
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
    frame_request_hook: Callable[[], Any] | None = None
    """None, or a callable ``frame_request_hook()`` run before each hardware frame request
    (``_get_image_hw``), in the requesting thread: to count requests, or to raise
    ``FrameDropped``, ``DeviceTimeout`` or ``DeviceDisconnected`` as the device would (a
    fault at a chosen frame, handled exactly as the device's own)."""

    def _grab(self, timeout_s: float) -> tuple[np.ndarray, int]:
        dropped = 0
        last: Exception | None = None
        for _ in range(self.capture_attempts):
            t0 = time.perf_counter()
            try:
                if self.frame_request_hook is not None:
                    self.frame_request_hook()
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
        averaging = check_count(averaging, "averaging")
        t = self.timeout_s if timeout_s is None else check_number(
            timeout_s, "timeout_s", at_most=MAX_TIMEOUT_S, unit=" s")
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
        t = self.timeout_s if timeout_s is None else check_number(
            timeout_s, "timeout_s", at_most=MAX_TIMEOUT_S, unit=" s")
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
            "frame_rate_hz": self.frame_rate_hz,
            **{k: v for k, v in self.capture_settings.items()},
        }
