"""The single-pixel ("attention") probe of a decoder: where does the imager put a point?

For each of the N×N input locations j, a one-hot image δ_j (one pixel at ``amplitude``,
the rest 0) goes through the encoder and the decoder; its reconstruction, minus the
reconstruction of the dark image (all 0) when ``baseline="dark"`` (the default), is the
decoder's point-spread or "attention" map for j. The optics and the decoder's per-channel
min–max input normalisation are not linear, so the dark response is subtracted rather than
assumed to be zero; ``baseline="none"`` gives the raw reconstruction of δ_j.
The N² + 1 images go through the encoder and the decoder batched (one batch for N = 32).

How widely a map spreads (`spread_measures`), on the energy e = m² of a map m:

- ``participation_ratio``: (Σe)² / Σe², the effective number of pixels the response covers:
  1 for a response on one pixel, N² for a response spread evenly over the frame;
- ``peak_fraction``: the share of the energy on the probed pixel itself (1 for a perfect
  imager, about 1/N² for a response that ignores where the point was);
- ``r50_px``: the smallest distance from the probed pixel (Euclidean, in pixels) within
  which half of the energy lies;
- ``hit``: whether the largest |m| is on the probed pixel.

`weight_svd_entropy` measures the decoder's weight matrix W (C·H·W inputs × H·W outputs)
with the same H_SVD as the images (`simulation.metrics.svd_entropy`: σ̄ = σ/Σσ, the field
normalisation, log₂ by default), and that value divided by its maximum log(min(W.shape))
(in [0, 1]).

The predecessor's notebook ``single_pixel_response.ipynb`` ran a probe of this kind on its
100 decoders (docs/paper.md §Sources); its probe cells were not read, so the dark-baseline
subtraction and the spread measures here are this package's definitions.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_positive
from .encoders import encode_batched
from .metrics import svd_entropy

__all__ = ["point_images", "attention_maps", "spread_measures", "weight_svd_entropy"]


def point_images(size: int = 32, amplitude: float = 1.0) -> torch.Tensor:
    """The N² one-hot images (N², N, N) float32: image j has ``amplitude`` at pixel j
    (row-major: j = row·N + column) and 0 elsewhere."""
    check_positive(size, "size", integer=True)
    check_positive(amplitude, "amplitude")
    if amplitude > 1.0:
        raise ValueError(f"amplitude: expected a pixel value in (0, 1], got {amplitude}")
    n2 = size * size
    return (torch.eye(n2, dtype=torch.float32) * float(amplitude)).reshape(n2, size, size)


def _image_size(decoder) -> int:
    shape = getattr(decoder, "image_shape_", None)
    if shape is None:
        raise RuntimeError("decoder: call fit() (or load()) before probing it")
    h, w = shape
    if h != w:
        raise ValueError(f"decoder: expected square images, it reconstructs {h}x{w}")
    return int(h)


@torch.no_grad()
def attention_maps(decoder, encoder, *, amplitude: float = 1.0, baseline: str = "dark",
                   batch_size: int = 4096) -> torch.Tensor:
    """The decoder's response to a single bright pixel at each input location.

    Returns float32 (N², N, N): map j is the reconstruction of the one-hot image δ_j
    (`point_images`) through ``encoder`` and ``decoder``, minus the reconstruction of the
    dark image when ``baseline="dark"``. ``encoder`` is any module mapping images
    (B, N, N) to sensor patterns (B, C, N', N') (a `PhaseEncoder`, or a stand-in in tests);
    the decoder checks it against the one it was fitted for.
    """
    check_choice(baseline, "baseline", ("dark", "none"))
    size = _image_size(decoder)
    images = point_images(size, amplitude)
    if baseline == "dark":
        images = torch.cat([images, torch.zeros((1, size, size))])
    device = getattr(getattr(encoder, "masks_rad", None), "device", torch.device("cpu"))
    patterns = encode_batched(encoder, images.to(device), batch_size)
    kwargs = {"encoder": encoder} if hasattr(encoder, "signature") else {}
    rec = decoder.predict(patterns, batch_size=batch_size, **kwargs).to(torch.float32).cpu()
    if baseline == "dark":
        rec = rec[:-1] - rec[-1:]
    return rec


def _check_maps(maps) -> torch.Tensor:
    m = torch.as_tensor(maps)
    if m.ndim != 3 or m.shape[-1] != m.shape[-2] or m.shape[0] != m.shape[-1] ** 2:
        raise ValueError(f"maps: expected (N², N, N) as from attention_maps, got shape "
                         f"{tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("maps: expected finite values, got NaN or infinity")
    return m.to(torch.float64)


def spread_measures(maps) -> dict[str, torch.Tensor]:
    """How widely each map spreads: participation ratio (pixels), energy fraction on the
    probed pixel, 50 %-energy radius (pixels) and whether the peak is on the probed pixel.

    ``maps`` is (N², N, N) with map j the response to pixel j (`attention_maps`); each
    returned tensor has shape (N²,). A map with no energy at all gets participation ratio
    0, peak fraction 0, radius NaN and ``hit`` False.
    """
    m = _check_maps(maps)
    n = m.shape[-1]
    e = (m**2).reshape(n * n, n * n)
    total = e.sum(1)
    empty = total <= 0
    safe = total.clamp_min(1e-300)
    pr = total**2 / (e**2).sum(1).clamp_min(1e-300)
    probed = torch.arange(n * n)
    peak = e[probed, probed] / safe
    rows, cols = torch.div(probed, n, rounding_mode="floor"), probed % n
    dist = torch.sqrt(((rows[:, None] - rows[None, :]) ** 2
                       + (cols[:, None] - cols[None, :]) ** 2).to(torch.float64))
    order = torch.argsort(dist, dim=1, stable=True)
    cum = torch.cumsum(torch.gather(e, 1, order), dim=1) / safe[:, None]
    first = torch.searchsorted(cum, torch.full((n * n, 1), 0.5, dtype=torch.float64)
                               ).clamp_max(n * n - 1)
    r50 = torch.gather(torch.gather(dist, 1, order), 1, first)[:, 0]
    hit = m.abs().reshape(n * n, n * n).argmax(1) == probed
    return {"participation_ratio": torch.where(empty, 0.0, pr),
            "peak_fraction": torch.where(empty, 0.0, peak),
            "r50_px": torch.where(empty, math.nan, r50),
            "hit": hit & ~empty}


def weight_svd_entropy(decoder, *, power: bool = False, base: float = 2.0) -> dict[str, float]:
    """H_SVD of the decoder's weight matrix W, in the images' convention.

    ``h_svd``: −Σ σ̄ log σ̄ with σ̄ = σ/Σσ (``power=True``: σ²/Σσ²), log in ``base``
    (`simulation.metrics.svd_entropy` on W as one real matrix); ``h_svd_normalised``:
    the same divided by log(min(W.shape)) in that base, its largest possible value.
    """
    w = getattr(decoder, "weight_", None)
    if w is None:
        raise RuntimeError("decoder: call fit() (or load()) before measuring its weights")
    h = float(svd_entropy(w.detach().cpu(), power=power, base=base, unit_range=False)[0])
    rank_max = min(w.shape)
    return {"h_svd": h, "h_svd_normalised": h / (math.log(rank_max) / math.log(base)),
            "h_svd_max": math.log(rank_max) / math.log(base)}
