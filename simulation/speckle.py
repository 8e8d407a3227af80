"""Synthetic training data: the paper's speckle images and their variants
(docs/paper.md §Speckle).

The generator, in the form the original code computes:

    X = | fft2( (R²/γ) · exp(−R²/γ) · exp(2πi·Λ) ) |,   Λ_ij ~ U[0, 1)

on x = linspace(−10, 10, 32) (endpoint included), no fftshift, magnitude,
then per-image min–max to [0, 1]. Larger γ gives a wider ring-shaped pupil:
finer speckle and higher SVD entropy. The notebook's markdown states the other
form, r²γ·exp(−r²γ); it is available with ``form="markdown"`` (trend reversed).

"Diffuse attention" data: the name under which the paper was reported to refer to these
training images (docs/paper.md §Speckle: the abstracts and notebooks that could be read do
not use the term, so it is a name, not a quotation). It says what a speckle
image is: every pixel is the magnitude of a sum of the plane waves inside the pupil ring,
each with a random phase, so each image spreads its energy over the whole frame in random
grains (whose size shrinks as 1/√γ) rather than over a few chosen locations, and a decoder trained
on them is never shown where an object is. `diffuse_attention` is an alias of `speckle`;
`simulation.probe` measures what a decoder trained on such data does with one bright pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ._checks import check_choice, check_images, check_positive
from .optics import model_grid

__all__ = ["PAPER_GAMMAS", "speckle", "diffuse_attention", "swapped_spectra",
           "speckle_mixture", "minmax01"]

#: The γ values of the paper's ten speckle sets ("dist" in the notebooks).
PAPER_GAMMAS: tuple[float, ...] = (0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 4.0, 7.0, 11.0, 15.0)


def minmax01(images: torch.Tensor) -> torch.Tensor:
    """Per-image min–max normalisation to [0, 1] over the last two axes."""
    lo = images.amin(dim=(-2, -1), keepdim=True)
    span = (images.amax(dim=(-2, -1), keepdim=True) - lo).clamp_min(torch.finfo(images.dtype).tiny)
    return ((images - lo) / span).clamp_(0.0, 1.0)


def _pupil(gamma: float, size: int, form: str, xmax: float) -> torch.Tensor:
    X, Y = model_grid(size, xmax, endpoint=True)
    r2 = X**2 + Y**2
    u = r2 / gamma if form == "code" else r2 * gamma
    return u * torch.exp(-u)


def speckle(
    n: int,
    gamma: float,
    size: int = 32,
    seed: int | None = 0,
    *,
    form: Literal["code", "markdown"] = "code",
    xmax: float = 10.0,
    batch_size: int = 8192,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``n`` speckle images of density ``gamma``: float32 (n, size, size) in [0, 1].

    Seeded: the same (n, gamma, size, seed) always gives the same images, on any
    batch size. ``form`` picks the code form r²/γ (default, the published
    curves) or the markdown form r²·γ.
    """
    check_positive(n, "n", integer=True)
    check_positive(gamma, "gamma")
    check_positive(size, "size", integer=True)
    check_choice(form, "form", ("code", "markdown"))
    check_positive(batch_size, "batch_size", integer=True)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    pupil = _pupil(float(gamma), size, form, xmax).to(dev)
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    out = torch.empty((n, size, size), dtype=torch.float32, device=dev)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        lam = torch.rand((stop - start, size, size), generator=g, dtype=torch.float64).to(dev)
        field = torch.polar(pupil.expand_as(lam), 2 * torch.pi * lam)
        out[start:stop] = minmax01(torch.fft.fft2(field).abs()).to(torch.float32)
    return out


#: The speckle training data under its other name ("diffuse attention" data; see
#: the module docstring): the same function as `speckle`, which stays the primary name.
diffuse_attention = speckle


def swapped_spectra(modes_from: torch.Tensor, values_from: torch.Tensor, *,
                    normalise: bool = True) -> torch.Tensor:
    """Images with the singular vectors of one set and the singular values of another.

    For each pair k: U_k·diag(s_k)·V_kᵀ with U, V from ``modes_from[k]`` and s from
    ``values_from[k]`` (docs/paper.md §Swapped), then min–max normalised to [0, 1]
    (``normalise=False`` returns the product itself). Both inputs are (n, H, W)
    in [0, 1] of the same shape.
    """
    a = check_images(modes_from, "modes_from")
    b = check_images(values_from, "values_from")
    if a.shape != b.shape:
        raise ValueError(
            f"values_from: expected the shape of modes_from {tuple(a.shape)}, got {tuple(b.shape)}"
        )
    u, _, vh = torch.linalg.svd(a.double(), full_matrices=False)
    s = torch.linalg.svdvals(b.double())
    mixed = (u * s[:, None, :]) @ vh
    return (minmax01(mixed) if normalise else mixed).to(torch.float32)


def speckle_mixture(
    n: int,
    gammas: Sequence[float],
    weights: Sequence[float] | None = None,
    size: int = 32,
    seed: int | None = 0,
    **kwargs,
) -> torch.Tensor:
    """``n`` speckles drawn from several γ, in proportions ``weights`` (default equal),
    shuffled with the same seed. Returns float32 (n, size, size) in [0, 1]."""
    check_positive(n, "n", integer=True)
    gammas = [float(g) for g in gammas]
    if not gammas:
        raise ValueError("gammas: expected at least one γ, got none")
    w = torch.ones(len(gammas), dtype=torch.float64) if weights is None else torch.as_tensor(
        weights, dtype=torch.float64)
    if w.shape != (len(gammas),) or (w < 0).any() or w.sum() <= 0 or not torch.isfinite(w).all():
        raise ValueError(
            f"weights: expected {len(gammas)} non-negative numbers with a positive sum, "
            f"got {weights}"
        )
    counts = torch.floor(w / w.sum() * n).long()
    counts[torch.argmax(w)] += n - int(counts.sum())
    parts = [speckle(int(c), gm, size, None if seed is None else seed + 7919 * i, **kwargs)
             for i, (gm, c) in enumerate(zip(gammas, counts.tolist(), strict=True)) if c > 0]
    imgs = torch.cat(parts)
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    return imgs[torch.randperm(n, generator=g).to(imgs.device)]
