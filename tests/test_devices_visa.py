"""VISA instruments on pyvisa-sim: limits refused before sending, interlock, SCPI errors."""

from __future__ import annotations

import pytest

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


def test_interlock_blocks_output(laser):
    assert laser.interlock_closed()
    laser.output_on()
    assert laser.is_output_on()
    laser.output_off()
    laser._res.write("SIM:INTL 1")  # trip the simulated interlock
    assert not laser.interlock_closed()
    n = len([m for m in laser.transcript if m[0] == "write"])
    with pytest.raises(DeviceError, match="interlock open"):
        laser.output_on()
    assert len([m for m in laser.transcript if m[0] == "write"]) == n
    assert not laser.is_output_on()


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
