"""Step 4: source amplitude and low-order aberrations by phase diversity (torch twin).

With the measured phase response loaded (step 3), the SLM shows a grating (the spot
lands away from the zero-order leakage) plus, frame by frame, known diversity phases
(none, ±defocus, two astigmatisms). The twin (``calibration.twin``) predicts every frame
from the source (waist, centre and the beam's shape, ``calibration.source_beam``),
Zernike aberrations (Noll 4-8 by default), the calibrated geometry and a small common
shift of the spot (the geometry centre bias of step 2, see ``registration``); per frame
an intensity scale and a background. All are fitted at once by L-BFGS on the difference
of square roots (amplitudes: well conditioned on faint wings and bright cores alike).

The beam's shape: a Gaussian fit of a beam cut by an aperture absorbs the aperture's
far-field rings as aberrations (measured on the sim-realistic bench: 1.35 rad rms error
while the residual passed the gate). So each model of ``beam_models`` (Gaussian, super-Gaussian,
clipped Gaussian) is fitted, and another than the Gaussian is kept only when it lowers
the relative residual by more than ``BEAM_MIN_GAIN`` (10 %) of the Gaussian's: measured,
the clipped model halves it on a clipped beam (0.17 -> 0.07-0.09 on sim-realistic's
flaws at 256 px) and gains under 1 % on a Gaussian one (the CI benches, sim.toml).
Then the kept model is fitted again with the terms ``extend_noll``, kept when they
lower the residual by more than ``extend_min_gain`` (or at all above ``extend_above``).

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
from calibration.geometry import check_affine, shift_center
from calibration.quality import LIMITS, check_finite, check_max, frame_exposure_check
from calibration.source_beam import BEAM_MODELS, beam_amplitude, source_values
from calibration.store import StepResult
from calibration.twin import PupilGrid, camera_sample_points, far_field_on_camera
from simulation.zernike import zernike_sum

__all__ = ["calibrate_wavefront", "DEFAULT_DIVERSITY", "choose_beam", "BEAM_MIN_GAIN"]

log = logging.getLogger(__name__)

# a beam model other than the Gaussian is kept when it lowers the relative rms residual
# by more than this fraction (measured: see ``choose_beam`` and the module docstring)
BEAM_MIN_GAIN = 0.1

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
                        extend_above: float = 0.15, extend_min_gain: float = 0.1,
                        beam_models: tuple[str, ...] = BEAM_MODELS,
                        beam_min_gain: float = BEAM_MIN_GAIN,
                        ) -> tuple[StepResult, StepResult]:
    """Fit source and aberrations; returns the ``source`` and ``wavefront`` steps.

    The wavefront step also holds ``model_to_camera`` with its centre corrected by the
    fitted spot shift (``center_shift_px``), the value the pipeline stores as geometry.

    Beam shape: every model of ``beam_models`` (``calibration.source_beam``; the
    Gaussian first) is fitted with the ``noll`` terms and ``choose_beam`` keeps one (a
    gain over the Gaussian's residual above ``beam_min_gain``); the source step records
    it (``beam_model``, ``power`` or ``clip_radius_px``) and each model's residual
    (``relative_rms_<model>``). ``beam_models=("gaussian",)`` is the fit before.

    Quality: aberrations beyond the fitted terms bend the fitted ones (a Noll 4-8 fit of
    a wavefront with Noll 9-15 content can be further from the truth than no fit). The
    kept beam model is fitted again with the terms ``extend_noll`` (default Noll 4-28,
    radial orders up to 6; ``()``: not tried), kept when its relative residual is below
    ``1 - extend_min_gain`` times the first one, or below it at all when the first is
    above ``extend_above`` (``noll_fitted`` and ``extended`` record which;
    ``relative_rms_first_fit`` is the Gaussian Noll-``noll`` fit's). A non-finite fit, or
    a residual above ``quality.LIMITS["wavefront_rel_rms"]``, stops the step
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
    models = _check_beam_models(beam_models)
    wider = tuple(sorted(set(noll) | set(extend_noll)))
    args = (bench, a, frames, roi, xs, ys, meas, size, block, spot_k, diversity, samples,
            q, iterations, max_iter, starts, start_iter)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small FFTs: one thread is fastest, and the cores are shared
    try:
        # every beam model with the fitted terms, one kept (``choose_beam``); then the
        # kept model with the wider terms
        fits = {m: _fit(*args, tuple(noll), beam=m) for m in models}
        rel_by_model = {m: _rel(f) for m, f in fits.items()}
        beam = choose_beam(rel_by_model, beam_min_gain)
        first, chosen = rel_by_model[beam], fits[beam]
        terms = tuple(noll)
        if wider != tuple(noll):
            log.info("wavefront: %s beam, residual %.4f with Noll %s; fitting Noll %s",
                     beam, first, tuple(noll), wider)
            ext = _fit(*args, wider, beam=beam)
            # the wider terms are kept when they lower the residual by more than
            # extend_min_gain of it, or at all when the first residual is above extend_above
            bar = first if not np.isfinite(first) or first > extend_above \
                else (1.0 - extend_min_gain) * first
            if _rel(ext) < bar:
                chosen, terms = ext, wider
    finally:
        torch.set_num_threads(threads)
    source, wavefront = chosen
    rel_pick = _rel(chosen)
    wavefront.values["noll_fitted"] = [int(j) for j in terms]
    wavefront.values["extended"] = bool(terms != tuple(noll))
    wavefront.residuals["relative_rms_first_fit"] = float(rel_by_model["gaussian"])
    wavefront.residuals["saturated_fraction"] = exposure["saturated_fraction"]
    for m, r in rel_by_model.items():
        source.residuals[f"relative_rms_{m}"] = float(r)
    source.values["beam_models_tried"] = list(models)
    check_finite("wavefront", "aberration coefficients", list(
        wavefront.values["zernike_noll_rad"].values()) + [rel_pick],
        "the phase-diversity fit diverged: check that the spot is not saturated and the "
        "light is enough (re-run the lut step first), or lower spot_k")
    check_max("wavefront", "relative rms residual of the diversity frames", rel_pick,
              LIMITS["wavefront_rel_rms"],
              f"the PSFs do not fit a {beam} source with Noll {wavefront.values['noll_fitted']}"
              " aberrations: the source has another shape (beam_models tried: "
              f"{', '.join(models)}) or aberrations are stronger than the fit covers; pass "
              "more Noll terms (noll=...) or correct the optics")
    # the report's frames are crops: where they sit on the camera (x, y of the top left)
    wavefront.data["crop_origin_px"] = np.array([box[1].start, box[0].start])
    return source, wavefront


def _rel(fit: tuple[StepResult, StepResult]) -> float:
    r = float(fit[1].residuals["relative_rms"])
    return r if np.isfinite(r) else float("inf")


def _check_beam_models(beam_models: Any) -> tuple[str, ...]:
    models = tuple(beam_models) if not isinstance(beam_models, str) else (beam_models,)
    bad = [m for m in models if m not in BEAM_MODELS]
    if not models or bad or models[0] != "gaussian":
        raise ValueError(f"beam_models: expected 'gaussian' first, then any of "
                         f"{BEAM_MODELS[1:]}, got {models!r}")
    return tuple(dict.fromkeys(models))


def choose_beam(relative_rms: dict[str, float], min_gain: float = BEAM_MIN_GAIN) -> str:
    """The beam model to keep, from each model's relative rms residual (same frames, same
    Noll terms): the lowest, when it is below the Gaussian's by more than the fraction
    ``min_gain`` of it; else the Gaussian (every other model holds the Gaussian as a
    limit, so it always fits at least as well: the margin keeps a Gaussian beam
    Gaussian, and its results unchanged)."""
    g = float(relative_rms["gaussian"])
    best = min(relative_rms, key=lambda m: relative_rms[m])
    if best != "gaussian" and relative_rms[best] < (1.0 - min_gain) * g:
        return best
    return "gaussian"


def _fit(bench, a, frames, roi, xs, ys, meas, size, block, spot_k, diversity,
         samples, q, iterations, max_iter, starts, start_iter, noll, *, beam="gaussian"):
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
    init = {
        "c": torch.zeros(len(noll), dtype=torch.float64),
        "logw": torch.tensor(np.log(0.5), dtype=torch.float64),
        "src": torch.zeros(2, dtype=torch.float64),
        "shift": torch.zeros(2, dtype=torch.float64),
        "logalpha": torch.zeros(n_f, dtype=torch.float64),
        "bg": torch.zeros(n_f, dtype=torch.float64),
    }
    if beam == "supergaussian":  # power p = exp(logp); 1 is the Gaussian
        init["logp"] = torch.tensor(np.log(2.0), dtype=torch.float64)
    if beam == "clipped":  # aperture radius R = half * exp(logclip), on the beam centre
        init["logclip"] = torch.tensor(0.0, dtype=torch.float64)
    # one flat tensor for L-BFGS (the same vector as the parameters one after the other:
    # its per-tensor loops would otherwise dominate these small problems); ``unpack``
    # gives the named views
    sizes = [v.numel() for v in init.values()]
    flat = torch.cat([v.reshape(-1) for v in init.values()]).requires_grad_()

    def unpack(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.reshape(init[k].shape)
                for k, v in zip(init, torch.split(t, sizes), strict=True)}
    edge_px = grid.step / 4  # a sharp edge, area-weighted over a pupil sample
    meas_scale = float(meas.clamp(min=0).sum(dim=1).mean())
    sqrt_meas = torch.sqrt(meas.clamp(min=0) / meas_scale)

    def predict() -> torch.Tensor:
        f32 = torch.float32
        params = unpack(flat)
        w = (half * torch.exp(params["logw"])).to(f32)
        cx, cy = (20 * params["src"][0]).to(f32), (20 * params["src"][1]).to(f32)
        if beam == "gaussian":
            amp = grid.gaussian(w, cx, cy)
        else:
            amp = beam_amplitude(
                grid.x, grid.y, waist_px=w, cx=cx, cy=cy,
                power=torch.exp(params["logp"]).to(f32) if "logp" in params else 1.0,
                clip_radius_px=(half * torch.exp(params["logclip"])).to(f32)
                if "logclip" in params else None, edge_px=edge_px)
        pts = camera_sample_points(a, xs, ys, centre, grid, shift_px=params["shift"].to(f32))
        s = far_field_on_camera(grid, amp, div_phase + grid.zernike_phase(params["c"].to(f32)),
                                pts).to(torch.float64)
        s = s / s.sum(dim=1, keepdim=True).detach().clamp(min=1e-30)
        return torch.exp(params["logalpha"])[:, None] * s + 1e-3 * params["bg"][:, None]

    def loss_fn() -> torch.Tensor:
        pred = predict().clamp(min=1e-12)
        return ((torch.sqrt(pred) - sqrt_meas) ** 2).sum() / n_f

    def run(n_rounds: int, n_iter: int) -> float:
        opt = torch.optim.LBFGS([flat], lr=1, max_iter=n_iter, history_size=20,
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
    start = flat.detach().clone()
    best: tuple[float, torch.Tensor] | None = None
    for w0 in starts:
        with torch.no_grad():
            flat.copy_(start)
            views = unpack(flat)
            views["logw"].fill_(float(np.log(w0)))
            if "logclip" in views:  # an aperture at about the waist (or the SLM's edge)
                views["logclip"].fill_(float(np.log(0.9 * min(w0, 1.0))))
        loss = run(1, start_iter)
        loss = loss if np.isfinite(loss) else float("inf")  # a diverged start never wins
        log.debug("wavefront: start waist %.2f -> loss %.5f", w0, loss)
        if best is None or loss < best[0]:
            best = (loss, flat.detach().clone())
    with torch.no_grad():
        flat.copy_(best[1])
    run(iterations, max_iter)
    params = unpack(flat.detach())
    with torch.no_grad():
        pred = predict() * meas_scale
        final = float(loss_fn())
    resid = (pred - meas).numpy()
    rel = float(np.sqrt(np.sum(resid**2) / np.sum(meas.numpy() ** 2)))
    coeffs = {j: float(c) for j, c in zip(noll, params["c"].numpy(), strict=True)}
    waist = float(half * np.exp(params["logw"].item()))
    src = (20 * params["src"].numpy()).tolist()
    shift = params["shift"].numpy().tolist()
    refined = shift_center(a, shift[0], shift[1])
    power = float(np.exp(params["logp"].item())) if "logp" in params else 1.0
    clip = float(half * np.exp(params["logclip"].item())) if "logclip" in params else None
    log.info("wavefront: %s beam%s%s, zernike %s rad, waist %.1f px, source centre "
             "(%.1f, %.1f) px, spot shift (%.3f, %.3f) px, relative residual %.4f", beam,
             f" power {power:.2f}" if "logp" in params else "",
             f" aperture radius {clip:.1f} px" if clip is not None else "",
             {j: round(v, 3) for j, v in coeffs.items()}, waist, *src, *shift, rel)
    devices = device_identities(bench)
    fitted = np.zeros_like(frames)
    fitted[:, roi] = pred.numpy()
    residual_maps = np.where(roi, frames - fitted, 0.0).astype(np.float32)
    source = StepResult(
        name="source",
        values=source_values(beam, waist, (src[0], src[1]), power=power,
                             clip_radius_px=clip),
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
