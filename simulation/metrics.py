"""Metrics: dataset statistics (SVD entropy, Ω_k), image quality (SSIM, PSNR,
MSE) and convergence figures from a loss history (docs/paper.md §Metrics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from skimage.metrics import structural_similarity

from ._checks import as_tensor, check_choice, check_finite, check_images, check_positive

__all__ = ["svd_entropy", "omega_k", "spectral_statistics", "ssim", "psnr", "mse", "convergence"]


def svd_entropy(
    images, *, power: bool = False, base: float = 2.0, unit_range: bool = True
) -> torch.Tensor:
    """SVD entropy H_SVD of each image, shape (n,).

    σ̄_i = σ_i / Σσ (field normalisation, the default) or σ_i² / Σσ² (``power=True``);
    H = −Σ σ̄_i log σ̄_i in the given log ``base`` (2 by default: at most log₂N).
    Images are (n, H, W) real matrices (complex masks: pass ``unit_range=False``
    and a complex tensor is accepted too).
    """
    if isinstance(images, torch.Tensor) and images.is_complex():
        t = images
        check_finite(torch.view_as_real(t), "images")
    else:
        t = check_images(images, "images", ndim=(2, 3), unit_range=unit_range)
    if t.ndim == 2:
        t = t[None]
    check_positive(base, "base")
    s = torch.linalg.svdvals(t.to(torch.complex128 if t.is_complex() else torch.float64))
    return _entropy_of(s, power, base)


def _entropy_of(s: torch.Tensor, power: bool, base: float) -> torch.Tensor:
    """H_SVD from singular values (n, k), float64 in, float32 out."""
    if power:
        s = s**2
    p = s / s.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    h = -(torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))).sum(-1)
    return (h / math.log(base)).to(torch.float32)


def omega_k(
    images,
    *,
    weighting: Literal["magnitude", "power"] = "magnitude",
    units: Literal["cycles", "radians"] = "cycles",
) -> torch.Tensor:
    """Ω_k of each image: the mean radial spatial frequency of its spectrum, shape (n,).

    Ω_k = Σ|k|·w(k) / Σw(k) with w = |F̂| (default) or |F̂|², F̂ the 2-D DFT of the
    mean-subtracted image; |k| in cycles/pixel (default) or radians/pixel.
    """
    t = check_images(images, "images", ndim=(2, 3))
    if t.ndim == 2:
        t = t[None]
    check_choice(weighting, "weighting", ("magnitude", "power"))
    check_choice(units, "units", ("cycles", "radians"))
    return _omega_of(_centred_spectrum(t), weighting, units)


def _centred_spectrum(t: torch.Tensor) -> torch.Tensor:
    """|DFT| (float64) of each mean-subtracted image."""
    return torch.fft.fft2(t.double() - t.double().mean(dim=(-2, -1), keepdim=True)).abs()


def _omega_of(f: torch.Tensor, weighting: str, units: str) -> torch.Tensor:
    """Ω_k from the spectrum magnitudes ``f`` (n, H, W) of `_centred_spectrum`."""
    h, w = f.shape[-2:]
    if weighting == "power":
        f = f**2
    ky = torch.fft.fftfreq(h, dtype=torch.float64)
    kx = torch.fft.fftfreq(w, dtype=torch.float64)
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    if units == "radians":
        k = 2 * math.pi * k
    total = f.sum(dim=(-2, -1)).clamp_min(1e-300)
    return ((f * k).sum(dim=(-2, -1)) / total).to(torch.float32)


def spectral_statistics(images) -> dict[str, torch.Tensor]:
    """H_SVD (field and power normalisation, log₂) and Ω_k (magnitude and power weights,
    cycles/pixel) of each image of a real (n, H, W) set in [0, 1], from one SVD and one
    DFT per image: the numbers of `svd_entropy` and `omega_k` called four times, at
    half the cost. Keys ``h_svd``, ``h_svd_power``, ``omega_k``, ``omega_k_power``."""
    t = check_images(images, "images", ndim=(2, 3))
    if t.ndim == 2:
        t = t[None]
    s = torch.linalg.svdvals(t.to(torch.float64))
    f = _centred_spectrum(t)
    return {"h_svd": _entropy_of(s, False, 2.0), "h_svd_power": _entropy_of(s, True, 2.0),
            "omega_k": _omega_of(f, "magnitude", "cycles"),
            "omega_k_power": _omega_of(f, "power", "cycles")}


def _pair(reference, reconstruction) -> tuple[torch.Tensor, torch.Tensor]:
    ref = check_images(reference, "reference", ndim=(2, 3, 4))
    rec = as_tensor(reconstruction, "reconstruction")
    check_finite(rec, "reconstruction")
    if rec.shape != ref.shape:
        raise ValueError(
            f"reconstruction: expected the shape of reference {tuple(ref.shape)}, "
            f"got {tuple(rec.shape)}"
        )
    return ref, rec.to(ref.device)


def ssim(reference, reconstruction, *, clip: bool = True) -> np.ndarray:
    """SSIM of each image pair (scikit-image, 7×7 window, ``data_range=1``), shape (n,).

    Colour images (n, 3, H, W) average the three channels. ``clip`` limits the
    reconstruction to [0, 1] first (the reference must already be in [0, 1]).
    """
    ref, rec = _pair(reference, reconstruction)
    if clip:
        rec = rec.clamp(0.0, 1.0)
    a = ref.detach().cpu().double().numpy()
    b = rec.detach().cpu().double().numpy()
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim == 4:  # colour: channels last for skimage
        return np.array([
            structural_similarity(x, y, data_range=1.0, channel_axis=0)
            for x, y in zip(a, b, strict=True)
        ])
    return np.array([structural_similarity(x, y, data_range=1.0)
                     for x, y in zip(a, b, strict=True)])


def mse(reference, reconstruction) -> np.ndarray:
    """Mean squared error of each image pair, shape (n,)."""
    ref, rec = _pair(reference, reconstruction)
    if ref.ndim == 2:
        ref, rec = ref[None], rec[None]
    return ((ref.double() - rec.double()) ** 2).flatten(1).mean(1).cpu().numpy()


def psnr(reference, reconstruction, *, clip: bool = True) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each pair (peak 1), shape (n,)."""
    ref, rec = _pair(reference, reconstruction)
    if clip:
        rec = rec.clamp(0.0, 1.0)
    m = mse(ref, rec)
    with np.errstate(divide="ignore"):
        return np.where(m > 0, -10.0 * np.log10(np.maximum(m, 1e-300)), np.inf)


