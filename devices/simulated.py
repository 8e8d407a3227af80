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
  with ``timeout_probability``, and a disconnect after ``disconnect_after_frames``.

With ``noise = false``, no leakage and the laser at its reference power, a frame
equals the wrapped slmsuite camera's ``get_image()`` exactly.
"""

from __future__ import annotations

import math
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
        slmsuite.configure_logging("WARNING")  # slmsuite logs every constructor at INFO
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

    def _before_write(self) -> None:
        if self.settle_time_s > 0:
            self.previous_display = np.array(self.display, copy=True)

    def settled_fraction(self, now: float | None = None) -> float:
        """How far the liquid crystal has moved to the last pattern (1 = settled)."""
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
        noise_seq, fault_seq = ss.spawn(2)
        self._rng = np.random.default_rng(noise_seq)
        self._fault_rng = np.random.default_rng(fault_seq)
        self.frames_delivered = 0
        self._flat_unit: np.ndarray | None = None

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
        frame = self.render_frame()
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
        if self._flat_unit is None:
            w = self.slm.wrapped
            saved = w.display
            try:
                w.display = np.zeros_like(np.asarray(saved))
                self._flat_unit = np.asarray(self.wrapped._render(), dtype=np.float64)
            finally:
                w.display = saved
        return self._flat_unit

    def render_frame(self) -> np.ndarray:
        """One frame from the current SLM state (no faults, no latency)."""
        sc = self.wrapped
        p = self.current_power_fraction()
        w = self.slm.wrapped
        f = self.slm.settled_fraction()
        saved = None
        if f < 1.0:
            saved = w.display
            mix = self.slm.previous_display * (1 - f) + np.asarray(saved, dtype=np.float32) * f
            w.display = np.rint(mix).astype(saved.dtype)
        try:
            exact = not self.noise and self.zero_order_fraction == 0
            sc.gain = self.photons_per_s * self.gain_counts_per_electron * p / self._farfield_total
            if exact:
                return sc.get_image(averaging=False, hdr=False)
            if p > 0:
                img = np.asarray(sc._get_image_hw(quantize=False), dtype=np.float64)
                if self.zero_order_fraction:
                    eta = self.zero_order_fraction
                    img *= 1 - eta
                    img += (eta * sc.exposure_s * sc.gain) * self._flat_far_field()
            else:
                img = np.zeros(self.shape, dtype=np.float64)
        finally:
            if saved is not None:
                w.display = saved
        if self.noise:
            cpe = self.gain_counts_per_electron
            if p > 0:
                img = self._shot_noise(img / cpe)
                img *= cpe
            if self.read_noise_e:
                z = self._rng.standard_normal(img.shape, dtype=np.float32)
                z *= np.float32(self.read_noise_e * cpe)
                img += z
            img += self.dark_level_counts
        np.clip(img, 0, 2**self.bitdepth - 1, out=img)
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
