"""The simulated VISA instruments' coupling to the simulated beam: the power meter.

The laser controller and the power meter themselves are pyvisa-sim instruments
(``devices/sim/instruments.yaml``, opened by ``devices.visa`` with the ``@sim`` backend);
what pyvisa-sim cannot express, one instrument's reading depending on another's state,
is here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from devices.visa import PowerMeter

__all__ = ["SimPowerMeter"]


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
