"""Argument checks, one set for every package, in one set of words.

A bad argument raises ``WrongKind`` (the wrong kind of value: a ``TypeError`` that is
also a ``ValueError``) or ``ValueError`` (the right kind, out of range), and the message
starts with the argument's name::

    exposure_s: expected a finite number > 0, got -1.0
    timeout_s: expected at most 60 s (upper limit), got 90.0
    averaging: expected an integer >= 1, got 0
    mode: expected one of 'split', 'time', got 'both'

Torch-free (numpy only), so that the real-device backends and the CLI can use it without
loading the twin. ``simulation._checks`` adds the tensor checks on top of these;
``devices.config`` keeps its declarative bench-file schema (whose keys name their own
limits), and ``hil.cli_args`` parses command-line text (argparse's own error type).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_number", "check_count", "check_choice", "WrongKind"]


class WrongKind(TypeError, ValueError):
    """The wrong kind of value (a string, a bool, a float where an integer belongs): a
    ``TypeError``, and a ``ValueError`` too, for callers that catch every bad argument as
    one (numpy's ``AxisError`` is both ``ValueError`` and ``IndexError`` the same way)."""


def check_number(value: Any, name: str, *, allow_zero: bool = False,
                 at_most: float | None = None, unit: str = "") -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``; <= ``at_most`` when given,
    ``unit`` naming its unit in the message, e.g. " s"), returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise WrongKind(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    if at_most is not None and v > at_most:
        raise ValueError(f"{name}: expected at most {at_most:g}{unit} (upper limit), "
                         f"got {value!r}")
    return v


def check_count(value: Any, name: str, low: int = 1) -> int:
    """An integer >= ``low`` (Python or numpy integer, not a bool), returned as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise WrongKind(f"{name}: expected an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """One of ``choices``, returned as given."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value
