"""Our ``SLM`` and ``Camera``: every check, conversion and recovery lives here.

The split is slmsuite's: the public methods (``set_phase``, ``get_image``,
``set_exposure``, ...) validate their input, wrap and quantise phase through the
look-up table (``devices.phase``: the sign convention is written there), average
frames, retry dropped frames, turn hangs into ``DeviceTimeout`` and record what
was captured. A backend implements only tiny hooks:

* SLM: ``_set_phase_hw(display)`` (integer grey levels at SLM resolution), ``_close_hw()``;
* Camera: ``_get_image_hw(timeout_s)`` (one raw frame or ``FrameDropped`` /
  ``DeviceTimeout`` / ``DeviceDisconnected``), ``_set_exposure_hw(s)``,
  ``_get_exposure_hw()``, ``_close_hw()`` and optionally ``_flush_hw(timeout_s)``.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from devices.errors import DeviceDisconnected, DeviceError, DeviceTimeout, FrameDropped
from devices.phase import grey_dtype, lut_from_response, phase_to_grey

__all__ = ["SLM", "Camera", "CaptureInfo"]


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return v


def _pair(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    x, y = (float(v) for v in value)
    _positive(x, name)
    _positive(y, name)
    return (x, y)


class _Device(ABC):
    kind = "device"

    def __init__(self, *, name: str, device_id: str, backend: str) -> None:
        self.name = str(name)
        self.device_id = str(device_id)
        self.backend = str(backend)
        self._closed = False
        self._disconnected: str | None = None

    def _check_usable(self) -> None:
        if self._closed:
            raise DeviceError(f"{self.kind} '{self.name}': already closed")
        if self._disconnected is not None:
            raise DeviceDisconnected(
                f"{self.kind} '{self.name}' disconnected earlier ({self._disconnected}); "
                "reopen the bench"
            )

    def _mark_disconnected(self, exc: BaseException) -> DeviceDisconnected:
        self._disconnected = str(exc) or type(exc).__name__
        if isinstance(exc, DeviceDisconnected):
            return exc
        return DeviceDisconnected(f"{self.kind} '{self.name}' disconnected: {exc}")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the device; safe to call twice and after a disconnect."""
        if self._closed:
            return
        self._closed = True
        self._close_hw()

    @abstractmethod
    def _close_hw(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}' backend={self.backend!r}>"


