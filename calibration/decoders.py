"""Step 6: decoders for the bench, both ways (DESIGN.md §4), compared on captures.

* twin-trained: simulated patterns of synthetic speckles (``simulation.speckle``), through
  the fitted model (source amplitude of step 4, residual warp and blur of step 5), fitted
  in closed form (ridge ``LinearDecoder``); applied to captures mapped onto the model grid
  through the calibrated geometry.
* capture-trained: the synthetic speckle set itself shown on the SLM and captured
  (``BenchImager``), the decoder fitted in closed form on the captures. No test image is
  needed to train either.

Both are scored (SSIM) on a held-out set of captured speckles; with ``out_dir`` they are
saved as ``decoder_twin.pt`` and ``decoder_capture.pt`` (``LinearDecoder.save``). The step
records what the decoders belong with (``hil run`` checks it): the imaging configuration
they were made with (``imaging_config``, an ``ImagingConfig.to_dict()``), the encoder
signature, and for each file written its name and SHA-256 (``decoder_files``), with the
``default_decoder`` (the twin-trained one) and the ``best_decoder`` (higher held-out score).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibration.capture import capture_patterns, device_identities, show_progress
from calibration.imaging_config import ImagingConfig
from calibration.store import CalibrationSet, StepResult, file_sha256

__all__ = ["calibrate_decoders", "twin_training_patterns", "imaging_config_for"]

log = logging.getLogger(__name__)


# images per chunk when simulating or generating a training set: bounds the transient
# complex fields (every image is computed independently, so the result is the same)
CHUNK = 128


def twin_training_patterns(cal: CalibrationSet, images: torch.Tensor, encoder: Any,
                           block: int) -> torch.Tensor:
    """Simulated patterns of ``images`` as the calibrated bench would show them.

    Computed ``CHUNK`` images at a time into one output tensor (the optical fields of a
    whole training set are never held at once); bit-identical to one batch.
    """
    from calibration.model_fit import model_from_step, source_amplitude, twin_patterns

    size = int(images.shape[-1])
    amp = source_amplitude(cal, size, block)
    model = model_from_step(cal.model) if cal.model is not None else None
    out: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(images), CHUNK):
            pats = twin_patterns(images[start:start + CHUNK], encoder, amp)
            if model is not None:
                pats = model(pats)
            if out is None:
                out = torch.empty((len(images), *pats.shape[1:]), dtype=pats.dtype)
            out[start:start + len(pats)] = pats
    if out is None:
        raise ValueError("images: expected at least one image, got none")
    return out


def imaging_config_for(imaging: ImagingConfig | None, size: int) -> ImagingConfig:
    """``imaging`` (default ``ImagingConfig(size=size)``), refused when its grid is not
    ``size``."""
    if imaging is None:
        return ImagingConfig(size=size)
    if not isinstance(imaging, ImagingConfig):
        raise TypeError(f"imaging: expected an ImagingConfig, got {type(imaging).__name__}")
    if imaging.size != size:
        raise ValueError(f"imaging: its model grid is {imaging.size}, the calibration's "
                         f"size is {size}")
    return imaging


def calibrate_decoders(bench: Any, cal: CalibrationSet, *, size: int = 32,
                       n_twin: int = 4000, n_capture: int = 2000, n_test: int = 32,
                       gamma: float = 15.0, seed: int = 10, out_dir: str | Path | None = None,
                       imaging: ImagingConfig | None = None,
                       alpha: float | None = None, compare_nominal: bool = True,
                       progress: bool | None = None) -> StepResult:
    """Fit the twin-trained and capture-trained decoders; score both on captures.

    ``n_capture`` speckles are displayed and captured for the capture-trained decoder
    (each costs one frame per encoder channel); ``n_twin`` are only simulated.
    ``alpha``: the ridge strength (default: chosen on a held-out split, which costs an
    eigendecomposition per decoder). ``compare_nominal`` also scores the twin-trained
    decoder on test captures mapped through the nominal (uncalibrated) geometry, when the
    bench knows its focal length. ``imaging``: how the speckles are shown and captured
    (default ``ImagingConfig(size=size)``), recorded in the step.
    """
    from calibration.imaging import BenchImager
    from simulation import DualVortexEncoder, LinearDecoder, speckle, ssim

    cal.require("geometry")
    for name, v in (("n_twin", n_twin), ("n_capture", n_capture), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    config = imaging_config_for(imaging, size)
    enc = DualVortexEncoder(size=size)
    imager = BenchImager(bench, cal, enc, config).prepare()
    block = imager.block

    def capture(im: Any, images: torch.Tensor, desc: str) -> torch.Tensor:
        ctx = contextlib.nullcontext() if progress is None else show_progress(progress)
        with ctx:
            return torch.as_tensor(capture_patterns(im, images, desc=desc))

    test_imgs = speckle(n_test, gamma, seed=seed + 2, batch_size=CHUNK)
    # frames are reduced to model-grid patterns image by image (capture_patterns): the
    # step holds B x C x N x N floats, never the raw frames of thousands of captures
    test_pats = capture(imager, test_imgs, "decoders: test")

    twin_imgs = speckle(n_twin, gamma, seed=seed, batch_size=CHUNK)
    twin_pats = twin_training_patterns(cal, twin_imgs, enc, block)
    twin_dec = LinearDecoder(alpha=alpha).fit(twin_pats, twin_imgs, method="ridge", encoder=enc)
    sim_pats = twin_training_patterns(cal, test_imgs, enc, block)

    cap_imgs = speckle(n_capture, gamma, seed=seed + 1, batch_size=CHUNK)
    cap_pats = capture(imager, cap_imgs, "decoders: training")
    cap_dec = LinearDecoder(alpha=alpha).fit(cap_pats, cap_imgs, method="ridge", encoder=enc)

    def score(dec: Any, pats: torch.Tensor) -> float:
        rec = dec.predict(pats)
        return float(np.mean(ssim(test_imgs, rec)))

    scores = {"ssim_twin_on_captures": score(twin_dec, test_pats),
              "ssim_capture_on_captures": score(cap_dec, test_pats),
              "ssim_twin_on_twin": score(twin_dec, sim_pats)}
    if compare_nominal:
        try:
            nominal = BenchImager(bench, cal, enc, config.replace(geometry="nominal"))
        except ValueError as exc:
            log.info("decoders: no nominal-geometry comparison (%s)", exc)
        else:
            pats = capture(nominal, test_imgs, "decoders: nominal geometry")
            scores["ssim_twin_on_captures_nominal_geometry"] = score(twin_dec, pats)
    log.info("decoders: SSIM on captured speckles: twin-trained %.3f, capture-trained %.3f "
             "(twin-trained on simulated patterns %.3f)", scores["ssim_twin_on_captures"],
             scores["ssim_capture_on_captures"], scores["ssim_twin_on_twin"])
    values: dict[str, Any] = {"gamma": float(gamma), "n_twin": n_twin, "n_capture": n_capture,
                              "n_test": n_test, "seed": int(seed),
                              "alpha_twin": twin_dec.alpha_, "alpha_capture": cap_dec.alpha_,
                              "imaging_config": config.to_dict(), "encoder": enc.signature(),
                              "default_decoder": "twin",
                              "best_decoder": ("capture" if scores["ssim_capture_on_captures"]
                                               > scores["ssim_twin_on_captures"] else "twin")}
    if out_dir is not None:
        out = Path(out_dir)
        files = {}
        for name, dec in (("twin", twin_dec), ("capture", cap_dec)):
            path = dec.save(out / f"decoder_{name}.pt")
            values[f"{name}_path"] = path.name
            files[name] = {"path": path.name, "sha256": file_sha256(path)}
        values["decoder_files"] = files
    step = StepResult(name="decoders", values=values, residuals=scores,
                      devices=device_identities(bench))
    step.objects = {"twin": twin_dec, "capture": cap_dec}  # not saved; for the caller
    return step
