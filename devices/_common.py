"""What every device shares: input checks, closed/disconnected state, context manager."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from devices.errors import DeviceDisconnected, DeviceError

__all__ = ["_Device", "_positive", "_pair"]


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return v


def _pair(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    x, y = (float(v) for v in value)
    _positive(x, name)
    _positive(y, name)
    return (x, y)


class _Device(ABC):
    kind = "device"

    def __init__(self, *, name: str, device_id: str, backend: str) -> None:
        self.name = str(name)
        self.device_id = str(device_id)
        self.backend = str(backend)
        self._closed = False
        self._disconnected: str | None = None

    def _check_usable(self) -> None:
        if self._closed:
            raise DeviceError(f"{self.kind} '{self.name}': already closed")
        if self._disconnected is not None:
            raise DeviceDisconnected(
                f"{self.kind} '{self.name}' disconnected earlier ({self._disconnected}); "
                "reopen the bench"
            )

    def _mark_disconnected(self, exc: BaseException) -> DeviceDisconnected:
        self._disconnected = str(exc) or type(exc).__name__
        if isinstance(exc, DeviceDisconnected):
            return exc
        return DeviceDisconnected(f"{self.kind} '{self.name}' disconnected: {exc}")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the device; safe to call twice and after a disconnect."""
        if self._closed:
            return
        self._closed = True
        self._close_hw()

    @abstractmethod
    def _close_hw(self) -> None: ...

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}' backend={self.backend!r}>"
