"""Drift of the camera image during a long run: measured on a reference pattern, corrected.

On a real bench the image on the camera walks slowly (thermal drift of mounts, the
lens, the camera): a few camera pixels over an hour move the model window by a sizeable
fraction of a model pixel and cost much of the SSIM (measured: 0.39 -> 0.14 for a 3.6 px drift).
``DriftTracker`` watches it during ``hil run`` (``--drift-every K``,
``RunConfig.drift_every``; 0, the default, makes no checks) and during a calibration's
capture sets (``calibration.capture.capture_patterns(drift=...)``: the decoders step's
``drift_every``, ``experiments.bench_crossover --drift-every``), where thousands of
training captures would otherwise carry an image that walked away from the geometry:

* first, on a new run with a calibrated geometry (``align_to``: the calibration's geometry
  step), it measures how far the camera image moved **since the calibration**: a few of
  that step's gratings are shown again and their spots found as then
  (``calibration.registration.alignment_shift``); the windows' starting translation moves
  by the median shift (recorded as the check of kind ``alignment``; refused, and recorded
  as unreliable, when the spots disagree by more than ``max_spread_px`` or the moved
  windows would leave the camera or the stored regions);
* before the first image it shows a **reference pattern** (a fixed, seeded speckle image,
  ``REFERENCE_GAMMA``/``REFERENCE_SEED``, through the run's own encoder and imaging
  settings) and keeps the captured frames, cropped to the model windows plus ``pad_px``
  (``drift_reference.npz`` in the run directory, read back without pickle, so that a
  resumed run compares with the same reference; a resumed run checks before its first
  image);
* before every K-th image it shows the same pattern again and estimates the **shift of the
  camera image** against that first reference (``estimate_shift``: scikit-image's
  ``phase_cross_correlation`` on Hann-windowed crops, refined to 1/50 px), one estimate
  per frame of the image (one per encoder channel in sequential mode), combined weighted
  by their match scores;
* it **corrects the geometry**: the translation of every channel's ``model_to_camera``
  (``BenchImager.model_to_camera``, the affine ``frames_to_patterns`` samples with) becomes
  the run's starting one plus the estimated shift. Every estimate is against the first
  reference, never the previous check, so errors do not accumulate.

An estimate is **unreliable** when a frame's match score (the correlation of the
reference with the frame moved back by the estimate) is below ``min_response`` (a blocked
beam, a dark or saturated frame, an image moved further than the compared region), when
the frames of one check disagree by more than ``max_spread_px``, or when the corrected
window would leave the camera (or the stored region, ``stored_boxes``). Then the last good
correction stays in force, a warning is logged, and the check is recorded with
``reliable: false`` and the reason.

Recorded: every check in ``run.json`` (``drift``: the settings, each check's image index,
shift, match scores, reliability and the correction in force, and the extra frames), and
per capture the correction applied to it (``drift_x_px``, ``drift_y_px`` in camera pixels:
added to each frame's capture info, kept by ``hil.runs.CaptureStore`` as columns).

Cost: ``frames_per_image`` extra frames every K images (K = 50: 2 % more frames).
Before the correlation each crop becomes magnitude sqrt(max(frame - dark, 0)), 3x3
median filtered (hot pixels stay on the sensor while the image moves) and high-passed
(minus its Gaussian blur, sigma ``highpass_sigma_px``: vignetting and smooth background
are fixed to the sensor as well).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["DriftTracker", "ShiftEstimate", "estimate_shift", "preprocess", "windows_roi",
           "DEFAULT_MIN_RESPONSE", "REFERENCE_FILE"]

log = logging.getLogger(__name__)

REFERENCE_FILE = "drift_reference.npz"
REFERENCE_GAMMA = 15.0  # speckle density of the reference pattern (simulation.speckle)
REFERENCE_SEED = 20240  # its seed: the same pattern in every run
DEFAULT_MIN_RESPONSE = 0.3  # correlation after registration below this: unreliable
DEFAULT_MAX_SPREAD_PX = 1.0  # frames of one check that disagree by more: unreliable
DEFAULT_PAD_PX = 24  # camera pixels around the model windows in the compared region


@dataclass(frozen=True)
class ShiftEstimate:
    """Shift of ``frame`` against ``reference`` in camera pixels (x along columns, y along
    rows: the content moved by (dx_px, dy_px)) and the match score (``estimate_shift``)."""

    dx_px: float
    dy_px: float
    response: float


def preprocess(frame: Any, dark: Any = None, highpass_sigma_px: float = 6.0) -> np.ndarray:
    """Magnitude, 3x3 median, high-pass: the image features that move with the drift.

    ``frame`` (H, W) of any real dtype; ``dark`` (H, W) or None. Returns float32 (H, W).
    """
    f = np.asarray(frame, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"frame: expected a 2-D camera frame, got shape {f.shape}")
    if dark is not None:
        f = f - np.asarray(dark, dtype=np.float32)
    mag = np.sqrt(np.maximum(f, 0.0)).astype(np.float32)
    mag = cv2.medianBlur(mag, 3)
    if highpass_sigma_px > 0:
        mag = mag - cv2.GaussianBlur(mag, (0, 0), float(highpass_sigma_px))
    return mag


def estimate_shift(reference: Any, frame: Any, *, upsample: int = 50) -> ShiftEstimate:
    """The shift of ``frame`` against ``reference`` (two same-shape 2-D images), sub-pixel.

    scikit-image's ``phase_cross_correlation`` (cross-correlation peak refined by an
    upsampled DFT to 1/``upsample`` pixel) on Hann-windowed images. ``response`` is the
    normalised correlation (Pearson) of the reference with the frame moved back by the
    estimate, over the part both cover: about 1 for the same pattern, 0 for no relation.
    Images without structure (constant, or not finite) give response 0 and shift 0.
    """
    from skimage.registration import phase_cross_correlation

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(frame, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != cur.shape:
        raise ValueError(f"reference, frame: expected two 2-D images of the same shape, got "
                         f"{ref.shape} and {cur.shape}")
    if min(ref.shape) < 8:
        raise ValueError(f"reference: expected at least 8x8 pixels, got {ref.shape}")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))) \
            or np.ptp(ref) == 0 or np.ptp(cur) == 0:
        return ShiftEstimate(0.0, 0.0, 0.0)
    win = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    shift, _, _ = phase_cross_correlation((ref - ref.mean()) * win, (cur - cur.mean()) * win,
                                          upsample_factor=int(upsample), normalization=None)
    dy, dx = -float(shift[0]), -float(shift[1])  # the content of `frame` moved by (dx, dy)
    back = cv2.warpAffine(cur, np.array([[1, 0, -dx], [0, 1, -dy]], np.float64),
                          (ref.shape[1], ref.shape[0]), flags=cv2.INTER_LINEAR)
    m = int(math.ceil(max(abs(dx), abs(dy)))) + 1
    a, b = ref[m:-m, m:-m], back[m:-m, m:-m]
    if a.size < 16 or np.std(a) == 0 or np.std(b) == 0:
        return ShiftEstimate(dx, dy, 0.0)
    return ShiftEstimate(dx, dy, float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))


def windows_roi(model_to_camera: list[np.ndarray], size: int, camera_shape: tuple[int, ...],
                pad_px: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the camera region holding every model window plus ``pad_px``."""
    n = int(size)
    corners = np.array([[0, 0, 1], [n - 1, 0, 1], [0, n - 1, 1], [n - 1, n - 1, 1]], float)
    xy = np.concatenate([corners @ np.asarray(a, float).T for a in model_to_camera])
    rows, cols = int(camera_shape[0]), int(camera_shape[1])
    r0 = max(int(math.floor(xy[:, 1].min())) - pad_px, 0)
    r1 = min(int(math.ceil(xy[:, 1].max())) + pad_px + 1, rows)
    c0 = max(int(math.floor(xy[:, 0].min())) - pad_px, 0)
    c1 = min(int(math.ceil(xy[:, 0].max())) + pad_px + 1, cols)
    return r0, r1, c0, c1


