"""Step 1: dark frame and detector gain (photon transfer).

* Dark: with the light blocked, the mean of ``n_dark`` frames (float counts) at the
  camera's exposure and at ``dark_exposure_factor`` times it gives a background model
  per pixel, dark = offset + rate · exposure (``capture.DarkModel``: a background that
  grows with exposure is removed at every exposure a later step sets); the temporal
  standard deviation is the read noise. Both are running moments
  (``capture.RunningMoments``): the frames are never held together. Hot pixels (dark
  level far above their neighbours, or temporal noise far above the median) are left
  out of the photon transfer.
* Blocking the light (``dark_method``, a bench-file key): ``laser`` turns the output
  off through the laser controller; ``prompt`` asks the person at the bench to block
  the beam and press Enter (and to unblock it for the gain), refused with a clear
  message when stdin is not a terminal; ``auto`` is laser when the bench has one.
* Gain: the photon-transfer curve. With the laser on and a random phase on the SLM (a
  speckle field that covers the camera with every intensity), pairs of frames of the
  same scene at a few exposures give, per pixel, the mean signal S (dark subtracted) and
  the temporal variance V = var(f1 - f2) / 2. Shot noise makes V = g·S + σ_read²; the
  slope g is the gain in counts per photo-electron, fitted as EMVA 1288 does, through
  the dark frames' own variance (V - V_dark = g (S - S_dark)) rather than with a free
  intercept. Pixels are binned by their signal in one more frame of the same scene
  (independent noise), not by S itself, whose noise would flatten the slope
  (``photon_transfer_gain``); the second frame of a pair is rescaled to the first's total
  (a laser power change between them is not noise). Nothing here is specific to the
  simulated bench: a real camera and laser controller do the same.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np

from calibration.capture import (
    DarkModel,
    RunningMoments,
    autoexpose,
    device_identities,
    full_scale,
    laser_off,
    laser_on,
    progress_bar,
)
from calibration.quality import LIMITS, CalibrationQualityError, check_max
from calibration.store import CalibrationError, StepResult
from simulation.validate import check_count

__all__ = ["calibrate_dark", "photon_transfer_gain", "hot_pixel_mask", "DARK_METHODS"]

log = logging.getLogger(__name__)


def photon_transfer_gain(means: np.ndarray, variances: np.ndarray, *, n_bins: int = 40,
                         max_signal: float | None = None,
                         keys: np.ndarray | None = None, read_var: float | None = None,
                         dark_signal: float = 0.0) -> dict[str, Any]:
    """Fit V = g·S + c to per-pixel (signal, variance) pairs, binned by signal.

    ``read_var``: the temporal variance of the dark frames, measured at a signal of
    ``dark_signal`` counts above the offset (the background at the dark's exposure); then
    the intercept is not fitted but that point is (EMVA 1288's V - V_dark = g (S -
    S_dark)): a free intercept trades with the slope, and any variance growing faster
    than S (laser power fluctuation and flicker change the speckle between the two
    frames: + k S²) bent the free line steeper (+4 to +6 % measured on sim-realistic).

    ``keys``: per pixel, the signal measured in an independent frame of the same scene,
    used to bin (default: the signal itself). Binning by the pair's own noisy signal
    spreads the bins by that noise and flattens the slope (errors in variables: by
    var(S) / (var(S) + var(noise)); -12 % measured on sim-realistic, where room light
    adds noise to a faint speckle); an independent key's noise does not correlate with
    the pair's, so the bins' mean signals and variances are unbiased.

    Returns ``gain`` (slope), ``offset`` (variance at zero signal), the binned curve and
    the relative rms residual of the fit.
    """
    s = np.asarray(means, dtype=np.float64).ravel()
    v = np.asarray(variances, dtype=np.float64).ravel()
    if s.shape != v.shape or s.size < 10:
        raise ValueError(f"means, variances: expected equal sizes >= 10, got {s.size}, {v.size}")
    k = s if keys is None else np.asarray(keys, dtype=np.float64).ravel()
    if k.shape != s.shape:
        raise ValueError(f"keys: expected one per mean ({s.size}), got {k.size}")
    hi = np.percentile(k, 99.5) if max_signal is None else max_signal
    keep = (k > 0) & (k < hi) & np.isfinite(v) & np.isfinite(k)
    s, v, k = s[keep], v[keep], k[keep]
    if s.size < 10:
        raise ValueError("photon transfer: fewer than 10 usable pixels (no signal?)")
    edges = np.quantile(k, np.linspace(0, 1, n_bins + 1))
    idx = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, n_bins - 1)
    cnt = np.bincount(idx, minlength=n_bins)
    ok = cnt >= 20
    sm = np.bincount(idx, s, minlength=n_bins)[ok] / cnt[ok]
    vm = np.bincount(idx, v, minlength=n_bins)[ok] / cnt[ok]
    w = cnt[ok] / np.maximum(vm, 1e-9) ** 2  # variance of a variance estimate ~ V^2 / n
    sw = np.sqrt(w)
    if read_var is None:
        a = np.stack([sm, np.ones_like(sm)], axis=1)
        coef, *_ = np.linalg.lstsq(a * sw[:, None], vm * sw, rcond=None)
        gain, offset = float(coef[0]), float(coef[1])
    else:  # EMVA 1288: V - V_dark = g (S - S_dark), the dark's own variance as intercept
        x = sm - float(dark_signal)
        gain = float(np.sum(w * x * (vm - read_var)) / np.sum(w * x * x))
        offset = float(read_var) - gain * float(dark_signal)
    fit = gain * sm + offset
    return {"gain": gain, "offset": offset, "signal": sm, "variance": vm,
            "rel_rms": float(np.sqrt(np.mean(((vm - fit) / fit) ** 2)))}


DARK_METHODS = ("auto", "laser", "prompt")


def hot_pixel_mask(dark: np.ndarray, variance: np.ndarray, read_var: float) -> np.ndarray:
    """Pixels whose dark level stands more than 8 read-noise sigma above their 5 x 5
    neighbourhood's median, or whose temporal variance exceeds 9 times the median."""
    d = np.ascontiguousarray(dark, dtype=np.float32)
    local = cv2.medianBlur(d, 5)
    sigma = float(np.sqrt(max(read_var, 1e-12)))
    v = np.asarray(variance, dtype=np.float64)
    return (d - local > 8 * sigma) | (v > 9 * float(np.median(v)))


