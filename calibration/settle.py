"""The ``settle`` step: measure how long the SLM takes to settle, from captures.

The software waits ``settle_time_s`` after every SLM write before a frame is taken. A
bench file's value is a guess (a data sheet, a habit); this step measures it:

1. two phase patterns: A flat (all the light in the zero order), B a random phase screen
   (seeded: speckle over the whole camera);
2. the settled frames: ``F_A``, ``F_B`` and a second ``F_B`` (the noise floor), each
   after 3·``max_delay_s`` (at most 10 s), longer than any delay measured;
3. for each delay ``d`` of a geometric series up to ``max_delay_s``: show A and hold it
   (``hold_s``, default ``max_delay_s``),
   write B (``settle=False``), flush the camera, wait until ``d`` after the write returned
   (``SLM.last_write_time``), ask for a frame ``F(d)``; the delay recorded is the one at
   which the frame's exposure started (``Camera.last_exposure_start``, where the camera
   keeps it: the simulated one), else at which it was asked for. A busy machine may
   sleep longer than asked: a frame taken beyond 1.25·``d`` + 1 ms is taken again (up to
   ``RETAKES`` times; then kept with its true delay), so a late frame cannot pass for an
   early one that had settled;
4. the distance still to go, ``e(d) = |F(d) − F_B| / |F_A − F_B|`` (1 at the switch, the
   noise floor ``e_floor = |F_B' − F_B| / |F_A − F_B|`` once settled), is fitted on its
   decaying part (``e_floor·3 < e < 0.8``) by ``log e = log c − d/τ`` (least squares);
5. ``settle_time_s`` = the delay at which the fit reaches ``tolerance`` (default 0.1 % of
   the switch), ``τ·ln(c / tolerance)``, and never less than the first measured delay from
   which every ``e(d)`` stays below ``max(tolerance, 3·e_floor)``.

Quality gate: a noise floor ``e_floor`` above ``quality.LIMITS["settle_noise_floor"]``
stops the step with a diagnosis (the frames are too noisy to see the switch: too little
light or too much background), rather than report a settle time read from noise.

With ``apply=True`` (the pipeline's default) the SLM's ``settle_time_s`` is set to the
result at once, so the steps after it wait the measured time; ``BenchImager.prepare``
applies the calibration's value on later runs.

Needs a camera whose frame starts when asked (software-triggered, or a frame rate high
against the settle time): frames already waiting in a free-running camera's buffer are
flushed, but their exposure may start before the delay asked for, which biases the
result long (the safe side). A write landing on the panel's next refresh
(``SLM.refresh_hz``, a driver that does not wait for it) adds up to one refresh period.

This module imports ``devices`` and ``simulation`` only
(docs/architecture.md §Direction-of-imports).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from calibration.quality import LIMITS, check_max
from calibration.store import CalibrationError, StepResult
from simulation.validate import check_count

__all__ = ["calibrate_settle", "settle_curve"]

log = logging.getLogger(__name__)


RETAKES = 3  # frames taken much later than asked for, taken again (at most)
OVERSHOOT, OVERSHOOT_S = 1.25, 1e-3  # "much later": beyond 1.25 x the delay + 1 ms


def _exposure_start(camera: Any, asked: float, averaging: int) -> float:
    """When the frame's exposure started: the camera's own record where it keeps one
    (``Camera.last_exposure_start``, single frames), else when it was asked for."""
    start = getattr(camera, "last_exposure_start", None)
    return float(start) if averaging == 1 and isinstance(start, float) else asked


def _frame(camera: Any, averaging: int) -> np.ndarray:
    camera.flush()
    return camera.get_image(averaging=averaging).astype(np.float64)


def settle_curve(bench: Any, delays_s: np.ndarray, *, hold_s: float,
                 reference_hold_s: float, seed: int = 0, averaging: int = 1
                 ) -> dict[str, Any]:
    """Frames at each delay after switching A -> B; returns the distances ``e(d)``, the
    noise floor and the switch size (counts)."""
    slm, cam = bench.slm, bench.camera
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E77]))
    a = np.zeros(slm.shape, np.float32)  # flat: all the light in the zero order
    b = rng.uniform(0, 2 * np.pi, slm.shape).astype(np.float32)  # speckle everywhere
    pa, pb = slm.prepare_phase(a), slm.prepare_phase(b)

    def settled(p: Any) -> np.ndarray:
        slm.set_phase(p, settle=reference_hold_s)
        return _frame(cam, averaging)

    f_a, f_b, f_b2 = settled(pa), settled(pb), settled(pb)
    switch = float(np.linalg.norm(f_a - f_b))
    if not switch > 0:
        raise CalibrationError("settle: the two test patterns give the same frame (no light "
                               "on the camera, or the SLM does not respond); check the laser "
                               "and the exposure, then run the step again")
    floor = float(np.linalg.norm(f_b2 - f_b)) / switch
    dist, actual = [], []
    for d in delays_s:
        for _ in range(RETAKES + 1):
            slm.set_phase(pa, settle=hold_s)
            slm.set_phase(pb, settle=False)
            cam.flush()
            left = slm.last_write_time + float(d) - time.perf_counter()
            if left > 0:
                time.sleep(left)
            asked = time.perf_counter()
            cam.last_exposure_start = None
            frame = cam.get_image(averaging=averaging).astype(np.float64)
            got = _exposure_start(cam, asked, averaging) - slm.last_write_time
            if got <= OVERSHOOT * float(d) + OVERSHOOT_S:
                break
            log.debug("settle: frame for %.3g ms taken at %.3g ms (a busy machine); retake",
                      1e3 * d, 1e3 * got)
        actual.append(got)
        dist.append(float(np.linalg.norm(frame - f_b)) / switch)
    return {"distance": np.array(dist), "delays_s": np.array(actual), "noise_floor": floor,
            "switch_counts": switch}


def calibrate_settle(bench: Any, *, max_delay_s: float = 0.2, n_delays: int = 20,
                     min_delay_s: float = 5e-4, tolerance: float = 0.001,
                     hold_s: float | None = None, averaging: int = 1, seed: int = 0,
                     apply: bool = True) -> StepResult:
    """Measure the SLM's settle time (see the module docstring); returns the ``settle``
    step with ``settle_time_s``, ``tau_s``, the curve and the fit's residual."""
    if not (0 < min_delay_s < max_delay_s <= 10.0):
        raise ValueError(f"max_delay_s, min_delay_s: expected 0 < min_delay_s < max_delay_s "
                         f"<= 10, got {min_delay_s!r}, {max_delay_s!r}")
    check_count(n_delays, "n_delays", 4)
    if not 0 < tolerance < 0.5:
        raise ValueError(f"tolerance: expected a fraction in (0, 0.5), got {tolerance!r}")
    hold = float(max_delay_s if hold_s is None else hold_s)
    reference_hold = min(3.0 * max(max_delay_s, hold), 10.0)
    curve = settle_curve(bench, np.geomspace(min_delay_s, max_delay_s, n_delays),
                         hold_s=hold, reference_hold_s=reference_hold, seed=seed,
                         averaging=averaging)
    e, floor, delays = curve["distance"], curve["noise_floor"], curve["delays_s"]
    check_max("settle", "noise floor of the frame distance (two frames of one settled "
              "pattern, relative to the A -> B switch)", floor, LIMITS["settle_noise_floor"],
              f"the frames are too noisy to see the SLM switch at exposure "
              f"{float(bench.camera.get_exposure()):.3g} s: too little light or too much "
              "background; raise the laser power or the exposure, or average frames "
              "(averaging), then run the step again")
    order = np.argsort(delays)
    e, delays = e[order], delays[order]
    if not np.all(np.isfinite(e)):
        raise CalibrationError("settle: non-finite frame distances; check the camera")
    threshold = max(tolerance, 3.0 * floor)
    below = e <= threshold
    # first delay from which every later one stays settled
    stays = np.flatnonzero(np.logical_and.accumulate(below[::-1])[::-1])
    if stays.size == 0:
        raise CalibrationError(
            f"settle: the SLM had not settled {max_delay_s:g} s after a write (distance "
            f"still {e[-1]:.3g} of the switch, noise floor {floor:.3g}); run the step with a "
            "longer max_delay_s")
    empirical = float(delays[stays[0]]) if stays[0] > 0 else 0.0
    fit = (e > 3.0 * floor) & (e < 0.8) & (e > 0)
    tau = c = float("nan")
    resid = float("nan")
    settle = empirical
    if fit.sum() >= 2:
        slope, intercept = np.polyfit(delays[fit], np.log(e[fit]), 1)
        if slope < 0:
            tau, c = -1.0 / float(slope), math.exp(float(intercept))
            resid = float(np.sqrt(np.mean((np.log(e[fit]) - (intercept + slope * delays[fit]))
                                          ** 2)))
            settle = max(empirical, tau * math.log(max(c, tolerance) / tolerance))
    elif empirical == 0.0:
        log.info("settle: settled before the first delay (%.3g ms)", 1e3 * delays[0])
    settle = min(settle, max_delay_s)
    previous = float(getattr(bench.slm, "settle_time_s", 0.0))
    if apply:
        bench.slm.settle_time_s = settle
    log.info("settle: %.2f ms measured (tau %.2f ms; bench file said %.2f ms)", 1e3 * settle,
             1e3 * tau if math.isfinite(tau) else float("nan"), 1e3 * previous)
    return StepResult(
        "settle",
        values={"settle_time_s": settle, "tau_s": tau, "amplitude": c,
                "tolerance": tolerance, "empirical_settle_s": empirical,
                "bench_file_settle_time_s": previous,
                "refresh_hz": getattr(bench.slm, "refresh_hz", None),
                "method": "A->B switch, frame distance at geometric delays, log-linear fit"},
        residuals={"log_fit_rms": resid, "noise_floor": floor},
        data={"delays_s": delays, "distance": e},
    )
