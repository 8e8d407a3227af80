"""Step 4: swapped spectra. The grid of sets whose images carry the singular vectors
("modes") of the γ_i set and the singular values of the γ_j set (docs/paper.md §Swapped),
each with its own decoder trained from scratch (not the predecessor's cumulative bug,
docs/paper.md §Bugs). It separates the effect of the singular-value spectrum (which sets H_SVD) from
that of the spatial modes.

Within a row of the grid (one γ_i) every cell needs the singular vectors of the same
γ_i set, and every row the singular values of the same γ_j sets: both are cached per
worker process (`_modes`, `_values`), the numbers the same as `simulation.swapped_spectra`
computes (the same draws, the same LAPACK calls).

The diagonal (i = j) swaps a set with itself, which gives the set back: when
``swap_n`` equals ``n_train`` its cells are the transfer step's decoder cells, reused.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from experiments.sweep import Cell, make_key
from simulation import minmax01

from .common import evaluate_set, fit_ridge, set_statistics, training_speckle
from .config import StudyConfig

__all__ = ["cells", "swap_cell", "aggregate"]


@functools.lru_cache(maxsize=2)
def _modes(gamma: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """U and Vᵀ (float64) of each image of the speckle set (γ, seed): a row's modes."""
    u, _, vh = torch.linalg.svd(training_speckle(gamma, n, seed).double(),
                                full_matrices=False)
    return u, vh


@functools.lru_cache(maxsize=32)
def _values(gamma: float, n: int, seed: int) -> torch.Tensor:
    """The singular values (float64) of each image of the speckle set (γ, seed)."""
    return torch.linalg.svdvals(training_speckle(gamma, n, seed).double())


def swapped_set(gamma_modes: float, gamma_values: float, n: int, seed: int) -> torch.Tensor:
    """``simulation.swapped_spectra(training_speckle(γ_i), training_speckle(γ_j))``
    from the cached factors: U_i·diag(s_j)·V_iᵀ, min–max normalised, float32."""
    u, vh = _modes(float(gamma_modes), int(n), int(seed))
    s = _values(float(gamma_values), int(n), int(seed))
    return minmax01((u * s[:, None, :]) @ vh).to(torch.float32)


def swap_cell(gamma_modes: float, gamma_values: float, seed: int, n: int, sets: list[str],
              n_test: int, alpha: float | None = None, _data_dir: str | None = None,
              stats_n: int | None = None) -> dict:
    """Decoder trained on modes of γ_i with singular values of γ_j; SSIM per test set.
    The set's H_SVD and Ω_k are means over its first ``stats_n`` images (None: all)."""
    images = swapped_set(gamma_modes, gamma_values, n, seed)
    dec, enc = fit_ridge(images, seed=seed, alpha=alpha)
    stats = images if stats_n is None else images[:stats_n]
    out = {"train": set_statistics(stats), "train_mse": float(dec.train_mse_), "test": {}}
    if stats_n is not None:
        out["train"]["n"] = len(stats)
    for s in sets:
        out["test"][s] = evaluate_set(s, n_test, seed, _data_dir, enc, dec)
    return out


def cells(cfg: StudyConfig, sets: list[str], data_dir: str | None) -> list[Cell]:
    out = []
    for seed in range(cfg.seeds):
        for gi in cfg.swap_gammas:
            for gj in cfg.swap_gammas:
                if gi == gj and cfg.swap_n == cfg.n_train:
                    continue  # the set itself: the transfer step's decoder cell
                p = {"gamma_modes": gi, "gamma_values": gj, "seed": seed, "n": cfg.swap_n,
                     "sets": list(sets), "n_test": cfg.swap_n_test or cfg.n_test,
                     "alpha": cfg.ridge_alpha, "_data_dir": data_dir}
                if cfg.swap_stats_n is not None:  # the other scales' keys stay as they were
                    p["stats_n"] = cfg.swap_stats_n
                out.append(Cell(make_key("swap", f"m{gi}_v{gj}_s{seed}", p),
                                "experiments.paper.swapped:swap_cell", p))
    return out


def aggregate(cfg: StudyConfig, sets: list[str], results: dict[str, dict],
              cell_list: list[Cell], decoder_cells: list[Cell]) -> dict:
    """Matrices (rows: modes γ_i, columns: singular values γ_j) of mean and std."""
    g = [str(x) for x in cfg.swap_gammas]
    idx = {x: i for i, x in enumerate(g)}
    k = len(g)
    acc: dict[str, list] = {}

    def put(name, i, j, v):
        acc.setdefault(name, [[[] for _ in range(k)] for _ in range(k)])[i][j].append(v)

    diagonal = [c for c in decoder_cells if cfg.swap_n == cfg.n_train
                and str(c.params["gamma"]) in idx]
    for c in list(cell_list) + diagonal:
        r = results[c.key]
        if "gamma" in c.params:
            i = j = idx[str(c.params["gamma"])]
        else:
            i, j = idx[str(c.params["gamma_modes"])], idx[str(c.params["gamma_values"])]
        put("h_svd", i, j, r["train"]["h_svd"])
        put("omega_k", i, j, r["train"]["omega_k"])
        for s in sets:
            if s in r["test"]:
                put(f"ssim:{s}", i, j, r["test"][s]["ssim"]["mean"])
        put("ssim:mean", i, j, float(np.mean([r["test"][s]["ssim"]["mean"] for s in sets])))
    out = {"gammas": g, "matrices": {}}
    if cfg.swap_n_test is not None or cfg.swap_stats_n is not None:
        out["note"] = (f"off-diagonal cells: SSIM on {cfg.swap_n_test or cfg.n_test:,} test "
                       "images per set, H_SVD and Ω_k over "
                       + (f"{cfg.swap_stats_n:,}" if cfg.swap_stats_n else "all")
                       + " of each swapped set's images; the diagonal is the transfer "
                       "step's decoder cells (every test image, every training image)"
                       if diagonal else
                       f"SSIM on {cfg.swap_n_test or cfg.n_test:,} test images per set")
    for name, grid in acc.items():
        out["matrices"][name] = {
            "mean": [[float(np.mean(v)) for v in row] for row in grid],
            "std": [[float(np.std(v)) for v in row] for row in grid],
        }
    m = np.array(out["matrices"]["ssim:mean"]["mean"])
    # how much of the SSIM variation follows the spectrum (columns) vs the modes (rows)
    out["variance_by_values"] = float(np.var(m.mean(axis=0)))
    out["variance_by_modes"] = float(np.var(m.mean(axis=1)))
    return out