def convergence(history: Sequence[float], *, threshold: float | None = None,
                skip: int = 10) -> dict:
    """Convergence figures from a per-epoch loss history.

    Returns ``final_loss``, ``epochs_to_threshold`` (first epoch whose loss is at or
    below ``threshold``, default 1.1 × the final loss; ``None`` if never reached),
    ``threshold`` and ``decay_rate``: the slope k of log(loss − floor) ≈ c − k·epoch,
    fitted after the first ``skip`` epochs, with floor = 0.99 × the last loss.
    """
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 1 or h.size < 2:
        raise ValueError(f"history: expected a 1-D sequence of at least 2 losses, got {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("history: expected finite losses, got NaN or infinite values")
    final = float(h[-1])
    thr = 1.1 * final if threshold is None else float(threshold)
    hit = np.flatnonzero(h <= thr)
    epochs = int(hit[0]) + 1 if hit.size else None
    floor = 0.99 * float(h.min())
    seg = h[min(skip, h.size - 2):]
    y = np.log(np.maximum(seg - floor, 1e-300))
    x = np.arange(seg.size, dtype=np.float64)
    slope = float(np.polyfit(x, y, 1)[0]) if seg.size >= 2 else float("nan")
    return {"final_loss": final, "threshold": thr, "epochs_to_threshold": epochs,
            "decay_rate": -slope}
