"""The imaging primitive: images in, sensor patterns on the model grid out, through a bench.

``BenchImager(bench, calibration, encoder, config)`` shows each input image through the
encoder on the SLM and reads the camera back (docs/architecture.md
§Twin-and-bench-decoders). Every setting (``mode``, ``grating``, ``margin``,
``mask_sampling``, ``pixel_envelope``, ...) is a field of the frozen
``calibration.imaging_config.ImagingConfig``; the layout is planned by its pure
``plan_layout``, and the device state (LUT on the SLM, exposure) is set by ``prepare()``.

``capture`` composes each image's SLM phase (``calibration.imaging_layout``: the object in
s×s blocks plus the encoder mask, steering gratings and margin, minus the fitted
aberration; the choices that make the bench match the model are explained there), writes
it (the SLM waits its settle time), captures with the configured exposure and averaging,
retrying a failed capture, and turns the frames into float32 (B, C, N, N) patterns, ready
for ``LinearDecoder.predict`` (``calibration.imaging_readout``: dark subtracted, magnitude
sqrt(max(frame - dark, 0)) sampled on the model's N×N Fourier grid through each channel's
``model_to_camera``; ``windows``, the camera pixels the decoder reads, are what ``hil run``
stores instead of full frames), plus the raw frames for the run record.

Capture timing (``capture_stream``): serial (``pipelined=False``: compose, write, wait
the settle time, flush, grab, one frame after another) or pipelined (the default:
``calibration.capture_stream``, which overlaps composing, the SLM's refresh and settle
time and the caller's storing with the camera's work, keeping every frame its own).

This module imports ``devices`` and ``simulation`` only
(docs/architecture.md §Direction-of-imports).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration import imaging_readout as readout
from calibration.capture_stream import pipelined_stream
from calibration.imaging_config import EncoderSpec, ImagingConfig, plan_layout
from calibration.imaging_layout import (
    TWO_PI,  # noqa: F401 - re-exported (moved to imaging_layout)
    aberration_correction,
    add_object,
    blocks,
    channel_maps,
    compose_bases,
    margin_phase,
    vortex_masks_full,
)
from calibration.imaging_layout import (
    pixel_envelope as envelope_of_blocks,
)
from calibration.imaging_readout import (
    WINDOW_MARGIN_PX,  # noqa: F401 - re-exported (moved to imaging_readout)
)
from devices.errors import DeviceDisconnected, DeviceError

__all__ = ["BenchImager", "ImagedBatch", "ImagingConfig", "EncoderSpec", "as_encoder_spec",
           "vortex_masks_full"]

log = logging.getLogger(__name__)


@dataclass
class ImagedBatch:
    """What ``BenchImager.capture`` returns."""

    patterns: np.ndarray  # (B, C, N, N) float32 magnitudes on the model grid
    frames: np.ndarray  # (B, K, H, W) camera dtype; K = C (sequential) or 1 (split)
    info: list[dict[str, Any]] = field(default_factory=list)  # one dict per image


def as_encoder_spec(encoder: Any, size: int = 32) -> EncoderSpec:
    """None (the twin's dual vortex on an N = ``size`` grid), an ``EncoderSpec``, a
    ``simulation`` encoder or a ``PhaseMask`` -> ``EncoderSpec``."""
    if encoder is None:
        return EncoderSpec.vortex((1, 3), size=size)
    if isinstance(encoder, EncoderSpec):
        return encoder
    if hasattr(encoder, "phase_stack"):
        return EncoderSpec.from_mask(encoder)
    if hasattr(encoder, "masks_rad"):
        return EncoderSpec.from_encoder(encoder)
    raise TypeError(f"encoder: expected None, an EncoderSpec, a simulation encoder or a "
                    f"PhaseMask, got {type(encoder).__name__}")


class BenchImager:
    """Display images through the encoder on a bench and read sensor patterns back.

    Parameters
    ----------
    bench : anything with ``.slm`` and ``.camera`` (``devices.open_bench``'s ``Bench``).
    calibration : a ``calibration.CalibrationSet`` (or None): its dark frame, geometry,
        LUT and aberration are used when present (as ``config`` allows).
    encoder : what the SLM shows: None (the twin's dual vortex, charges 1 and 3), an
        ``EncoderSpec``, a ``simulation`` encoder (``masks_rad``, ``phase_depth``) or a mask
        file's ``PhaseMask`` (``phase_stack()``); its phase depth is the object's.
    config : an ``ImagingConfig`` (default: ``ImagingConfig()``).
    dark_frame : overrides the calibration's dark frame.

    Building an imager plans the layout (``calibration.imaging_config.plan_layout``) and
    composes the constant part of every displayed phase; it does not touch the devices.
    ``prepare()`` loads the calibration's LUT onto the SLM and sets the exposure; the first
    capture calls it when the caller has not.
    """

    def __init__(self, bench: Any, calibration: Any = None, encoder: Any = None,
                 config: ImagingConfig | None = None, *, dark_frame: Any = None,
                 pipelined: bool = True) -> None:
        if config is None:
            config = ImagingConfig()
        if not isinstance(config, ImagingConfig):
            raise TypeError(f"config: expected an ImagingConfig, got {type(config).__name__}")
        self.config = config
        self.bench, self.slm, self.camera = bench, bench.slm, bench.camera
        self.calibration = calibration
        spec = as_encoder_spec(encoder, config.size)
        if spec.size != config.size:
            raise ValueError(f"encoder: its masks are {spec.size}x{spec.size}, the imaging "
                             f"config's model grid is {config.size}x{config.size}")
        if config.mask_sampling == "analytic" and spec.charges is None:
            raise ValueError("mask_sampling: 'analytic' needs vortex charges, not learned masks")
        self.encoder = spec
        self.size, self.mode = config.size, config.mode
        self.phase_depth = spec.phase_depth
        self.averaging, self.retries, self.flush = config.averaging, config.retries, config.flush
        self.model_masks, self.charges = spec.masks_rad, spec.charges
        self.channels = spec.channels
        self.mask_sampling = config.mask_sampling
        self.pixel_envelope = config.pixel_envelope
        rows, cols = self.slm.shape
        self.layout = plan_layout((rows, cols), self.channels, config)
        n, s = self.size, self.layout.block
        self.block = s
        self.envelope = envelope_of_blocks(n, s)
        full_masks = (vortex_masks_full(spec.charges, n, s, xmax=spec.xmax, focal=spec.focal)
                      if config.mask_sampling == "analytic" else blocks(spec.masks_rad, s))
        self.gratings = [tuple(g) for g in self.layout.gratings]
        self.shifts = [tuple(v) for v in self.layout.shifts]
        self.origins = [tuple(o) for o in self.layout.origins]
        self.frames_per_image = self.layout.frames_per_image

        # the constant part of each displayed phase (everything but the object)
        margin = margin_phase((rows, cols), config.margin, config.margin_period_px)
        self.margin = config.margin
        corr = (aberration_correction(calibration, (rows, cols))
                if config.correct_aberrations else None)
        self.correction_applied = corr is not None
        self._margin_phase, self._corr = margin, corr
        self._compose_bases(full_masks)

        # geometry: one model_to_camera per channel (the window follows its grating)
        self.geometry_source, self.model_to_camera = channel_maps(
            config.geometry, calibration, self.slm, self.camera, n, s, config.focal_length_um,
            self.shifts)

        # dark: a given frame, else the calibration's background model (offset + rate ·
        # exposure, with its hot pixels), else its single dark frame
        self._dark_fixed, self.dark_model = readout.resolve_dark(dark_frame, calibration,
                                                                 self.camera.shape)
        self._dark_at: tuple[float, np.ndarray] | None = None
        self.pipelined = bool(pipelined)
        self.window_boxes = readout.window_boxes(self.model_to_camera, n, self.camera.shape,
                                                 self.mode == "split")
        self.settle_source = "bench file"
        self.lut_applied = False
        self.exposure_s: float | None = None
        self.prepared = False

    @property
    def dark(self) -> np.ndarray | None:
        """The dark frame (float32 counts, camera shape) subtracted from captures now: with a
        background model, the one at the camera's current exposure (auto-exposure between
        images changes it); else the fixed frame (or None)."""
        if self.dark_model is None:
            return self._dark_fixed
        exposure = float(self.camera.get_exposure())
        if self._dark_at is None or self._dark_at[0] != exposure:
            self._dark_at = (exposure, self.dark_model.at(exposure).astype(np.float32))
        return self._dark_at[1]

    def _subtract_dark(self, mag: np.ndarray, box: tuple[int, int, int, int] | None = None
                       ) -> None:
        """``mag`` (…, h, w) float32 minus the dark (of ``box`` = r0, r1, c0, c1), in place,
        with the background model's hot pixels replaced by their 3 x 3 median."""
        readout.subtract_dark(mag, self.dark, self.dark_model, box)

    def prepare(self) -> BenchImager:
        """Put the devices in the state the config asks for: the calibration's phase response
        (LUT) on the SLM when ``apply_lut`` and the SLM takes one; the camera exposure when
        ``exposure_s`` is set. Idempotent; returns the imager."""
        if self.prepared:
            return self
        resp = (getattr(self.calibration, "phase_response_rad", None)
                if self.calibration is not None else None)
        if self.config.apply_lut and resp is not None \
                and hasattr(self.slm, "set_phase_response"):
            self.slm.set_phase_response(resp)
            self.lut_applied = True
        if self.config.exposure_s is not None:
            self.exposure_s = float(self.camera.set_exposure(self.config.exposure_s))
        measured = (getattr(self.calibration, "settle_time_s", None)
                    if self.calibration is not None else None)
        if measured is not None and hasattr(self.slm, "settle_time_s"):
            # the settle step's measurement replaces the bench file's guess
            self.slm.settle_time_s = float(measured)
            self.settle_source = "calibration (settle step)"
        self.prepared = True
        return self

    def _compose_bases(self, full_masks: np.ndarray) -> None:
        self._bases = compose_bases(self.layout, full_masks, self._margin_phase, self._corr,
                                    self.mode == "split")

    def set_encoder_masks(self, masks_rad: Any) -> None:
        """Show other model masks (C, N, N) from now on (a mask being trained), in blocks."""
        spec = self.encoder.with_masks(masks_rad)
        self.encoder = spec
        self.model_masks, self.charges, self.mask_sampling = spec.masks_rad, None, "blocks"
        self._compose_bases(blocks(spec.masks_rad, self.block))

    # ------------------------------------------------------------------- display
    def slm_phase(self, image: Any, frame: int = 0) -> np.ndarray:
        """The SLM phase (radians, float32, SLM shape, wrapped to [0, 2π)) for one image.

        ``frame`` is the channel in sequential mode (0 in split mode).
        """
        a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image,
                       dtype=np.float32)
        n, s = self.size, self.block
        if a.shape != (n, n):
            raise ValueError(f"image: expected shape ({n}, {n}), got {a.shape}")
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise ValueError(f"image: expected finite values in [0, 1], got "
                             f"[{np.nanmin(a):.3g}, {np.nanmax(a):.3g}]")
        phase = self._bases[frame].copy()
        origins = self.origins if self.mode == "split" else [self.origins[frame]]
        add_object(phase, blocks(self.phase_depth * a, s), origins)
        return phase

    # ------------------------------------------------------------------- capture
    def _capture_frames(self, image: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
        self.prepare()
        frames, infos = [], []
        for k in range(self.frames_per_image):
            self.slm.set_phase(self.slm_phase(image, k), settle=True)
            if self.flush:
                self.camera.flush()
            frames.append(self.camera.get_image(averaging=self.averaging))
            ci = getattr(self.camera, "last_capture_info", None)
            infos.append(ci.as_dict() if hasattr(ci, "as_dict") else {"timestamp": time.time()})
        return np.stack(frames), infos

    def capture_frames(self, image: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Raw frames (K, H, W) for one image, retrying a failed capture ``retries`` times.

        A disconnect is not retried (the device is gone); after the last retry the
        device error propagates.
        """
        attempt = 0
        while True:
            try:
                return self._capture_frames(image)
            except DeviceDisconnected:
                raise
            except DeviceError as exc:
                attempt += 1
                if attempt > self.retries:
                    raise
                log.warning("capture failed (%s); retry %d of %d", exc, attempt, self.retries)

    def capture_stream(self, images: Any, start: int = 0, *,
                       pipelined: bool | None = None
                       ) -> Iterator[tuple[int, np.ndarray, list[dict[str, Any]]]]:
        """Yield ``(i, frames (K, H, W), frame infos)`` for images ``start, start+1, ...``
        in order (serial, or pipelined: ``calibration.capture_stream``).

        ``pipelined`` (default: the imager's) overlaps composing, the SLM write and its
        settling with the caller's work on the frame just yielded. A device error is
        retried ``retries`` times on the whole image; after that (or a disconnect) it
        propagates and every image yielded before it is complete.
        """
        self.prepare()
        pipe = self.pipelined if pipelined is None else bool(pipelined)
        n = len(images)
        if not pipe:
            for i in range(start, n):
                fr, inf = self.capture_frames(images[i])
                yield i, fr, inf
            return
        yield from pipelined_stream(self, images, start)

    def windows(self, frames: Any) -> np.ndarray:
        """Raw frames (K, H, W) -> the model windows (C, h, w), camera dtype, uncopied
        pixels of ``window_boxes``: what the decoder reads, with a margin."""
        return readout.crop_windows(frames, self.window_boxes, self.frames_per_image)

    def windows_to_patterns(self, windows: Any) -> np.ndarray:
        """Model windows (B, C, h, w) or (C, h, w) -> patterns float32 (B, C, N, N), the
        same numbers ``frames_to_patterns`` gives from the full frames."""
        return readout.windows_to_patterns(
            windows, self.window_boxes, self.model_to_camera, self.size,
            minus_dark=self._subtract_dark,
            envelope=self.envelope if self.pixel_envelope else None)

    def frames_to_patterns(self, frames: Any) -> np.ndarray:
        """Raw frames (B, K, H, W) or (K, H, W) -> patterns float32 (B, C, N, N).

        Dark subtracted, magnitude sqrt(max(frame − dark, 0)), sampled on the model grid.
        """
        return readout.frames_to_patterns(
            frames, self.model_to_camera, self.size, frames_per_image=self.frames_per_image,
            split=self.mode == "split", minus_dark=self._subtract_dark,
            envelope=self.envelope if self.pixel_envelope else None)

    def capture(self, images: Any, *, progress: bool = False) -> ImagedBatch:
        """Images (B, N, N) in [0, 1] -> ``ImagedBatch`` (patterns, frames, info)."""
        imgs = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images,
                          dtype=np.float32)
        if imgs.ndim == 2:
            imgs = imgs[None]
        if imgs.ndim != 3:
            raise ValueError(f"images: expected shape (B, {self.size}, {self.size}), got "
                             f"{imgs.shape}")
        it = range(len(imgs))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="capture", leave=False)
        frames, infos = [], []
        for i in it:
            fr, inf = self.capture_frames(imgs[i])
            frames.append(fr)
            infos.append({"frames": inf})
        fr = np.stack(frames) if frames else np.empty((0, self.frames_per_image,
                                                       *self.camera.shape), self.camera.dtype)
        return ImagedBatch(self.frames_to_patterns(fr) if frames else
                           np.empty((0, self.channels, self.size, self.size), np.float32),
                           fr, infos)

    def __call__(self, images: Any) -> Any:
        """Torch in, torch out: patterns (B, C, N, N) float32 (for training loops)."""
        import torch

        return torch.from_numpy(self.capture(images).patterns)

    def describe(self) -> dict[str, Any]:
        """The imaging settings, JSON-friendly (for run records): the config, the encoder,
        and what was resolved from them (block, gratings, geometry, LUT, ...)."""
        return {
            "config": self.config.to_dict(), "encoder": self.encoder.describe(),
            "size": self.size, "block": self.block, "mode": self.mode,
            "channels": self.channels,
            "charges": list(self.charges) if self.charges is not None else "learned",
            "phase_depth": self.phase_depth, "mask_sampling": self.mask_sampling,
            "pixel_envelope_corrected": self.pixel_envelope,
            "margin": self.margin, "gratings_cycles_per_px": [list(g) for g in self.gratings],
            "geometry": self.geometry_source,
            "model_to_camera": [a.tolist() for a in self.model_to_camera],
            "dark_frame": self.dark is not None, "lut_applied": self.lut_applied,
            "aberration_corrected": self.correction_applied,
            "exposure_s": self.exposure_s, "averaging": self.averaging,
            "retries": self.retries, "frames_per_image": self.frames_per_image,
            "pipelined": self.pipelined,
            "window_boxes": [list(b) for b in self.window_boxes],
            "settle_time_s": getattr(self.slm, "settle_time_s", None),
            "settle_source": self.settle_source,
        }
