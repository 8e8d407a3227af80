"""calibration: fits the digital twin to a bench and refits the decoder on real captures.

A bench day (docs/architecture.md §Bench-day), each step capturing through the device interface::

    from devices import open_bench
    from calibration import run_calibration, CalibrationSet
    with open_bench("sim.toml") as bench:
        cal = run_calibration(bench, "cal/")   # dark geometry lut wavefront model decoders
    cal = CalibrationSet.load("cal/")          # cal.model_to_camera, cal.dark_frame, ...
    cal.imaging_config, cal.decoder_file()     # what its decoders were made with, and one

``ImagingConfig`` (how the encoder is shown and captured) and ``EncoderSpec`` (what is
shown) are what ``calibration.imaging.BenchImager(bench, cal, encoder, config)`` takes.
The steps are entries of one registry (``register_step(CalibrationStep(...))``,
``calibration.step_registry``; the built-ins in ``calibration.steps``): ``STEP_ORDER``
and ``STEPS`` (the records) are read from it.

The face is loaded on first use (PEP 562), so that ``hil --help`` can list the steps
without importing torch. Imports ``devices`` and ``simulation`` only (never ``hil`` or
``experiments``).
"""

from __future__ import annotations

from simulation.lazy_face import lazy_face

_FACE = {
    "BenchImager": "calibration.imaging", "ImagedBatch": "calibration.imaging",
    "EncoderSpec": "calibration.imaging_config", "ImagingConfig": "calibration.imaging_config",
    "plan_layout": "calibration.imaging_config",
    "STEP_ORDER": "calibration.pipeline", "parse_steps": "calibration.pipeline",
    "run_calibration": "calibration.pipeline",
    "STEPS": "calibration.store", "CalibrationError": "calibration.store",
    "CalibrationSet": "calibration.store", "StepResult": "calibration.store",
    "errors_vs_truth": "calibration.truth",
    "camera_to_model": "calibration.geometry",
    "nominal_model_to_camera": "calibration.geometry",
    "CalibrationStep": "calibration.step_registry", "StepContext": "calibration.step_registry",
    "register_step": "calibration.step_registry",
}
_LIVE = frozenset({"STEPS", "STEP_ORDER"})  # read from the registry on every access

__all__ = sorted(_FACE)
__getattr__, __dir__ = lazy_face(__name__, _FACE, _LIVE)
