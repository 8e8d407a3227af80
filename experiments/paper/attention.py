"""Step 8: the attention probe. How does a decoder trained on speckle ("diffuse attention"
data, `simulation.speckle`) answer a single bright pixel?

In the study the transfer step's decoder cell probes its own decoder (``probe``: the
decoder is fitted once); `attention_cell` fits the same decoder exactly as it does (same
speckle set, same seed, same α rule) and probes it, for use on its own
(`simulation.probe`): the response to a
one-hot image at each of the N² input locations, minus the response to the dark image.
It keeps the mean over locations of each spread measure (participation ratio, energy
fraction on the probed pixel, 50 %-energy radius, share of maps peaking on the probed
pixel), the H_SVD of the weight matrix, and the map of the centre pixel for the figure.

A control cell per seed probes a decoder with i.i.d. Gaussian weights through the same
encoder: the level of a decoder that carries no spatial information (for Gaussian maps the
participation ratio is about N²/3). The other end, a perfect imager, has participation
ratio 1, energy fraction 1 and radius 0. The paper states no number for this probe, so
the step is a measurement: the report gives the trend with γ and no verdict.
"""

from __future__ import annotations

import numpy as np
import torch

from experiments.sweep import Cell, make_key
from simulation import (
    DualVortexEncoder,
    LinearDecoder,
    attention_maps,
    spread_measures,
    svd_entropy,
    weight_svd_entropy,
)

from .common import fit_ridge, summary, training_speckle
from .config import StudyConfig
from .verdicts import spearman_exact

__all__ = ["probe_decoder", "attention_cell", "control_cell", "cells", "aggregate",
           "random_decoder", "probe_seeds", "MEASURES"]

#: The per-cell numbers that the aggregate summarises over seeds.
MEASURES = ("participation_ratio", "participation_ratio_median", "peak_fraction", "r50_px",
            "hit_rate", "h_svd_weights", "h_svd_weights_normalised")


