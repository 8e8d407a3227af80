"""VISA instruments: a laser controller and an optical power meter (pyvisa).

Both speak SCPI-like commands (a Thorlabs ITC4001 and PM100D as models): a write
gets no reply, and after every write the instrument's error queue (``SYST:ERR?``)
is read, so a refused command raises ``DeviceError`` with the instrument's own
message. Hard limits configured on the bench (``max_current_mA``, ``max_power_mW``)
are checked *before* anything is sent (``SetpointRefused``), and the output is
switched on only while the interlock is closed. Every message sent and received is
kept in ``transcript`` (the last ``TRANSCRIPT_LENGTH``; for tests and post-mortems).

Watchdog: a laser controller with a communication watchdog switches its own output off
when no keep-alive has come for ``watchdog_s`` seconds, which covers what software
cannot (the process killed with SIGKILL, the interpreter frozen, or the PC losing power;
a main thread stuck while the keep-alive thread runs is not covered).
``LaserController(watchdog_s=...)`` arms it (``SYST:WDOG <s>``) and sends the
keep-alive (``SYST:WDOG:KICK``) from a daemon thread every ``watchdog_s / 4``; an
instrument without the command refuses it and the bench key is refused
(``ConfigError`` naming ``laser.watchdog_s``). Messages are sent under a lock, so the
keep-alive and the main thread never interleave a command with its error check.

Simulated versions: ``devices/sim/instruments.yaml`` (package data), opened through
pyvisa-sim's ``@sim`` backend by ``open_visa(..., simulated=True)``. pyvisa-sim keeps
no clock and no state outside the process: ``SimLaserResource`` wraps the simulated
laser to switch the output off when its watchdog expires, and, given a ``state_file``,
mirrors the output state there (JSON, see ``sim_laser_state``) so another process (a
test, an operator) can see whether the simulated beam is on, also after the process
that drives it died.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any

from devices.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    SetpointRefused,
)
from simulation.atomic import write_text_atomic
from simulation.validate import check_number

__all__ = [
    "LaserController",
    "PowerMeter",
    "open_visa",
    "sim_yaml_path",
    "SIM_LASER_RESOURCE",
    "SIM_POWER_METER_RESOURCE",
    "SIM_BASIC_LASER_RESOURCE",
    "SimLaserResource",
    "sim_laser_state",
]

log = logging.getLogger(__name__)

TRANSCRIPT_LENGTH = 2000  # messages kept per instrument (a long session must not grow)

SIM_LASER_RESOURCE = "USB0::0x1313::0x804A::M00000001::INSTR"
SIM_POWER_METER_RESOURCE = "USB0::0x1313::0x8078::P0000001::INSTR"
SIM_BASIC_LASER_RESOURCE = "USB0::0x1313::0x804A::M00000002::INSTR"  # no watchdog command
WATCHDOG_COMMAND = "SYST:WDOG"
KEEPALIVE_COMMAND = "SYST:WDOG:KICK"
KEEPALIVES_PER_PERIOD = 4


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
        self._lock = threading.RLock()  # one command (and its error check) at a time
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
        with self._lock:
            self._check()
            self.transcript.append(("query", msg))
            reply = str(self._io(self._res.query, msg)).strip()
            self.transcript.append(("reply", reply))
            return reply

    def _write(self, msg: str) -> None:
        with self._lock:
            self._write_checked(msg)

    def _write_checked(self, msg: str) -> None:
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

    @property
    def closed(self) -> bool:
        """True once ``close`` has run (as ``SLM.closed`` and ``Camera.closed``)."""
        return self._closed

    def close(self) -> None:
        with self._lock:
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


class LaserController(_Instrument):
    """Laser diode controller: identity, output on/off, current or power set-point, interlock.

    ``control`` says which set-point drives the laser ("current" or "power"); both
    limits are hard: a set-point above them raises ``SetpointRefused`` and nothing is sent.
    ``slope_mW_per_mA`` and ``threshold_mA`` turn a current into an optical power estimate.
    ``watchdog_s`` arms the instrument's watchdog and starts the keep-alive thread (see
    the module docstring); ``close`` stops the keep-alive and disarms the watchdog.
    """

    kind = "laser"

    def __init__(self, resource: Any, *, name: str = "laser", backend: str = "",
                 control: str = "current", max_current_mA: float = 100.0,
                 max_power_mW: float = 10.0, slope_mW_per_mA: float = 0.5,
                 threshold_mA: float = 20.0, watchdog_s: float | None = None) -> None:
        if control not in ("current", "power"):
            raise ValueError(f"control: expected 'current' or 'power', got {control!r}")
        self.control = control
        self.max_current_mA = check_number(max_current_mA, "max_current_mA", allow_zero=True)
        self.max_power_mW = check_number(max_power_mW, "max_power_mW", allow_zero=True)
        self.slope_mW_per_mA = float(slope_mW_per_mA)
        self.threshold_mA = float(threshold_mA)
        self.watchdog_s: float | None = None
        self._keepalive: threading.Thread | None = None
        self._stop_keepalive = threading.Event()
        super().__init__(resource, name=name, backend=backend)
        if watchdog_s is not None:
            self.arm_watchdog(watchdog_s)

    # ---------------------------------------------------------------- watchdog
    def arm_watchdog(self, watchdog_s: float) -> None:
        """Arm the instrument's watchdog and keep it fed from a daemon thread.

        Raises ``ConfigError`` (naming ``laser.watchdog_s``) when the instrument has no
        watchdog command.
        """
        v = check_number(watchdog_s, "watchdog_s")
        try:
            self._write(f"{WATCHDOG_COMMAND} {v:.3f}")
        except DeviceError as exc:
            raise ConfigError(
                f"laser.watchdog_s: laser '{self.name}' ({self.identity}) has no watchdog "
                f"command ({exc}); remove the key, and rely on the hardware interlock"
            ) from exc
        self.watchdog_s = v
        self._stop_keepalive.clear()
        self._keepalive = threading.Thread(target=self._keepalive_loop, daemon=True,
                                           name=f"laser-keepalive-{self.name}")
        self._keepalive.start()

    def _keepalive_loop(self) -> None:
        period = float(self.watchdog_s or 0) / KEEPALIVES_PER_PERIOD
        while not self._stop_keepalive.wait(period):
            try:
                self.keepalive()
            except DeviceError as exc:  # the watchdog will switch the output off
                if not self._closed:
                    log.error("laser '%s': keep-alive failed (%s); the instrument's watchdog "
                              "switches the output off within %g s", self.name, exc,
                              self.watchdog_s)
                return

    def keepalive(self) -> None:
        """Send one keep-alive (the thread does this every ``watchdog_s / 4``)."""
        self._write(KEEPALIVE_COMMAND)

    def stop_keepalive(self) -> None:
        """Stop sending keep-alives (the watchdog then switches the output off in time)."""
        self._stop_keepalive.set()
        t = self._keepalive
        if t is not None and t is not threading.current_thread():
            t.join(timeout=10.0)  # at most one message in flight, itself timed out
        self._keepalive = None

    def close(self) -> None:
        """Switch the output off, stop the keep-alive, disarm the watchdog, close the
        resource: a closed controller never leaves the beam on (as ``Bench.close``). When
        the output cannot be switched off, an armed watchdog stays armed (with no
        keep-alive it switches the output off itself) and the error is logged."""
        if self._closed:
            return
        off = True
        try:
            self.output_off()
        except DeviceError as exc:  # closing: report, continue
            off = False
            log.error("laser '%s': could not switch the output off on close: %s", self.name, exc)
        self.stop_keepalive()
        if not off:  # leave an armed watchdog armed: with no keep-alive it ends the beam
            super().close()
            return
        if self.watchdog_s is not None:
            try:
                self._write(f"{WATCHDOG_COMMAND} 0.000")
            except DeviceError as exc:  # closing: report, continue
                log.warning("laser '%s': could not disarm the watchdog: %s", self.name, exc)
        super().close()

    def _refuse(self, what: str, value: float, limit_name: str, limit: float, unit: str) -> None:
        if value > limit:
            raise SetpointRefused(
                f"{what}: {value:g} {unit} exceeds the hard limit {limit_name} = {limit:g} {unit} "
                f"of laser '{self.name}'; nothing was sent"
            )

    def set_current_mA(self, current_mA: float) -> float:
        """Set the drive current (mA); returns the read-back value."""
        v = check_number(current_mA, "current_mA", allow_zero=True)
        self._refuse("current_mA", v, "max_current_mA", self.max_current_mA, "mA")
        self._write(f"SOUR:CURR {v / 1000:g}")
        return self.get_current_mA()

    def get_current_mA(self) -> float:
        return self._float("SOUR:CURR?") * 1000

    def set_power_mW(self, power_mW: float) -> float:
        """Set the optical power set-point (mW); returns the read-back value."""
        v = check_number(power_mW, "power_mW", allow_zero=True)
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
                 max_power_mW=self.max_power_mW, watchdog_s=self.watchdog_s)
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
        v = check_number(wavelength_nm, "wavelength_nm")
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


class SimLaserResource:
    """The simulated laser's resource with what pyvisa-sim cannot model: time and state.

    Wraps a pyvisa-sim resource of the laser controller: before every message it
    switches the output off when an armed watchdog (``SYST:WDOG <s>``) has had no
    keep-alive (``SYST:WDOG:KICK``) for longer than its period, as the instrument would;
    with ``state_file``, every change of the output, watchdog or keep-alive is written
    there (atomically, JSON) for ``sim_laser_state``.
    """

    def __init__(self, resource: Any, state_file: str | os.PathLike | None = None) -> None:
        self._res = resource
        self.state_file = None if state_file is None else Path(state_file)
        self.watchdog_s = 0.0
        self.last_keepalive = time.time()
        self.output = 0
        self.expired = False
        self._save()

    def __getattr__(self, name: str) -> Any:  # timeout, session, ... of the real resource
        return getattr(self._res, name)

    def _expire(self) -> None:
        if (self.watchdog_s > 0 and self.output
                and time.time() - self.last_keepalive > self.watchdog_s):
            self._res.write("OUTP 0")
            self.output, self.expired = 0, True
            log.warning("simulated laser: watchdog expired (no keep-alive for %g s); output off",
                        self.watchdog_s)
            self._save()

    def write(self, msg: str) -> Any:
        self._expire()
        out = self._res.write(msg)
        head = msg.strip().upper()
        if head == KEEPALIVE_COMMAND:
            self.last_keepalive = time.time()
        elif head.startswith(WATCHDOG_COMMAND + " "):
            self.watchdog_s = float(self._res.query(WATCHDOG_COMMAND + "?"))
            self.last_keepalive = time.time()
        elif head.startswith("OUTP "):
            self.output = int(self._res.query("OUTP?"))
        else:
            return out
        self._save()
        return out

    def query(self, msg: str) -> Any:
        self._expire()
        return self._res.query(msg)

    def close(self) -> None:
        self._res.close()

    def _save(self) -> None:
        if self.state_file is None:
            return
        state = {"output": self.output, "watchdog_s": self.watchdog_s,
                 "last_keepalive": self.last_keepalive, "expired": self.expired,
                 "time": time.time(), "pid": os.getpid()}
        write_text_atomic(self.state_file, json.dumps(state))


def sim_laser_state(path: str | os.PathLike, now: float | None = None) -> dict[str, Any]:
    """The simulated laser's state from its ``state_file``, with ``emitting`` worked out.

    ``emitting`` is False when the output is off, or when an armed watchdog has had no
    keep-alive for longer than its period at ``now`` (the instrument has switched off,
    even if the process that drove it was killed and could not record it).
    """
    state = json.loads(Path(path).read_text())
    t = time.time() if now is None else float(now)
    wd = float(state.get("watchdog_s", 0.0))
    expired = wd > 0 and t - float(state["last_keepalive"]) > wd
    state["emitting"] = bool(state["output"]) and not expired
    return state