def _resolve_method(bench: Any, method: str | None, block_beam: bool) -> str:
    if block_beam:
        return "blocked"
    cfg = getattr(bench, "config", None)
    m = method or (cfg.get("dark_method", "auto") if isinstance(cfg, dict) else "auto")
    if m not in DARK_METHODS:
        raise ValueError(f"method: expected one of {DARK_METHODS}, got {m!r}")
    has_laser = getattr(bench, "laser", None) is not None
    if m == "auto":
        m = "laser" if has_laser else "prompt"
    if m == "laser" and not has_laser:
        raise CalibrationError(
            'calibration step dark: dark_method = "laser" but the bench has no laser '
            'controller; set dark_method = "prompt" in the bench file (block the beam by '
            "hand when asked), or block the beam and pass block_beam=True")
    return m


def _ask(ask: Callable[[str], Any] | None, text: str) -> None:
    if ask is None:
        if sys.stdin is None or not sys.stdin.isatty():
            raise CalibrationError(
                f"calibration step dark: the bench has no laser controller, so a person must "
                f"{text.lower()}, but stdin is not a terminal: run `hil calibrate` in a "
                "terminal, or block the beam yourself and pass block_beam=True (--options "
                '\'{"dark": {"block_beam": true}}\'), or add a [laser] to the bench file')
        ask = input
    ask(f"{text}, then press Enter: ")


@contextlib.contextmanager
def _light_blocked(bench: Any, method: str, ask: Callable[[str], Any] | None
                   ) -> Iterator[None]:
    """The light is blocked inside the block, by ``method``."""
    if method == "laser":
        with laser_off(bench):
            yield
    elif method == "prompt":
        _ask(ask, "Block the laser beam (the camera must see no laser light)")
        yield
        _ask(ask, "Unblock the laser beam (the gain measurement needs light)")
    else:  # "blocked": the caller has blocked the beam
        yield


def _dark_frames(cam: Any, n_dark: int, bar: Any) -> RunningMoments:
    cam.flush()
    moments = RunningMoments(tuple(cam.shape))
    for _ in range(n_dark):
        moments.add(cam.get_image().astype(np.float64))
        bar.update()
    return moments


