"""Step 1: dark frame and detector gain (photon transfer).

* Dark: with the laser output off, the mean of ``n_dark`` frames (float counts) is the
  dark frame; the temporal standard deviation is the read noise. Both are running
  moments (``capture.RunningMoments``): the frames are never held together.
* Gain: the photon-transfer curve. With the laser on and a random phase on the SLM (a
  speckle field that covers the camera with every intensity), pairs of frames of the
  same scene at a few exposures give, per pixel, the mean signal S (dark subtracted) and
  the temporal variance V = var(f1 - f2) / 2. Shot noise makes V = g·S + σ_read²; the
  slope g is the gain in counts per photo-electron. Nothing here is specific to the
  simulated bench: a real camera and laser controller do the same.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from calibration.capture import (
    RunningMoments,
    autoexpose,
    device_identities,
    full_scale,
    laser_off,
    laser_on,
    progress_bar,
)
from calibration.store import StepResult

__all__ = ["calibrate_dark", "photon_transfer_gain"]

log = logging.getLogger(__name__)


def photon_transfer_gain(means: np.ndarray, variances: np.ndarray, *, n_bins: int = 40,
                         max_signal: float | None = None) -> dict[str, Any]:
    """Fit V = g·S + c to per-pixel (signal, variance) pairs, binned by signal.

    Returns ``gain`` (slope), ``offset`` (variance at zero signal), the binned curve and
    the relative rms residual of the fit.
    """
    s = np.asarray(means, dtype=np.float64).ravel()
    v = np.asarray(variances, dtype=np.float64).ravel()
    if s.shape != v.shape or s.size < 10:
        raise ValueError(f"means, variances: expected equal sizes >= 10, got {s.size}, {v.size}")
    hi = np.percentile(s, 99.5) if max_signal is None else max_signal
    keep = (s > 0) & (s < hi) & np.isfinite(v)
    s, v = s[keep], v[keep]
    if s.size < 10:
        raise ValueError("photon transfer: fewer than 10 usable pixels (no signal?)")
    edges = np.quantile(s, np.linspace(0, 1, n_bins + 1))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_bins - 1)
    cnt = np.bincount(idx, minlength=n_bins)
    ok = cnt >= 20
    sm = np.bincount(idx, s, minlength=n_bins)[ok] / cnt[ok]
    vm = np.bincount(idx, v, minlength=n_bins)[ok] / cnt[ok]
    w = cnt[ok] / np.maximum(vm, 1e-9) ** 2  # variance of a variance estimate ~ V^2 / n
    a = np.stack([sm, np.ones_like(sm)], axis=1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], vm * sw, rcond=None)
    fit = a @ coef
    return {"gain": float(coef[0]), "offset": float(coef[1]), "signal": sm, "variance": vm,
            "rel_rms": float(np.sqrt(np.mean(((vm - fit) / fit) ** 2)))}


def _dark_and_pairs(bench: Any, n_dark: int, n_pairs: int, exposures: tuple[float, ...],
                    seed: int, block_beam: bool, bar: Any
                    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Dark frame and read variance (running moments), then the photon-transfer pairs.

    The photon-transfer fit bins by quantiles of every pixel's signal, so the usable
    (signal, variance) values are kept, in one preallocated buffer, never as frames.
    """
    cam, slm = bench.camera, bench.slm
    with laser_off(bench) as off:
        if not off and not block_beam:
            raise ValueError(
                "bench: no laser controller to turn the light off for the dark frame; "
                "block the beam and pass block_beam=True"
            )
        cam.flush()
        moments = RunningMoments(tuple(cam.shape))
        for _ in range(n_dark):
            moments.add(cam.get_image().astype(np.float64))
            bar.update()
    dark = moments.mean
    read_var = float(np.mean(moments.variance(ddof=1)))
    del moments

    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=slm.shape).astype(np.float32)
    means = np.empty(len(exposures) * int(n_pairs) * int(np.prod(cam.shape)), np.float64)
    variances = np.empty_like(means)
    used, sat = 0, 0.98 * full_scale(cam)
    with laser_on(bench):
        slm.set_phase(phase)
        cam.flush()
        for frac in exposures:
            autoexpose(cam, dark, target=frac, tol=0.05, percentile=99.9)
            for _ in range(n_pairs):
                f1 = cam.get_image().astype(np.float64)
                f2 = cam.get_image().astype(np.float64)
                bar.update(2)
                good = (f1 < sat) & (f2 < sat)
                k = int(good.sum())
                means[used:used + k] = ((f1 + f2) / 2 - dark)[good]
                variances[used:used + k] = ((f1 - f2) ** 2 / 2)[good]
                used += k
    return dark, read_var, means[:used], variances[:used]


def calibrate_dark(bench: Any, *, n_dark: int = 16, n_pairs: int = 2,
                   exposures: tuple[float, ...] = (0.15, 0.4, 0.8), seed: int = 0,
                   block_beam: bool = False) -> StepResult:
    """Dark frame (laser off) and gain (photon transfer with the laser on).

    ``exposures`` are target fractions of full scale for the speckle's 99.9th percentile.
    A bench without a laser controller needs ``block_beam=True`` (the caller has
    blocked the beam) or the dark frame would contain light; this is refused otherwise.
    """
    cam = bench.camera
    if n_dark < 2:
        raise ValueError(f"n_dark: expected an integer >= 2, got {n_dark!r}")
    exposure0 = float(cam.get_exposure())
    n_ptc = len(exposures) * int(n_pairs)
    with progress_bar(int(n_dark) + 2 * n_ptc, "dark") as bar:
        dark, read_var, means, variances = _dark_and_pairs(
            bench, n_dark, n_pairs, exposures, seed, block_beam, bar)
    cam.set_exposure(exposure0)
    ptc = photon_transfer_gain(means, variances)
    del means, variances

    gain = ptc["gain"]
    if not np.isfinite(gain) or gain <= 0:
        raise RuntimeError(f"photon transfer: no positive gain found (slope {gain:.3g}); "
                           "is the laser on and the camera not saturated?")
    log.info("dark: level %.2f counts, read noise %.2f counts, gain %.4f counts/e-",
             float(dark.mean()), np.sqrt(read_var), gain)
    return StepResult(
        name="dark",
        values={"dark_frame": dark.astype(np.float32), "dark_level_counts": float(dark.mean()),
                "read_noise_counts": float(np.sqrt(read_var)),
                "gain_counts_per_electron": float(gain), "exposure_s": exposure0},
        residuals={"ptc_rel_rms": ptc["rel_rms"], "ptc_offset_counts2": ptc["offset"],
                   "dark_spatial_std_counts": float(dark.std())},
        data={"ptc_signal": ptc["signal"], "ptc_variance": ptc["variance"]},
        devices=device_identities(bench),
    )
