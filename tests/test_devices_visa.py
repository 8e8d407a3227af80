"""VISA instruments on pyvisa-sim: limits refused before sending, interlock, SCPI errors."""

from __future__ import annotations

import pytest
from session_helpers import sim_bench

from devices import DeviceError, SetpointRefused
from devices.visa import (
    SIM_LASER_RESOURCE,
    SIM_POWER_METER_RESOURCE,
    LaserController,
    PowerMeter,
    open_visa,
    sim_yaml_path,
)


@pytest.fixture
def laser():
    las = LaserController(open_visa(SIM_LASER_RESOURCE, simulated=True), max_current_mA=80,
                          max_power_mW=5)
    yield las
    las.close()


def test_yaml_ships_in_the_package():
    from pathlib import Path

    assert Path(sim_yaml_path()).is_file()


def test_identity_and_setpoints(laser):
    assert "ITC4001" in laser.identity
    assert laser.set_current_mA(42.5) == pytest.approx(42.5)
    assert laser.set_power_mW(2.0) == pytest.approx(2.0)
    laser.control = "current"
    assert laser.set_setpoint(10) == pytest.approx(10)


@pytest.mark.parametrize("what,value", [("current", 80.01), ("current", 1e6), ("power", 5.5)])
def test_hard_limit_refused_before_anything_is_sent(laser, what, value):
    laser.set_current_mA(10)
    sent = list(laser.transcript)
    setter = laser.set_current_mA if what == "current" else laser.set_power_mW
    with pytest.raises(SetpointRefused, match="hard limit.*nothing was sent"):
        setter(value)
    assert list(laser.transcript) == sent  # not one message went out
    assert laser.get_current_mA() == pytest.approx(10)


def test_bad_setpoint_types(laser):
    with pytest.raises(TypeError, match="current_mA"):
        laser.set_current_mA("10")
    with pytest.raises(ValueError, match="current_mA"):
        laser.set_current_mA(-1)
    with pytest.raises(ValueError, match="power_mW"):
        laser.set_power_mW(float("nan"))


def test_instrument_error_queue_is_read(laser):
    laser.max_current_mA = 10_000  # our limit above the instrument's own (400 mA)
    with pytest.raises(DeviceError, match=r"refused 'SOUR:CURR 0.5'.*-222"):
        laser.set_current_mA(500)


def test_interlock_blocks_output():
    res = open_visa(SIM_LASER_RESOURCE, simulated=True)
    laser = LaserController(res, max_current_mA=80, max_power_mW=5)
    assert laser.interlock_closed()
    laser.output_on()
    assert laser.is_output_on()
    laser.output_off()
    res.write("SIM:INTL 1")  # trip the simulated interlock, on the instrument itself
    assert not laser.interlock_closed()
    n = len([m for m in laser.transcript if m[0] == "write"])
    with pytest.raises(DeviceError, match="interlock open"):
        laser.output_on()
    assert len([m for m in laser.transcript if m[0] == "write"]) == n
    assert not laser.is_output_on()
    laser.close()


def test_optical_power_estimate(laser):
    laser.set_current_mA(60)
    assert laser.optical_power_mW() == 0  # output off
    laser.output_on()
    assert laser.optical_power_mW() == pytest.approx(0.5 * (60 - 20))


def test_power_meter():
    pm = PowerMeter(open_visa(SIM_POWER_METER_RESOURCE, simulated=True), wavelength_nm=780)
    try:
        assert pm.get_wavelength_nm() == pytest.approx(780)
        assert 0.9e-3 < pm.read_power_W() < 1.1e-3
        with pytest.raises(DeviceError, match="-222"):
            pm.set_wavelength_nm(2000)
        assert pm.info()["sensor"].startswith("S120C")
    finally:
        pm.close()
    with pytest.raises(DeviceError, match="closed"):
        pm.read_power_W()


def test_unknown_resource_is_a_disconnect():
    from devices import DeviceDisconnected

    with pytest.raises(DeviceDisconnected, match="could not be opened"):
        open_visa("USB0::0x1::0x2::NOPE::INSTR", simulated=True)


# ------------------------------------------------------------ watchdog / keep-alive
def _wait(cond, timeout_s: float = 10.0) -> bool:
    import time

    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            return False
        time.sleep(0.01)
    return True


def _sim_laser(tmp_path, watchdog_s=None):
    from devices.visa import SimLaserResource

    res = SimLaserResource(open_visa(SIM_LASER_RESOURCE, simulated=True), tmp_path / "las.json")
    return LaserController(res, max_current_mA=80, max_power_mW=5, watchdog_s=watchdog_s)