def probe_decoder(decoder: LinearDecoder, encoder) -> dict:
    """Probe a fitted decoder: spread measures averaged over the N² input locations,
    H_SVD of its weights (σ/Σσ, log₂, and divided by log₂ min(W.shape)), the centre
    pixel's map. JSON-able."""
    maps = attention_maps(decoder, encoder)
    s = spread_measures(maps)
    n = int(maps.shape[-1])
    centre = (n // 2) * n + n // 2
    w = weight_svd_entropy(decoder)
    pr = s["participation_ratio"]
    return {
        "participation_ratio": float(pr.mean()),
        "participation_ratio_median": float(pr.median()),
        "peak_fraction": float(s["peak_fraction"].mean()),
        "r50_px": float(np.nanmean(s["r50_px"].numpy())),
        "hit_rate": float(s["hit"].double().mean()),
        "h_svd_weights": w["h_svd"],
        "h_svd_weights_normalised": w["h_svd_normalised"],
        "h_svd_weights_max": w["h_svd_max"],
        "size": n,
        "centre_pixel": [n // 2, n // 2],
        "centre_map": [[round(float(v), 6) for v in row] for row in maps[centre]],
        "centre_participation_ratio": float(pr[centre]),
    }


def attention_cell(gamma: float, seed: int, n: int, alpha: float | None = None) -> dict:
    """Fit the (γ, seed) ridge decoder as `transfer.decoder_cell` does and probe it."""
    images = training_speckle(gamma, n, seed)
    dec, enc = fit_ridge(images, seed=seed, alpha=alpha)
    out = probe_decoder(dec, enc)
    out.update(alpha=float(dec.alpha_), train_h_svd=float(svd_entropy(images).mean()))
    return out


def random_decoder(seed: int, encoder=None, size: int = 32) -> tuple[LinearDecoder, object]:
    """A decoder with i.i.d. standard Gaussian weights (seeded) for ``encoder``'s patterns
    (default: the dual vortex): the control with no spatial information."""
    enc = encoder if encoder is not None else DualVortexEncoder(size=size)
    pattern_shape = tuple(int(v) for v in enc(torch.zeros((1, size, size))).shape[1:])
    g = torch.Generator().manual_seed(50_000 + int(seed))
    dec = LinearDecoder(device="cpu")
    dec.weight_ = torch.randn((int(np.prod(pattern_shape)), size * size), generator=g)
    dec.image_shape_, dec.pattern_shape_ = (size, size), pattern_shape
    dec.encoder_signature_ = enc.signature() if hasattr(enc, "signature") else None
    dec.method_, dec.alpha_, dec.train_mse_, dec.history_ = "random", None, None, {}
    dec.n_features_in_ = int(np.prod(pattern_shape))
    return dec, enc


def control_cell(seed: int) -> dict:
    """The random-weight control through the dual-vortex encoder."""
    return probe_decoder(*random_decoder(seed))


def probe_seeds(cfg: StudyConfig) -> int:
    """How many seeds (0, 1, ...) the probe covers."""
    n = cfg.attention_seeds
    return cfg.seeds if n is None else min(cfg.seeds, int(n))


_seeds = probe_seeds


def cells(cfg: StudyConfig, *, in_transfer: bool = False) -> list[Cell]:
    """The probe's cells: one per (γ, seed) and a random-weight control per seed;
    ``in_transfer``: the controls only (the transfer step's decoder cells probe)."""
    gammas = () if in_transfer else cfg.attention_gammas
    out = []
    for seed in range(_seeds(cfg)):
        for g in gammas:
            p = {"gamma": g, "seed": seed, "n": cfg.n_train, "alpha": cfg.ridge_alpha}
            out.append(Cell(make_key("attention", f"g{g}_s{seed}", p),
                            "experiments.paper.attention:attention_cell", p))
        p = {"seed": seed}
        out.append(Cell(make_key("attention-control", f"s{seed}", p),
                        "experiments.paper.attention:control_cell", p))
    return out



def _trend(x, y) -> dict:
    rho, p = spearman_exact(x, y)
    return {"rho": rho, "p": p, "n": len(x)}


def aggregate(cfg: StudyConfig, results: dict[str, dict], cell_list: list[Cell],
              decoder_cells: list[Cell] = ()) -> dict:
    """Per γ: each measure's mean ± std over seeds; the centre maps of the lowest seed;
    the random-weight control; Spearman ρ (exact permutation p) of the trends over γ.
    The probes come from ``cell_list`` (`attention_cell`) and from the ``attention``
    entry of the transfer step's ``decoder_cells``."""
    if not cell_list:
        return {}
    per_gamma: dict[str, dict[str, list]] = {}
    maps: dict[str, tuple[int, list]] = {}
    control: dict[str, list] = {}
    probed = [(c, results[c.key]["attention"]) for c in decoder_cells
              if "attention" in results[c.key]]
    for c, r in [(c, results[c.key]) for c in cell_list] + probed:
        size, centre = r["size"], r["centre_pixel"]
        if "gamma" not in c.params:
            for k in MEASURES:
                control.setdefault(k, []).append(r[k])
            continue
        g, seed = str(c.params["gamma"]), int(c.params["seed"])
        bucket = per_gamma.setdefault(g, {})
        for k in (*MEASURES, "alpha", "train_h_svd"):
            bucket.setdefault(k, []).append(r[k])
        if g not in maps or seed < maps[g][0]:
            maps[g] = (seed, r["centre_map"], r["centre_participation_ratio"])
    gs = sorted(per_gamma, key=float)
    by_gamma = {g: {k: summary(v) for k, v in per_gamma[g].items()} for g in gs}
    x = [float(g) for g in gs]

    def col(k):
        return [by_gamma[g][k]["mean"] for g in gs]

    return {
        "gammas": gs,
        "by_gamma": by_gamma,
        "maps": {g: maps[g][1] for g in gs},
        "maps_seed": {g: maps[g][0] for g in gs},
        "maps_participation_ratio": {g: maps[g][2] for g in gs},
        "centre_pixel": centre,
        "size": size,
        "control": {"random_weights": {k: summary(v) for k, v in control.items()},
                    "perfect_imager": {"participation_ratio": 1.0, "peak_fraction": 1.0,
                                       "r50_px": 0.0, "hit_rate": 1.0}},
        "trend": {
            "participation_ratio_vs_gamma": _trend(x, col("participation_ratio")),
            "peak_fraction_vs_gamma": _trend(x, col("peak_fraction")),
            "h_svd_weights_vs_gamma": _trend(x, col("h_svd_weights")),
            "participation_ratio_vs_h_svd_weights": _trend(col("h_svd_weights"),
                                                           col("participation_ratio")),
        },
        "n_train": cfg.n_train,
        "seeds": _seeds(cfg),
    }
