"""Step 6: decoders for the bench, both ways (DESIGN.md §4), compared on captures.

* twin-trained: simulated patterns of synthetic speckles (``simulation.speckle``), through
  the fitted model (source amplitude of step 4, residual warp and blur of step 5), fitted
  in closed form (ridge ``LinearDecoder``); applied to captures mapped onto the model grid
  through the calibrated geometry.
* capture-trained: the synthetic speckle set itself shown on the SLM and captured
  (``BenchImager``), the decoder fitted in closed form on the captures. No test image is
  needed to train either.

Both are scored (SSIM) on a held-out set of captured speckles; with ``out_dir`` they are
saved as ``decoder_twin.pt`` and ``decoder_capture.pt`` (``LinearDecoder.save``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibration.capture import device_identities
from calibration.store import CalibrationSet, StepResult

__all__ = ["calibrate_decoders", "twin_training_patterns"]

log = logging.getLogger(__name__)


def twin_training_patterns(cal: CalibrationSet, images: torch.Tensor, encoder: Any,
                           block: int) -> torch.Tensor:
    """Simulated patterns of ``images`` as the calibrated bench would show them."""
    from calibration.model_fit import model_from_step, source_amplitude, twin_patterns

    size = int(images.shape[-1])
    with torch.no_grad():
        pats = twin_patterns(images, encoder, source_amplitude(cal, size, block))
        if cal.model is not None:
            pats = model_from_step(cal.model)(pats)
    return pats


def calibrate_decoders(bench: Any, cal: CalibrationSet, *, size: int = 32,
                       n_twin: int = 4000, n_capture: int = 2000, n_test: int = 32,
                       gamma: float = 15.0, seed: int = 10, out_dir: str | Path | None = None,
                       imager_options: dict[str, Any] | None = None,
                       alpha: float | None = None, compare_nominal: bool = True,
                       progress: bool = False) -> StepResult:
    """Fit the twin-trained and capture-trained decoders; score both on captures.

    ``n_capture`` speckles are displayed and captured for the capture-trained decoder
    (each costs one frame per encoder channel); ``n_twin`` are only simulated.
    ``alpha``: the ridge strength (default: chosen on a held-out split, which costs an
    eigendecomposition per decoder). ``compare_nominal`` also scores the twin-trained
    decoder on test captures mapped through the nominal (uncalibrated) geometry, when the
    bench knows its focal length.
    """
    from calibration.imaging import BenchImager
    from simulation import DualVortexEncoder, LinearDecoder, speckle, ssim

    cal.require("geometry")
    for name, v in (("n_twin", n_twin), ("n_capture", n_capture), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    enc = DualVortexEncoder(size=size)
    block = int(bench.slm.block_size((size, size)))
    imager = BenchImager(bench, cal, size=size, **dict(imager_options or {}))

    test_imgs = speckle(n_test, gamma, seed=seed + 2)
    test_pats = torch.as_tensor(imager.capture(test_imgs, progress=progress).patterns)

    twin_imgs = speckle(n_twin, gamma, seed=seed)
    twin_pats = twin_training_patterns(cal, twin_imgs, enc, block)
    twin_dec = LinearDecoder(alpha=alpha).fit(twin_pats, twin_imgs, method="ridge", encoder=enc)
    sim_pats = twin_training_patterns(cal, test_imgs, enc, block)

    cap_imgs = speckle(n_capture, gamma, seed=seed + 1)
    cap_pats = torch.as_tensor(imager.capture(cap_imgs, progress=progress).patterns)
    cap_dec = LinearDecoder(alpha=alpha).fit(cap_pats, cap_imgs, method="ridge", encoder=enc)

    def score(dec: Any, pats: torch.Tensor) -> float:
        rec = dec.predict(pats)
        return float(np.mean(ssim(test_imgs, rec)))

    scores = {"ssim_twin_on_captures": score(twin_dec, test_pats),
              "ssim_capture_on_captures": score(cap_dec, test_pats),
              "ssim_twin_on_twin": score(twin_dec, sim_pats)}
    if compare_nominal:
        try:
            nominal = BenchImager(bench, cal, size=size, geometry="nominal",
                                  **dict(imager_options or {}))
        except ValueError as exc:
            log.info("decoders: no nominal-geometry comparison (%s)", exc)
        else:
            pats = torch.as_tensor(nominal.capture(test_imgs, progress=progress).patterns)
            scores["ssim_twin_on_captures_nominal_geometry"] = score(twin_dec, pats)
    log.info("decoders: SSIM on captured speckles: twin-trained %.3f, capture-trained %.3f "
             "(twin-trained on simulated patterns %.3f)", scores["ssim_twin_on_captures"],
             scores["ssim_capture_on_captures"], scores["ssim_twin_on_twin"])
    values: dict[str, Any] = {"gamma": float(gamma), "n_twin": n_twin, "n_capture": n_capture,
                              "n_test": n_test, "seed": int(seed),
                              "alpha_twin": twin_dec.alpha_, "alpha_capture": cap_dec.alpha_}
    if out_dir is not None:
        out = Path(out_dir)
        values["twin_path"] = twin_dec.save(out / "decoder_twin.pt").name
        values["capture_path"] = cap_dec.save(out / "decoder_capture.pt").name
    step = StepResult(name="decoders", values=values, residuals=scores,
                      devices=device_identities(bench))
    step.objects = {"twin": twin_dec, "capture": cap_dec}  # not saved; for the caller
    return step