def test_keepalive_holds_the_output_and_the_watchdog_ends_it(tmp_path):
    from devices.visa import sim_laser_state

    las = _sim_laser(tmp_path, watchdog_s=0.2)
    try:
        assert sim_laser_state(tmp_path / "las.json")["watchdog_s"] == 0.2  # the instrument's
        las.output_on()
        kicks = lambda: sum(1 for m in las.transcript if m == ("write", "SYST:WDOG:KICK"))  # noqa: E731
        assert _wait(lambda: kicks() >= 12)  # three watchdog periods of keep-alives
        assert las.is_output_on()  # kept alive: never expired
        assert sim_laser_state(tmp_path / "las.json")["emitting"]
        las.stop_keepalive()  # as if the process hung or was killed
        assert _wait(lambda: not las.is_output_on())  # the instrument switched off itself
        st = sim_laser_state(tmp_path / "las.json")
        assert st["expired"] and st["output"] == 0 and not st["emitting"]
    finally:
        las.close()


def test_state_file_knows_a_killed_process_left_the_beam_to_the_watchdog(tmp_path):
    """After SIGKILL nothing is recorded any more: the deadline says when the beam is off."""
    import time

    from devices.visa import sim_laser_state

    las = _sim_laser(tmp_path, watchdog_s=0.5)
    las.output_on()
    las.stop_keepalive()
    st = sim_laser_state(tmp_path / "las.json")
    assert st["emitting"]
    assert not sim_laser_state(tmp_path / "las.json", now=st["last_keepalive"] + 0.51)["emitting"]
    # abandoned as by a killed process: no close, no output off
    assert not sim_laser_state(tmp_path / "las.json", now=time.time() + 0.6)["emitting"]


def test_close_that_cannot_switch_off_leaves_the_watchdog_armed(tmp_path, caplog):
    """Closing switches the output off; if that fails, the watchdog must not be disarmed."""
    from devices.visa import SimLaserResource, sim_laser_state

    class OffFails(SimLaserResource):  # a cable that gives out just as the bench closes
        def write(self, msg: str):
            if msg.strip() == "OUTP 0":
                raise ConnectionResetError("USB cable unplugged")
            return super().write(msg)

    state = tmp_path / "las.json"
    las = LaserController(OffFails(open_visa(SIM_LASER_RESOURCE, simulated=True), state),
                          max_current_mA=80, max_power_mW=5, watchdog_s=0.3)
    las.output_on()
    las.close()
    assert "could not switch the output off on close" in caplog.text
    assert ("write", "SYST:WDOG 0.000") not in las.transcript  # not disarmed
    st = sim_laser_state(state)
    assert st["emitting"] and st["watchdog_s"] == pytest.approx(0.3)
    later = sim_laser_state(state, now=st["last_keepalive"] + 0.3 + 1e-3)
    assert not later["emitting"]  # the watchdog ends the beam


def test_watchdog_refused_for_an_instrument_without_one():
    from devices import ConfigError
    from devices.visa import SIM_BASIC_LASER_RESOURCE

    res = open_visa(SIM_BASIC_LASER_RESOURCE, simulated=True)
    with pytest.raises(ConfigError, match=r"laser\.watchdog_s: .*LDC205C-SIM.* no watchdog"):
        LaserController(res, watchdog_s=1.0)
    res.close()


def test_watchdog_bench_key(tmp_path):
    from devices import ConfigError, open_bench
    from devices.config import load_config
    from devices.visa import sim_laser_state

    cfg = sim_bench("tiny", laser={"watchdog_s": 0.4, "output": "on",
                                   "sim_state_file": str(tmp_path / "las.json")})
    with open_bench(cfg) as bench:
        assert bench.laser.watchdog_s == 0.4
        assert bench.info()["laser"]["watchdog_s"] == 0.4
        assert sim_laser_state(tmp_path / "las.json")["watchdog_s"] == pytest.approx(0.4)
    st = sim_laser_state(tmp_path / "las.json")
    assert st["output"] == 0 and st["watchdog_s"] == 0  # output off, then disarmed
    for bad, match in ((0, r"laser\.watchdog_s: expected a number in \(0, 60\]"),
                       (600, r"laser\.watchdog_s"), ("1", r"laser\.watchdog_s")):
        with pytest.raises(ConfigError, match=match):
            load_config({**cfg, "laser": {"backend": "sim", "watchdog_s": bad}})
    with pytest.raises(ConfigError, match=r"laser\.sim_state_file: only for backend sim"):
        load_config({**cfg, "laser": {"backend": "visa:USB0::1::INSTR", "sim_state_file": "x"}})
