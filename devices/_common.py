"""What every device shares: input checks, upper limits on times, closed/disconnected
state, context manager, and ``call_with_deadline`` (a watchdog for driver calls that
ignore their own time-out).

Upper limits: no time a device is asked to wait may be unbounded, or a typo (an exposure
of 1e9 s) hangs a run with the laser on. ``MAX_EXPOSURE_S``, ``MAX_TIMEOUT_S``,
``MAX_SETTLE_S`` and ``MAX_LATENCY_S`` bound the exposure, the time-out per frame or
instrument query, the SLM settle time and a simulated frame latency; the bench schema
(``devices.config``) and the base classes (``set_exposure``, ``get_image(timeout_s=)``,
``set_phase(settle=)``) refuse larger values with a message naming the limit.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from devices.errors import DeviceDisconnected, DeviceError, DeviceTimeout
from simulation.validate import check_number

__all__ = ["_Device", "_pair", "call_with_deadline", "MAX_EXPOSURE_S",
           "MAX_TIMEOUT_S", "MAX_SETTLE_S", "MAX_LATENCY_S"]

MAX_EXPOSURE_S = 60.0  # camera integration time
MAX_TIMEOUT_S = 60.0  # wait per frame beyond the exposure; VISA query time-out
MAX_SETTLE_S = 10.0  # SLM settle time after a write
MAX_LATENCY_S = 10.0  # simulated frame latency


def call_with_deadline(fn: Callable[..., Any], deadline_s: float, what: str,
                       **kwargs: Any) -> Any:
    """``fn(**kwargs)`` in a daemon thread; ``DeviceTimeout`` if it has not returned in time.

    For driver calls that may ignore their own time-out. The worker is a daemon thread
    that nothing joins: after a ``DeviceTimeout`` the hung call is abandoned, and the
    process can still exit (a ``concurrent.futures`` pool would be joined at exit and
    keep it alive forever). Returns what ``fn`` returns; on a time-out raises
    ``DeviceTimeout`` with the still-running thread as its ``hung_thread`` attribute.
    An exception raised by ``fn`` is re-raised here, in the caller's thread.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["result"] = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"watchdog-{what}", daemon=True)
    worker.start()
    if not done.wait(deadline_s):
        err = DeviceTimeout(f"watchdog: {what}: the driver did not return within "
                            f"{deadline_s:.3g} s")
        err.hung_thread = worker  # type: ignore[attr-defined]
        raise err
    if "error" in box:
        raise box["error"]
    return box["result"]


def _pair(value: Any, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    x, y = (float(v) for v in value)
    return (check_number(x, name), check_number(y, name))


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