class SLM(_Device):
    """A phase-only SLM: ``set_phase`` takes radians, shows grey levels.

    ``shape`` is (rows, cols); ``pitch_um`` (x, y) in microns; ``wav_um`` the
    wavelength the phase is meant for. A phase smaller than the SLM (a model grid) is
    upsampled by square blocks of ``s = min(rows // h, cols // w)`` SLM pixels and
    centred; the margin shows ``margin_phase_rad`` (0 by default).
    """

    kind = "slm"

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        bitdepth: int = 8,
        pitch_um: float | tuple[float, float] = 8.0,
        wav_um: float = 0.633,
        settle_time_s: float = 0.0,
        name: str = "slm",
        device_id: str = "",
        backend: str = "",
    ) -> None:
        super().__init__(name=name, device_id=device_id or name, backend=backend)
        rows, cols = (int(v) for v in shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"shape: expected (rows, cols) > 0, got {shape!r}")
        if not 1 <= int(bitdepth) <= 16:
            raise ValueError(f"bitdepth: expected an integer in [1, 16], got {bitdepth!r}")
        self.shape = (rows, cols)
        self.bitdepth = int(bitdepth)
        self.bitresolution = 2**self.bitdepth
        self.dtype = grey_dtype(self.bitdepth)
        self.pitch_um = _pair(pitch_um, "pitch_um")
        self.wav_um = _positive(wav_um, "wav_um")
        self.settle_time_s = _positive(settle_time_s, "settle_time_s", allow_zero=True)
        self.margin_phase_rad = 0.0
        self.lut: np.ndarray | None = None
        self.phase_response_rad: np.ndarray | None = None
        self._phase = np.zeros(self.shape, dtype=np.float32)
        self._scratch = np.empty(self.shape, dtype=np.float32)
        self.display = np.full(self.shape, self.bitresolution - 1, dtype=self.dtype)
        self.last_write_time: float | None = None

    @property
    def phase(self) -> np.ndarray:
        """The last phase asked for (radians, float32, SLM resolution, before wrapping)."""
        return self._phase

    def set_phase_response(self, response_rad: np.ndarray | None, lut_size: int = 2**14) -> None:
        """Use a measured grey -> delay curve (radians per level); ``None`` = ideal."""
        if response_rad is None:
            self.lut = self.phase_response_rad = None
            return
        r = np.asarray(response_rad, dtype=np.float64).ravel()
        if r.size != self.bitresolution:
            raise ValueError(
                f"response_rad: expected {self.bitresolution} values (one per grey level), "
                f"got {r.size}"
            )
        self.lut = lut_from_response(r, lut_size)
        self.phase_response_rad = r

    def _as_phase(self, phase_rad: Any) -> np.ndarray:
        if hasattr(phase_rad, "detach"):  # a torch tensor, without importing torch here
            phase_rad = phase_rad.detach().cpu().numpy()
        if not isinstance(phase_rad, np.ndarray):
            raise TypeError(
                f"phase_rad: expected a numpy array or torch tensor, got {type(phase_rad).__name__}"
            )
        if phase_rad.dtype.kind in "iub":
            raise TypeError(
                f"phase_rad: expected float radians, got integer dtype {phase_rad.dtype} "
                "(grey levels are not accepted; convert to radians first)"
            )
        if phase_rad.dtype.kind != "f":
            raise TypeError(f"phase_rad: expected real float radians, got dtype {phase_rad.dtype}")
        if phase_rad.ndim != 2:
            raise ValueError(f"phase_rad: expected a 2-D (rows, cols) array, got shape "
                             f"{phase_rad.shape}")
        h, w = phase_rad.shape
        rows, cols = self.shape
        if h < 1 or w < 1 or h > rows or w > cols:
            raise ValueError(
                f"phase_rad: expected shape {self.shape} or a smaller model grid, got {(h, w)}"
            )
        return phase_rad

    def block_size(self, model_shape: tuple[int, int]) -> int:
        """SLM pixels per model pixel (side of the square block) for a model grid."""
        return min(self.shape[0] // int(model_shape[0]), self.shape[1] // int(model_shape[1]))

    def set_phase(self, phase_rad: Any, settle: bool | float = True) -> np.ndarray:
        """Show a phase (radians) and return the grey levels displayed.

        The returned array is the SLM's ``display`` buffer (as in slmsuite): the next
        ``set_phase`` overwrites it, so copy it to keep it. ``settle=True`` waits
        ``settle_time_s`` after the write, a number waits that many seconds, ``False``
        returns at once. Non-finite values are refused before anything
        reaches the device.
        """
        self._check_usable()
        p = self._as_phase(phase_rad)
        lo, hi = float(np.min(p)), float(np.max(p))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int(np.count_nonzero(~np.isfinite(p)))
            raise ValueError(f"phase_rad: expected finite values, got {bad} NaN or infinite")
        if p.shape == self.shape:
            np.copyto(self._phase, p, casting="unsafe")
        else:
            h, w = p.shape
            s = self.block_size(p.shape)
            r0, c0 = (self.shape[0] - h * s) // 2, (self.shape[1] - w * s) // 2
            if (h * s, w * s) != self.shape:
                self._phase.fill(self.margin_phase_rad)
                lo, hi = min(lo, self.margin_phase_rad), max(hi, self.margin_phase_rad)
            view = self._phase[r0:r0 + h * s, c0:c0 + w * s].reshape(h, s, w, s)
            np.copyto(view, p[:, None, :, None], casting="unsafe")
        self._before_write()
        display = phase_to_grey(
            self._phase, self.bitdepth, self.lut, out=self.display, scratch=self._scratch,
            bounds=(lo, hi),
        )
        try:
            self._set_phase_hw(display)
        except DeviceDisconnected as exc:
            raise self._mark_disconnected(exc) from exc
        self.last_write_time = time.perf_counter()
        wait = self.settle_time_s if settle is True else (0.0 if settle is False else settle)
        if wait:
            wait = _positive(wait, "settle", allow_zero=True)
            time.sleep(wait)
        return display

    def _before_write(self) -> None:
        """Hook: runs just before ``display`` is overwritten with the new grey levels."""

    @abstractmethod
    def _set_phase_hw(self, display: np.ndarray) -> None:
        """Send integer grey levels (shape ``self.shape``, ``self.dtype``) to the device."""

    def info(self) -> dict[str, Any]:
        """Identity and settings, JSON-friendly."""
        return {
            "kind": self.kind,
            "name": self.name,
            "device_id": self.device_id,
            "backend": self.backend,
            "shape": list(self.shape),
            "bitdepth": self.bitdepth,
            "pitch_um": list(self.pitch_um),
            "wav_um": self.wav_um,
            "settle_time_s": self.settle_time_s,
            "phase_lut": None if self.lut is None else int(self.lut.size),
            "zero_phase_grey": self.bitresolution - 1,
        }


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
        self.timeout_s = _positive(timeout_s, "timeout_s")
        self.flush_frames = int(flush_frames)
        self.last_capture_info: CaptureInfo | None = None
        self.frames_dropped_total = 0

    # exposure
    def set_exposure(self, exposure_s: float) -> float:
        """Set the integration time (seconds); returns what the device reports back."""
        self._check_usable()
        s = _positive(exposure_s, "exposure_s")
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
        t = self.timeout_s if timeout_s is None else _positive(timeout_s, "timeout_s")
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
        t = self.timeout_s if timeout_s is None else _positive(timeout_s, "timeout_s")
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