def _background_model(cam: Any, n_dark: int, factor: float, bar: Any
                      ) -> tuple[DarkModel, float, np.ndarray, dict[str, float]]:
    """Dark frames at the exposure e0 and at ``factor`` · e0 -> offset + rate · exposure.

    The per-pixel rate is shrunk toward its frame mean by its noise (the rate of a pixel
    from two noisy means): a uniform background that scales with exposure is modelled
    exactly, a noisy per-pixel estimate does not add fixed-pattern noise.
    """
    e0 = float(cam.get_exposure())
    m0 = _dark_frames(cam, n_dark, bar)
    d0, v0 = m0.mean, m0.variance(ddof=1)
    del m0
    read_var = float(np.mean(v0))
    e1 = float(cam.set_exposure(e0 * factor)) if factor > 1 else e0
    if e1 > e0 * 1.01:
        m1 = _dark_frames(cam, n_dark, bar)
        d1 = m1.mean
        del m1
        rate_px = (d1 - d0) / (e1 - e0)
        noise_var = 2 * read_var / n_dark / (e1 - e0) ** 2
        mean_rate = float(rate_px.mean())
        signal_var = max(float(rate_px.var()) - noise_var, 0.0)
        w = signal_var / (signal_var + noise_var)
        rate = mean_rate + w * (rate_px - mean_rate)
    else:
        rate, mean_rate, w = np.zeros_like(d0), 0.0, 0.0
    cam.set_exposure(e0)
    model = DarkModel(d0 - rate * e0, rate)
    return model, read_var, v0, {"dark_rate_counts_per_s": mean_rate,
                                 "dark_rate_pixel_weight": float(w),
                                 "dark_exposures_s": (e0, e1)}


