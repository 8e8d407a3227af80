"""VISA instruments: a laser controller and an optical power meter (pyvisa).

Both speak SCPI-like commands (a Thorlabs ITC4001 and PM100D as models): a write
gets no reply, and after every write the instrument's error queue (``SYST:ERR?``)
is read, so a refused command raises ``DeviceError`` with the instrument's own
message. Hard limits configured on the bench (``max_current_mA``, ``max_power_mW``)
are checked *before* anything is sent (``SetpointRefused``), and the output is
switched on only while the interlock is closed. Every message sent and received is
kept in ``transcript`` (the last ``TRANSCRIPT_LENGTH``; for tests and post-mortems).

Simulated versions: ``devices/sim/instruments.yaml`` (package data), opened through
pyvisa-sim's ``@sim`` backend by ``open_visa(..., simulated=True)``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any

from devices.errors import DeviceDisconnected, DeviceError, DeviceTimeout, SetpointRefused

__all__ = [
    "LaserController",
    "PowerMeter",
    "open_visa",
    "sim_yaml_path",
    "SIM_LASER_RESOURCE",
    "SIM_POWER_METER_RESOURCE",
]

TRANSCRIPT_LENGTH = 2000  # messages kept per instrument (a long session must not grow)

SIM_LASER_RESOURCE = "USB0::0x1313::0x804A::M00000001::INSTR"
SIM_POWER_METER_RESOURCE = "USB0::0x1313::0x8078::P0000001::INSTR"


def sim_yaml_path() -> str:
    """Path of the pyvisa-sim description shipped with the package."""
    return str(resources.files("devices") / "sim" / "instruments.yaml")


def _fresh_sim_library() -> str:
    """A pyvisa-sim library with instruments in their power-on state.

    pyvisa caches one library (and so one set of simulated instruments, with their
    state) per library path; a private copy of the YAML gives every bench its own.
    The copy is deleted once the library has read it (see ``open_visa``).
    """
    fd, name = tempfile.mkstemp(prefix="hil-visa-sim-", suffix=".yaml")
    os.close(fd)
    shutil.copyfile(sim_yaml_path(), name)
    return f"{name}@sim"


def open_visa(resource: str, *, simulated: bool = False, library: str = "",
              timeout_s: float = 2.0) -> Any:
    """Open a message-based VISA resource.

    ``simulated``: the pyvisa-sim YAML shipped with the package, instruments fresh from
    power-on; ``library``: the pyvisa library spec ("" = default IVI, "@py" = pyvisa-py).
    """
    try:
        import pyvisa
    except ImportError as exc:  # pragma: no cover - pyvisa is a dependency
        raise DeviceError("VISA instruments need pyvisa (pip install pyvisa pyvisa-py)") from exc
    lib = _fresh_sim_library() if simulated else library
    try:
        rm = pyvisa.ResourceManager(lib) if lib else pyvisa.ResourceManager()
    except (OSError, ValueError) as exc:
        raise DeviceError(
            f"no VISA library ({exc}); install NI-VISA or pyvisa-py and set "
            "visa_library = \"@py\""
        ) from exc
    try:
        if simulated:
            known = {rm.resource_info(r).resource_name for r in rm.list_resources()}
            if rm.resource_info(resource).resource_name not in known:
                raise ValueError(f"not one of the simulated resources {sorted(known)}")
        res = rm.open_resource(resource, read_termination="\n", write_termination="\n",
                               timeout=int(timeout_s * 1000))
    except Exception as exc:  # pyvisa raises VisaIOError and ValueError here
        raise DeviceDisconnected(
            f"VISA resource {resource!r} could not be opened ({exc}); is it listed by "
            "`python -m pyvisa info` / rm.list_resources()? (USB permissions on Linux)"
        ) from exc
    finally:
        if simulated:  # parsed when the library was made; the copy is not needed again
            Path(lib.rsplit("@", 1)[0]).unlink(missing_ok=True)
    return res


class _Instrument:
    kind = "instrument"

    def __init__(self, resource: Any, *, name: str, backend: str = "") -> None:
        self._res = resource
        self.name = name
        self.backend = backend
        self.transcript: deque[tuple[str, str]] = deque(maxlen=TRANSCRIPT_LENGTH)
        self._closed = False
        self.identity = self._query("*IDN?")

    def _check(self) -> None:
        if self._closed:
            raise DeviceError(f"{self.kind} '{self.name}': already closed")

    def _io(self, fn, msg: str):
        try:
            return fn(msg)
        except Exception as exc:
            text = str(exc)
            if "TMO" in text or "imeout" in text:
                raise DeviceTimeout(f"{self.kind} '{self.name}': no answer to {msg!r} "
                                    f"({text})") from exc
            if type(exc).__name__ == "VisaIOError" or isinstance(exc, OSError):
                raise DeviceDisconnected(f"{self.kind} '{self.name}': {msg!r} failed "
                                         f"({text})") from exc
            raise

    def _query(self, msg: str) -> str:
        self._check()
        self.transcript.append(("query", msg))
        reply = str(self._io(self._res.query, msg)).strip()
        self.transcript.append(("reply", reply))
        return reply

    def _write(self, msg: str) -> None:
        self._check()
        self.transcript.append(("write", msg))
        self._io(self._res.write, msg)
        err = self._query("SYST:ERR?")
        code = err.split(",", 1)[0].strip()
        try:
            failed = int(code) != 0
        except ValueError:
            failed = True
        if failed:
            raise DeviceError(f"{self.kind} '{self.name}' refused {msg!r}: {err}")

    def _float(self, msg: str) -> float:
        reply = self._query(msg)
        try:
            return float(reply)
        except ValueError as exc:
            raise DeviceError(f"{self.kind} '{self.name}': {msg!r} answered {reply!r}, "
                              "expected a number") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._res.close()
        except Exception:  # noqa: BLE001 - closing a lost device must not fail
            pass

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "backend": self.backend,
                "identity": self.identity}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return v


class LaserController(_Instrument):
    """Laser diode controller: identity, output on/off, current or power set-point, interlock.

    ``control`` says which set-point drives the laser ("current" or "power"); both
    limits are hard: a set-point above them raises ``SetpointRefused`` and nothing is sent.
    ``slope_mW_per_mA`` and ``threshold_mA`` turn a current into an optical power estimate.
    """

    kind = "laser"

    def __init__(self, resource: Any, *, name: str = "laser", backend: str = "",
                 control: str = "current", max_current_mA: float = 100.0,
                 max_power_mW: float = 10.0, slope_mW_per_mA: float = 0.5,
                 threshold_mA: float = 20.0) -> None:
        if control not in ("current", "power"):
            raise ValueError(f"control: expected 'current' or 'power', got {control!r}")
        self.control = control
        self.max_current_mA = _number(max_current_mA, "max_current_mA")
        self.max_power_mW = _number(max_power_mW, "max_power_mW")
        self.slope_mW_per_mA = float(slope_mW_per_mA)
        self.threshold_mA = float(threshold_mA)
        super().__init__(resource, name=name, backend=backend)

    def _refuse(self, what: str, value: float, limit_name: str, limit: float, unit: str) -> None:
        if value > limit:
            raise SetpointRefused(
                f"{what}: {value:g} {unit} exceeds the hard limit {limit_name} = {limit:g} {unit} "
                f"of laser '{self.name}'; nothing was sent"
            )

    def set_current_mA(self, current_mA: float) -> float:
        """Set the drive current (mA); returns the read-back value."""
        v = _number(current_mA, "current_mA")
        self._refuse("current_mA", v, "max_current_mA", self.max_current_mA, "mA")
        self._write(f"SOUR:CURR {v / 1000:g}")
        return self.get_current_mA()

    def get_current_mA(self) -> float:
        return self._float("SOUR:CURR?") * 1000

    def set_power_mW(self, power_mW: float) -> float:
        """Set the optical power set-point (mW); returns the read-back value."""
        v = _number(power_mW, "power_mW")
        self._refuse("power_mW", v, "max_power_mW", self.max_power_mW, "mW")
        self._write(f"SOUR:POW {v / 1000:g}")
        return self.get_power_mW()

    def get_power_mW(self) -> float:
        return self._float("SOUR:POW?") * 1000

    def set_setpoint(self, value: float) -> float:
        """Set whichever set-point ``control`` names (mA or mW)."""
        return self.set_current_mA(value) if self.control == "current" else self.set_power_mW(value)

    def interlock_closed(self) -> bool:
        """True when the interlock allows emission."""
        return self._query("OUTP:PROT:INTL:TRIP?").strip() in ("0", "+0")

    def output_on(self) -> None:
        """Switch the output on; refused (nothing sent) while the interlock is open."""
        if not self.interlock_closed():
            raise DeviceError(f"laser '{self.name}': interlock open; output stays off "
                              "(close the interlock first)")
        self._write("OUTP 1")

    def output_off(self) -> None:
        """Switch the output off (always attempted, also on a closing bench)."""
        self._write("OUTP 0")

    def is_output_on(self) -> bool:
        return self._query("OUTP?").strip() in ("1", "+1", "ON")

    def optical_power_mW(self) -> float:
        """Estimated emitted power: 0 when off; the set-point, or slope * (I - threshold)."""
        if not self.is_output_on():
            return 0.0
        if self.control == "power":
            return self.get_power_mW()
        return max(0.0, self.slope_mW_per_mA * (self.get_current_mA() - self.threshold_mA))

    def info(self) -> dict[str, Any]:
        d = super().info()
        d.update(control=self.control, max_current_mA=self.max_current_mA,
                 max_power_mW=self.max_power_mW)
        if not self._closed:
            d.update(output_on=self.is_output_on(), interlock_closed=self.interlock_closed())
        return d


class PowerMeter(_Instrument):
    """Optical power meter: wavelength correction and power reading (W)."""

    kind = "power_meter"

    def __init__(self, resource: Any, *, name: str = "power_meter", backend: str = "",
                 wavelength_nm: float | None = None) -> None:
        super().__init__(resource, name=name, backend=backend)
        try:
            self.sensor = self._query("SYST:SENS:IDN?")
        except DeviceTimeout:
            self.sensor = ""
        if wavelength_nm is not None:
            self.set_wavelength_nm(wavelength_nm)

    def set_wavelength_nm(self, wavelength_nm: float) -> float:
        v = _number(wavelength_nm, "wavelength_nm")
        if v == 0:
            raise ValueError("wavelength_nm: expected a number > 0, got 0")
        self._write(f"SENS:CORR:WAV {v:g}")
        return self.get_wavelength_nm()

    def get_wavelength_nm(self) -> float:
        return self._float("SENS:CORR:WAV?")

    def read_power_W(self) -> float:
        """One power reading in watts."""
        return self._float("MEAS:POW?")

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["sensor"] = self.sensor
        if not self._closed:
            d["wavelength_nm"] = self.get_wavelength_nm()
        return d
