"""The simulated camera: slmsuite's ``SimulatedCamera`` in the SLM's Fourier plane, with
a photon budget, noise, zero-order leakage, the camera-side flaws, faults and frame timing.

One frame (``_get_image_hw``), as a software-triggered camera takes it:

1. faults: a disconnect after ``disconnect_after_frames``, a time-out (the frame never
   comes) with ``timeout_probability``, a dropped frame with ``drop_probability``; then
   ``frame_latency_s``;
2. the exposure starts, at most one per frame period (``frame_rate_hz``): the camera takes
   an ``ExposureState``, the SLM as displayed at that instant (``SimSLM.displayed``: grey
   levels, settling) and the light (laser power and this frame's draws of the power
   fluctuation and flicker flaws);
3. the exposure lasts ``exposure_s`` (modelled time, with ``frame_rate_hz``), then the
   camera signals its end (``Camera._exposure_over``): the SLM may change from here on;
4. the frame is rendered from the ``ExposureState`` during the readout, so the render
   costs no SLM time and a frame always shows the one pattern displayed when its exposure
   started; it arrives one frame period after its exposure started, or when the render
   is done if that takes longer.

Without ``frame_rate_hz`` no time is modelled: the frame is rendered at once.

The render (``render_frame``): with ``noise = false``, no leakage, no ``[sim_flaws]`` and
the laser at its reference power, a frame is slmsuite's own ``get_image()`` of the
displayed grey levels (the reference). Every other frame's far field comes from
``devices.sim_render`` (``renderer = "fast"``, tested equal to slmsuite's to 1e-5 of the
peak) or, with ``renderer = "slmsuite"``, from slmsuite's render (flaw-free SLM only);
then the photon budget (``photons_per_s`` photoelectrons per second over the whole far
field at the reference power), the zero order (a fraction ``zero_order_fraction`` of the
light unmodulated, added incoherently), ghost, vignetting, background, Poisson shot noise,
Gaussian read noise (``read_noise_e``), the hidden dark level and gain, hot pixels,
clipping and the non-linearity, in that order of the light path. slmsuite reads the
snapshot through a stand-in for its SLM (``_FrozenSLM``), never the live display.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from devices.errors import DeviceDisconnected, DeviceTimeout, FrameDropped
from devices.flaws import Flaws
from devices.sim_detector import ghost, shot_noise
from devices.sim_slm import DisplayedFrame, SimSLM, quiet_slmsuite
from devices.slmsuite_adapter import SlmsuiteCamera

__all__ = ["SimCamera", "ExposureState"]


@dataclass(frozen=True)
class ExposureState:
    """What one exposure sees, fixed when it starts (``SimCamera.exposure_state``)."""

    displayed: DisplayedFrame  # the SLM
    power_fraction: float  # laser power / reference, this frame's fluctuation included
    flicker_rad: float  # this frame's flicker draw (radians at a 2*pi delay; 0: none)
    exposure_s: float
    drift_px: tuple[float, float]  # camera image shift (x, y), drift flaw


class _FrozenSLM:
    """slmsuite's SLM as slmsuite's camera reads it, with a fixed ``display``."""

    def __init__(self, slm: Any, display: np.ndarray) -> None:
        self._live = slm
        self.display = display

    def __getattr__(self, name: str) -> Any:
        return getattr(self._live, name)


class SimCamera(SlmsuiteCamera):
    """Our camera around slmsuite's ``SimulatedCamera`` in the SLM's Fourier plane."""

    def __init__(
        self,
        slm: SimSLM,
        *,
        shape: tuple[int, int] = (512, 512),
        bitdepth: int = 12,
        pitch_um: float = 5.5,
        focal_length_mm: float = 50.0,
        exposure_s: float = 1e-3,
        photons_per_s: float = 1e9,
        reference_power_mW: float = 1.0,
        gain_counts_per_electron: float = 0.4,
        read_noise_e: float = 5.0,
        noise: bool = True,
        zero_order_fraction: float = 0.0,
        frame_latency_s: float = 0.0,
        drop_probability: float = 0.0,
        timeout_probability: float = 0.0,
        disconnect_after_frames: int = 0,
        capture_attempts: int = 5,
        timeout_s: float = 1.0,
        seed: int = 0,
        flaws: Flaws | None = None,
        name: str = "sim-camera",
        device_id: str = "",
    ) -> None:
        quiet_slmsuite()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from slmsuite.hardware.cameras.simulated import SimulatedCamera

        flaws = flaws or Flaws()
        rows, cols = shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from slmsuite.holography.toolbox import build_affine

            offset = (cols / 2 + flaws.offset_px[0], rows / 2 + flaws.offset_px[1])
            M, b = build_affine(focal_length_mm * flaws.scale / 1000.0, units="m",
                                theta=math.radians(flaws.rotation_deg), offset=offset,
                                cam_pitch_um=(pitch_um, pitch_um), wav_um=slm.wav_um)
            if flaws.camera_mirror:  # camera x flipped about the optical axis
                M = np.diag([-1.0, 1.0]) @ np.asarray(M, dtype=float)
            sc = SimulatedCamera(slm.wrapped, resolution=(cols, rows), M=M, b=b,
                                 pitch_um=(pitch_um, pitch_um), bitdepth=bitdepth, gain=1.0,
                                 name=name)
        sc.set_exposure(float(exposure_s))
        super().__init__(sc, name=name, backend="sim", capture_attempts=capture_attempts,
                         timeout_s=timeout_s, pitch_um=pitch_um,
                         device_id=device_id or f"sim:camera:{name}")
        self.slm = slm
        self.flaws = flaws
        self.affine = (np.asarray(M, dtype=float), np.asarray(b, dtype=float))
        self.focal_length_mm = float(focal_length_mm)
        self.photons_per_s = float(photons_per_s)
        self.reference_power_mW = float(reference_power_mW)
        self.gain_counts_per_electron = float(gain_counts_per_electron) * flaws.gain_factor
        self.read_noise_e = float(read_noise_e)
        self.noise = bool(noise)
        self.dark_level_counts = flaws.dark_level_frac * (2**bitdepth - 1) if noise else 0.0
        self.zero_order_fraction = float(zero_order_fraction)
        self.frame_latency_s = float(frame_latency_s)
        self.drop_probability = float(drop_probability)
        self.timeout_probability = float(timeout_probability)
        self.disconnect_after_frames = int(disconnect_after_frames)
        self.power_fraction: Callable[[], float] | None = None
        # slmsuite's far field carries sum(amplitude**2) in all (Parseval): normalise it away
        amp = np.asarray(slm.wrapped.source["amplitude_sim"], dtype=np.float64)
        self._farfield_total = float(np.sum(amp**2))
        ss = np.random.SeedSequence([int(seed), 0xCA3])
        noise_seq, fault_seq, flaw_seq = ss.spawn(3)
        self._rng = np.random.default_rng(noise_seq)
        self._fault_rng = np.random.default_rng(fault_seq)
        self._flaw_rng = np.random.default_rng(flaw_seq)  # power fluctuation, flicker
        self.frames_delivered = 0
        self._flat_unit: np.ndarray | None = None
        self.renderer = "fast"
        self._fast: Any = None  # devices.sim_render.FarFieldRenderer, built on first use
        self._flat_key: Any = None
        self._cam_cache: dict[str, Any] = {}

    exposes_on_request = True  # software-triggered: see the frame timing below
    signals_exposure_end = True  # _exposure_over() once the modelled exposure is over

    def _offers(self, setting: str) -> bool:
        """No capture settings (roi, gain, ...): the render draws the whole frame."""
        return False

    # faults and timing
    def _get_image_hw(self, timeout_s: float) -> np.ndarray:
        if self.disconnect_after_frames and self.frames_delivered >= self.disconnect_after_frames:
            raise DeviceDisconnected(
                f"camera '{self.name}': simulated disconnect after "
                f"{self.disconnect_after_frames} frames"
            )
        r_timeout, r_drop = self._fault_rng.random(2)
        if r_timeout < self.timeout_probability:
            time.sleep(timeout_s + self.wrapped.exposure_s)
            raise DeviceTimeout("simulated: the frame never arrived")
        if r_drop < self.drop_probability:
            raise FrameDropped("simulated dropped frame")
        if self.frame_latency_s:
            time.sleep(self.frame_latency_s)
        # frame timing (``frame_rate_hz``): a software-triggered camera starts an exposure
        # at most every frame period; the frame arrives one period after its exposure
        # started (exposure + readout), or once rendered if that takes longer
        period = self.frame_period_s() if self.frame_rate_hz else 0.0
        start = time.perf_counter()
        if period:
            earliest = getattr(self, "_last_exposure_start", -math.inf) + period
            if start < earliest:
                time.sleep(earliest - start)
                start = earliest
            self._last_exposure_start = start
        state = self.exposure_state()  # the SLM and the light as the exposure starts
        self.last_exposure_start = state.displayed.time
        if period:
            left = start + state.exposure_s - time.perf_counter()
            if left > 0:  # the exposure lasts until here
                time.sleep(left)
        self._exposure_over()  # the SLM may change now: the frame renders from ``state``
        frame = self.render_frame(state)
        if period:
            left = start + period - time.perf_counter()
            if left > 0:  # the rest of the readout
                time.sleep(left)
        self.frames_delivered += 1
        return frame

    def _flush_hw(self, timeout_s: float) -> None:
        if self.frame_latency_s:
            time.sleep(self.frame_latency_s)

    # what an exposure sees
    def current_power_fraction(self) -> float:
        """Laser power relative to the reference (1 without a laser)."""
        return 1.0 if self.power_fraction is None else max(0.0, float(self.power_fraction()))

    def exposure_state(self) -> ExposureState:
        """The SLM as displayed now and the light of this frame (draws the power
        fluctuation, then the flicker, from the flaw stream: one draw each per frame)."""
        fl = self.flaws
        displayed = self.slm.displayed()
        p = self.current_power_fraction()
        if fl.power_fluctuation_rms and p > 0:
            p *= max(0.0, 1.0 + fl.power_fluctuation_rms * float(self._flaw_rng.standard_normal()))
        flicker = 0.0
        if fl.flicker_rad_rms and p > 0 and self.renderer == "fast":
            flicker = fl.flicker_rad_rms * float(self._flaw_rng.standard_normal())
        return ExposureState(displayed=displayed, power_fraction=p, flicker_rad=flicker,
                             exposure_s=float(self.wrapped.exposure_s),
                             drift_px=self._drift_shift())

    def _drift_shift(self) -> tuple[float, float]:
        """Camera image shift now (x, y), in steps of 1/20 pixel (drift flaw)."""
        if not self.flaws.drift_px_per_kframe:
            return (0.0, 0.0)
        dx, dy = self.flaws.drift_px(self.frames_delivered)
        return (round(dx * 20) / 20, round(dy * 20) / 20)

    # optics
    @contextmanager
    def _slmsuite_showing(self, display: np.ndarray) -> Iterator[Any]:
        """slmsuite's camera (``self.wrapped``) reading the grey levels ``display`` through
        a stand-in for its SLM (``_FrozenSLM``): the live display is never read or changed."""
        sc = self.wrapped
        live = sc._slm
        sc._slm = _FrozenSLM(live, display)
        try:
            yield sc
        finally:
            sc._slm = live

    def _slmsuite_render(self, display: np.ndarray) -> np.ndarray:
        """slmsuite's far field (``SimulatedCamera._render``) of the grey levels ``display``."""
        with self._slmsuite_showing(display) as sc:
            return np.asarray(sc._render(), dtype=np.float64)

    def _flat_far_field(self, shift: tuple[float, float]) -> np.ndarray:
        """Unit-gain far field of an unmodulated (flat) SLM, cached: the zero order."""
        if self.renderer == "fast":
            if self._flat_key != shift:
                w = self.slm.wrapped
                self._flat_unit = self.fast_renderer().intensity(
                    w.source["amplitude_sim"], w.source["phase_sim"], shift)
                self._flat_key = shift
            return self._flat_unit
        if self._flat_key != "slmsuite":
            self._flat_unit = self._slmsuite_render(np.zeros_like(self.slm.display))
            self._flat_key = "slmsuite"
        return self._flat_unit

    def fast_renderer(self) -> Any:
        """The fast far-field renderer (``devices.sim_render.FarFieldRenderer``, built on
        first use, then kept): its ``workers`` sets the FFT threads of every render."""
        if self._fast is None:
            from devices.sim_render import FarFieldRenderer

            self._fast = FarFieldRenderer(self.wrapped)
        return self._fast

    def _slm_phase(self, state: ExposureState | None = None) -> np.ndarray:
        """The phase the SLM imposes in an exposure (radians, float32), with its flaws.

        The delay of the displayed grey levels (slmsuite's ``_display2phase``, through
        the hidden response), moved only the settled fraction of the way from the last
        pattern, scaled by the span map and the frame's flicker, blurred by the pixel
        crosstalk, plus the hidden aberration. ``state``: default, the SLM now.
        """
        if state is None:
            state = ExposureState(self.slm.displayed(), 1.0, 0.0, 0.0, (0.0, 0.0))
        shown, fl = state.displayed, self.flaws
        w = self.slm.wrapped
        delay = w._display2phase(shown.display, dtype=np.float32)
        if shown.settled < 1.0 and shown.previous is not None:
            prev = w._display2phase(shown.previous, dtype=np.float32)
            delay = prev + (delay - prev) * np.float32(shown.settled)
        if fl.phase_span_variation:
            span = self._cam_cache.get("span")
            if span is None:
                span = self._cam_cache["span"] = fl.span_map(self.slm.shape)
            delay = delay * span
        if state.flicker_rad:
            delay = delay * np.float32(1.0 + state.flicker_rad / (2 * np.pi))
        if fl.crosstalk_sigma_px:
            from scipy.ndimage import gaussian_filter

            delay = gaussian_filter(delay, fl.crosstalk_sigma_px, mode="nearest", truncate=3.0)
        delay = delay - delay.min()
        delay += np.asarray(w.source["phase_sim"], dtype=np.float32)
        return delay

    def far_field(self, state: ExposureState | None = None,
                  shift_px: tuple[float, float] | None = None) -> np.ndarray:
        """The noise-free far field of an exposure on the camera pixels, through the fast
        renderer (float64, slmsuite's ``_render`` scale: unit gain, no counts).

        The SLM's phase with its flaws (``state``: default, the SLM as displayed now, no
        flicker), the image moved by ``shift_px`` (x, y) camera pixels (default: the state's
        drift; none without a state). ``render_frame`` scales it into counts
        (``render_gain``), then adds the zero order, ghost, vignetting and noise.
        """
        if state is None:
            state = ExposureState(self.slm.displayed(), 1.0, 0.0, 0.0, (0.0, 0.0))
        return self.fast_renderer().intensity(self.slm.wrapped.source["amplitude_sim"],
                                              self._slm_phase(state),
                                              state.drift_px if shift_px is None else shift_px)

    def render_gain(self, power_fraction: float = 1.0) -> float:
        """Counts per second per unit of far field (slmsuite's ``_render`` scale) at
        ``power_fraction`` of the reference power: the ``gain`` ``render_frame`` gives
        slmsuite's camera (``wrapped.gain``) before a frame."""
        return (self.photons_per_s * self.gain_counts_per_electron * power_fraction
                / self._farfield_total)

    # the frame
    def render_frame(self, state: ExposureState | None = None) -> np.ndarray:
        """One frame of the exposure ``state`` (default: one starting now); no faults, no
        timing. The reference path, the fast and the slmsuite renderer: module docstring."""
        if state is None:
            state = self.exposure_state()
        sc = self.wrapped
        fl = self.flaws
        p = state.power_fraction
        sc.gain = self.render_gain(p)
        flawed = fl.camera_side or fl.slm_dynamic
        if not self.noise and self.zero_order_fraction == 0 and not flawed:
            # the reference: slmsuite's own frame of the displayed grey levels
            with self._slmsuite_showing(state.displayed.mixed_display()) as sc:
                return sc.get_image(averaging=False, hdr=False)
        if self.renderer not in ("fast", "slmsuite"):
            raise ValueError(f'renderer: expected "fast" or "slmsuite", got {self.renderer!r}')
        if self.renderer == "slmsuite" and (fl.slm_dynamic or fl.drift_px_per_kframe):
            raise ValueError('renderer: "slmsuite" cannot show the SLM-side flaws or drift; '
                             'use "fast"')
        exposure = state.exposure_s
        if p > 0:
            if self.renderer == "fast":
                img = self.far_field(state)
            else:
                img = self._slmsuite_render(state.displayed.mixed_display())
            scale = exposure * sc.gain
            if self.zero_order_fraction:
                eta = self.zero_order_fraction
                img *= (1 - eta) * scale
                img += (eta * scale) * self._flat_far_field(state.drift_px)
            else:
                img *= scale
            if fl.ghost_fraction:
                img += fl.ghost_fraction * ghost(img, fl)
            if fl.vignetting:
                vig = self._cam_cache.get("vignetting")
                if vig is None:
                    vig = self._cam_cache["vignetting"] = fl.vignetting_map(self.shape)
                img *= vig
        else:
            img = np.zeros(self.shape, dtype=np.float64)
        if fl.background_counts_per_s:
            img += fl.background_counts_per_s * exposure
        if self.noise:
            cpe = self.gain_counts_per_electron
            if p > 0 or fl.background_counts_per_s:
                img = shot_noise(self._rng, img / cpe)
                img *= cpe
            if self.read_noise_e:
                z = self._rng.standard_normal(img.shape, dtype=np.float32)
                z *= np.float32(self.read_noise_e * cpe)
                img += z
            img += self.dark_level_counts
        full = 2**self.bitdepth - 1
        if fl.hot_pixel_fraction:
            hot = self._cam_cache.get("hot")
            if hot is None:
                hot = self._cam_cache["hot"] = fl.hot_pixels(self.shape, full)
            img.reshape(-1)[hot[0]] += hot[1]
        np.clip(img, 0, full, out=img)
        if fl.camera_nonlinearity:
            img -= (fl.camera_nonlinearity / full) * img * img
        return img.astype(self.dtype)

    def info(self) -> dict[str, Any]:
        d = super().info()
        d.update(
            focal_length_mm=self.focal_length_mm,
            photons_per_s=self.photons_per_s,
            noise=self.noise,
            zero_order_fraction=self.zero_order_fraction,
            frames_delivered=self.frames_delivered,
            fft_shape=[int(v) for v in self.wrapped.shape_padded],
            renderer=self.renderer,
        )
        return d
