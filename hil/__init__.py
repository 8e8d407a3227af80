"""hil: the bench session of an encoded-diffraction imager, and the `hil` command line.

A run shows each input on the SLM through a trained encoder, captures it, maps the
capture onto the model grid through the calibrated geometry, decodes and records::

    from pathlib import Path
    from hil import RunConfig, run_session
    run_session(RunConfig(bench="sim.toml", calibration=Path("cal"), decoder=Path("dec.pt"),
                          dataset="mnist", n=100, out=Path("runs/r1")))

The public face (below) is loaded on first use, so that ``hil --help`` does not pay for
torch: phase-mask files (``PhaseMask``, ``vortex_mask``, ``load_mask``, ...), run records
(``read_captures``, ``CaptureStore``), runs (``RunConfig``, ``run_session``) and
hardware-in-the-loop training (``physics_aware``, ``fine_tune_on_bench``).
Imports `calibration`, `devices` and `simulation` only.
"""

from __future__ import annotations

from simulation.lazy_face import lazy_face

_FACE = {
    "RunConfig": "hil.session", "run_session": "hil.session", "EXIT_STOPPED": "hil.session",
    "PhaseMask": "hil.masks", "vortex_mask": "hil.masks", "mask_from_encoder": "hil.masks",
    "save_mask": "hil.masks", "load_mask": "hil.masks", "load_onto_slm": "hil.masks",
    "plot_mask": "hil.masks",
    "CaptureStore": "hil.runs", "CaptureWriteError": "hil.runs", "read_captures": "hil.runs",
    "IncompatibleRunError": "hil.run_checks",
    "physics_aware": "hil.bench_training", "fine_tune_on_bench": "hil.bench_training",
    "Interrupted": "hil.safety", "signals_as_interrupt": "hil.safety",
}

__all__ = sorted(_FACE)

__getattr__, __dir__ = lazy_face(__name__, _FACE)
