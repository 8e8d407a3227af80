"""Step 4: source amplitude and low-order aberrations by phase diversity (torch twin).

With the measured phase response loaded (step 3), the SLM shows a grating (the spot
lands away from the zero-order leakage) plus, frame by frame, known diversity phases
(none, ±defocus, two astigmatisms). The twin (``calibration.twin``) predicts every frame
from a Gaussian source (waist, centre), Zernike aberrations (Noll 4-8 by default), the
calibrated geometry and a small common shift of the spot (the geometry centre bias of
step 2, see ``registration``); per frame an intensity scale and a background. All are
fitted at once by L-BFGS on the difference of square roots (amplitudes: well
conditioned on faint wings and bright cores alike).

Each diversity frame is cropped, as it arrives, to the bounding box of the disc the
fit reads (``roi_model_px`` around the spot); the measured, fitted and residual crops
(and ``crop_origin_px``, their top-left camera pixel) are what the step keeps.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from calibration.capture import (
    autoexpose,
    capture_float,
    device_identities,
    grating_phase,
    progress_bar,
)
from calibration.geometry import check_affine
from calibration.quality import LIMITS, check_finite, check_max, frame_exposure_check
from calibration.registration import shift_center
from calibration.store import StepResult
from calibration.twin import PupilGrid, camera_sample_points, far_field_intensity, sample_on_camera
from simulation.zernike import zernike_sum

__all__ = ["calibrate_wavefront", "DEFAULT_DIVERSITY"]

log = logging.getLogger(__name__)

DEFAULT_DIVERSITY: tuple[dict[int, float], ...] = (
    {}, {4: 2.0}, {4: -2.0}, {5: 1.5}, {6: 1.5},
)


def _capture_diversity(bench: Any, size: int, block: int, k: float,
                       diversity: tuple[dict[int, float], ...], dark: np.ndarray | None,
                       averaging: int, box: tuple[slice, slice]) -> np.ndarray:
    """One frame per diversity phase, each cropped to ``box`` (rows, cols) on arrival."""
    slm, cam = bench.slm, bench.camera
    tilt = grating_phase(slm, k, k, size, block)
    crops = []
    slm.set_phase(tilt)
    autoexpose(cam, dark, target=0.6)
    with progress_bar(len(diversity), "wavefront") as bar:
        for div in diversity:
            extra = zernike_sum(div, slm.shape).numpy() if div else 0.0
            slm.set_phase((tilt + extra).astype(np.float32))
            cam.flush()
            crops.append(capture_float(cam, averaging, dark)[box].copy())
            bar.update()
    return np.stack(crops)


def _roi(a: np.ndarray, shape: tuple[int, int], centre: tuple[float, float],
         r_cam: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray]:
    """The fit's disc around the spot: its bounding box on the frame, the disc's mask on
    the box, and the disc pixels' camera coordinates (x, y) in row order."""
    cxy = a[:, :2] @ np.array(centre) + a[:, 2]
    h, w = int(shape[0]), int(shape[1])
    x0 = min(w, max(0, int(np.floor(cxy[0] - r_cam)) - 1))
    x1 = max(x0, min(w, int(np.ceil(cxy[0] + r_cam)) + 2))
    y0 = min(h, max(0, int(np.floor(cxy[1] - r_cam)) - 1))
    y1 = max(y0, min(h, int(np.ceil(cxy[1] + r_cam)) + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    roi = ((xx - cxy[0]) ** 2 + (yy - cxy[1]) ** 2) <= r_cam**2
    if not roi.any():
        raise ValueError(f"wavefront: the spot's window at camera ({cxy[0]:.1f}, "
                         f"{cxy[1]:.1f}) px lies outside the {h}x{w} frame; lower spot_k")
    return (slice(y0, y1), slice(x0, x1)), roi, xx[roi].astype(float), yy[roi].astype(float)


def calibrate_wavefront(bench: Any, model_to_camera: Any, *, size: int = 32,
                        dark: Any = None,
                        phase_response_rad: np.ndarray | None = None,
                        noll: tuple[int, ...] = (4, 5, 6, 7, 8),
                        diversity: tuple[dict[int, float], ...] = DEFAULT_DIVERSITY,
                        spot_k: float = 12.0, roi_model_px: float = 11.0, averaging: int = 2,
                        samples: int = 64, q: int = 4, iterations: int = 2,
                        max_iter: int = 60, starts: tuple[float, ...] = (0.35, 0.5, 0.8),
                        start_iter: int = 30,
                        extend_noll: tuple[int, ...] = tuple(range(4, 29)),
                        extend_above: float = 0.15) -> tuple[StepResult, StepResult]:
    """Fit source and aberrations; returns the ``source`` and ``wavefront`` steps.

    The wavefront step also holds ``model_to_camera`` with its centre corrected by the
    fitted spot shift (``center_shift_px``), the value the pipeline stores as geometry.

    Quality: aberrations beyond the fitted terms bend the fitted ones (a Noll 4-8 fit of
    a wavefront with Noll 9-15 content can be further from the truth than no fit). When
    the relative residual of the ``noll`` fit exceeds ``extend_above``, the fit is run
    again with the terms ``extend_noll`` (default Noll 4-28, radial orders up to 6) and
    the one with the lower residual is kept
    (``noll_fitted`` and ``extended`` record which). A non-finite fit, or a residual
    above ``quality.LIMITS["wavefront_rel_rms"]``, stops the step
    (``CalibrationQualityError``).
    """
    slm, cam = bench.slm, bench.camera
    a = check_affine(model_to_camera)
    block = int(slm.block_size((size, size)))
    saved = getattr(slm, "phase_response_rad", None)
    exposure0 = float(cam.get_exposure())
    # only the disc the fit reads is kept of each frame (cropped as it arrives)
    centre = (size / 2 + spot_k, size / 2 + spot_k)
    r_cam = roi_model_px * float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    box, roi, xs, ys = _roi(a, tuple(cam.shape), centre, r_cam)
    try:
        if phase_response_rad is not None:
            slm.set_phase_response(np.asarray(phase_response_rad, dtype=np.float64))
        frames = _capture_diversity(bench, size, block, spot_k, diversity, dark, averaging,
                                    box)
        exposure = frame_exposure_check("wavefront", cam, dark)
    finally:
        slm.set_phase_response(saved)
        cam.set_exposure(exposure0)

    meas = torch.as_tensor(frames[:, roi], dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small FFTs: one thread is fastest, and the cores are shared
    try:
        fits = [_fit(bench, a, frames, roi, xs, ys, meas, size, block, spot_k,
                     tuple(noll), diversity, samples, q, iterations, max_iter, starts,
                     start_iter)]
        first = fits[0][1].residuals["relative_rms"]
        wider = tuple(sorted(set(noll) | set(extend_noll)))
        if not (np.isfinite(first) and first <= extend_above) and wider != tuple(noll):
            log.info("wavefront: residual %.3f with Noll %s above %.3f; fitting Noll %s",
                     first, tuple(noll), extend_above, wider)
            fits.append(_fit(bench, a, frames, roi, xs, ys, meas, size, block, spot_k,
                             wider, diversity, samples, q, iterations, max_iter, starts,
                             start_iter))
    finally:
        torch.set_num_threads(threads)
    rel = [f[1].residuals["relative_rms"] for f in fits]
    pick = int(np.argmin([r if np.isfinite(r) else np.inf for r in rel]))
    source, wavefront = fits[pick]
    wavefront.values["noll_fitted"] = [int(j) for j in (noll if pick == 0 else wider)]
    wavefront.values["extended"] = bool(pick == 1)
    wavefront.residuals["relative_rms_first_fit"] = float(rel[0])
    wavefront.residuals["saturated_fraction"] = exposure["saturated_fraction"]
    check_finite("wavefront", "aberration coefficients", list(
        wavefront.values["zernike_noll_rad"].values()) + [rel[pick]],
        "the phase-diversity fit diverged: check that the spot is not saturated and the "
        "light is enough (re-run the lut step first), or lower spot_k")
    check_max("wavefront", "relative rms residual of the diversity frames", rel[pick],
              LIMITS["wavefront_rel_rms"],
              f"the PSFs do not fit a Gaussian source with Noll {wavefront.values['noll_fitted']}"
              " aberrations: the source is not Gaussian or aberrations are stronger than "
              "the fit covers; pass more Noll terms (noll=...) or correct the optics")
    # the report's frames are crops: where they sit on the camera (x, y of the top left)
    wavefront.data["crop_origin_px"] = np.array([box[1].start, box[0].start])
    return source, wavefront


def _fit(bench, a, frames, roi, xs, ys, meas, size, block, spot_k, noll, diversity,
         samples, q, iterations, max_iter, starts, start_iter):
    slm = bench.slm
    centre = (size / 2 + spot_k, size / 2 + spot_k)

    grid = PupilGrid(slm.shape, size, block, samples=samples, q=q, noll=noll,
                     dtype=torch.float32)
    # the diversity is drawn at full resolution: average it over each pupil sample's block
    div_phase = torch.stack([
        torch.as_tensor(_block_mean(zernike_sum(d, slm.shape).numpy(), grid.step,
                                    tuple(grid.x.shape)), dtype=torch.float32)
        if d else torch.zeros_like(grid.x) for d in diversity])
    n_f = len(diversity)
    half = min(slm.shape) / 2
    params = {
        "c": torch.zeros(len(noll), dtype=torch.float64, requires_grad=True),
        "logw": torch.tensor(np.log(0.5), dtype=torch.float64, requires_grad=True),
        "src": torch.zeros(2, dtype=torch.float64, requires_grad=True),
        "shift": torch.zeros(2, dtype=torch.float64, requires_grad=True),
        "logalpha": torch.zeros(n_f, dtype=torch.float64, requires_grad=True),
        "bg": torch.zeros(n_f, dtype=torch.float64, requires_grad=True),
    }
    meas_scale = float(meas.clamp(min=0).sum(dim=1).mean())
    sqrt_meas = torch.sqrt(meas.clamp(min=0) / meas_scale)

    def predict() -> torch.Tensor:
        f32 = torch.float32
        amp = grid.gaussian((half * torch.exp(params["logw"])).to(f32),
                            (20 * params["src"][0]).to(f32), (20 * params["src"][1]).to(f32))
        inten = far_field_intensity(grid, amp,
                                    div_phase + grid.zernike_phase(params["c"].to(f32)))
        pts = camera_sample_points(a, xs, ys, centre, grid, shift_px=params["shift"].to(f32))
        s = sample_on_camera(inten, pts).to(torch.float64)
        s = s / s.sum(dim=1, keepdim=True).detach().clamp(min=1e-30)
        return torch.exp(params["logalpha"])[:, None] * s + 1e-3 * params["bg"][:, None]

    def loss_fn() -> torch.Tensor:
        pred = predict().clamp(min=1e-12)
        return ((torch.sqrt(pred) - sqrt_meas) ** 2).sum() / n_f

    def run(n_rounds: int, n_iter: int) -> float:
        opt = torch.optim.LBFGS(list(params.values()), lr=1, max_iter=n_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                                tolerance_change=1e-14)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        for _ in range(n_rounds):
            opt.step(closure)
        with torch.no_grad():
            return float(loss_fn())

    # phase retrieval has local minima: start from several source waists, keep the best
    start = {k: v.detach().clone() for k, v in params.items()}
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for w0 in starts:
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(start[k])
            params["logw"].fill_(float(np.log(w0)))
        loss = run(1, start_iter)
        loss = loss if np.isfinite(loss) else float("inf")  # a diverged start never wins
        log.debug("wavefront: start waist %.2f -> loss %.5f", w0, loss)
        if best is None or loss < best[0]:
            best = (loss, {k: v.detach().clone() for k, v in params.items()})
    with torch.no_grad():
        for k, v in params.items():
            v.copy_(best[1][k])
    run(iterations, max_iter)
    with torch.no_grad():
        pred = predict() * meas_scale
        final = float(loss_fn())
    resid = (pred - meas).numpy()
    rel = float(np.sqrt(np.sum(resid**2) / np.sum(meas.numpy() ** 2)))
    coeffs = {j: float(c) for j, c in zip(noll, params["c"].detach().numpy(), strict=True)}
    waist = float(half * np.exp(params["logw"].item()))
    src = (20 * params["src"].detach().numpy()).tolist()
    shift = params["shift"].detach().numpy().tolist()
    refined = shift_center(a, shift[0], shift[1])
    log.info("wavefront: zernike %s rad, waist %.1f px, source centre (%.1f, %.1f) px, "
             "spot shift (%.3f, %.3f) px, relative residual %.4f",
             {j: round(v, 3) for j, v in coeffs.items()}, waist, *src, *shift, rel)
    devices = device_identities(bench)
    fitted = np.zeros_like(frames)
    fitted[:, roi] = pred.numpy()
    residual_maps = np.where(roi, frames - fitted, 0.0).astype(np.float32)
    source = StepResult(
        name="source",
        values={"waist_px": waist, "center_px": src, "model": "gaussian exp(-r^2/waist^2)"},
        residuals={"relative_rms": rel}, devices=devices)
    wavefront = StepResult(
        name="wavefront",
        values={"zernike_noll_rad": coeffs, "radius_px": float(grid.radius),
                "center_shift_px": shift, "model_to_camera": refined,
                "wavefront_rms_rad": float(np.sqrt(sum(v * v for v in coeffs.values())))},
        residuals={"relative_rms": rel, "loss": final, "residual_maps": residual_maps},
        data={"frames": frames.astype(np.float32), "fitted": fitted.astype(np.float32),
              "diversity": np.array([[j, v] for d in diversity for j, v in d.items()] or
                                    np.zeros((0, 2)))},
        devices=devices)
    return source, wavefront


def _block_mean(img: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    return img[:ny * step, :nx * step].reshape(ny, step, nx, step).mean(axis=(1, 3))
