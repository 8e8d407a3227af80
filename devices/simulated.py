"""The simulated bench: slmsuite's SimulatedSLM + SimulatedCamera, plus what they lack.

slmsuite computes the optics: the SLM's integer display turned back into phase
through ``gamma_sim`` (our hidden grey -> phase curve), times the hidden source
amplitude, plus the hidden aberration, Fourier-transformed and sampled on the camera
through the hidden affine map (camera in the Fourier plane). We add, seeded:

* laser coupling: counts scale with ``power_fraction()`` (the bench wires it to the
  simulated laser: emitted power / ``reference_power_mW``); output off gives dark frames;
* a photon budget: ``photons_per_s`` photoelectrons per second over the whole far
  field at the reference power; Poisson shot noise on them, Gaussian read noise
  (``read_noise_e``), the hidden dark level and gain (counts per photoelectron);
* zero-order leakage: a fraction ``zero_order_fraction`` of the light is not
  modulated (added as the far field of a flat phase, incoherently);
* SLM settling: a frame taken ``dt`` after a write sees the display moved by
  ``1 - exp(-5 dt / settle_time_s)`` of the way from the old grey levels to the new
  (all of it from ``settle_time_s`` on);
  ``frame_latency_s`` is added to every frame;
* faults: a dropped frame with ``drop_probability``, a time-out (the frame never comes)
  with ``timeout_probability``, and a disconnect after ``disconnect_after_frames``;
* the ``[sim_flaws]`` of ``devices.flaws`` (all off by default): on the SLM side
  (crosstalk, span map, flicker, true settle constant: ``SimCamera._slm_phase``) and
  the camera side (power fluctuation, drift, ghost, vignetting, background, hot pixels,
  non-linearity: ``SimCamera.render_frame``, in that order of the light path).

With ``noise = false``, no leakage, no ``[sim_flaws]`` and the laser at its reference
power, a frame is the wrapped slmsuite camera's own ``get_image()`` (the reference).
Every other frame's far field comes from ``devices.sim_render`` (``renderer = "fast"``,
about 2-3 times cheaper, tested equal to slmsuite's to 1e-5 of the peak); set
``camera.renderer = "slmsuite"`` to take slmsuite's render instead (flaw-free SLM only).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from devices.errors import DeviceDisconnected, DeviceTimeout, FrameDropped
from devices.flaws import Flaws
from devices.slmsuite_adapter import SlmsuiteCamera, SlmsuiteSLM
from devices.visa import PowerMeter

__all__ = ["SimSLM", "SimCamera", "SimPowerMeter"]


def _quiet_slmsuite() -> None:
    import slmsuite

    if getattr(slmsuite, "_hil_quieted", False):
        return
    try:
        # slmsuite logs every constructor at INFO, to stdout: warnings only, to stderr
        # (stdout stays the command's own output, e.g. `hil devices check --json`)
        slmsuite.configure_logging("WARNING", stream=sys.stderr)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    slmsuite._hil_quieted = True


class SimSLM(SlmsuiteSLM):
    """Our SLM around slmsuite's ``SimulatedSLM`` carrying the hidden SLM flaws."""

    def __init__(self, *, shape: tuple[int, int] = (512, 512), bitdepth: int = 8,
                 pitch_um: float = 8.0, wav_um: float = 0.633, wav_design_um: float | None = None,
                 settle_time_s: float = 0.0, flaws: Flaws | None = None, name: str = "sim-slm",
                 device_id: str = "") -> None:
        _quiet_slmsuite()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from slmsuite.hardware.slms.simulated import SimulatedSLM

        flaws = flaws or Flaws()
        rows, cols = shape
        source = {"amplitude_sim": flaws.source_amplitude(shape),
                  "phase_sim": flaws.aberration_rad(shape)}
        ideal = flaws.gamma_span == 1.0 and flaws.gamma_power == 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = SimulatedSLM(
                (cols, rows), bitdepth=bitdepth, pitch_um=(pitch_um, pitch_um), wav_um=wav_um,
                wav_design_um=wav_design_um,
                settle_time_s=settle_time_s, source=source, gpu=False, name=name,
                gamma_sim=None if ideal else flaws.gamma_2pi(bitdepth),
            )
        super().__init__(wrapped, name=name, backend="sim", settle_time_s=settle_time_s,
                         device_id=device_id or f"sim:slm:{name}")
        self.flaws = flaws
        self.previous_display = np.asarray(wrapped.display).copy()

    waits_for_refresh = True  # a write returns once it is on the panel (vsync-locked)

    def _before_write(self) -> None:
        """With ``refresh_hz``, wait for the panel's next refresh (ticks every
        1/``refresh_hz`` from the first write): the write then lands there, as with a
        vsync-locked display, and ``last_write_time`` is when it landed."""
        if self.refresh_hz:
            period = 1.0 / self.refresh_hz
            now = time.perf_counter()
            epoch = getattr(self, "_refresh_epoch", None)
            if epoch is None:
                self._refresh_epoch = epoch = now
            ticks = math.ceil((now - epoch) / period - 1e-9)
            wait = epoch + ticks * period - now
            if wait > 0:
                time.sleep(wait)
        flaws = getattr(self, "flaws", None)
        if self.settle_time_s > 0 or (flaws is not None and flaws.settle_tau_s > 0):
            self.previous_display = np.array(self.display, copy=True)

    def settled_fraction(self, now: float | None = None) -> float:
        """How far the liquid crystal has moved to the last pattern (1 = settled).

        With the hidden ``settle_tau_s`` flaw: 1 - exp(-dt / tau), whatever
        ``settle_time_s`` (what the software waits) says.
        """
        tau = self.flaws.settle_tau_s
        if tau > 0:
            if self.last_write_time is None:
                return 1.0
            dt = (time.perf_counter() if now is None else now) - self.last_write_time
            return 1.0 if dt >= 30 * tau else 1.0 - math.exp(-max(dt, 0.0) / tau)
        if self.settle_time_s <= 0 or self.last_write_time is None:
            return 1.0
        dt = (time.perf_counter() if now is None else now) - self.last_write_time
        if dt >= self.settle_time_s:
            return 1.0
        return 1.0 - math.exp(-5.0 * max(dt, 0.0) / self.settle_time_s)


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
        _quiet_slmsuite()
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

    def _offers(self, setting: str) -> bool:
        """No capture settings (roi, gain, ...): the render draws the whole frame."""
        return False
    signals_exposure_end = True  # _exposure_over() once the frame is rendered

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
        # started (exposure + readout); the SLM is imaged as it is when the exposure starts
        period = self.frame_period_s() if self.frame_rate_hz else 0.0
        start = time.perf_counter()
        if period:
            earliest = getattr(self, "_last_exposure_start", -math.inf) + period
            if start < earliest:
                time.sleep(earliest - start)
                start = earliest
            self._last_exposure_start = start
        frame = self.render_frame()
        if period:
            left = start + float(self.wrapped.exposure_s) - time.perf_counter()
            if left > 0:  # the exposure lasts until here
                time.sleep(left)
        self._exposure_over()  # the SLM may change now: the frame is rendered
        if period:
            left = start + period - time.perf_counter()
            if left > 0:  # readout
                time.sleep(left)
        self.frames_delivered += 1
        return frame

    def _flush_hw(self, timeout_s: float) -> None:
        if self.frame_latency_s:
            time.sleep(self.frame_latency_s)

    # optics and detector
    def current_power_fraction(self) -> float:
        """Laser power relative to the reference (1 without a laser)."""
        return 1.0 if self.power_fraction is None else max(0.0, float(self.power_fraction()))

    def _flat_far_field(self) -> np.ndarray:
        """Unit-gain far field of an unmodulated (flat) SLM, cached: the zero order."""
        if self.renderer == "fast":
            shift = self._drift_shift()
            if self._flat_key != shift:
                w = self.slm.wrapped
                self._flat_unit = self._fast_renderer().intensity(
                    w.source["amplitude_sim"], w.source["phase_sim"], shift)
                self._flat_key = shift
            return self._flat_unit
        if self._flat_key != "slmsuite":
            w = self.slm.wrapped
            saved = w.display
            try:
                w.display = np.zeros_like(np.asarray(saved))
                self._flat_unit = np.asarray(self.wrapped._render(), dtype=np.float64)
            finally:
                w.display = saved
            self._flat_key = "slmsuite"
        return self._flat_unit

    def _fast_renderer(self) -> Any:
        if self._fast is None:
            from devices.sim_render import FarFieldRenderer

            self._fast = FarFieldRenderer(self.wrapped)
        return self._fast

    def _drift_shift(self) -> tuple[float, float]:
        """Camera image shift now (x, y), in steps of 1/20 pixel (drift flaw)."""
        if not self.flaws.drift_px_per_kframe:
            return (0.0, 0.0)
        dx, dy = self.flaws.drift_px(self.frames_delivered)
        return (round(dx * 20) / 20, round(dy * 20) / 20)

    def _slm_phase(self) -> np.ndarray:
        """The phase the SLM imposes now (radians, float32), with its hidden flaws.

        The delay of the displayed grey levels (slmsuite's ``_display2phase``, through
        the hidden response), moved only ``settled_fraction`` of the way from the last
        pattern, scaled by the span map and this frame's flicker, blurred by the pixel
        crosstalk, plus the hidden aberration.
        """
        slm, fl = self.slm, self.flaws
        w = slm.wrapped
        delay = w._display2phase(np.asarray(w.display), dtype=np.float32)
        f = slm.settled_fraction()
        if f < 1.0:
            prev = w._display2phase(np.asarray(slm.previous_display), dtype=np.float32)
            delay = prev + (delay - prev) * np.float32(f)
        if fl.phase_span_variation:
            span = self._cam_cache.get("span")
            if span is None:
                span = self._cam_cache["span"] = fl.span_map(slm.shape)
            delay = delay * span
        if fl.flicker_rad_rms:
            e = fl.flicker_rad_rms * float(self._flaw_rng.standard_normal())
            delay = delay * np.float32(1.0 + e / (2 * np.pi))
        if fl.crosstalk_sigma_px:
            from scipy.ndimage import gaussian_filter

            delay = gaussian_filter(delay, fl.crosstalk_sigma_px, mode="nearest", truncate=3.0)
        delay = delay - delay.min()
        delay += np.asarray(w.source["phase_sim"], dtype=np.float32)
        return delay

    def _unit_image_slmsuite(self) -> np.ndarray:
        """slmsuite's own render (the reference), settling mixed on the grey levels."""
        w = self.slm.wrapped
        f = self.slm.settled_fraction()
        saved = None
        if f < 1.0:
            saved = w.display
            mix = self.slm.previous_display * (1 - f) + np.asarray(saved, dtype=np.float32) * f
            w.display = np.rint(mix).astype(saved.dtype)
        try:
            return np.asarray(self.wrapped._render(), dtype=np.float64)
        finally:
            if saved is not None:
                w.display = saved

    def _ghost(self, img: np.ndarray) -> np.ndarray:
        """A displaced, blurred copy of ``img`` (same total inside the frame), cheaply:
        on a grid coarser by up to 4 (the blur is at least 1 % of the camera)."""
        from scipy.ndimage import gaussian_filter, shift

        fl = self.flaws
        rows, cols = img.shape
        k = max(1, min(4, min(rows, cols) // 128))
        r, c = rows // k * k, cols // k * k
        small = img[:r, :c].reshape(r // k, k, c // k, k).mean(axis=(1, 3))
        sigma = fl.ghost_blur_frac * min(rows, cols) / k
        small = gaussian_filter(small, sigma, mode="constant")
        dy, dx = fl.ghost_offset_frac[1] * rows / k, fl.ghost_offset_frac[0] * cols / k
        small = shift(small, (dy, dx), order=1, mode="constant")
        out = np.zeros_like(img)
        out[:r, :c] = np.repeat(np.repeat(small, k, axis=0), k, axis=1)
        return out

    def render_frame(self) -> np.ndarray:
        """One frame from the current SLM state (no faults, no latency).

        Noise off, no zero order and no ``[sim_flaws]``: slmsuite's own ``get_image()``
        (the reference). Otherwise the far field comes from ``devices.sim_render``
        (``renderer = "fast"``, the default; checked against slmsuite's) or from
        slmsuite's render (``renderer = "slmsuite"``, no SLM-side flaws or drift).
        """
        sc = self.wrapped
        fl = self.flaws
        p = self.current_power_fraction()
        if fl.power_fluctuation_rms and p > 0:
            p *= max(0.0, 1.0 + fl.power_fluctuation_rms * float(self._flaw_rng.standard_normal()))
        sc.gain = self.photons_per_s * self.gain_counts_per_electron * p / self._farfield_total
        flawed = fl.camera_side or fl.slm_dynamic
        if not self.noise and self.zero_order_fraction == 0 and not flawed:
            w = self.slm.wrapped
            f = self.slm.settled_fraction()
            saved = None
            if f < 1.0:
                saved = w.display
                mix = (self.slm.previous_display * (1 - f)
                       + np.asarray(saved, dtype=np.float32) * f)
                w.display = np.rint(mix).astype(saved.dtype)
            try:
                return sc.get_image(averaging=False, hdr=False)
            finally:
                if saved is not None:
                    w.display = saved
        if self.renderer not in ("fast", "slmsuite"):
            raise ValueError(f'renderer: expected "fast" or "slmsuite", got {self.renderer!r}')
        if self.renderer == "slmsuite" and (fl.slm_dynamic or fl.drift_px_per_kframe):
            raise ValueError('renderer: "slmsuite" cannot show the SLM-side flaws or drift; '
                             'use "fast"')
        if p > 0:
            if self.renderer == "fast":
                w = self.slm.wrapped
                img = self._fast_renderer().intensity(w.source["amplitude_sim"],
                                                      self._slm_phase(), self._drift_shift())
            else:
                img = self._unit_image_slmsuite()
            scale = sc.exposure_s * sc.gain
            if self.zero_order_fraction:
                eta = self.zero_order_fraction
                img *= (1 - eta) * scale
                img += (eta * scale) * self._flat_far_field()
            else:
                img *= scale
            if fl.ghost_fraction:
                img += fl.ghost_fraction * self._ghost(img)
            if fl.vignetting:
                vig = self._cam_cache.get("vignetting")
                if vig is None:
                    vig = self._cam_cache["vignetting"] = fl.vignetting_map(self.shape)
                img *= vig
        else:
            img = np.zeros(self.shape, dtype=np.float64)
        if fl.background_counts_per_s:
            img += fl.background_counts_per_s * sc.exposure_s
        if self.noise:
            cpe = self.gain_counts_per_electron
            if p > 0 or fl.background_counts_per_s:
                img = self._shot_noise(img / cpe)
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

    GAUSSIAN_ABOVE_E = 1000.0
    """Mean photoelectrons above which shot noise is drawn as Gaussian (mean, sqrt(mean))."""

    def _shot_noise(self, electrons: np.ndarray) -> np.ndarray:
        """Poisson draw of every pixel's photoelectrons (float64).

        Pixels with more than ``GAUSSIAN_ABOVE_E`` expected electrons use the Gaussian
        limit (rounded), which is ten times cheaper and indistinguishable there.
        """
        big = electrons > self.GAUSSIAN_ABOVE_E
        if not big.any():
            return self._rng.poisson(electrons).astype(np.float64)
        out = np.empty_like(electrons)
        small = ~big
        out[small] = self._rng.poisson(electrons[small])
        lam = electrons[big]
        out[big] = np.rint(lam + np.sqrt(lam) * self._rng.standard_normal(lam.size))
        return out

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


class SimPowerMeter(PowerMeter):
    """The simulated power meter, in the beam of the simulated laser.

    pyvisa-sim cannot make one instrument's reading depend on another's state, so the
    coupling is here: the SCPI exchange still happens (``MEAS:POW?`` is sent and
    answered by the YAML instrument), but the value returned is the laser's emitted
    power with a seeded 0.2 % reading noise (0 W when the laser is off).
    """

    def __init__(self, resource: Any, *, emitted_mW: Callable[[], float], seed: int = 0,
                 **kwargs: Any) -> None:
        self._emitted_mW = emitted_mW
        self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9E7]))
        super().__init__(resource, **kwargs)

    def read_power_W(self) -> float:
        super().read_power_W()  # the instrument exchange, as on the bench
        p = max(0.0, float(self._emitted_mW())) * 1e-3
        return p * (1.0 + 0.002 * float(self._rng.standard_normal()))
