"""The camera side of ``calibration.imaging.BenchImager``: raw frames -> sensor patterns.

A capture becomes what the decoder reads in three steps (docs/architecture.md
§Twin-and-bench-decoders): the dark is subtracted, the magnitude sqrt(max(frame − dark, 0))
is taken, and it is sampled on the model's N×N Fourier grid through each channel's
``model_to_camera`` (``calibration.geometry.camera_to_model``), optionally divided by the
pixel envelope of s×s blocks (``calibration.imaging_layout.pixel_envelope``).

* ``resolve_dark``: which dark an imager subtracts: a given frame, else the calibration's
  background model (offset + rate · exposure, with its hot pixels), else its single dark
  frame; ``subtract_dark`` subtracts it in place and repairs the hot pixels.
* ``window_boxes``: the camera pixels the decoder reads, one fixed box per channel around
  its N×N window with a margin of ``WINDOW_MARGIN_PX`` (room for a drift correction to move
  the window inside it), all the same size; ``crop_windows`` cuts them out of the frames, in
  the camera's dtype: what ``hil run`` stores instead of full frames.
* ``frames_to_patterns`` and ``windows_to_patterns``: full frames or stored windows ->
  float32 (B, C, N, N) patterns, the same numbers from either.

The functions are pure: the imager passes its current state (its ``model_to_camera`` may be
moved by a drift correction between calls) and its dark step, evaluated when it is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from calibration.geometry import camera_to_model

__all__ = ["WINDOW_MARGIN_PX", "resolve_dark", "subtract_dark", "window_boxes", "crop_windows",
           "frames_to_patterns", "windows_to_patterns"]

WINDOW_MARGIN_PX = 8  # camera pixels kept around each model window (stored windows; room
#                       for a drift correction to move the window inside them)

Box = tuple[int, int, int, int]  # r0, r1, c0, c1
#: subtracts the dark (of a box, or of the whole frame for None) in place
DarkStep = Callable[[np.ndarray, Box | None], None]


def resolve_dark(dark_frame: Any, calibration: Any, camera_shape: Sequence[int]
                 ) -> tuple[np.ndarray | None, Any]:
    """(fixed dark frame or None, background model or None) for an imager.

    ``dark_frame`` (given) wins; else the calibration's ``dark_model`` when it has an
    ``at(exposure)``, else the calibration's ``dark_frame``. Refused (``ValueError``) when
    its shape is not ``camera_shape``.
    """
    dark = dark_frame
    model = None
    if dark is None and calibration is not None:
        cal_model = getattr(calibration, "dark_model", None)
        if hasattr(cal_model, "at"):
            model = cal_model
        else:
            dark = getattr(calibration, "dark_frame", None)
    if dark is not None:
        dark = np.asarray(dark, dtype=np.float32)
    shape = model.shape if model is not None else \
        None if dark is None else dark.shape
    if shape is not None and tuple(shape) != tuple(camera_shape):
        raise ValueError(f"dark_frame: expected the camera shape "
                         f"{tuple(camera_shape)}, got {tuple(shape)}")
    return dark, model


def subtract_dark(mag: np.ndarray, dark: np.ndarray | None, dark_model: Any,
                  box: Box | None = None) -> None:
    """``mag`` (…, h, w) float32 minus ``dark`` (of ``box`` = r0, r1, c0, c1), in place,
    with the background model's hot pixels replaced by their 3 x 3 median."""
    if dark is None:
        return
    r0, r1, c0, c1 = box if box is not None else (0, dark.shape[0], 0, dark.shape[1])
    mag -= dark[r0:r1, c0:c1]
    if dark_model is not None and dark_model.hot is not None:
        for frame in mag.reshape(-1, *mag.shape[-2:]):  # a view: mag is contiguous
            dark_model.repair(frame, (r0, r1, c0, c1))


