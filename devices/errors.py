"""The exceptions every device raises.

A caller needs to tell four things apart: a device that failed (``DeviceError``),
one that did not answer in time (``DeviceTimeout``), one that went away
(``DeviceDisconnected``, the single type for every kind of disconnect), and a
bench description that is wrong (``ConfigError``, a ``ValueError`` whose message
names the key).
"""

from __future__ import annotations

__all__ = [
    "DeviceError",
    "DeviceTimeout",
    "DeviceDisconnected",
    "ConfigError",
    "FrameDropped",
    "SetpointRefused",
]


class DeviceError(RuntimeError):
    """A device refused a command or failed; the message says which device and why."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A device did not answer within its time-out."""


class DeviceDisconnected(DeviceError, ConnectionError):
    """A device went away (cable, power, driver); reopen the bench to continue."""


class FrameDropped(DeviceError):
    """One frame was lost; the camera retries up to ``capture_attempts`` times."""


class ConfigError(ValueError):
    """A bench description is wrong; the message starts with the key, e.g. ``camera.exposure_s``."""


class SetpointRefused(DeviceError, ValueError):
    """A set-point above a configured hard limit; refused before anything was sent."""
