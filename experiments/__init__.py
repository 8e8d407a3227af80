"""experiments: the studies and their reports, on top of everything else.

* ``experiments.paper``: the paper study (``run_study(config_for("small"), out)``, or
  ``hil experiment paper``), with verdict rules and their controls;
* ``experiments.demo`` / ``experiments.main_job``: the README's main job (``hil demo``);
* ``experiments.sweep``: parameter sweeps on a process pool or a Ray cluster (``run_cells``);
* ``experiments.bench_*``: benchmarks (``hil bench``), each a ratio against a baseline run in
  the same process.

The face below is loaded on first use (so ``hil --help`` stays fast). This package contributes
its ``hil`` sub-commands through the ``hil.commands`` entry-point group; nothing below imports it.
"""

from __future__ import annotations

from simulation.lazy_face import lazy_face

_FACE = {
    "run_study": "experiments.paper", "config_for": "experiments.paper",
    "StudyConfig": "experiments.paper", "SCALES": "experiments.paper",
    "run_demo": "experiments.demo", "run_main_job": "experiments.main_job",
    "run_cells": "experiments.sweep", "Cell": "experiments.sweep",
}

__all__ = sorted(_FACE)

__getattr__, __dir__ = lazy_face(__name__, _FACE)
