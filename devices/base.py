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

Seams at the hardware boundary, public, on any backend: ``SLM.write_hook`` runs after each
hardware write, ``Camera.frame_request_hook`` before each hardware frame request (both None
by default), for counting, logging or holding writes and scripting faults at a chosen frame.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from devices._common import MAX_SETTLE_S, _Device, _pair
from devices.camera import Camera, CaptureInfo
from devices.errors import ConfigError, DeviceDisconnected
from devices.phase import finite_bounds, grey_dtype, lut_from_response, phase_to_grey
from simulation.validate import check_number

__all__ = ["SLM", "Camera", "CaptureInfo", "PreparedPhase", "apply_capture_keys"]


@dataclass(frozen=True)
class PreparedPhase:
    """Grey levels converted ahead by ``SLM.prepare_phase`` (shown by ``set_phase``)."""

    display: np.ndarray  # grey levels, SLM shape and dtype
    phase: np.ndarray  # float32 radians at SLM resolution, as asked for
    key: tuple[int, float]  # the LUT and wavelength scaling it was converted with


class SLM(_Device):
    """A phase-only SLM: ``set_phase`` takes radians, shows grey levels.

    ``shape`` is (rows, cols); ``pitch_um`` (x, y) in microns; ``wav_um`` the
    wavelength the phase is meant for. A phase smaller than the SLM (a model grid) is
    upsampled by square blocks of ``s = min(rows // h, cols // w)`` SLM pixels and
    centred; the margin shows ``margin_phase_rad`` (0 by default).

    Wavelength scaling (slmsuite's ``wav_design_um`` and ``phase_scaling``): the grey
    range spans 2π at ``wav_design_um`` (default: ``wav_um``), so at the operating
    wavelength it spans 2π/``phase_scaling``, ``phase_scaling = wav_um / wav_design_um``.
    Without a LUT, ``set_phase`` wraps the phase to [0, 2π) and shows
    φ·``phase_scaling`` on the ideal response: a phase means the same delay whoever
    shows it. With ``phase_scaling > 1`` the grey range cannot reach 2π and, without a
    LUT, ``set_phase`` refuses (``ConfigError``) instead of truncating as slmsuite does. A
    measured response (``set_phase_response``, a LUT) already maps radians at ``wav_um``
    to grey levels and supersedes the scaling, as in slmsuite.
    """

    kind = "slm"

    def __init__(
        self,
        *,
        shape: tuple[int, int],
        bitdepth: int = 8,
        pitch_um: float | tuple[float, float] = 8.0,
        wav_um: float = 0.633,
        wav_design_um: float | None = None,
        settle_time_s: float = 0.0,
        refresh_hz: float | None = None,
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
        self.wav_um = check_number(wav_um, "wav_um")
        self.wav_design_um = (self.wav_um if wav_design_um is None
                              else check_number(wav_design_um, "wav_design_um"))
        self.settle_time_s = check_number(settle_time_s, "settle_time_s", at_most=MAX_SETTLE_S,
                                          unit=" s", allow_zero=True)
        self.refresh_hz: float | None = None
        self.set_refresh_hz(refresh_hz)
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

    @property
    def phase_scaling(self) -> float:
        """``wav_um / wav_design_um``: the fraction of the grey range 2π needs (slmsuite)."""
        return self.wav_um / self.wav_design_um

    def display_scaling(self) -> float | None:
        """The factor ``set_phase`` applies to the wrapped phase, or None when none is.

        None with a LUT (it supersedes the scaling) or when ``phase_scaling`` is 1.
        Raises ``ConfigError`` when the grey range cannot reach 2π and no LUT is loaded.
        """
        if self.lut is not None:
            return None
        ps = self.phase_scaling
        if abs(ps - 1.0) <= 1e-9:
            return None
        if ps > 1.0:
            raise ConfigError(
                f"slm '{self.name}': its grey range spans 2π at wav_design_um = "
                f"{self.wav_design_um:g} µm, only {2 / ps:.3g}π at wav_um = {self.wav_um:g} "
                f"µm (phase_scaling {ps:.4g} > 1), so phases up to 2π cannot be shown; load "
                "a measured phase response (LUT: `hil calibrate --steps lut`) or use an SLM "
                f"designed for at least {self.wav_um:g} µm")
        return ps

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

    def set_refresh_hz(self, refresh_hz: float | None) -> None:
        """The panel's refresh rate (Hz), or None when unknown.

        A write lands on the panel at its next refresh. A driver that returns only once
        its frame is shown (``waits_for_refresh``: a vsync-locked display, the simulated
        SLM) needs nothing more; for any other the settle wait of ``set_phase`` adds one
        refresh period (the worst case) before counting ``settle_time_s``.
        """
        if refresh_hz is None:
            self.refresh_hz = None
            return
        self.refresh_hz = check_number(refresh_hz, "refresh_hz")

    waits_for_refresh = False
    """True when ``_set_phase_hw`` returns only once the frame is on the panel."""

    def write_to_settled_s(self) -> float:
        """Seconds from the return of a write to a settled pattern: ``settle_time_s``, plus
        one refresh period when the driver does not wait for the refresh itself."""
        wait = self.settle_time_s
        if self.refresh_hz and not self.waits_for_refresh:
            wait += 1.0 / self.refresh_hz
        return wait

    def settled_at(self) -> float:
        """``time.perf_counter()`` at which the last pattern written has settled."""
        if self.last_write_time is None:
            return 0.0
        return self.last_write_time + self.write_to_settled_s()

    def wait_settled(self) -> float:
        """Sleep until the last pattern written has settled; returns the seconds slept."""
        left = self.settled_at() - time.perf_counter()
        if left > 0:
            time.sleep(left)
            return left
        return 0.0

    def _checked_grey(self, phase_rad: Any, display: np.ndarray, phase_out: np.ndarray,
                      before_write: Any = None) -> None:
        """Check a phase and convert it into ``display`` (grey) and ``phase_out`` (float32,
        the phase asked for at SLM resolution): nothing is sent to the device.
        ``before_write`` runs after every check, before the buffers are overwritten."""
        p = self._as_phase(phase_rad)
        lo, hi = finite_bounds(p)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int(np.count_nonzero(~np.isfinite(p)))
            raise ValueError(f"phase_rad: expected finite values, got {bad} NaN or infinite")
        scaling = self.display_scaling()  # refuses before anything is written
        if before_write is not None:
            before_write()
        if scaling is None and p.shape == self.shape and p.dtype == np.float32 \
                and p.flags.c_contiguous:
            # one blocked pass: copy into the phase buffer and convert, in cache
            phase_to_grey(p, self.bitdepth, self.lut, out=display, bounds=(lo, hi),
                          copy_to=phase_out)
            return
        if p.shape == self.shape:
            np.copyto(phase_out, p, casting="unsafe")
        else:
            h, w = p.shape
            s = self.block_size(p.shape)
            r0, c0 = (self.shape[0] - h * s) // 2, (self.shape[1] - w * s) // 2
            if (h * s, w * s) != self.shape:
                phase_out.fill(self.margin_phase_rad)
                lo, hi = min(lo, self.margin_phase_rad), max(hi, self.margin_phase_rad)
            view = phase_out[r0:r0 + h * s, c0:c0 + w * s].reshape(h, s, w, s)
            np.copyto(view, p[:, None, :, None], casting="unsafe")
        src = phase_out
        if scaling is not None:
            # as slmsuite: scale a copy, so ``phase`` keeps what was asked for
            src = np.mod(phase_out, np.float32(2 * np.pi))
            src *= np.float32(scaling)
            lo, hi = 0.0, 2 * np.pi * scaling
        phase_to_grey(src, self.bitdepth, self.lut, out=display, bounds=(lo, hi))

    def prepare_phase(self, phase_rad: Any) -> PreparedPhase:
        """Check and convert a phase into grey levels without touching the device.

        Returns a ``PreparedPhase`` that ``set_phase`` then shows with a copy only, so
        the conversion can run ahead, in another thread, while the camera exposes and
        reads the previous pattern (``calibration.imaging``'s pipelined capture). It
        carries the LUT it was converted with: ``set_phase`` refuses it after the LUT
        or the wavelength scaling changed.
        """
        self._check_usable()
        display = np.empty(self.shape, dtype=self.dtype)
        phase = np.empty(self.shape, dtype=np.float32)
        self._checked_grey(phase_rad, display, phase)
        return PreparedPhase(display, phase, self._conversion_key())

    def _settle_after_write(self, settle: bool | float) -> None:
        """The wait after a write: ``True`` until settled, a number of seconds, or none."""
        if settle is True:
            self.wait_settled()
        elif settle is not False and settle:
            time.sleep(check_number(settle, "settle", at_most=MAX_SETTLE_S, unit=" s",
                                    allow_zero=True))

    def _conversion_key(self) -> tuple[int, float]:
        return (id(self.lut), self.phase_scaling)

    def set_phase(self, phase_rad: Any, settle: bool | float = True) -> np.ndarray:
        """Show a phase (radians, or a ``PreparedPhase``) and return the grey levels shown.

        The returned array is the SLM's ``display`` buffer (as in slmsuite): the next
        ``set_phase`` overwrites it, so copy it to keep it. ``settle=True`` waits
        ``write_to_settled_s()`` after the write (``settle_time_s``, plus a refresh period
        when the driver does not wait for the refresh), a number waits that many seconds,
        ``False`` returns at once (``wait_settled`` waits later). Non-finite values, and a
        phase this SLM cannot reach (see ``display_scaling``), are refused before
        anything reaches the device. Every caller (bench runs, calibration, ``hil mask
        push``) goes through here, so the wavelength scaling and the LUT are applied
        once, the same way for all.
        """
        self._check_usable()
        if isinstance(phase_rad, PreparedPhase):
            if phase_rad.key != self._conversion_key() or phase_rad.display.shape != self.shape:
                raise ValueError("phase_rad: a PreparedPhase converted before the LUT or the "
                                 "wavelength scaling changed (or for another SLM); prepare "
                                 "it again")
            self._before_write()
            np.copyto(self.display, phase_rad.display)
            np.copyto(self._phase, phase_rad.phase)
        else:
            # every check runs before the first byte of display is overwritten
            self._checked_grey(phase_rad, self.display, self._phase, self._before_write)
        display = self.display
        self._write_hw(display)
        self._settle_after_write(settle)
        return display

    def set_grey_levels(self, levels: Any, settle: bool | float = True) -> np.ndarray:
        """Show integer grey levels as they are (no LUT, no wavelength scaling).

        For measuring the phase response (calibration's LUT step sweeps the levels, as
        slmsuite's pixel calibration does); everything else shows phases with
        ``set_phase``. ``levels``: integers of shape ``self.shape`` in
        [0, 2**bitdepth). ``phase`` becomes the delay each level shows on the ideal
        response at ``wav_um``. Returns the ``display`` buffer, as ``set_phase``.
        """
        self._check_usable()
        g = levels.detach().cpu().numpy() if hasattr(levels, "detach") else levels
        if not isinstance(g, np.ndarray) or g.dtype.kind not in "iu":
            raise TypeError(f"levels: expected an integer numpy array, got "
                            f"{getattr(g, 'dtype', type(g).__name__)}")
        if g.shape != self.shape:
            raise ValueError(f"levels: expected shape {self.shape}, got {g.shape}")
        if g.size and (int(g.min()) < 0 or int(g.max()) >= self.bitresolution):
            raise ValueError(f"levels: expected grey levels in [0, {self.bitresolution - 1}], "
                             f"got [{int(g.min())}, {int(g.max())}]")
        self._before_write()
        np.copyto(self.display, g, casting="unsafe")
        delay = (2 * np.pi / (self.bitresolution * self.phase_scaling)) * (
            self.bitresolution - 1 - self.display.astype(np.float32))
        np.copyto(self._phase, delay, casting="unsafe")
        self._write_hw(self.display)
        self._settle_after_write(settle)
        return self.display

    write_hook: Callable[[np.ndarray], Any] | None = None
    """None, or a callable ``write_hook(display)`` run after each hardware write
    (``_set_phase_hw``) returns, before ``last_write_time`` is set, in the writing thread:
    to count, log or copy what reached the device (``display`` is the SLM's buffer: copy it
    to keep it). The write completes only once it returns."""

    def _write_hw(self, display: np.ndarray) -> None:
        """The hardware write of ``set_phase`` and ``set_grey_levels``: ``_set_phase_hw``,
        then ``write_hook``, then ``last_write_time``."""
        try:
            self._set_phase_hw(display)
        except DeviceDisconnected as exc:
            raise self._mark_disconnected(exc) from exc
        if self.write_hook is not None:
            self.write_hook(display)
        self.last_write_time = time.perf_counter()

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
            "wav_design_um": self.wav_design_um,
            "settle_time_s": self.settle_time_s,
            "refresh_hz": self.refresh_hz,
            "phase_lut": None if self.lut is None else int(self.lut.size),
            "zero_phase_grey": self.bitresolution - 1,
        }


def apply_capture_keys(slm: SLM, camera: Camera, slm_cfg: dict[str, Any],
                       camera_cfg: dict[str, Any]) -> None:
    """Apply the bench file's timing and capture keys to opened devices.

    ``[slm] refresh_hz``, ``[camera] frame_rate_hz`` (timing: simulated on a simulated
    bench, what the capture path plans with on a real one) and ``[camera] roi``,
    ``pixel_format``, ``gain``, ``trigger`` (``Camera.configure_capture``: passed to the
    slmsuite driver where it offers them, refused with a ``ConfigError`` where not).
    """
    slm.set_refresh_hz(slm_cfg.get("refresh_hz"))
    rate = camera_cfg.get("frame_rate_hz")
    camera.frame_rate_hz = None if rate is None else float(rate)
    settings = {k: camera_cfg.get(k) for k in Camera.CAPTURE_SETTINGS}
    if any(v is not None for v in settings.values()):
        camera.configure_capture(**settings)
