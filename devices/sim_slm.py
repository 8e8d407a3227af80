"""The simulated SLM: slmsuite's ``SimulatedSLM`` with the hidden SLM flaws, its panel
timing (refresh, settling) and the snapshot a simulated exposure takes of it.

* ``refresh_hz``: a write waits for the panel's next refresh tick and lands there (a
  vsync-locked display): ``last_write_time`` is when it landed, the ticks count from
  ``refresh_epoch``;
* settling: a frame taken ``dt`` after a write sees the display moved
  ``settled_fraction()`` of the way from the old grey levels to the new: ``1 - exp(-5 dt /
  settle_time_s)`` (all of it from ``settle_time_s`` on), or, with the hidden
  ``settle_tau_s`` flaw, ``1 - exp(-dt / tau)`` whatever ``settle_time_s`` says;
* ``displayed()``: what the panel shows at one instant (a copy of the grey levels, the
  previous pattern and the settled fraction), taken atomically with respect to writes:
  a write holds a lock from the moment it starts to overwrite the grey levels (after its
  refresh wait) until ``last_write_time`` is set, so a snapshot sees either the whole
  old write or the whole new one, never the new grey levels with the old write's time.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from devices.flaws import Flaws
from devices.slmsuite_adapter import SlmsuiteSLM

__all__ = ["SimSLM", "DisplayedFrame", "quiet_slmsuite"]


def quiet_slmsuite() -> None:
    """Route slmsuite's logging to stderr, warnings only (once per process)."""
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


@dataclass(frozen=True)
class DisplayedFrame:
    """What the panel shows at one instant (``SimSLM.displayed``)."""

    display: np.ndarray  # the grey levels last written (a private copy)
    previous: np.ndarray | None  # the grey levels before them (None: not kept, no settling)
    settled: float  # how far the liquid crystal has moved from ``previous`` to ``display``
    time: float  # time.perf_counter() of the snapshot

    def mixed_display(self) -> np.ndarray:
        """The grey levels the panel shows, settling mixed in (integer, rounded)."""
        if self.settled >= 1.0 or self.previous is None:
            return self.display
        mix = self.previous * (1 - self.settled) + self.display.astype(np.float32) * self.settled
        return np.rint(mix).astype(self.display.dtype)


class SimSLM(SlmsuiteSLM):
    """Our SLM around slmsuite's ``SimulatedSLM`` carrying the hidden SLM flaws."""

    def __init__(self, *, shape: tuple[int, int] = (512, 512), bitdepth: int = 8,
                 pitch_um: float = 8.0, wav_um: float = 0.633, wav_design_um: float | None = None,
                 settle_time_s: float = 0.0, flaws: Flaws | None = None, name: str = "sim-slm",
                 device_id: str = "") -> None:
        quiet_slmsuite()
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
        # a write's critical section (grey levels to last_write_time) against a snapshot
        self._state_lock = threading.Lock()
        self._writer = threading.local()  # whether this thread holds the lock for a write
        super().__init__(wrapped, name=name, backend="sim", settle_time_s=settle_time_s,
                         device_id=device_id or f"sim:slm:{name}")
        self.flaws = flaws
        self.previous_display = np.asarray(wrapped.display).copy()

    waits_for_refresh = True  # a write returns once it is on the panel (vsync-locked)

    @property
    def refresh_epoch(self) -> float | None:
        """``time.perf_counter()`` of the panel's first refresh tick (the first write with
        ``refresh_hz`` set; None before it): ticks fall every 1/``refresh_hz`` from here."""
        return getattr(self, "_refresh_epoch", None)

    def _wait_for_refresh(self) -> None:
        """With ``refresh_hz``, sleep until the panel's next refresh (ticks every
        1/``refresh_hz`` from the first write)."""
        if not self.refresh_hz:
            return
        period = 1.0 / self.refresh_hz
        now = time.perf_counter()
        epoch = getattr(self, "_refresh_epoch", None)
        if epoch is None:
            self._refresh_epoch = epoch = now
        ticks = math.ceil((now - epoch) / period - 1e-9)
        wait = epoch + ticks * period - now
        if wait > 0:
            time.sleep(wait)

    def _before_write(self) -> None:
        """Wait for the refresh, then take the state lock (released once
        ``last_write_time`` is set) and keep the old grey levels for the settling."""
        self._wait_for_refresh()
        self._state_lock.acquire()
        self._writer.holding = True
        flaws = getattr(self, "flaws", None)
        if self.settle_time_s > 0 or (flaws is not None and flaws.settle_tau_s > 0):
            # a new array each time: a snapshot may keep a reference to the old one
            self.previous_display = np.array(self.display, copy=True)

    def _locked_write(self, write: Callable[..., np.ndarray], value: Any,
                      settle: bool | float) -> np.ndarray:
        """``write(value, settle=False)`` holding the state lock from ``_before_write`` on,
        then the settle wait of ``SLM.set_phase`` outside it."""
        self._writer.holding = False
        try:
            display = write(value, settle=False)
        finally:
            if getattr(self._writer, "holding", False):
                self._writer.holding = False
                self._state_lock.release()
        self._settle_after_write(settle)
        return display

    def set_phase(self, phase_rad: Any, settle: bool | float = True) -> np.ndarray:
        """``SLM.set_phase``, atomic with respect to ``displayed()`` (module docstring)."""
        return self._locked_write(super().set_phase, phase_rad, settle)

    def set_grey_levels(self, levels: Any, settle: bool | float = True) -> np.ndarray:
        """``SLM.set_grey_levels``, atomic with respect to ``displayed()``."""
        return self._locked_write(super().set_grey_levels, levels, settle)

    def displayed(self) -> DisplayedFrame:
        """What the panel shows now: a copy of the grey levels, the previous pattern and the
        settled fraction, consistent with one another (never half of a write)."""
        with self._state_lock:
            now = time.perf_counter()
            f = self.settled_fraction(now)
            return DisplayedFrame(display=np.array(self.display, copy=True),
                                  previous=None if f >= 1.0 else self.previous_display,
                                  settled=f, time=now)

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
