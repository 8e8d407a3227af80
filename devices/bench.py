"""``open_bench``: one TOML file (or dict) -> a ``Bench`` of opened devices.

A ``Bench`` is a context manager. Leaving the block closes every device; leaving it
through an exception first switches the laser output off. ``Bench.close()`` always
switches the laser off before closing (a bench is never left emitting unattended),
and keeps going when one device fails to close. If opening fails half-way, whatever
was already open is shut down the same way before the error propagates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.base import SLM, Camera, apply_capture_keys
from devices.config import load_config
from devices.errors import ConfigError
from devices.visa import (
    SIM_LASER_RESOURCE,
    SIM_POWER_METER_RESOURCE,
    LaserController,
    PowerMeter,
    SimLaserResource,
    open_visa,
)

__all__ = ["Bench", "open_bench"]

log = logging.getLogger(__name__)


@dataclass
class Bench:
    """The devices of one bench. ``truth`` holds a simulated bench's hidden flaws ({} if real)."""

    slm: SLM
    camera: Camera
    laser: LaserController | None = None
    power_meter: PowerMeter | None = None
    config: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("name", "bench"))

    @property
    def simulated(self) -> bool:
        return bool(self.truth)

    def devices(self) -> list[Any]:
        return [d for d in (self.slm, self.camera, self.laser, self.power_meter) if d is not None]

    def info(self) -> dict[str, Any]:
        """Identities and settings of every device (JSON-friendly)."""
        out: dict[str, Any] = {"name": self.name, "source": self.config.get("source"),
                               "seed": self.config.get("seed"), "simulated": self.simulated}
        for key in ("slm", "camera", "laser", "power_meter"):
            dev = getattr(self, key)
            out[key] = None if dev is None else dev.info()
        return out

    def laser_off(self) -> None:
        """Switch the laser output off; never raises (logged instead)."""
        if self.laser is None or self.laser.closed:
            return
        try:
            self.laser.output_off()
        except Exception as exc:  # noqa: BLE001 - shutting down: report, continue
            log.error("laser '%s': could not switch the output off: %s", self.laser.name, exc)

    def close(self) -> None:
        """Laser off, then close every device (each one even if another fails)."""
        self.laser_off()
        for dev in self.devices():
            try:
                dev.close()
            except Exception as exc:  # noqa: BLE001
                log.error("%s: close failed: %s", getattr(dev, "name", dev), exc)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:  # debug: the caller reports the error itself, in one line
            log.debug("bench '%s': %s inside the block; laser off, closing devices",
                        self.name, exc_type.__name__)
        self.close()
        return False


def _open_slm(c: dict[str, Any], flaws: Any, seed: int) -> SLM:
    name = c.get("name") or "slm"
    if c["family"] == "sim":
        from devices.simulated import SimSLM

        return SimSLM(shape=tuple(c["shape"]), bitdepth=c["bitdepth"], pitch_um=c["pitch_um"],
                      wav_um=c["wav_um"], settle_time_s=c["settle_time_s"], flaws=flaws,
                      name=name, device_id=f"sim:slm:seed{seed}")
    from devices.slmsuite_adapter import SlmsuiteSLM, open_slmsuite

    cls = c["backend"].split(":", 1)[1]
    obj = open_slmsuite("slm", cls, c["args"], key="slm.args")
    settle = c["settle_time_s"] if c["settle_time_s"] > 0 else None
    return SlmsuiteSLM(obj, name=name, backend=c["backend"], settle_time_s=settle)


def _open_camera(c: dict[str, Any], slm: SLM, flaws: Any, seed: int) -> Camera:
    name = c.get("name") or "camera"
    if c["family"] == "sim":
        from devices.simulated import SimCamera, SimSLM

        if not isinstance(slm, SimSLM):
            raise ConfigError('camera.backend: "sim" needs slm.backend = "sim" (the simulated '
                              "camera images the simulated SLM)")
        keys = ("bitdepth", "focal_length_mm", "exposure_s", "photons_per_s",
                "reference_power_mW", "gain_counts_per_electron", "read_noise_e", "noise",
                "zero_order_fraction", "frame_latency_s", "drop_probability",
                "timeout_probability", "disconnect_after_frames", "capture_attempts",
                "timeout_s")
        cam = SimCamera(slm, shape=tuple(c["shape"]), pitch_um=c.get("pitch_um") or 5.5,
                        seed=seed, flaws=flaws, name=name, device_id=f"sim:camera:seed{seed}",
                        **{k: c[k] for k in keys})
        return cam
    from devices.slmsuite_adapter import SlmsuiteCamera, open_slmsuite

    cls = c["backend"].split(":", 1)[1]
    obj = open_slmsuite("camera", cls, c["args"], key="camera.args")
    cam = SlmsuiteCamera(obj, name=name, backend=c["backend"],
                         capture_attempts=c["capture_attempts"], timeout_s=c["timeout_s"],
                         pitch_um=c.get("pitch_um"), watchdog=c["watchdog"])
    cam.set_exposure(c["exposure_s"])
    return cam


