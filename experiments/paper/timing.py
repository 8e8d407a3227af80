"""The cost claims: the linear decoder's inference time per image (one 2048 × 1024
mat-vec, with the input normalisation) against an FFT-based iterative phase retrieval
that uses the same two masks and measurements (error reduction with a phase-only
object constraint), on one CPU thread, both batched over the same images. Times are
CPU seconds of the process (``time.process_time``), so that other jobs sharing the
machine slow them less than wall-clock; they still depend on the CPU: the ratio is the
result. The phase retrieval's SSIM (its global phase removed by an oracle) is recorded
at checkpoints along its iterations, so that the verdict compares the two at equal
quality: the iterations the retrieval needs to reach the decoder's SSIM.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from experiments.sweep import Cell, make_key
from simulation import DualVortexEncoder, encode_batched, normalise_for_decoder, ssim

from .common import fit_ridge, test_images, training_speckle
from .config import StudyConfig

__all__ = ["cells", "timing_cell", "phase_retrieval"]


def _ifraunhofer(f: torch.Tensor) -> torch.Tensor:
    shifted = torch.fft.ifftshift(f, dim=(-2, -1))
    return torch.fft.ifftshift(torch.fft.ifft2(shifted), dim=(-2, -1))


CHECKPOINTS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500)


@torch.no_grad()
def phase_retrieval(magnitudes: torch.Tensor, masks_rad: torch.Tensor, iterations: int,
                    depth: float = np.pi / 2, checkpoints=None):
    """Phase of a unit-modulus object from |F(object · mask_c)|, c = 1..C.

    Error reduction: impose each measured magnitude, propagate back, average the
    channels, keep the phase. Returns the object phase / depth, (B, N, N); with
    ``checkpoints`` (iteration counts), also a dict: iteration -> the estimate then.
    """
    m = torch.polar(torch.ones_like(masks_rad), masks_rad)
    x = torch.ones(magnitudes.shape[0], *magnitudes.shape[-2:], dtype=torch.complex64)
    saved = {}
    want = set(checkpoints or ())
    for it in range(1, iterations + 1):
        f = torch.fft.fftshift(torch.fft.fft2(torch.fft.fftshift(x[:, None] * m,
                                                                  dim=(-2, -1))), dim=(-2, -1))
        f = torch.polar(magnitudes, f.angle())
        x = (_ifraunhofer(f) * m.conj()).mean(1)
        x = torch.polar(torch.ones_like(x.real), x.angle())
        if it in want:
            saved[it] = x.angle() / depth
    out = x.angle() / depth
    return (out, saved) if checkpoints is not None else out


def _align(phase: torch.Tensor, truth: torch.Tensor, depth: float) -> torch.Tensor:
    """Remove the global phase (the one ambiguity), chosen per image as an oracle."""
    best, best_err = None, None
    for c in np.linspace(-np.pi, np.pi, 64, endpoint=False):
        wrapped = torch.remainder(phase * depth - c + np.pi, 2 * np.pi) - np.pi
        cand = (wrapped / depth).clamp(0, 1)
        err = ((cand - truth) ** 2).flatten(1).mean(1)
        if best is None:
            best, best_err = cand, err
        else:
            take = err < best_err
            best[take], best_err[take] = cand[take], err[take]
    return best


def _per_image(fn, n_images: int, min_s: float = 0.5) -> float:
    """CPU seconds per image of ``fn()`` (which handles ``n_images``), repeated ≥ ``min_s``."""
    fn()
    reps, t0 = 0, time.process_time()
    while True:
        fn()
        reps += 1
        if time.process_time() - t0 > min_s:
            return (time.process_time() - t0) / (reps * n_images)


def timing_cell(n_images: int, iterations: int, n_train: int, gamma: float,
                alpha: float | None = None, _data_dir: str | None = None) -> dict:
    """Seconds per image: the decoder (normalise + one mat-vec) and phase retrieval."""
    enc = DualVortexEncoder()
    dec, _ = fit_ridge(training_speckle(gamma, n_train, 0), encoder=enc, alpha=alpha)
    imgs = test_images("mnist", n_images, 0, _data_dir)
    patterns = encode_batched(enc, imgs)
    W = dec.weight_
    n_single = min(n_images, 100)

    def single():
        for i in range(n_single):
            torch.mm(normalise_for_decoder(patterns[i:i + 1]), W)

    with torch.no_grad():
        t_batched = _per_image(lambda: torch.mm(normalise_for_decoder(patterns), W), n_images)
        t_single = _per_image(single, n_single)
        t_call = _per_image(lambda: dec.predict(patterns[:1]), 1)
    rec = dec.predict(patterns)
    t0 = time.process_time()
    pr = phase_retrieval(patterns, enc.masks_rad, iterations)
    t_pr = (time.process_time() - t0) / n_images
    pr = _align(pr, imgs, np.pi / 2)
    marks = sorted({c for c in CHECKPOINTS if c < iterations} | {iterations})
    _, trace = phase_retrieval(patterns, enc.masks_rad, iterations, checkpoints=marks)
    pr_ssim_by_it = {str(k): float(ssim(imgs, _align(v, imgs, np.pi / 2)).mean())
                     for k, v in trace.items()}
    return {
        "decoder_s_per_image_batched": t_batched, "decoder_s_per_image_single": t_single,
        "decoder_s_per_predict_call": t_call, "decoder_fps_single": 1.0 / t_single,
        "phase_retrieval_s_per_image": t_pr, "phase_retrieval_iterations": iterations,
        "speedup_vs_phase_retrieval": t_pr / t_batched,
        "decoder_macs_per_image": int(W.shape[0] * W.shape[1]),
        "decoder_ssim": float(ssim(imgs, rec).mean()),
        "phase_retrieval_ssim": float(ssim(imgs, pr).mean()),
        "phase_retrieval_ssim_by_iteration": pr_ssim_by_it,
        "n_images": n_images, "threads": torch.get_num_threads(),
        "clock": "process CPU time (time.process_time)",
    }


def cells(cfg: StudyConfig, data_dir: str | None) -> list[Cell]:
    p = {"n_images": cfg.timing_images, "iterations": cfg.timing_pr_iterations,
         "n_train": cfg.n_train, "gamma": cfg.paper_gamma, "alpha": cfg.ridge_alpha,
         "_data_dir": data_dir}
    return [Cell(make_key("timing", "decoder_vs_pr", p), "experiments.paper.timing:timing_cell",
                 p)]
