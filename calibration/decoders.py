"""Step 6: decoders for the bench, both ways, compared on captures.

The two ways (docs/architecture.md §Twin-and-bench-decoders):

* ``twin``: simulated patterns of synthetic speckles (``simulation.speckle``), through the
  fitted model (source amplitude of step 4, residual warp and blur of step 5), fitted in
  closed form (ridge ``LinearDecoder``, α chosen on simulated patterns); applied to
  captures mapped onto the model grid through the calibrated geometry.
* ``twin_noise``: the same simulated patterns, fitted as a noise-aware ridge
  (``LinearDecoder.fit_toward``): the capture noise measured from repeated captures enters
  the regulariser, and α is chosen on held-out *captures*.
* ``capture``: the synthetic speckle set itself shown on the SLM and captured
  (``BenchImager``), fitted in closed form on the captures (noise-aware when the training
  captures were averaged more than the run's; α on held-out captures).
* ``twin_prior``: the captures again, in a ridge pulled toward the weight of whichever of
  ``twin`` and ``twin_noise`` does better on the validation captures
  (α -> ∞ is the twin, α -> 0 the captures alone), α chosen on held-out captures and kept
  in the saved decoder;
* ``twin_corrected``: the captures teach the twin what it misses
  (``simulation.capture_correction.CaptureCorrection``: a linear map from the twin's
  patterns of the captured speckles to the captures, α on the validation captures); the
  ``n_twin`` simulated patterns, so corrected, train a noise-aware ridge (as
  ``twin_noise``);
* ``twin_offset``: the same correction without its linear map: only the mean by which the
  captures differ from the twin's patterns of the same speckles, in the decoder's input
  space (``simulation.ridge_prior.capture_offset``), added to the ``n_twin`` simulated
  patterns of a noise-aware ridge. On ``sim-realistic.toml`` this is most of what the twin
  misses, and the linear map, learned on speckle, is what costs captured MNIST
  (docs/results/crossover-sim-realistic).

No test image is needed to train any of them.

Captures, in order: a test set (``n_test``, only for the final scores), a validation set
(``n_val``, for α and for when to stop), ``n_repeat`` of its images again (the per-input
noise of one capture, ``capture_noise_variance``), then the training set in rounds that
double (from ``n_capture_start``) up to ``n_capture``, stopping early when a round improves
the best validation error (1 - SSIM, ``ssim_error``) of the ``twin_prior`` and ``capture``
decoders by less than ``capture_tol`` (relative): as many captures as the bench needs.
``train_averaging`` frames per training capture (``"auto"``: ``averaging_rule``, from the
measured noise and frame times).

All are scored (SSIM) on the held-out captured speckles. The step's quality gate: the best
must reach ``quality.LIMITS["decoders_min_ratio"]`` of the twin-trained decoder's SSIM on
the twin's own patterns of the same speckles, else the step stops with a diagnosis (the
bench departs from the twin by more than its captures make up for). The best is recorded as
``best_decoder`` (what ``hil run`` uses by default; ``default_decoder`` stays the
twin-trained one, as ``CalibrationSet.decoder_file()`` has always returned). With
``out_dir`` they are saved as ``decoder_<name>.pt`` (``LinearDecoder.save``). The step
records what the decoders belong with (``hil run`` checks it): the imaging configuration
they were made with (``imaging_config``, an ``ImagingConfig.to_dict()``), the encoder
signature, and for each file written its name and SHA-256 (``decoder_files``).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibration.capture import capture_patterns, device_identities, show_progress
from calibration.imaging_config import ImagingConfig, imaging_config_for
from calibration.store import CalibrationSet, StepResult, file_sha256
from simulation.validate import check_count, check_number

__all__ = ["calibrate_decoders", "twin_training_patterns",
           "averaging_rule", "ssim_error", "DECODER_NAMES"]

log = logging.getLogger(__name__)


# images per chunk when simulating or generating a training set: bounds the transient
# complex fields (every image is computed independently, so the result is the same)
CHUNK = 128

# the decoders the step fits, in the order they are reported
DECODER_NAMES = ("twin", "twin_noise", "capture", "twin_prior", "twin_corrected",
                 "twin_offset")


def _check_recovered(scores: dict[str, float], best: str, cal: CalibrationSet) -> None:
    """The quality gate of the step: the best decoder must recover at least
    ``LIMITS["decoders_min_ratio"]`` of what the twin-trained decoder scores on the twin's
    own patterns of the same held-out speckles; below, the bench departs from the
    calibrated twin by more than its own captures make up for, and a run would decode far
    below what the calibration promises."""
    from calibration.quality import LIMITS, check_min

    ceiling = scores["ssim_twin_on_twin"]
    if ceiling <= 0:
        return  # nothing to compare with: the twin itself decodes nothing
    model = cal.record("model")
    rel = "" if model is None else (
        f" (the model step's relative residual was {model.residuals['relative_rms']:.3g})")
    check_min("decoders", f"SSIM of the best decoder ({best}) on held-out captured "
              "speckles over the twin-trained decoder's on the twin's own patterns of them",
              scores[f"ssim_{best}_on_captures"] / ceiling, LIMITS["decoders_min_ratio"],
              "the bench departs from the calibrated twin by more than its captures make "
              f"up for{rel}: measure the SLM's pixel crosstalk (slmsuite pixel_calibrate, "
              "then --import-slmsuite), check that the grey range spans 2 pi once (lut) and "
              "that no stray light or background reaches the camera, then calibrate again")


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


def averaging_rule(noise_var: float, signal_var: float, image_s: float, frame_s: float,
                   choices: tuple[int, ...] = (1, 2, 4, 8)) -> tuple[int, dict[str, float]]:
    """Frames to average per training capture, where averaging pays for its time.

    A training pair whose inputs carry noise variance ν/k (k frames averaged) over a signal
    variance s is worth about s / (s + ν/k) of a noise-free one (errors in the variables),
    and costs ``image_s`` (display, settle) + k·``frame_s``. Returns the k of ``choices``
    with the most worth per second, and that figure for each k.
    """
    for name, v in (("noise_var", noise_var), ("signal_var", signal_var),
                    ("image_s", image_s), ("frame_s", frame_s)):
        check_number(float(v), name, allow_zero=True)
    s = max(signal_var, 1e-12)
    worth = {int(k): s / (s + noise_var / k) / max(image_s + k * frame_s, 1e-9)
             for k in choices}
    return max(worth, key=worth.__getitem__), {str(k): v for k, v in worth.items()}


def ssim_error(size: int) -> Any:
    """1 - mean SSIM of flattened (m, size²) predictions against targets: the score the
    decoders are picked by (``LinearDecoder(val_error="ssim")`` scores α by the same)."""
    from simulation.decoder_params import ssim_error as _ssim_error

    return _ssim_error((size, size))


def _capture_rounds(start: int, stop: int) -> list[int]:
    sizes = [min(start, stop)]
    while sizes[-1] < stop:
        sizes.append(min(2 * sizes[-1], stop))
    return sizes


def _drift_summary(trackers: dict[int, Any], imager: Any, train_imager: Any
                   ) -> dict[str, Any]:
    """What the step keeps of its drift trackers: per tracker ("captures", and "training"
    when the training captures average more frames), the settings, checks and the
    correction in force at the end (camera px)."""
    out: dict[str, Any] = {}
    for name, im in (("captures", imager), ("training", train_imager)):
        t = trackers.get(id(im))
        if t is None or (name == "training" and im is imager):
            continue
        r = t.record()
        out[name] = {k: r[k] for k in ("every", "n_checks", "n_unreliable", "extra_frames",
                                        "correction_px")}
        out[name]["alignment_px"] = [[float(c.get(k, float("nan"))) for k in ("dx_px", "dy_px")]
                                     for c in r["checks"] if c["kind"] == "alignment"]
    return out


def calibrate_decoders(bench: Any, cal: CalibrationSet, *, size: int = 32,
                       n_twin: int = 4000, n_capture: int = 2000, n_test: int = 32,
                       n_val: int | None = None, n_repeat: int = 16,
                       n_capture_start: int = 250, capture_tol: float = 0.01,
                       train_averaging: int | str = 1,
                       gamma: float = 15.0, seed: int = 10, out_dir: str | Path | None = None,
                       imaging: ImagingConfig | None = None,
                       alpha: float | None = None, compare_nominal: bool = True,
                       drift_every: int = 0, progress: bool | None = None) -> StepResult:
    """Fit the decoders of ``DECODER_NAMES``, score them on captures, record the best.

    ``n_capture`` is the most training speckles captured (each costs one frame per encoder
    channel, times ``train_averaging``); rounds double from ``n_capture_start`` and stop
    when the validation error improves by less than ``capture_tol``. ``n_twin`` speckles
    are only simulated. ``n_val`` (default ``max(n_test, 32)``) held-out captures choose α
    and the stop; ``n_repeat`` of them are captured twice for the noise. ``alpha``: the
    twin-trained decoder's ridge strength (default: chosen on its own split).
    ``compare_nominal`` also scores the twin-trained decoder on test captures mapped through
    the nominal (uncalibrated) geometry, when the bench knows its focal length.
    ``imaging``: how the speckles are shown and captured (default
    ``ImagingConfig(size=size)``), recorded in the step. ``drift_every`` K > 0: the
    captures follow the camera image's drift (``calibration.drift.DriftTracker``: its
    move since the geometry step first, then a reference pattern every K images, counted
    over the test, validation and training sets), recorded under ``drift``; 0: none.
    """
    import time

    from calibration.imaging import BenchImager
    from simulation import DualVortexEncoder, LinearDecoder, speckle, ssim
    from simulation.capture_correction import CaptureCorrection
    from simulation.ridge_prior import capture_noise_variance, capture_offset
    from simulation.sensor import normalise_for_decoder

    cal.require("geometry")
    for name, v in (("n_twin", n_twin), ("n_capture", n_capture), ("n_test", n_test),
                    ("n_capture_start", n_capture_start)):
        check_count(v, name)
    n_val = max(n_test, 32) if n_val is None else check_count(n_val, "n_val", 2)
    n_repeat = min(check_count(n_repeat, "n_repeat", 2), n_val)
    if not (isinstance(capture_tol, (int, float)) and 0 <= capture_tol < 1):
        raise ValueError(f"capture_tol: expected a number in [0, 1), got {capture_tol!r}")
    if train_averaging != "auto":
        check_count(train_averaging, "train_averaging")
    if drift_every:
        check_count(drift_every, "drift_every")
    config = imaging_config_for(imaging, size)
    enc = DualVortexEncoder(size=size)
    imager = BenchImager(bench, cal, enc, config).prepare()
    block = imager.block

    trackers: dict[int, Any] = {}  # the drift tracker of each imager that follows drift

    def follow(im: Any) -> Any:
        from calibration.drift import DriftTracker

        if drift_every and id(im) not in trackers:
            geometry = cal.geometry if im.geometry_source == "calibrated" else None
            trackers[id(im)] = DriftTracker(im, drift_every, align_to=geometry).start()
        return im

    def capture(im: Any, images: torch.Tensor, desc: str) -> torch.Tensor:
        ctx = contextlib.nullcontext() if progress is None else show_progress(progress)
        with ctx:
            return torch.as_tensor(capture_patterns(im, images, desc=desc,
                                                    drift=trackers.get(id(im))))

    follow(imager)

    test_imgs = speckle(n_test, gamma, seed=seed + 2, batch_size=CHUNK)
    # frames are reduced to model-grid patterns image by image (capture_patterns): the
    # step holds B x C x N x N floats, never the raw frames of thousands of captures
    test_pats = capture(imager, test_imgs, "decoders: test")
    val_imgs = speckle(n_val, gamma, seed=seed + 3, batch_size=CHUNK)
    t0 = time.perf_counter()
    val_pats = capture(imager, val_imgs, "decoders: validation")
    image_s = (time.perf_counter() - t0) / n_val
    repeat = capture(imager, val_imgs[:n_repeat], "decoders: repeats")
    noise = capture_noise_variance(val_pats[:n_repeat], repeat)
    x_val = normalise_for_decoder(val_pats)
    signal_var = max(float(x_val.var(0).mean()) - float(noise.mean()), 0.0)

    rule: dict[str, Any] = {}
    k = train_averaging
    if k == "auto":
        pilot = min(4, n_val)
        twice = BenchImager(bench, cal, enc, config.replace(averaging=2 * config.averaging))
        t0 = time.perf_counter()
        capture(twice.prepare(), val_imgs[:pilot], "decoders: averaging pilot")
        frame_s = max((time.perf_counter() - t0) / pilot - image_s, 0.0) / config.averaging
        k, worth = averaging_rule(float(noise.mean()), signal_var,
                                  max(image_s - frame_s * config.averaging, 0.0), frame_s)
        rule = {"image_s": image_s, "frame_s": frame_s, "worth_per_s": worth}
        log.info("decoders: training captures average %d frame(s) (measured noise %.3g, "
                 "signal %.3g, %.3g s per image, %.3g s per extra frame)", k,
                 float(noise.mean()), signal_var, image_s, frame_s)
    train_imager = imager if k == 1 else follow(BenchImager(
        bench, cal, enc, config.replace(averaging=k * config.averaging)).prepare())
    # the training captures lack (1 - 1/k) of the noise the run's single captures carry
    train_noise = noise * (1.0 - 1.0 / k)

    twin_imgs = speckle(n_twin, gamma, seed=seed, batch_size=CHUNK)
    twin_pats = twin_training_patterns(cal, twin_imgs, enc, block)
    twin_dec = LinearDecoder(alpha=alpha, method="ridge").fit(twin_pats, twin_imgs, encoder=enc)
    val_error = ssim_error(size)
    # α of the decoders below: chosen by 1 - SSIM on the validation captures (recorded)
    twin_noise = LinearDecoder(val_error="ssim").fit_toward(
        twin_pats, twin_imgs, noise_var=noise, encoder=enc, val_patterns=val_pats,
        val_images=val_imgs)
    # the prior: whichever twin-trained decoder does better on the validation captures
    prior = min((twin_dec, twin_noise), key=lambda d: float(val_error(
        d.predict(val_pats).reshape(n_val, -1), val_imgs.reshape(n_val, -1))))
    sim_pats = twin_training_patterns(cal, test_imgs, enc, block)
    twin_of_val = twin_training_patterns(cal, val_imgs, enc, block)

    cap_imgs = speckle(n_capture, gamma, seed=seed + 1, batch_size=CHUNK)
    chunks: list[torch.Tensor] = []
    twin_of_cap: list[torch.Tensor] = []  # the twin's patterns of the captured speckles
    curve: dict[str, list[float]] = {"n": [], "val_error_twin_prior": [],
                                     "val_error_capture": [], "val_error_twin_corrected": []}
    prior_dec = cap_dec = cor_dec = fix = None
    for n in _capture_rounds(n_capture_start, n_capture):
        have = sum(len(c) for c in chunks)
        chunks.append(capture(train_imager, cap_imgs[have:n], f"decoders: training to {n}"))
        twin_of_cap.append(twin_training_patterns(cal, cap_imgs[have:n], enc, block))
        pats, imgs = torch.cat(chunks), cap_imgs[:n]
        prior_dec = LinearDecoder(val_error="ssim").fit_toward(
            pats, imgs, prior=prior, encoder=enc, noise_var=train_noise,
            val_patterns=val_pats, val_images=val_imgs)
        cap_dec = LinearDecoder(val_error="ssim").fit_toward(
            pats, imgs, encoder=enc, noise_var=train_noise, val_patterns=val_pats,
            val_images=val_imgs)
        # averaged training captures: the map is learned from them, the noise they lack
        # is the run's (``noise``), not ``train_noise``, as for ``twin_noise``
        fix = CaptureCorrection().fit(torch.cat(twin_of_cap), pats, val_twin=twin_of_val,
                                      val_captured=val_pats)
        cor_dec = LinearDecoder(val_error="ssim").fit_toward(
            fix.transform(twin_pats), twin_imgs, noise_var=noise, encoder=enc,
            val_patterns=val_pats, val_images=val_imgs)
        errs = [min(d.history_["val_mse"]) for d in (prior_dec, cap_dec, cor_dec)]
        log.info("decoders: %d training captures: validation 1 - SSIM twin-prior %.4f, "
                 "capture-trained %.5f, twin corrected %.4f", n, *errs)
        before = min(curve["val_error_twin_prior"] + curve["val_error_capture"]
                     + curve["val_error_twin_corrected"], default=None)
        curve["n"].append(n)
        curve["val_error_twin_prior"].append(errs[0])
        curve["val_error_capture"].append(errs[1])
        curve["val_error_twin_corrected"].append(errs[2])
        if before is not None and min(errs) > before * (1 - capture_tol):
            log.info("decoders: stopped at %d captures (the last round gained less than "
                     "%.0f %%)", n, 100 * capture_tol)
            break
    assert prior_dec is not None and cap_dec is not None and cor_dec is not None \
        and fix is not None
    # the offset from every training capture (its mean settles within a few hundred)
    off_dec = LinearDecoder(val_error="ssim").fit_toward(
        twin_pats, twin_imgs, noise_var=noise,
        input_offset=capture_offset(torch.cat(twin_of_cap), pats), encoder=enc,
        val_patterns=val_pats, val_images=val_imgs)
    del twin_pats
    decoders = {"twin": twin_dec, "twin_noise": twin_noise, "capture": cap_dec,
                "twin_prior": prior_dec, "twin_corrected": cor_dec, "twin_offset": off_dec}

    def score(dec: Any, pats: torch.Tensor) -> float:
        rec = dec.predict(pats)
        return float(np.mean(ssim(test_imgs, rec)))

    scores = {f"ssim_{name}_on_captures": score(dec, test_pats)
              for name, dec in decoders.items()}
    scores["ssim_twin_on_twin"] = score(twin_dec, sim_pats)
    if compare_nominal:
        try:
            nominal = BenchImager(bench, cal, enc, config.replace(geometry="nominal"))
        except ValueError as exc:
            log.info("decoders: no nominal-geometry comparison (%s)", exc)
        else:
            pats = capture(nominal, test_imgs, "decoders: nominal geometry")
            scores["ssim_twin_on_captures_nominal_geometry"] = score(twin_dec, pats)
    best = max(DECODER_NAMES, key=lambda nm: scores[f"ssim_{nm}_on_captures"])
    _check_recovered(scores, best, cal)
    log.info("decoders: SSIM on captured speckles: %s; best %s (twin-trained on simulated "
             "patterns %.3f)", ", ".join(f"{nm} {scores[f'ssim_{nm}_on_captures']:.3f}"
                                         for nm in DECODER_NAMES),
             best, scores["ssim_twin_on_twin"])
    values: dict[str, Any] = {
        "gamma": float(gamma), "n_twin": n_twin, "n_capture": n_capture,
        "n_capture_used": int(curve["n"][-1]), "n_test": n_test, "n_val": n_val,
        "n_repeat": n_repeat, "seed": int(seed), "train_averaging": int(k),
        "averaging_rule": rule, "capture_noise_var": float(noise.mean()),
        "input_signal_var": signal_var, "capture_curve": curve,
        "twin_prior_of": "twin" if prior is twin_dec else "twin_noise",
        "drift": _drift_summary(trackers, imager, train_imager),
        "correction_alpha": fix.alpha_,
        "correction_val_mse": min(fix.history_["val_mse"]),
        "correction_val_mse_twin": fix.history_["val_mse_twin"],
        "capture_offset_rms": off_dec.history_["input_offset_rms"],
        "imaging_config": config.to_dict(), "encoder": enc.signature(),
        "default_decoder": "twin", "best_decoder": best,
        "best_decoder_score": "mean SSIM on held-out captured speckles"}
    values.update({f"alpha_{name}": dec.alpha_ for name, dec in decoders.items()})
    if out_dir is not None:
        out = Path(out_dir)
        files = {}
        for name, dec in decoders.items():
            path = dec.save(out / f"decoder_{name}.pt")
            values[f"{name}_path"] = path.name
            files[name] = {"path": path.name, "sha256": file_sha256(path)}
        values["decoder_files"] = files
    step = StepResult(name="decoders", values=values, residuals=scores,
                      devices=device_identities(bench))
    return step