def _resource(c: dict[str, Any], sim_default: str) -> tuple[str, bool]:
    if c["family"] == "sim":
        return sim_default, True
    return c["backend"].split(":", 1)[1], False


def _open_laser(c: dict[str, Any]) -> LaserController:
    res, simulated = _resource(c, SIM_LASER_RESOURCE)
    handle = open_visa(res, simulated=simulated, library=c.get("visa_library", ""),
                       timeout_s=c["timeout_s"])
    if simulated:  # the simulated instrument's clock (watchdog) and visible state
        handle = SimLaserResource(handle, c.get("sim_state_file"))
    try:
        laser = LaserController(
            handle, name=c["name"], backend=c["backend"], control=c["control"],
            max_current_mA=c["max_current_mA"], max_power_mW=c["max_power_mW"],
            slope_mW_per_mA=c["slope_mW_per_mA"], threshold_mA=c["threshold_mA"])
    except Exception:
        handle.close()
        raise
    try:  # armed before the output can go on
        if c.get("watchdog_s") is not None:
            laser.arm_watchdog(c["watchdog_s"])
    except Exception:
        laser.close()
        raise
    try:
        if c.get("setpoint") is not None:
            laser.set_setpoint(c["setpoint"])
        if c["output"] == "on":
            laser.output_on()
    except Exception:
        try:
            laser.output_off()
        finally:
            laser.close()
        raise
    return laser


def _open_power_meter(c: dict[str, Any], laser: LaserController | None,
                      seed: int) -> PowerMeter:
    res, simulated = _resource(c, SIM_POWER_METER_RESOURCE)
    handle = open_visa(res, simulated=simulated, library=c.get("visa_library", ""),
                       timeout_s=c["timeout_s"])
    kw = {"name": c["name"], "backend": c["backend"], "wavelength_nm": c.get("wavelength_nm")}
    try:
        if simulated and laser is not None:  # the simulated meter sits in the laser's beam
            from devices.simulated import SimPowerMeter

            return SimPowerMeter(handle, emitted_mW=laser.optical_power_mW, seed=seed, **kw)
        return PowerMeter(handle, **kw)
    except Exception:
        handle.close()
        raise


def open_bench(source: str | Path | dict[str, Any]) -> Bench:
    """Open every device a bench file (path, shipped name such as "sim.toml", or dict) names."""
    cfg = load_config(source)
    seed = int(cfg["seed"])
    sim = cfg["slm"]["family"] == "sim" or cfg["camera"]["family"] == "sim"
    flaws = None
    if sim:
        from devices.flaws import Flaws, draw_flaws, with_sim_flaws

        flaws = draw_flaws(seed) if cfg["flaws"] else Flaws()
        flaws = with_sim_flaws(flaws, seed, cfg.get("sim_flaws"))
    bench = Bench(slm=None, camera=None, config=cfg)  # type: ignore[arg-type]
    try:
        bench.slm = _open_slm(cfg["slm"], flaws, seed)
        bench.camera = _open_camera(cfg["camera"], bench.slm, flaws, seed)
        apply_capture_keys(bench.slm, bench.camera, cfg["slm"], cfg["camera"])
        if cfg["laser"] is not None:
            bench.laser = _open_laser(cfg["laser"])
        if cfg["power_meter"] is not None:
            bench.power_meter = _open_power_meter(cfg["power_meter"], bench.laser, seed)
    except BaseException:
        bench.close()
        raise
    cam = bench.camera
    if sim and cam.backend == "sim":
        laser = bench.laser
        if laser is not None:
            ref = cam.reference_power_mW
            cam.power_fraction = lambda: laser.optical_power_mW() / ref
        bench.truth = flaws.truth(
            slm_shape=bench.slm.shape, slm_bitdepth=bench.slm.bitdepth,
            camera_full_scale=2**cam.bitdepth - 1,
            counts_per_electron=cam.gain_counts_per_electron / flaws.gain_factor,
            affine=cam.affine)
        bench.truth.update(
            seed=seed,
            focal_length_mm_true=cam.focal_length_mm * flaws.scale,
            photons_per_s=cam.photons_per_s,
            zero_order_fraction=cam.zero_order_fraction,
            noise=cam.noise,
        )
        hot_index, hot_counts = flaws.hot_pixels(cam.shape, 2**cam.bitdepth - 1)
        bench.truth.update(  # [sim_flaws] details that need the camera
            hot_pixel_index=hot_index, hot_pixel_counts=hot_counts,
            vignetting_map=flaws.vignetting_map(cam.shape) if flaws.vignetting else None,
            ghost_offset_px=(flaws.ghost_offset_frac[0] * cam.shape[1],
                             flaws.ghost_offset_frac[1] * cam.shape[0]),
            ghost_blur_px=flaws.ghost_blur_frac * min(cam.shape),
        )
    return bench
