"""Step 6 (beyond the paper): design the training set or the mask instead of picking γ.

- ``mixture``: speckle mixed from the γ values whose Ω_k bracket the Ω_k of a target
  data set, in the proportions that make the mixture's mean Ω_k equal the target's
  (the mean Ω_k of a mixture is the weighted mean of its parts' Ω_k);
- ``learned``: the two phase masks learned end to end through the twin (Adam on the
  masks and the decoder together, started from the dual vortex and its ridge decoder),
  then the decoder refitted in closed form for the learned masks.

Both are compared with the paper's single-γ dual-vortex decoder (γ = ``paper_gamma``)
on the same seeds.
"""

from __future__ import annotations

import torch

from experiments.sweep import Cell, make_key
from simulation import (
    DualVortexEncoder,
    PhaseEncoder,
    normalise_for_decoder,
    omega_k,
    speckle,
    speckle_mixture,
)

from .common import (
    evaluate,
    fit_ridge,
    set_statistics,
    speckle_seed,
    summary,
    test_images,
    training_speckle,
)
from .config import StudyConfig
from .distill import classify_reconstructions

__all__ = ["cells", "mixture_weights", "mixture_cell", "learned_cell", "aggregate"]

PROBE_N = 200  # speckles per γ to measure its Ω_k when designing a mixture


def mixture_weights(omegas: dict[float, float], target: float) -> dict[float, float]:
    """Two-γ weights whose mean Ω_k equals ``target`` (one γ when outside the range)."""
    order = sorted(omegas, key=lambda g: omegas[g])
    if target <= omegas[order[0]]:
        return {order[0]: 1.0}
    if target >= omegas[order[-1]]:
        return {order[-1]: 1.0}
    for lo, hi in zip(order, order[1:], strict=False):
        if omegas[lo] <= target <= omegas[hi]:
            w_hi = (target - omegas[lo]) / (omegas[hi] - omegas[lo])
            return {lo: 1.0 - w_hi, hi: w_hi}
    raise AssertionError("unreachable")


def _evaluate_all(enc, dec, sets, classify_sets, cfg_kw: dict, seed: int, data_dir) -> dict:
    out = {"test": {s: evaluate(test_images(s, cfg_kw["n_test"], seed, data_dir), enc, dec)
                    for s in sets}}
    if classify_sets:
        out["classification"] = classify_reconstructions(
            enc, dec, classify_sets, n_train=cfg_kw["clf_n_train"],
            n_test=cfg_kw["clf_n_test"], epochs=cfg_kw["clf_epochs"], seed=seed,
            data_dir=data_dir, method=cfg_kw.get("clf_method", "paper"))
    return out


def mixture_cell(target: str, gammas: list[float], seed: int, n: int, sets: list[str],
                 classify_sets: list[str], cfg_kw: dict, _data_dir: str | None = None) -> dict:
    """A mixture of γ matched to the target set's Ω_k; its decoder and scores."""
    target_omega = float(omega_k(test_images(target, cfg_kw["n_test"], seed, _data_dir)).mean())
    omegas = {g: float(omega_k(speckle(PROBE_N, g, seed=speckle_seed(g, seed) + 5)).mean())
              for g in gammas}
    weights = mixture_weights(omegas, target_omega)
    images = speckle_mixture(n, list(weights), list(weights.values()),
                             seed=speckle_seed(sum(weights), seed) + 11)
    dec, enc = fit_ridge(images, seed=seed, alpha=cfg_kw.get("alpha"))
    out = {"target_omega_k": target_omega, "weights": {str(g): w for g, w in weights.items()},
           "train": set_statistics(images), "train_mse": float(dec.train_mse_)}
    out.update(_evaluate_all(enc, dec, sets, classify_sets if target in classify_sets else [],
                             cfg_kw, seed, _data_dir))
    if "classification" in out:
        out["classification"] = {target: out["classification"][target]}
    return out


