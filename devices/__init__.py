"""devices: SLMs, cameras and VISA instruments behind one interface, with simulated backends.

Open a bench from a TOML file (or a shipped example such as ``"sim.toml"``)::

    from devices import open_bench
    with open_bench("sim.toml") as bench:
        bench.slm.set_phase(phase_rad)          # radians; zero phase = top grey level
        frame = bench.camera.get_image()        # integer counts
        bench.truth                             # hidden flaws of a simulated bench

Names follow slmsuite; any slmsuite SLM or camera plugs in through ``backend =
"slmsuite:<Class>"``. See ``devices.config`` for the file format and ``devices.phase``
for the sign convention. ``MAX_EXPOSURE_S``, ``MAX_TIMEOUT_S``, ``MAX_SETTLE_S`` and
``MAX_LATENCY_S`` are the upper limits on the times a device may be asked to wait (larger
values are refused by the bench schema and the devices).
"""

from devices._common import MAX_EXPOSURE_S, MAX_LATENCY_S, MAX_SETTLE_S, MAX_TIMEOUT_S
from devices.base import SLM, Camera, CaptureInfo
from devices.bench import Bench, open_bench
from devices.config import load_config, shipped_benches
from devices.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    FrameDropped,
    SetpointRefused,
)
from devices.phase import PHASE_SIGN, ZERO_PHASE_GREY
from devices.slmsuite_adapter import SlmsuiteCamera, SlmsuiteSLM
from devices.visa import LaserController, PowerMeter

__all__ = [
    "SLM",
    "Camera",
    "CaptureInfo",
    "Bench",
    "open_bench",
    "load_config",
    "shipped_benches",
    "SlmsuiteSLM",
    "SlmsuiteCamera",
    "LaserController",
    "PowerMeter",
    "DeviceError",
    "DeviceTimeout",
    "DeviceDisconnected",
    "FrameDropped",
    "SetpointRefused",
    "ConfigError",
    "PHASE_SIGN",
    "ZERO_PHASE_GREY",
    "MAX_EXPOSURE_S",
    "MAX_TIMEOUT_S",
    "MAX_SETTLE_S",
    "MAX_LATENCY_S",
]
