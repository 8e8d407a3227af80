"""Our ``SLM`` (here) and ``Camera`` (``devices.camera``, re-exported): every check,
conversion and recovery lives in these base classes, none in the backends.

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
from abc import abstractmethod
from typing import Any

import numpy as np

from devices._common import _Device, _pair, _positive
from devices.camera import Camera, CaptureInfo
from devices.errors import DeviceDisconnected
from devices.phase import finite_bounds, grey_dtype, lut_from_response, phase_to_grey

__all__ = ["SLM", "Camera", "CaptureInfo"]  # Camera lives in devices.camera


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
        lo, hi = finite_bounds(p)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int(np.count_nonzero(~np.isfinite(p)))
            raise ValueError(f"phase_rad: expected finite values, got {bad} NaN or infinite")
        self._before_write()
        if p.shape == self.shape and p.dtype == np.float32 and p.flags.c_contiguous:
            # one blocked pass: copy into self.phase and convert, in cache
            display = phase_to_grey(p, self.bitdepth, self.lut, out=self.display,
                                    bounds=(lo, hi), copy_to=self._phase)
        else:
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
            display = phase_to_grey(self._phase, self.bitdepth, self.lut, out=self.display,
                                    bounds=(lo, hi))
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