def window_boxes(model_to_camera: Sequence[Any], size: int, camera_shape: Sequence[int],
                 split: bool) -> list[tuple[int, int, int, int, int]]:
    """One box (frame, r0, r1, c0, c1) per channel around its model window, all the
    same size, inside the frame (frame 0 for every channel in split mode)."""
    n = size
    rows, cols = camera_shape
    corners = np.array([[0, 0, 1], [n - 1, 0, 1], [0, n - 1, 1], [n - 1, n - 1, 1]], float)
    m = WINDOW_MARGIN_PX
    spans = []
    for a in model_to_camera:
        xy = corners @ np.asarray(a, float).T
        spans.append((xy[:, 1].min() - m, xy[:, 1].max() + m,
                      xy[:, 0].min() - m, xy[:, 0].max() + m))
    h = min(rows, int(math.ceil(max(r1 - r0 for r0, r1, _, _ in spans))) + 1)
    w = min(cols, int(math.ceil(max(c1 - c0 for _, _, c0, c1 in spans))) + 1)
    boxes = []
    for k, (r0, _, c0, _) in enumerate(spans):
        r = min(max(int(math.floor(r0)), 0), rows - h)
        c = min(max(int(math.floor(c0)), 0), cols - w)
        boxes.append((0 if split else k, r, r + h, c, c + w))
    return boxes


def crop_windows(frames: Any, boxes: Sequence[tuple[int, int, int, int, int]],
                 frames_per_image: int) -> np.ndarray:
    """Raw frames (K, H, W) -> the model windows (C, h, w) of ``boxes``, camera dtype."""
    f = np.asarray(frames)
    if f.ndim != 3 or f.shape[0] != frames_per_image:
        raise ValueError(f"frames: expected ({frames_per_image}, H, W), got {f.shape}")
    return np.stack([f[k, r0:r1, c0:c1] for k, r0, r1, c0, c1 in boxes])


def windows_to_patterns(windows: Any, boxes: Sequence[tuple[int, int, int, int, int]],
                        model_to_camera: Sequence[Any], size: int, *, minus_dark: DarkStep,
                        envelope: np.ndarray | None) -> np.ndarray:
    """Model windows (B, C, h, w) or (C, h, w) cut at ``boxes`` -> patterns float32
    (B, C, N, N), the same numbers ``frames_to_patterns`` gives from the full frames;
    divided by ``envelope`` when given."""
    wv = np.asarray(windows)
    if wv.ndim == 3:
        wv = wv[None]
    b = wv.shape[0]
    out = np.empty((b, len(boxes), size, size), np.float32)
    for k, (_, r0, r1, c0, c1) in enumerate(boxes):
        mag = wv[:, k].astype(np.float32)
        minus_dark(mag, (r0, r1, c0, c1))
        np.maximum(mag, 0.0, out=mag)
        np.sqrt(mag, out=mag)
        a = np.asarray(model_to_camera[k], float).copy()
        a[:, 2] -= (c0, r0)
        out[:, k] = camera_to_model(mag, a, size)
    if envelope is not None:
        out /= envelope
    return out


def frames_to_patterns(frames: Any, model_to_camera: Sequence[Any], size: int, *,
                       frames_per_image: int, split: bool, minus_dark: DarkStep,
                       envelope: np.ndarray | None) -> np.ndarray:
    """Raw frames (B, K, H, W) or (K, H, W) -> patterns float32 (B, C, N, N): dark
    subtracted, magnitude sqrt(max(frame − dark, 0)), sampled on the model grid (channel
    k from frame k, or from frame 0 in split mode); divided by ``envelope`` when given."""
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[1] != frames_per_image:
        raise ValueError(f"frames: expected (B, {frames_per_image}, H, W), got "
                         f"{f.shape}")
    mag = f.astype(np.float32)
    minus_dark(mag, None)
    np.maximum(mag, 0.0, out=mag)
    np.sqrt(mag, out=mag)
    b = mag.shape[0]
    out = np.empty((b, len(model_to_camera), size, size), np.float32)
    for k, a in enumerate(model_to_camera):
        src = mag[:, 0 if split else k]
        out[:, k] = camera_to_model(src, a, size)
    if envelope is not None:
        out /= envelope
    return out
