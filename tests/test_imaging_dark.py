"""BenchImager subtracts the calibration's background at the exposure the camera has now.

The dark step measures dark = offset + rate · exposure and the hot pixels; a run that changes
the exposure between images (auto-exposure) must subtract the background of that exposure, and
hot pixels must not reach the decoder.
"""

from __future__ import annotations

import numpy as np
from session_helpers import small_bench

from calibration import BenchImager, CalibrationSet, ImagingConfig, StepResult
from devices import open_bench


def _calibration(shape, hot=None) -> CalibrationSet:
    offset = np.full(shape, 20.0)
    rate = np.full(shape, 1e5)  # counts per second: 100 counts at 1 ms, 500 at 5 ms
    values = {"dark_frame": (offset + rate * 1e-3).astype(np.float32),
              "dark_offset_counts": offset, "dark_rate_counts_per_s": rate}
    if hot is not None:
        values["hot_pixel_mask"] = hot.astype(np.uint8)
    return CalibrationSet(dark=StepResult("dark", values=values))


def test_the_dark_follows_the_exposure():
    with open_bench(small_bench()) as bench:
        imager = BenchImager(bench, _calibration(bench.camera.shape), config=ImagingConfig())
        bench.camera.set_exposure(1e-3)
        assert np.allclose(imager.dark, 120.0)
        bench.camera.set_exposure(5e-3)
        assert np.allclose(imager.dark, 520.0)  # a single dark frame would still say 120


def test_hot_pixels_are_repaired_before_the_model_grid():
    with open_bench(small_bench()) as bench:
        shape = bench.camera.shape
        bench.camera.set_exposure(1e-3)
        imager = BenchImager(bench, config=ImagingConfig())
        frames = np.full((imager.frames_per_image, *shape), 136, bench.camera.dtype)
        x, y = imager.model_to_camera[0] @ np.array([16.0, 16.0, 1.0])  # a sampled position
        r, c = int(round(y)), int(round(x))
        clean = frames.copy()
        frames[0, r, c] = 4000  # one hot pixel where the model grid samples
        hot = np.zeros(shape, bool)
        hot[r, c] = True
        plain = BenchImager(bench, _calibration(shape), config=ImagingConfig())
        repaired = BenchImager(bench, _calibration(shape, hot), config=ImagingConfig())
        expected = plain.frames_to_patterns(clean)
        assert np.abs(plain.frames_to_patterns(frames) - expected).max() > 10  # the control
        out = repaired.frames_to_patterns(frames)
        assert np.allclose(out, expected, atol=1e-4)
        windows = repaired.windows(frames[None][0])
        assert np.allclose(repaired.windows_to_patterns(windows), out, atol=1e-4)
