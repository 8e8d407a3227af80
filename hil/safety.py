"""Signals that end a bench command: SIGINT, SIGTERM and SIGHUP take one path.

``signals_as_interrupt()`` is wrapped by ``hil.cli.main`` around every sub-command, so
every command that opens a bench (``hil run``, ``hil calibrate``, ``hil
bench-train``, ``hil devices check``, ``hil mask push``) handles ``kill`` (SIGTERM) and
a closed terminal (SIGHUP) exactly like Ctrl-C: the first of these signals raises
``Interrupted`` (a ``KeyboardInterrupt``) in the main thread, so the bench's context
manager switches the laser off and closes the devices, and ``hil run`` records
``"interrupted"`` in ``run.json``. Further signals while that shutdown runs are logged
and ignored, so a second Ctrl-C or ``kill`` cannot cut the laser-off short (the devices
time out, so the shutdown is bounded). The previous handlers are restored on exit.

The exit status is ``exit_status(exc)``: 128 + the signal number (130 for SIGINT,
143 for SIGTERM, 129 for SIGHUP), as a shell reports a process killed by it.

What software cannot cover, SIGKILL and power loss, needs the hardware interlock and
the laser controller's watchdog (README, "Safety: what software cannot cover").
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Interrupted", "signals_as_interrupt", "exit_status", "signal_name", "HANDLED_SIGNALS"]

log = logging.getLogger(__name__)

HANDLED_SIGNALS: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop (handled everywhere as ``KeyboardInterrupt``)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        super().__init__(self.signal_name)


def exit_status(exc: BaseException) -> int:
    """128 + the signal number for ``Interrupted``; 130 (SIGINT) for a plain Ctrl-C."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def signal_name(exc: BaseException) -> str:
    """"SIGTERM", "SIGHUP", ... for ``Interrupted``; "SIGINT" for a plain ``KeyboardInterrupt``."""
    return str(getattr(exc, "signal_name", "SIGINT"))


@contextlib.contextmanager
def signals_as_interrupt(names: tuple[str, ...] = HANDLED_SIGNALS) -> Iterator[None]:
    """Turn the first of ``names`` into ``Interrupted`` in the main thread; ignore the rest.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            log.warning("%s received while shutting down the bench; ignored (the laser is "
                        "being switched off)", signal.Signals(signum).name)
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    try:
        for name in names:
            sig = getattr(signal, name, None)
            if sig is None:  # e.g. SIGHUP on Windows
                continue
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
