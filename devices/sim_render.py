"""Fast far-field render for the simulated camera (scipy FFT, cached sampling).

slmsuite's ``SimulatedCamera._render`` stays the reference: this module takes its
sampling exactly as slmsuite built it (``shape_padded``, the camera pixels' k-space
coordinates ``knm_cam`` / ``_knm_cam_super``, ``_supersample``, ``_pixel_area``) and
computes the same quantity, |FFT(amplitude * exp(i phase), padded)|**2 sampled at
those coordinates with nearest-neighbour lookup (scipy's ``map_coordinates(order=0)``:
round half up, zero outside [0, n - 1]), averaged over each pixel's sub-samples, times
the pixel area. Faster because:

* single precision (complex64) throughout (scipy's pocketfft keeps it), where slmsuite
  computes in float64;
* the padded FFT is done as two 1-D passes: the rows of the SLM only (the padding is
  zero), then the columns the camera sees only, then only the rows it sees;
* the gather indices are integers computed once (again only when the image drifts);
* one FFT worker by default (``workers``): the render runs in the camera's readout, next
  to the capture loop's own threads, and a frame this size gains little from more
  (torch's thread pool, used here before, spent 5 to 20 times the CPU of one worker,
  spinning, on a loaded two-core machine: ``experiments/bench_sim_camera.py``).

``tests/test_devices_flaws_render.py`` checks it against slmsuite's own ``get_image()``.
Nothing here imports ``simulation`` or ``calibration``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft

from simulation.validate import check_count

__all__ = ["FarFieldRenderer"]


class FarFieldRenderer:
    """The far field of a phase on the SLM, sampled on a slmsuite ``SimulatedCamera``."""

    def __init__(self, sim_camera: Any, workers: int = 1) -> None:
        sc = sim_camera
        self.workers = check_count(workers, "workers")
        if not getattr(sc, "_interpolate", False):
            raise ValueError("sim_camera: expected a slmsuite SimulatedCamera with an affine "
                             "map set (set_affine), got one without")
        self.padded = (int(sc.shape_padded[0]), int(sc.shape_padded[1]))
        self.cam_shape = (int(sc._shape[0]), int(sc._shape[1]))
        self.supersample = (int(sc._supersample[0]), int(sc._supersample[1]))
        self.pixel_area = float(sc._pixel_area)
        coords = sc._knm_cam_super if sc._knm_cam_super is not None else sc.knm_cam
        self._coords = np.asarray(coords, dtype=np.float64).reshape(2, -1)
        # knm steps per camera pixel (columns: along x = columns, along y = rows): as slmsuite
        pitch = sc._slm.pitch
        self._dknm = np.flip(np.linalg.inv(np.asarray(sc.M, dtype=float)), axis=0) * np.array(
            [[self.padded[0] * pitch[1]], [self.padded[1] * pitch[0]]])
        self._shift: tuple[float, float] | None = None
        self._set_shift((0.0, 0.0))

    def _set_shift(self, shift_px: tuple[float, float]) -> None:
        """Sampling for the camera image moved by ``shift_px`` (x, y) camera pixels."""
        if self._shift == shift_px:
            return
        c = self._coords
        if shift_px != (0.0, 0.0):
            d = self._dknm @ np.array([-shift_px[0], -shift_px[1]], dtype=float)
            c = c + d[:, None]
        p0, p1 = self.padded
        valid = (c[0] >= 0) & (c[0] <= p0 - 1) & (c[1] >= 0) & (c[1] <= p1 - 1)
        r = np.floor(c[0] + 0.5).astype(np.int64)
        q = np.floor(c[1] + 0.5).astype(np.int64)
        if valid.any():
            r0, r1 = int(r[valid].min()), int(r[valid].max()) + 1
            q0, q1 = int(q[valid].min()), int(q[valid].max()) + 1
        else:
            r0, r1, q0, q1 = 0, 1, 0, 1
        self._rows = (np.arange(r0, r1) - p0 // 2) % p0  # fftshift
        self._cols = (np.arange(q0, q1) - p1 // 2) % p1
        flat = np.where(valid, (r - r0) * (q1 - q0) + (q - q0), (r1 - r0) * (q1 - q0))
        rows, cols = self.cam_shape
        sv, su = self.supersample  # sub-sample-major order: the average is a sum of slabs
        flat = flat.reshape(rows, sv, cols, su).transpose(1, 3, 0, 2).reshape(-1)
        self._index = np.ascontiguousarray(flat)
        self._valid = bool(valid.all())
        self._shift = shift_px

    def intensity(self, amplitude: np.ndarray, phase_rad: np.ndarray,
                  shift_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Far-field intensity on the camera pixels (float64, slmsuite's ``_render`` scale)."""
        self._set_shift((float(shift_px[0]), float(shift_px[1])))
        p0, p1 = self.padded
        amp = np.asarray(amplitude, dtype=np.float32)
        ph = np.asarray(phase_rad, dtype=np.float32)
        field = np.empty(ph.shape, dtype=np.complex64)
        np.multiply(amp, np.cos(ph), out=field.real)
        np.multiply(amp, np.sin(ph), out=field.imag)
        f = scipy.fft.fft(field, n=p1, axis=1, norm="ortho", workers=self.workers)
        f = f[:, self._cols]
        f = scipy.fft.fft(f, n=p0, axis=0, norm="ortho", workers=self.workers)
        f = f[self._rows]
        inten = np.square(f.real).reshape(-1)
        inten += np.square(f.imag).reshape(-1)
        if not self._valid:  # one zero at the end for the samples outside the k-space
            inten = np.concatenate([inten, np.zeros(1, inten.dtype)])
        img = inten[self._index]
        rows, cols = self.cam_shape
        sv, su = self.supersample
        if sv * su > 1:
            img = img.reshape(sv * su, rows * cols).sum(axis=0)
        out = img.astype(np.float64).reshape(rows, cols)
        out *= self.pixel_area / (sv * su)
        return out
