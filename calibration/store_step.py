"""One record of a calibration (``StepResult``) and the errors a calibration raises.

A ``StepResult`` is what one calibration step fitted (docs/architecture.md §File-formats):

* ``values``: what was fitted (numbers, lists, dicts and numpy arrays);
* ``residuals``: how well (rms errors, per-point residuals);
* ``data``: the data it came from, or a summary (arrays);
* ``time``, ``code_version`` and ``devices`` (the identities of the SLM and camera).

``record[key]`` reads a stored value, else one its step derives on read
(``step_registry.derived_values``: e.g. the geometry's centre, scale and rotation from its
affine), else raises ``MissingCalibrationValue`` naming the step to re-run.

``CalibrationError`` is a calibration file that is missing, corrupt or of another format
version, or a record asked for that was not made. How a record is laid out in the file is
``calibration.store_file``'s; the set of records is ``calibration.store.CalibrationSet``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration import step_registry as registry

__all__ = ["StepResult", "CalibrationError", "MissingCalibrationValue", "code_version"]


class CalibrationError(ValueError):
    """A calibration file that is missing, corrupt or of another format version."""


def code_version() -> str:
    """Package version plus the git commit of the working tree, when there is one
    (``simulation.provenance.code_label``: ``0.1.0+gc28c6cf[.dirty]``)."""
    from simulation.provenance import code_label

    return code_label()


class MissingCalibrationValue(KeyError, ValueError):
    """A calibration file lacks a value a step needs: the user's file, not a bug.

    A ``KeyError`` for code that looks values up, a ``ValueError`` so that the command
    line reports it as one line (``hil.cli`` treats bare ``KeyError`` as a bug).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class StepResult:
    """One calibration step: fitted values, residuals, source data and provenance."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    residuals: dict[str, Any] = field(default_factory=dict)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    code_version: str = field(default_factory=code_version)
    devices: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """A stored value, else one its step derives on read (``derived``)."""
        if key in self.values:
            return self.values[key]
        derived = self.derived()
        if key in derived:
            return derived[key]
        raise MissingCalibrationValue(
            f"calibration step {self.name!r} has no value {key!r} "
            f"(it has {sorted(self.values)}): re-run that step (hil calibrate --steps "
            f"{self.name})"
        )

    def derived(self) -> dict[str, Any]:
        """The values its step computes from this record when read (never stored: e.g. the
        geometry's centre, scale and rotation from its affine)."""
        return registry.derived_values(self)
