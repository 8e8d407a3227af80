"""calibration: fits the digital twin to a bench and refits the decoder on real captures.

A bench day (DESIGN.md §6), each step capturing through the device interface::

    from devices import open_bench
    from calibration import run_calibration, CalibrationSet
    with open_bench("sim.toml") as bench:
        cal = run_calibration(bench, "cal/")   # dark geometry lut wavefront model decoders
    cal = CalibrationSet.load("cal/")          # cal.model_to_camera, cal.dark_frame, ...
    cal.imaging_config, cal.decoder_file()     # what its decoders were made with, and one

``ImagingConfig`` (how the encoder is shown and captured) and ``EncoderSpec`` (what is
shown) are what ``calibration.imaging.BenchImager(bench, cal, encoder, config)`` takes.

Imports ``devices`` and ``simulation`` only (never ``hil`` or ``experiments``).
"""

from calibration.geometry import camera_to_model, nominal_model_to_camera
from calibration.imaging import BenchImager, ImagedBatch
from calibration.imaging_config import EncoderSpec, ImagingConfig, plan_layout
from calibration.pipeline import STEP_ORDER, parse_steps, run_calibration
from calibration.store import STEPS, CalibrationError, CalibrationSet, StepResult
from calibration.truth import errors_vs_truth

__all__ = [
    "BenchImager", "CalibrationError", "CalibrationSet", "EncoderSpec", "ImagedBatch",
    "ImagingConfig", "STEPS", "STEP_ORDER", "StepResult", "camera_to_model", "errors_vs_truth",
    "nominal_model_to_camera", "parse_steps", "plan_layout", "run_calibration",
]
