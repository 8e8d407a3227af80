"""Step 3: transfer. One closed-form decoder per (γ, seed), trained on speckle only,
reconstructs every test set (grey sets, CIFAR grey and colour channel by channel, and
CIFAR-100 when its files are present); SSIM against the Ω_k mismatch between the
training set and the test set (the "SAD threshold / parity" claim).

The same cell also runs the distillation step's classifier on its reconstructions
when its γ is one of ``classify_gammas``, and the attention probe (step 8) when its
(γ, seed) is one the probe asks for: the decoder is fitted once. When α is chosen on
the hold-out, the cell also measures how much that choice matters
(`experiments.paper.alpha`): the decoders at both ends of the plausible α range, and
(``alpha_float64``) the choice a float64 ranking would make.
"""

from __future__ import annotations

import numpy as np

from experiments.sweep import Cell, make_key
from simulation import DualVortexEncoder, encode_batched

from .alpha import alpha_sensitivity
from .attention import probe_decoder, probe_seeds
from .common import evaluate_set, fit_ridge, set_statistics, summary, training_speckle
from .config import StudyConfig
from .distill import classify_reconstructions

__all__ = ["cells", "decoder_cell", "aggregate", "hinge_threshold"]


def decoder_cell(gamma: float, seed: int, n: int, sets: list[str], n_test: int,
                 classify_sets: list[str], clf_n_train: int, clf_n_test: int,
                 clf_epochs: int, alpha: float | None = None,
                 _data_dir: str | None = None, clf_method: str = "paper",
                 probe: bool = False, alpha_range: bool = False,
                 alpha_float64: bool = False, alpha_n_test: int | None = None) -> dict:
    """Fit the (γ, seed) decoder; SSIM/MSE per test set; classification, the attention
    probe (``probe``) and the α sensitivity (``alpha_range``, ``alpha_float64``; its
    ends scored on ``alpha_n_test`` test images per set if given) if asked."""
    images = training_speckle(gamma, n, seed)
    enc = DualVortexEncoder()
    patterns = encode_batched(enc, images)
    dec, _ = fit_ridge(images, encoder=enc, seed=seed, alpha=alpha, patterns=patterns)
    out = {"train": set_statistics(images), "alpha": float(dec.alpha_),
           "train_mse": float(dec.train_mse_), "test": {}}
    for s in sets:
        out["test"][s] = evaluate_set(s, n_test, seed, _data_dir, enc, dec)
    if probe:
        out["attention"] = {**probe_decoder(dec, enc), "alpha": float(dec.alpha_),
                            "train_h_svd": out["train"]["h_svd"]}
    if alpha_range and alpha is None:
        out["alpha_sensitivity"] = alpha_sensitivity(
            images, patterns, enc, dec, sets, n_test, seed, _data_dir,
            float64=alpha_float64, n_test_ends=alpha_n_test)
    if classify_sets:
        out["classification"] = classify_reconstructions(
            enc, dec, classify_sets, n_train=clf_n_train, n_test=clf_n_test,
            epochs=clf_epochs, seed=seed, data_dir=_data_dir, method=clf_method)
    return out


def cells(cfg: StudyConfig, sets: list[str], classify_sets: list[str],
          data_dir: str | None) -> list[Cell]:
    out = []
    probes = probe_seeds(cfg)
    for seed in range(cfg.seeds):
        for g in cfg.gammas:
            clf = classify_sets if g in cfg.classify_gammas else []
            p = {"gamma": g, "seed": seed, "n": cfg.n_train, "sets": list(sets),
                 "n_test": cfg.n_test, "classify_sets": list(clf),
                 "clf_n_train": cfg.clf_n_train, "clf_n_test": cfg.clf_n_test,
                 "clf_epochs": cfg.clf_epochs, "alpha": cfg.ridge_alpha,
                 "_data_dir": data_dir}
            if cfg.clf_method != "paper":  # keys of the existing scales stay as they were
                p["clf_method"] = cfg.clf_method
            if g in cfg.attention_gammas and seed < probes:
                p["probe"] = True
            if cfg.ridge_alpha is None:
                p["alpha_range"] = True
                if cfg.alpha_n_test is not None:
                    p["alpha_n_test"] = cfg.alpha_n_test
                if seed == 0:  # the float64 ranking: one seed (a 2048² float64 eigh)
                    p["alpha_float64"] = True
            out.append(Cell(make_key("decoder", f"g{g}_s{seed}", p),
                            "experiments.paper.transfer:decoder_cell", p))
    return out



def hinge_threshold(mismatch: np.ndarray, score: np.ndarray) -> dict:
    """Fit score ≈ a − b·max(0, mismatch − τ) by least squares over a grid of τ.

    Returns τ, a, b and the residual; τ is where SSIM starts to fall (the threshold).
    """
    best = None
    for tau in np.linspace(0.0, float(mismatch.max()), 41):
        h = np.maximum(0.0, mismatch - tau)
        A = np.stack([np.ones_like(h), -h], axis=1)
        coef, *_ = np.linalg.lstsq(A, score, rcond=None)
        res = float(((A @ coef - score) ** 2).sum())
        if best is None or res < best["residual"] - 1e-15:
            best = {"tau": float(tau), "a": float(coef[0]), "b": float(coef[1]), "residual": res}
    return best


def aggregate(cfg: StudyConfig, sets: list[str], results: dict[str, dict],
              cell_list: list[Cell], synthetic: dict) -> dict:
    """SSIM per (set, γ) over seeds, with the Ω_k mismatch of each pair."""
    ssim: dict[str, dict[str, list]] = {}
    mse: dict[str, dict[str, list]] = {}
    train_mse: dict[str, list] = {}
    for c in cell_list:
        r, g = results[c.key], str(c.params["gamma"])
        train_mse.setdefault(g, []).append(r["train_mse"])
        for s, v in r["test"].items():
            ssim.setdefault(s, {}).setdefault(g, []).append(v["ssim"]["mean"])
            mse.setdefault(s, {}).setdefault(g, []).append(v["mse"]["mean"])
    out = {"ssim": {}, "mse": {}, "mismatch": {}, "threshold": {},
           "ridge_train_mse": {g: summary(v) for g, v in train_mse.items()}}
    for s in sets:
        if s not in ssim:
            continue
        out["ssim"][s] = {g: summary(v) for g, v in ssim[s].items()}
        out["mse"][s] = {g: summary(v) for g, v in mse[s].items()}
        target = synthetic["test_sets"][s]["omega_k"]["mean"]
        mm = {g: float(synthetic["speckle"][g]["omega_k"]["mean"] - target) for g in ssim[s]}
        out["mismatch"][s] = mm
        x = np.abs(np.array([mm[g] for g in ssim[s]]))
        y = np.array([out["ssim"][s][g]["mean"] for g in ssim[s]])
        out["threshold"][s] = hinge_threshold(x, y)
        closest = min(mm, key=lambda g: abs(mm[g]))
        best = max(out["ssim"][s], key=lambda g: out["ssim"][s][g]["mean"])
        out["threshold"][s].update(closest_gamma=closest, best_gamma=best)
    return out