def _ptc_pairs(bench: Any, dark: DarkModel, hot: np.ndarray, n_pairs: int,
               exposures: tuple[float, ...], seed: int, bar: Any
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photon-transfer pairs with the laser on; usable (signal, variance, key) values are
    kept in one preallocated buffer, never as frames. The key of a pixel is its signal in
    one more frame at the same exposure (independent noise: ``photon_transfer_gain``)."""
    cam, slm = bench.camera, bench.slm
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=slm.shape).astype(np.float32)
    means = np.empty(len(exposures) * int(n_pairs) * int(np.prod(cam.shape)), np.float64)
    variances = np.empty_like(means)
    keys = np.empty_like(means)
    used, sat = 0, 0.98 * full_scale(cam)
    with laser_on(bench):
        slm.set_phase(phase)
        cam.flush()
        for frac in exposures:
            autoexpose(cam, dark, target=frac, tol=0.05, percentile=99.9)
            # the signal counts every electron with shot noise, the background's too: only
            # the exposure-independent offset is subtracted (else V = g S has an offset
            # that grows with the exposure and the slope comes out too steep)
            d = dark.offset
            f0 = cam.get_image().astype(np.float64)  # the key frame
            bar.update(1)
            for _ in range(n_pairs):
                f1 = cam.get_image().astype(np.float64)
                f2 = cam.get_image().astype(np.float64)
                bar.update(2)
                good = (f1 < sat) & (f2 < sat) & (f0 < sat) & ~hot
                k = int(good.sum())
                # the laser's power between the two frames: f2 rescaled to f1's total, so
                # a power fluctuation is not counted as noise (it adds (dP/P)^2 S^2)
                s1, s2 = (float((f - d)[good].sum()) for f in (f1, f2))
                if s1 > 0 and s2 > 0:
                    f2 = d + (f2 - d) * (s1 / s2)
                means[used:used + k] = ((f1 + f2) / 2 - d)[good]
                variances[used:used + k] = ((f1 - f2) ** 2 / 2)[good]
                keys[used:used + k] = (f0 - d)[good]
                used += k
    return means[:used], variances[:used], keys[:used]


def calibrate_dark(bench: Any, *, n_dark: int = 16, n_pairs: int = 2,
                   exposures: tuple[float, ...] = (0.15, 0.4, 0.8), seed: int = 0,
                   block_beam: bool = False, method: str | None = None,
                   dark_exposure_factor: float = 4.0,
                   ask: Callable[[str], Any] | None = None) -> StepResult:
    """Dark frames and background model (light blocked) and gain (photon transfer).

    ``exposures`` are target fractions of full scale for the speckle's 99.9th percentile.
    ``method`` (default: the bench file's ``dark_method``) says how the light is blocked
    (module docstring); ``block_beam=True``: the caller has blocked it (no laser, no
    prompt). ``ask`` replaces ``input`` for the prompts (tests, GUIs).
    ``dark_exposure_factor``: the second dark exposure, relative to the camera's.

    Quality gates (``quality.LIMITS``): the dark level, laser light reaching the camera
    with the light blocked, a positive finite gain and a linear photon transfer curve.
    """
    cam = bench.camera
    check_count(n_dark, "n_dark", 2)
    how = _resolve_method(bench, method, block_beam)
    exposure0 = float(cam.get_exposure())
    fs = full_scale(cam)
    n_ptc = len(exposures) * int(n_pairs)
    two = dark_exposure_factor > 1
    with progress_bar(int(n_dark) * (2 if two else 1) + 2 * n_ptc + len(exposures),
                      "dark") as bar:
        try:
            with _light_blocked(bench, how, ask):
                model, read_var, dark_var, bg = _background_model(
                    cam, int(n_dark), float(dark_exposure_factor), bar)
                dark = model.at(exposure0)
                hot = hot_pixel_mask(dark, dark_var, read_var)
                model = DarkModel(model.offset, model.rate, hot)
                del dark_var
                _dark_gates(dark, hot, read_var, fs, how)
            means, variances, keys = _ptc_pairs(bench, model, hot, n_pairs, exposures, seed,
                                                bar)
        finally:
            cam.set_exposure(exposure0)
    try:
        ptc = photon_transfer_gain(
            means, variances, keys=keys, read_var=read_var,
            dark_signal=float(np.mean(model.rate)) * exposure0)
    except ValueError as exc:
        raise CalibrationQualityError(
            "dark", "usable photon-transfer pixels", means.size, "at least 10 needed",
            "no light reached the camera for the gain measurement: check the laser is on "
            "and the beam unblocked") from exc
    del means, variances, keys
    gain = ptc["gain"]
    if not np.isfinite(gain) or gain <= 0:
        raise CalibrationQualityError(
            "dark", "photon-transfer gain (counts per electron)", gain, "expected > 0",
            "the variance does not grow with the signal: is the laser on, the beam "
            "unblocked and the camera not saturated?")
    check_max("dark", "relative rms of the photon transfer curve", ptc["rel_rms"],
              LIMITS["ptc_rel_rms"],
              "variance is not linear in signal: the camera is non-linear or near "
              "saturation, or the laser power fluctuates; lower the exposure targets")
    log.info("dark: level %.2f counts, read noise %.2f counts, gain %.4f counts/e-, "
             "background %.3g counts/s, %d hot pixels", float(dark.mean()),
             np.sqrt(read_var), gain, bg["dark_rate_counts_per_s"], int(hot.sum()))
    return StepResult(
        name="dark",
        values={"dark_frame": dark.astype(np.float32), "dark_level_counts": float(dark.mean()),
                "read_noise_counts": float(np.sqrt(read_var)),
                "gain_counts_per_electron": float(gain), "exposure_s": exposure0,
                "dark_offset_counts": model.offset.astype(np.float32),
                "dark_rate_counts_per_s": model.rate.astype(np.float32),
                "hot_pixel_mask": hot.astype(np.uint8),
                "dark_method": how},
        residuals={"ptc_rel_rms": ptc["rel_rms"], "ptc_offset_counts2": ptc["offset"],
                   "dark_spatial_std_counts": float(dark[~hot].std()),
                   "hot_pixels": int(hot.sum()),
                   "mean_rate_counts_per_s": bg["dark_rate_counts_per_s"],
                   "rate_pixel_weight": bg["dark_rate_pixel_weight"]},
        data={"ptc_signal": ptc["signal"], "ptc_variance": ptc["variance"],
              "dark_exposures_s": np.asarray(bg["dark_exposures_s"])},
        devices=device_identities(bench),
    )


def _dark_gates(dark: np.ndarray, hot: np.ndarray, read_var: float, fs: float,
                how: str) -> None:
    what = {"laser": "with the laser output off", "prompt": "with the beam blocked",
            "blocked": "with the beam blocked"}[how]
    level = float(np.median(dark))
    check_max("dark", f"dark level {what} (fraction of full scale)", level / fs,
              LIMITS["dark_level_fraction"],
              "too much light reaches the camera: close the shutter or the room lights, "
              "check the beam block, or lower the camera's offset")
    cold = dark[~hot] if (~hot).any() else dark
    bright = float(np.percentile(cold, 99.99)) - level
    noise = 8 * float(np.sqrt(max(read_var, 1e-12)))
    check_max("dark", f"brightest structure {what} (counts above the median)", bright,
              max(noise, 0.1 * fs),
              "laser light reaches the camera while it should be blocked: check the beam "
              "block / laser interlock and that dark_method is right for this bench")