def _reference_image(size: int) -> np.ndarray:
    from simulation import speckle

    return speckle(1, REFERENCE_GAMMA, size=size, seed=REFERENCE_SEED)[0].numpy()


class DriftTracker:
    """Reference checks every ``every`` images and the geometry correction they give.

    ``imager``: the run's prepared ``calibration.imaging.BenchImager``; its
    ``model_to_camera`` when the tracker is made is the geometry at the reference (the
    starting point the corrections are added to). ``every`` >= 1 (0 means no tracker:
    the session does not make one). ``reference_dir``: where the reference frames are kept
    (``REFERENCE_FILE``; the run directory), None to keep them in memory only.
    ``min_response``, ``max_spread_px``: the reliability limits (module docstring);
    ``pad_px``: camera pixels compared around the model windows (the largest shift that
    can be measured is about this); ``reference_image``: another (N, N) reference in [0, 1];
    ``previous``: the ``record()`` of the sessions before (a resumed run: its checks, extra
    frames and correction carry on); ``on_check``: called with each record entry (the
    reference and every check); ``stored_boxes``: the (frame, r0, r1, c0, c1) camera
    regions a run keeps, which the corrected windows must stay inside.
    """

    def __init__(self, imager: Any, every: int, *, reference_dir: Path | None = None,
                 min_response: float = DEFAULT_MIN_RESPONSE,
                 max_spread_px: float = DEFAULT_MAX_SPREAD_PX, pad_px: int = DEFAULT_PAD_PX,
                 highpass_sigma_px: float = 6.0, reference_image: Any = None,
                 previous: dict[str, Any] | None = None,
                 on_check: Callable[[dict[str, Any]], None] | None = None,
                 stored_boxes: list[tuple[int, int, int, int, int]] | None = None,
                 align_to: Any = None) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"drift_every: expected an integer >= 1 (0: no drift checks), "
                             f"got {every!r}")
        if not (math.isfinite(min_response) and 0 <= min_response < 1):
            raise ValueError(f"min_response: expected a number in [0, 1), got {min_response!r}")
        self.imager, self.every = imager, int(every)
        self.min_response, self.max_spread_px = float(min_response), float(max_spread_px)
        self.highpass_sigma_px = float(highpass_sigma_px)
        self.base_maps = [np.array(a, dtype=np.float64) for a in imager.model_to_camera]
        self.roi = windows_roi(self.base_maps, imager.size, tuple(imager.camera.shape),
                               int(pad_px))
        self.reference_path = None if reference_dir is None else Path(reference_dir) / \
            REFERENCE_FILE
        img = _reference_image(imager.size) if reference_image is None else reference_image
        self.reference_image = np.asarray(img, dtype=np.float32)
        self.reference: np.ndarray | None = None  # (K, h, w) preprocessed crops
        self.correction = (0.0, 0.0)  # camera px added to every window's translation
        self.last_check: int | None = None  # image index of the last check
        self.checks: list[dict[str, Any]] = []
        self.extra_frames = 0
        self.images_captured = 0  # by ``capture_frames`` (a calibration's capture sets)
        self.stored_boxes = stored_boxes  # (frame, r0, r1, c0, c1) per channel, or None
        self.on_check = on_check  # called with each check's record (run.json is rewritten)
        self.resumed = False  # the reference came from the run directory: check at once
        self._continuing = previous is not None
        self.align_to = align_to
        if previous:  # the record of the sessions before (a resumed run)
            self.checks = list(previous.get("checks", []))
            self.extra_frames = int(previous.get("extra_frames", 0))
            for c in self.checks:  # the alignment the first session made still holds
                if c.get("kind") == "alignment" and c.get("reliable"):
                    self._move_base((c["dx_px"], c["dy_px"]))
            self.apply(tuple(previous.get("correction_px", (0.0, 0.0))))

    # ---------------------------------------------------------------- reference
    def _crops(self, frames: np.ndarray) -> np.ndarray:
        r0, r1, c0, c1 = self.roi
        dark = None if self.imager.dark is None else self.imager.dark[r0:r1, c0:c1]
        return np.stack([preprocess(f[r0:r1, c0:c1], dark, self.highpass_sigma_px)
                         for f in frames])

    def _show_reference(self) -> np.ndarray:
        frames, _ = self.imager.capture_frames(self.reference_image)
        self.extra_frames += len(frames)
        return self._crops(np.asarray(frames))

    def start(self) -> DriftTracker:
        """Load the run's reference (a resumed run: ``previous`` given) or capture it now
        and keep it (a new run overwrites a reference file left in its directory)."""
        path = self.reference_path
        if path is not None and self._continuing and path.is_file():
            self.reference = self._load(path)
            self.resumed = True
            log.info("drift: comparing with the reference of %s", path)
            return self
        if self.align_to is not None:
            self._align()
        self.reference = self._show_reference()
        self.checks.append({"image": None, "kind": "reference", "dx_px": 0.0, "dy_px": 0.0,
                            "reliable": True, "correction_px": [0.0, 0.0]})
        if path is not None:
            from simulation.atomic import atomic_open

            with atomic_open(path, "wb") as f:
                np.savez(f, reference=self.reference, roi=np.asarray(self.roi),
                         base_maps=np.stack(self.base_maps))
        if self.on_check is not None:
            self.on_check(self.checks[-1])
        return self

    def _move_base(self, shift: tuple[float, float]) -> None:
        for a in self.base_maps:
            a[:, 2] += (float(shift[0]), float(shift[1]))
        self.apply(self.correction)

    def _align(self) -> None:
        """The camera's move since the calibration's geometry step (module docstring)."""
        from calibration.registration import alignment_shift

        entry: dict[str, Any] = {"image": None, "kind": "alignment"}
        try:
            # the imager's background model (a dark frame holds for the run's exposure
            # only, and the alignment sets its own)
            a = alignment_shift(self.imager, self.align_to,
                                dark=getattr(self.imager, "dark_model", None))
        except ValueError as exc:
            a, reason = None, str(exc)
        else:
            entry.update(a)
            shift = (a["dx_px"], a["dy_px"])
            reason = (f"the spots moved differently (spread {a['spread_px']:.2f} px, more than "
                      f"{self.max_spread_px:.2f})" if a["spread_px"] > self.max_spread_px
                      else self._window_problem(shift))
        entry["reliable"] = reason is None
        if reason is None:
            self._move_base(shift)
            log.info("drift: the camera image moved (%.2f, %.2f) px since the calibration; "
                     "windows moved with it", *shift)
        else:
            entry["reason"] = reason
            log.warning("drift: alignment since the calibration not measured reliably (%s); "
                        "the calibrated windows stay", reason)
        entry["correction_px"] = list(self.correction)
        self.checks.append(entry)

    def _load(self, path: Path) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as z:
                ref, roi, maps = z["reference"], z["roi"], z["base_maps"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"--resume: {path} cannot be read as a drift reference "
                             f"({exc}); start a new run in another --out") from exc
        want = (self.imager.frames_per_image, self.roi[1] - self.roi[0],
                self.roi[3] - self.roi[2])
        if ref.shape != want or tuple(int(v) for v in roi) != self.roi \
                or not np.allclose(maps, np.stack(self.base_maps)):
            raise ValueError(f"--resume: {path} was captured with another geometry or camera "
                             f"region (reference {ref.shape}, region {roi.tolist()}; now "
                             f"{want}, {list(self.roi)}); start a new run in another --out")
        return ref.astype(np.float32)

    # ---------------------------------------------------------------- checks
    def due(self, index: int) -> bool:
        """True when image ``index`` is preceded by a check: every ``every`` images, and
        at the first image of a resumed run (the camera may have moved meanwhile)."""
        if self.last_check == index:
            return False
        return (self.resumed and self.last_check is None) or \
            (index > 0 and index % self.every == 0)

    def check(self, index: int) -> dict[str, Any]:
        """Show the reference, estimate the shift, correct the geometry (when reliable)."""
        if self.reference is None:
            self.start()
        crops = self._show_reference()
        ests = [estimate_shift(r, c) for r, c in zip(self.reference, crops, strict=True)]
        resp = np.array([e.response for e in ests])
        dx = np.array([e.dx_px for e in ests])
        dy = np.array([e.dy_px for e in ests])
        w = np.maximum(resp, 1e-12)
        shift = (float((w * dx).sum() / w.sum()), float((w * dy).sum() / w.sum()))
        spread = float(max(np.ptp(dx), np.ptp(dy)))
        reason = None
        if resp.min() < self.min_response:
            reason = (f"match score {resp.min():.3f} below {self.min_response:.3f} (is "
                      "the beam blocked, the frame dark or saturated?)")
        elif spread > self.max_spread_px:
            reason = (f"the frames disagree by {spread:.2f} px (more than "
                      f"{self.max_spread_px:.2f})")
        else:
            reason = self._window_problem(shift)
        entry = {"image": int(index), "kind": "check", "dx_px": shift[0], "dy_px": shift[1],
                 "response": resp.tolist(), "spread_px": spread, "reliable": reason is None}
        if reason is None:
            self.apply(shift)
        else:
            entry["reason"] = reason
            log.warning("drift check before image %d unreliable: %s; keeping the last good "
                        "correction (%.2f, %.2f) px", index, reason, *self.correction)
        entry["correction_px"] = list(self.correction)
        self.last_check = int(index)
        self.checks.append(entry)
        return entry

    def _window_problem(self, shift: tuple[float, float]) -> str | None:
        """Why the corrected windows cannot be read (None when they can): off the camera,
        or outside the stored regions (``stored_boxes``, when the run keeps only those)."""
        from calibration.geometry import check_window

        n = self.imager.size
        corners = np.array([[0, 0, 1], [n - 1, 0, 1], [0, n - 1, 1], [n - 1, n - 1, 1]], float)
        boxes = self.stored_boxes
        for k, a in enumerate(self.base_maps):
            moved = a.copy()
            moved[:, 2] += shift
            try:
                check_window(moved, n, tuple(self.imager.camera.shape), f"channel {k}")
            except ValueError:
                return (f"a shift of ({shift[0]:.1f}, {shift[1]:.1f}) px would move the window "
                        f"of channel {k} off the camera")
            if boxes is not None and k < len(boxes):
                _, r0, r1, c0, c1 = boxes[k]
                xy = corners @ moved.T
                if xy[:, 0].min() < c0 or xy[:, 0].max() > c1 - 1 or xy[:, 1].min() < r0 \
                        or xy[:, 1].max() > r1 - 1:
                    return (f"a shift of ({shift[0]:.1f}, {shift[1]:.1f}) px would move the "
                            f"window of channel {k} out of the stored region (rows {r0}:{r1}, "
                            f"cols {c0}:{c1})")
        return None

    def apply(self, shift: tuple[float, float]) -> None:
        """Set the correction: every window's translation = the starting one + ``shift``."""
        self.correction = (float(shift[0]), float(shift[1]))
        for k, a in enumerate(self.base_maps):
            moved = a.copy()
            moved[:, 2] += self.correction
            self.imager.model_to_camera[k] = moved

    def before_image(self, index: int) -> dict[str, Any] | None:
        """The run loop's hook: the reference on the first call, a check when due.

        Returns the check's record when one was made (None otherwise)."""
        if self.reference is None:
            self.start()
        if self.due(index):
            entry = self.check(index)
            if self.on_check is not None:
                self.on_check(entry)
            return entry
        return None

    def capture_stream(self, images: Any, start: int = 0
                       ) -> Iterator[tuple[int, np.ndarray, list[dict[str, Any]]]]:
        """Yield ``(i, frames, frame infos)`` for images ``start, ...`` in order, with the
        reference shown first and checks between (infos tagged with the correction).

        Uses the imager's ``capture_stream`` (pipelined) where it has one, cut at each check:
        a pipelined stream writes the next pattern before the caller sees a frame, so the
        reference must not be shown inside it. Else ``capture_frames`` image by image.
        """
        n = len(images)
        stream = getattr(self.imager, "capture_stream", None)
        i = int(start)
        while i < n:
            self.before_image(i)
            end = min(n, (i // self.every + 1) * self.every)
            if stream is not None:
                for j, frames, info in stream(images[:end], i):
                    yield j, frames, self.tag(info)
            else:
                for j in range(i, end):
                    frames, info = self.imager.capture_frames(images[j])
                    yield j, frames, self.tag(info)
            i = end

    def capture_frames(self, image: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """One more image of a sequence that spans several calls (a calibration's test,
        validation and training sets): the reference before the first, a check before
        every ``every``-th image counted over all of them (``images_captured``), then the
        imager's frames of ``image`` and their infos, tagged with the correction."""
        self.before_image(self.images_captured)
        frames, info = self.imager.capture_frames(image)
        self.images_captured += 1
        return frames, self.tag(info)

    def tag(self, frame_info: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``frame_info`` with the correction applied to this capture (camera px)."""
        dx, dy = self.correction
        return [{**i, "drift_x_px": dx, "drift_y_px": dy} for i in frame_info]

    def record(self) -> dict[str, Any]:
        """What ``run.json`` keeps under ``drift``."""
        n_checks = sum(1 for c in self.checks if c["kind"] == "check")
        return {"every": self.every,
                "method": "skimage phase_cross_correlation on a speckle reference",
                "reference": {"gamma": REFERENCE_GAMMA, "seed": REFERENCE_SEED,
                              "region_rows_cols": list(self.roi)},
                "min_response": self.min_response, "max_spread_px": self.max_spread_px,
                "correction_px": list(self.correction), "n_checks": n_checks,
                "n_unreliable": sum(1 for c in self.checks if not c["reliable"]),
                "extra_frames": self.extra_frames, "checks": self.checks}
