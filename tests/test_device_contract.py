"""One contract per device interface, run against every backend the tree has.

SLM: the simulated bench's (``backend = "sim"``), the slmsuite adapter over slmsuite's own
``SimulatedSLM``, and the adapter over a fake slmsuite driver. Camera: the same three
(slmsuite's ``SimulatedCamera``; ``session_helpers.FakeCameraDriver``). Laser controller
and power meter: the pyvisa-sim instruments, opened directly and through ``open_bench``
(which gives the power meter that reads the simulated laser). The tree has no shutter.

Every backend must give the same shapes and dtypes, refuse the same bad input with the
same exception naming the argument (wrong shape, NaN, out-of-range exposure or set-point),
close twice without error, refuse use after close, and leave the laser off once closed.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from session_helpers import FakeCameraDriver, FakeSLMDriver, sim_bench

from devices import (
    MAX_EXPOSURE_S,
    MAX_TIMEOUT_S,
    SLM,
    Camera,
    DeviceError,
    DeviceTimeout,
    FrameDropped,
    LaserController,
    PowerMeter,
    SetpointRefused,
    SlmsuiteCamera,
    SlmsuiteSLM,
    open_bench,
)
from devices.visa import (
    SIM_BASIC_LASER_RESOURCE,
    SIM_LASER_RESOURCE,
    SIM_POWER_METER_RESOURCE,
    SimLaserResource,
    open_visa,
    sim_laser_state,
)


def _slmsuite_pair(shape=(48, 64)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.hardware.cameras.simulated import SimulatedCamera
        from slmsuite.hardware.slms.simulated import SimulatedSLM

        s = SimulatedSLM((shape[1], shape[0]), gpu=False, wav_um=0.633)
        c = SimulatedCamera(s, resolution=(40, 32), bitdepth=10, gain=50.0)
    return s, c


# --------------------------------------------------------------------------- backends
def _sim_slm() -> Iterator[SLM]:
    with open_bench(sim_bench("tiny")) as bench:
        yield bench.slm


def _slmsuite_slm() -> Iterator[SLM]:
    s, _ = _slmsuite_pair()
    slm = SlmsuiteSLM(s)
    yield slm
    slm.close()


def _fake_slm() -> Iterator[SLM]:
    slm = SlmsuiteSLM(FakeSLMDriver((40, 56)))
    yield slm
    slm.close()


def _sim_camera() -> Iterator[Camera]:
    with open_bench(sim_bench("tiny")) as bench:
        yield bench.camera


def _slmsuite_camera() -> Iterator[Camera]:
    _, c = _slmsuite_pair()
    cam = SlmsuiteCamera(c, pitch_um=4.0)
    yield cam
    cam.close()


def _fake_camera() -> Iterator[Camera]:
    cam = SlmsuiteCamera(FakeCameraDriver())
    yield cam
    cam.close()


SLMS: dict[str, Callable[[], Iterator[SLM]]] = {
    "sim": _sim_slm, "slmsuite-simulated": _slmsuite_slm, "fake-driver": _fake_slm}
CAMERAS: dict[str, Callable[[], Iterator[Camera]]] = {
    "sim": _sim_camera, "slmsuite-simulated": _slmsuite_camera, "fake-driver": _fake_camera}


@pytest.fixture(params=list(SLMS))
def slm(request) -> Iterator[SLM]:
    yield from SLMS[request.param]()


@pytest.fixture(params=list(CAMERAS))
def camera(request) -> Iterator[Camera]:
    yield from CAMERAS[request.param]()


# a laser: (the controller, its state file: the simulated beam as a photodiode sees it)
def _visa_laser(resource: str, tmp_path: Path, **kw) -> Iterator[tuple]:
    state = tmp_path / "laser.json"
    las = LaserController(SimLaserResource(open_visa(resource, simulated=True), state),
                          max_current_mA=80.0, max_power_mW=5.0, **kw)
    yield las, state
    las.close()


def _bench_laser(tmp_path: Path) -> Iterator[tuple]:
    state = tmp_path / "laser.json"
    cfg = sim_bench("tiny", laser=True)
    cfg["laser"].update(max_current_mA=80.0, max_power_mW=5.0, setpoint=1.0, output="off",
                        sim_state_file=str(state))
    with open_bench(cfg) as bench:
        yield bench.laser, state


LASERS = {
    "visa-sim": lambda p: _visa_laser(SIM_LASER_RESOURCE, p),
    "visa-sim-watchdog": lambda p: _visa_laser(SIM_LASER_RESOURCE, p, watchdog_s=5.0),
    "visa-sim-basic": lambda p: _visa_laser(SIM_BASIC_LASER_RESOURCE, p),
    "bench-sim": _bench_laser,
}


@pytest.fixture(params=list(LASERS))
def laser(request, tmp_path) -> Iterator[tuple]:
    yield from LASERS[request.param](tmp_path)


def _visa_meter() -> Iterator[PowerMeter]:
    pm = PowerMeter(open_visa(SIM_POWER_METER_RESOURCE, simulated=True))
    yield pm
    pm.close()


def _bench_meter() -> Iterator[PowerMeter]:
    with open_bench(sim_bench("tiny", laser=True, power_meter=True)) as bench:
        yield bench.power_meter


@pytest.fixture(params=["visa-sim", "bench-sim"])
def meter(request) -> Iterator[PowerMeter]:
    yield from {"visa-sim": _visa_meter, "bench-sim": _bench_meter}[request.param]()


def _json_round_trip(d: dict) -> dict:
    return json.loads(json.dumps(d))


# ------------------------------------------------------------------------------- SLM
def test_slm_shows_integer_grey_levels_of_its_shape(slm):
    rows, cols = slm.shape
    assert slm.dtype == (np.uint8 if slm.bitdepth <= 8 else np.uint16)
    shown = slm.set_phase(np.zeros((rows, cols), np.float32), settle=False)
    assert shown.shape == slm.shape and shown.dtype == slm.dtype
    assert (shown == 2**slm.bitdepth - 1).all()  # zero phase = top grey level, every backend
    shown = slm.set_phase(np.full((rows, cols), np.pi, np.float64), settle=False)
    assert shown.dtype == slm.dtype and int(shown.max()) < 2**slm.bitdepth - 1
    # a model grid is drawn in blocks, centred, at SLM resolution
    shown = slm.set_phase(np.full((8, 8), np.pi, np.float32), settle=False)
    assert shown.shape == slm.shape
    assert slm.phase.shape == slm.shape and slm.phase.dtype == np.float32


@pytest.mark.parametrize("bad, error, match", [
    (lambda s: np.zeros((s[0] + 1, s[1]), np.float32), ValueError, "phase_rad: expected shape"),
    (lambda s: np.zeros((2, *s), np.float32), ValueError, "phase_rad: expected a 2-D"),
    (lambda s: np.full(s, np.nan, np.float32), ValueError, "phase_rad: expected finite"),
    (lambda s: np.full(s, np.inf, np.float64), ValueError, "phase_rad: expected finite"),
    (lambda s: np.zeros(s, np.uint8), TypeError, "phase_rad: expected float radians"),
    (lambda s: np.zeros(s).tolist(), TypeError, "phase_rad: expected a numpy array"),
], ids=["too-large", "3-d", "nan", "inf", "grey-levels", "list"])
def test_slm_refuses_bad_phase_before_anything_is_shown(slm, bad, error, match):
    before = slm.set_phase(np.full(slm.shape, 1.0, np.float32), settle=False).copy()
    with pytest.raises(error, match=match):
        slm.set_phase(bad(slm.shape), settle=False)
    np.testing.assert_array_equal(slm.display, before)
    with pytest.raises(error, match=match):
        slm.prepare_phase(bad(slm.shape))


def test_slm_refuses_bad_grey_levels_and_settle(slm):
    with pytest.raises(ValueError, match="levels: expected shape"):
        slm.set_grey_levels(np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"levels: expected grey levels in \[0, "):
        slm.set_grey_levels(np.full(slm.shape, 2**slm.bitdepth, np.int32))
    with pytest.raises(TypeError, match="levels: expected an integer"):
        slm.set_grey_levels(np.zeros(slm.shape, np.float32))
    with pytest.raises(ValueError, match="settle: expected at most"):
        slm.set_phase(np.zeros(slm.shape, np.float32), settle=1e6)


def test_slm_info_close_and_use_after_close(slm):
    assert not slm.closed
    info = _json_round_trip(slm.info())
    assert info["kind"] == "slm" and info["shape"] == list(slm.shape)
    assert info["bitdepth"] == slm.bitdepth and info["backend"]
    with slm:
        pass  # leaving the block closes it
    assert slm.closed
    slm.close()  # twice: no error
    for call in (lambda: slm.set_phase(np.zeros(slm.shape, np.float32)),
                 lambda: slm.prepare_phase(np.zeros(slm.shape, np.float32)),
                 lambda: slm.set_grey_levels(np.zeros(slm.shape, np.uint8))):
        with pytest.raises(DeviceError, match="already closed"):
            call()
    assert _json_round_trip(slm.info())["kind"] == "slm"  # info never fails


def test_slm_write_hook_sees_each_hardware_write_before_its_time_is_set(slm):
    seen = []
    slm.write_hook = lambda display: seen.append((display.copy(), slm.last_write_time))
    before = slm.last_write_time
    shown = slm.set_phase(np.full(slm.shape, 1.0, np.float32), settle=False).copy()
    levels = slm.set_grey_levels(np.zeros(slm.shape, slm.dtype), settle=False).copy()
    with pytest.raises(ValueError, match="finite"):  # refused: nothing reaches the device
        slm.set_phase(np.full(slm.shape, np.nan, np.float32))
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0][0], shown)
    np.testing.assert_array_equal(seen[1][0], levels)
    assert seen[0][1] == before and seen[1][1] < slm.last_write_time


# ---------------------------------------------------------------------------- camera
def test_camera_frames_have_its_shape_and_integer_dtype(camera):
    frame = camera.get_image()
    assert frame.ndim == 2 and frame.shape == camera.shape and frame.dtype == camera.dtype
    assert frame.dtype.kind == "u" and camera.dtype == (
        np.uint8 if camera.bitdepth <= 8 else np.uint16)
    avg = camera.get_image(averaging=3)
    assert avg.shape == camera.shape and avg.dtype == camera.dtype
    info = camera.last_capture_info
    assert info.averaging == 3 and info.device_id == camera.device_id
    assert info.exposure_s == pytest.approx(camera.get_exposure())
    camera.flush()


def test_camera_frame_request_hook_runs_before_each_request_and_its_faults_count(camera):
    requests = []

    def request():
        requests.append(1)
        if len(requests) == 1:
            raise FrameDropped("scripted drop")
        if len(requests) == 4:
            raise DeviceTimeout("scripted time-out")

    camera.frame_request_hook = request
    assert camera.get_image().shape == camera.shape  # the drop is retried
    assert len(requests) == 2 and camera.last_capture_info.dropped_frames == 1
    camera.get_image()
    with pytest.raises(DeviceTimeout, match="scripted time-out"):
        camera.get_image()
    assert len(requests) == 4
    camera.frame_request_hook = None
    camera.get_image()
    assert len(requests) == 4


def test_camera_exposure_round_trip(camera):
    assert camera.set_exposure(2e-3) == pytest.approx(2e-3)
    assert camera.get_exposure() == pytest.approx(2e-3) == camera.exposure_s
    assert camera.set_exposure(MAX_EXPOSURE_S) == pytest.approx(MAX_EXPOSURE_S)


@pytest.mark.parametrize("value, error, match", [
    (float("nan"), ValueError, "exposure_s: expected a finite number > 0"),
    (float("inf"), ValueError, "exposure_s: expected a finite number > 0"),
    (0.0, ValueError, "exposure_s: expected a finite number > 0"),
    (-1e-3, ValueError, "exposure_s: expected a finite number > 0"),
    (MAX_EXPOSURE_S * 1.01, ValueError, "exposure_s: expected at most"),
    ("1e-3", TypeError, "exposure_s: expected a number"),
    (True, TypeError, "exposure_s: expected a number"),
], ids=["nan", "inf", "zero", "negative", "above-limit", "string", "bool"])
def test_camera_refuses_bad_exposure_and_keeps_the_old_one(camera, value, error, match):
    camera.set_exposure(3e-3)
    with pytest.raises(error, match=match):
        camera.set_exposure(value)
    assert camera.get_exposure() == pytest.approx(3e-3)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"averaging": 0}, ValueError, "averaging: expected an integer >= 1"),
    ({"averaging": 1.5}, TypeError, "averaging: expected an integer >= 1"),
    ({"averaging": True}, TypeError, "averaging: expected an integer >= 1"),
    ({"timeout_s": float("nan")}, ValueError, "timeout_s: expected a finite number"),
    ({"timeout_s": -1.0}, ValueError, "timeout_s: expected a finite number"),
    ({"timeout_s": MAX_TIMEOUT_S * 2}, ValueError, "timeout_s: expected at most"),
], ids=["averaging-0", "averaging-float", "averaging-bool", "timeout-nan", "timeout-negative",
        "timeout-above-limit"])
def test_camera_refuses_bad_capture_arguments(camera, kwargs, error, match):
    with pytest.raises(error, match=match):
        camera.get_image(**kwargs)


def test_camera_info_close_and_use_after_close(camera):
    assert not camera.closed
    info = _json_round_trip(camera.info())
    assert info["kind"] == "camera" and info["shape"] == list(camera.shape)
    assert info["dtype"] == str(camera.dtype) and info["backend"]
    with camera:
        pass
    assert camera.closed
    camera.close()  # twice: no error
    for call in (camera.get_image, camera.flush, camera.get_exposure,
                 lambda: camera.set_exposure(1e-3), lambda: camera.configure_capture()):
        with pytest.raises(DeviceError, match="already closed"):
            call()
    assert _json_round_trip(camera.info())["exposure_s"] is None  # info never fails


# ----------------------------------------------------------------------------- laser
def _emitting(state: Path) -> bool:
    return sim_laser_state(state)["emitting"]


def test_laser_output_and_setpoint(laser):
    las, state = laser
    assert las.set_setpoint(2.0) == pytest.approx(2.0)  # mA or mW, as ``control`` says
    las.output_on()
    assert las.is_output_on() and _emitting(state)
    las.output_off()
    assert not las.is_output_on() and not _emitting(state)
    assert _json_round_trip(las.info())["kind"] == "laser"


@pytest.mark.parametrize("call, value, error, match", [
    ("set_current_mA", float("nan"), ValueError, "current_mA: expected a finite number"),
    ("set_current_mA", -1.0, ValueError, "current_mA: expected a finite number"),
    ("set_current_mA", 81.0, SetpointRefused, "current_mA: 81 mA exceeds the hard limit"),
    ("set_current_mA", "50", TypeError, "current_mA: expected a number"),
    ("set_power_mW", float("inf"), ValueError, "power_mW: expected a finite number"),
    ("set_power_mW", 5.5, SetpointRefused, "power_mW: 5.5 mW exceeds the hard limit"),
], ids=["current-nan", "current-negative", "current-above-limit", "current-string",
        "power-inf", "power-above-limit"])
def test_laser_refuses_bad_setpoints_before_sending(laser, call, value, error, match):
    las, _ = laser
    sent = len(las.transcript)
    with pytest.raises(error, match=match):
        getattr(las, call)(value)
    assert len(las.transcript) == sent  # nothing went to the instrument


def test_laser_refuses_a_setpoint_above_its_limit_in_its_own_unit(laser):
    las, _ = laser
    limit = las.max_current_mA if las.control == "current" else las.max_power_mW
    sent = len(las.transcript)
    with pytest.raises(SetpointRefused, match="exceeds the hard limit"):
        las.set_setpoint(limit * 1.1)
    assert len(las.transcript) == sent


def test_laser_is_off_once_closed_and_refuses_use(laser):
    las, state = laser
    las.set_setpoint(1.0)
    las.output_on()
    assert _emitting(state)
    assert not las.closed
    las.close()
    assert las.closed and not _emitting(state)  # closing never leaves the beam on
    las.close()  # twice: no error
    for call in (las.output_on, las.output_off, las.is_output_on, las.get_power_mW,
                 lambda: las.set_current_mA(1.0)):
        with pytest.raises(DeviceError, match="already closed"):
            call()
    assert _json_round_trip(las.info())["kind"] == "laser"


# ----------------------------------------------------------------------- power meter
def test_power_meter_reads_watts_and_refuses_bad_wavelength(meter):
    p = meter.read_power_W()
    assert isinstance(p, float) and math.isfinite(p) and p >= 0
    assert meter.set_wavelength_nm(780.0) == pytest.approx(780.0)
    for value, error in ((float("nan"), ValueError), (-1.0, ValueError), (0, ValueError),
                         ("633", TypeError)):
        with pytest.raises(error, match="wavelength_nm: expected a"):
            meter.set_wavelength_nm(value)
    assert meter.get_wavelength_nm() == pytest.approx(780.0)


def test_power_meter_close_and_use_after_close(meter):
    assert not meter.closed
    with meter:
        pass
    assert meter.closed
    meter.close()  # twice: no error
    for call in (meter.read_power_W, meter.get_wavelength_nm,
                 lambda: meter.set_wavelength_nm(633.0)):
        with pytest.raises(DeviceError, match="already closed"):
            call()
    assert _json_round_trip(meter.info())["kind"] == "power_meter"