def learned_cell(gamma: float, seed: int, n: int, n_opt: int, steps: int, sets: list[str],
                 classify_sets: list[str], cfg_kw: dict, lr_mask: float = 1e-2,
                 lr_decoder: float = 1e-4, _data_dir: str | None = None) -> dict:
    """Masks learned end to end on the (γ, seed) speckle set, then a ridge decoder."""
    images = training_speckle(gamma, n, seed)
    start, _ = fit_ridge(images[:n_opt], encoder=DualVortexEncoder(), seed=seed,
                         alpha=cfg_kw.get("alpha"))
    enc = DualVortexEncoder(learnable=True)
    W = start.weight_.clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [enc.masks_rad], "lr": lr_mask},
                            {"params": [W], "lr": lr_decoder}])
    x, y = images[:n_opt], images[:n_opt].reshape(n_opt, -1)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = ((normalise_for_decoder(enc(x)) @ W - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    masks = enc.masks_rad.detach().clone()
    learned = PhaseEncoder(masks, learnable=False, name="learned")
    dec, _ = fit_ridge(images, encoder=learned, seed=seed, alpha=cfg_kw.get("alpha"))
    out = {"opt_loss": losses, "train_mse": float(dec.train_mse_),
           "mask_change_rad": float((masks - DualVortexEncoder().masks_rad).abs().mean()),
           "masks_rad": masks.numpy().round(5).tolist()}
    out.update(_evaluate_all(learned, dec, sets, classify_sets, cfg_kw, seed, _data_dir))
    return out


def cells(cfg: StudyConfig, sets: list[str], classify_sets: list[str],
          data_dir: str | None) -> list[Cell]:
    kw = {"n_test": cfg.n_test, "clf_n_train": cfg.clf_n_train, "clf_n_test": cfg.clf_n_test,
          "clf_epochs": cfg.clf_epochs, "alpha": cfg.ridge_alpha}
    if cfg.clf_method != "paper":  # keys of the existing scales stay as they were
        kw["clf_method"] = cfg.clf_method
    out = []
    for seed in range(cfg.seeds):
        for t in cfg.mixture_targets:
            if t not in sets:
                continue
            p = {"target": t, "gammas": list(cfg.gammas), "seed": seed, "n": cfg.n_train,
                 "sets": list(sets), "classify_sets": list(classify_sets), "cfg_kw": kw,
                 "_data_dir": data_dir}
            out.append(Cell(make_key("mixture", f"{t}_s{seed}", p),
                            "experiments.paper.designs:mixture_cell", p))
        p = {"gamma": cfg.paper_gamma, "seed": seed, "n": cfg.n_train,
             "n_opt": min(cfg.learned_n, cfg.n_train), "steps": cfg.learned_steps,
             "sets": list(sets), "classify_sets": list(classify_sets), "cfg_kw": kw,
             "_data_dir": data_dir}
        out.append(Cell(make_key("learned", f"g{cfg.paper_gamma}_s{seed}", p),
                        "experiments.paper.designs:learned_cell", p))
    return out



def aggregate(cfg: StudyConfig, results: dict[str, dict], cell_list: list[Cell],
              base_cells: list[Cell]) -> dict:
    """Per design and set: SSIM and test accuracy (mean ± std over seeds), next to the
    paper's single-γ dual-vortex decoder on the same seeds."""
    rows: dict[str, dict[str, dict[str, list]]] = {}

    def add(design, r, only=None):
        for s, v in r.get("test", {}).items():
            if only is None or s == only:
                rows.setdefault(design, {}).setdefault(s, {"ssim": [], "acc": []})[
                    "ssim"].append(v["ssim"]["mean"])
        for s, v in (r.get("classification") or {}).items():
            if only is None or s == only:
                rows.setdefault(design, {}).setdefault(s, {"ssim": [], "acc": []})[
                    "acc"].append(v["test_accuracy"])

    for c in base_cells:
        if c.params["gamma"] == cfg.paper_gamma:
            add(f"vortex γ={cfg.paper_gamma:g}", results[c.key])
    weights = {}
    for c in cell_list:
        r = results[c.key]
        if c.func.endswith("mixture_cell"):
            add("Ω_k-matched mixture", r, only=c.params["target"])
            weights.setdefault(c.params["target"], []).append(r["weights"])
        else:
            add("learned mask", r)
    out = {"designs": {}, "mixture_weights": weights}
    for d, per_set in rows.items():
        out["designs"][d] = {s: {"ssim": summary(v["ssim"]) if v["ssim"] else None,
                                 "test_accuracy": summary(v["acc"]) if v["acc"] else None}
                             for s, v in per_set.items()}
    learned = [results[c.key] for c in cell_list if c.func.endswith("learned_cell")]
    if learned:
        out["learned_mask_change_rad"] = summary([r["mask_change_rad"] for r in learned])
        out["learned_opt_loss"] = {"first": summary([r["opt_loss"][0] for r in learned]),
                                   "last": summary([r["opt_loss"][-1] for r in learned])}
        out["learned_masks_rad_seed0"] = learned[0]["masks_rad"]
    return out
