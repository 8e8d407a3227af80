"""Step 2: learnability. The paper's Adam protocol (full batch, lr 1e-3, 1 % held out)
on each γ set, its loss curve and convergence figures against H_SVD, with the
closed-form (ridge) decoder's final loss on the same set beside it (the transfer
step's decoder cell fits it on the very same images: ``learn_n`` equals ``n_train``).

Convergence figures of one curve (primary first):
- ``excess``: the excess loss over the closed-form optimum L* (least squares on the
  same training split, no bias, float64), E_t = (L_t − L*)/(L_1 − L*), read at the
  epochs of ``READ_OUTS`` up to the budget (and the last epoch) as the median of E
  over the window [0.8 t, t] (full-batch Adam's loss spikes make a single epoch's
  reading unreliable);
- ``rate``: −slope of log E against log epoch over the last 90 % of the epochs (a
  power-law rate; larger is faster);
- ``mean_image_mse``: the loss of predicting the training set's mean image, the
  reference a fit must get below before its convergence says anything;
- ``remaining`` (loss at the last epoch / at the first), ``epochs_to_threshold`` and
  ``decay_rate`` from `simulation.convergence`, kept for the figure; the verdict
  does not use them (the ratio is set by the initial loss).

``outputs`` (the ``paper`` scale): Adam runs on a seeded random subset of that many
output pixels (columns of W) instead of all 1,024. Adam is element-wise and each
column's gradient 2(GW − B)/m involves only that column, so each kept column follows
exactly the trajectory it has in the whole fit (`adam_columns` draws the whole
Glorot initialisation and keeps its columns); the loss over the subset is an unbiased
estimate of the whole loss at every epoch, at |subset|/1,024 of the cost. L*, the
mean-image loss and every figure above are then taken over the same pixels.

With whole decoders (no ``outputs``) and ``sets`` given, the cell also scores its Adam
decoder on the transfer step's test images (`experiments.paper.alpha`: the verdicts
against the Adam protocol).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from experiments.sweep import Cell, make_key
from simulation import (
    DualVortexEncoder,
    LinearDecoder,
    convergence,
    encode_batched,
    normalise_for_decoder,
    svd_entropy,
)

from .common import evaluate_set, summary, training_speckle
from .config import StudyConfig

__all__ = ["cells", "learn_cell", "aggregate"]

MAX_POINTS = 500  # loss-curve points kept per run in results.json
READ_OUTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000)
VAL_FRACTION = 0.01  # the Adam protocol's held-out share (the last samples, as Keras)


def output_columns(n_pixels: int, outputs: int | None, seed: int) -> torch.Tensor | None:
    """The seeded random subset of ``outputs`` output pixels (sorted), or None for all."""
    if outputs is None or outputs >= n_pixels:
        return None
    g = torch.Generator().manual_seed(40_000 + int(seed))
    return torch.randperm(n_pixels, generator=g)[:int(outputs)].sort().values


def adam_columns(patterns: torch.Tensor, images: torch.Tensor, columns: torch.Tensor | None,
                 *, epochs: int, seed: int, lr: float = 1e-3, eps: float = 1e-7,
                 val_fraction: float = VAL_FRACTION) -> dict:
    """`simulation.LinearDecoder`'s Adam protocol (full batch, Glorot-uniform start from
    the same generator, the last ``val_fraction`` held out, Gram-matrix steps when
    there are more samples than inputs) restricted to the output ``columns`` (None:
    all). Returns the train and validation loss per epoch over those columns and W."""
    X = normalise_for_decoder(patterns)
    Y = images.reshape(len(images), -1)
    n, d, p_all = len(X), X.shape[1], Y.shape[1]
    n_val = int(math.floor(val_fraction * n))
    g = torch.Generator().manual_seed(seed)
    limit = math.sqrt(6.0 / (d + p_all))  # Glorot uniform over the whole (d, p) map
    W = (torch.rand((d, p_all), generator=g) * 2 - 1) * limit
    if columns is not None:
        W, Y = W[:, columns].contiguous(), Y[:, columns].contiguous()
    Xt, Yt, Xv, Yv = X[: n - n_val], Y[: n - n_val], X[n - n_val:], Y[n - n_val:]
    W = W.requires_grad_()
    opt = torch.optim.Adam([W], lr=lr, eps=eps)
    m = Xt.shape[0] * Y.shape[1]
    # the gradient keeps the whole map's normalisation (Adam's ε makes the step depend
    # on the gradient's scale): a kept column moves exactly as in the whole fit
    share = Y.shape[1] / p_all
    gram = Xt.shape[0] > d
    if gram:
        G, B, yy = Xt.T @ Xt, Xt.T @ Yt, float((Yt.double() ** 2).sum())
    train, val = [], []
    for _ in range(epochs):
        if gram:
            with torch.no_grad():
                GW = G @ W
                loss = ((W * GW).sum() - 2 * (W * B).sum() + yy) / m
                W.grad = (GW - B).mul_(2.0 / (Xt.shape[0] * p_all))
        else:
            opt.zero_grad(set_to_none=True)
            loss = ((Xt @ W - Yt) ** 2).mean()
            (loss * share if share != 1.0 else loss).backward()
        opt.step()
        train.append(float(loss.detach()))
        if n_val:
            with torch.no_grad():
                val.append(float(((Xv @ W - Yv) ** 2).mean()))
    return {"train_mse": train, "val_mse": val, "weight": W.detach()}


def optimum_and_mean_loss(patterns: torch.Tensor, images: torch.Tensor,
                          columns: torch.Tensor | None = None) -> tuple[float, float]:
    """(L*, mean-image loss) on the Adam protocol's training split: L* is the least
    squares optimum of the bias-free linear map (float64, minimum-norm when
    underdetermined), the second the MSE of predicting the split's mean image; over
    the output ``columns`` only when given."""
    X = normalise_for_decoder(patterns).double()
    Y = images.reshape(len(images), -1).double()
    if columns is not None:
        Y = Y[:, columns]
    n_val = int(math.floor(VAL_FRACTION * len(X)))
    X, Y = X[: len(X) - n_val], Y[: len(Y) - n_val]
    # rank-revealing QR when overdetermined (the paper's 9,900 × 2,048: half the cost of
    # an SVD), the SVD-based minimum-norm solution when underdetermined
    W = torch.linalg.lstsq(X, Y, driver="gelsy" if len(X) > X.shape[1] else "gelsd").solution
    l_star = float(((X @ W - Y) ** 2).mean())
    return l_star, float(((Y - Y.mean(0)) ** 2).mean())


def excess_readouts(history: list[float], l_star: float) -> tuple[dict[str, float], float]:
    """Window-median excess loss at the read-out epochs, and the fitted rate."""
    h = np.asarray(history, dtype=np.float64)
    T = len(h)
    e = np.maximum((h - l_star) / max(h[0] - l_star, 1e-300), 1e-12)
    out = {}
    for t in sorted({r for r in READ_OUTS if r <= T} | {T}):
        lo = max(1, math.ceil(0.8 * t))
        out[str(t)] = float(np.median(e[lo - 1:t]))
    ep = np.arange(1, T + 1, dtype=np.float64)
    keep = ep >= max(2.0, math.ceil(0.1 * T))
    rate = (float(-np.polyfit(np.log(ep[keep]), np.log(e[keep]), 1)[0])
            if keep.sum() >= 2 else float("nan"))
    return out, rate


def _thin(history: list[float]) -> tuple[list[int], list[float]]:
    step = max(1, int(np.ceil(len(history) / MAX_POINTS)))
    idx = list(range(0, len(history), step))
    if idx[-1] != len(history) - 1:
        idx.append(len(history) - 1)
    return [i + 1 for i in idx], [float(history[i]) for i in idx]


def learn_cell(gamma: float, seed: int, n: int, epochs: int, outputs: int | None = None,
               sets: list[str] | None = None, n_test: int | None = None,
               _data_dir: str | None = None) -> dict:
    """The Adam (paper protocol) loss curve on the speckle set (γ, seed), over
    ``outputs`` random output pixels when given; with whole decoders and ``sets``,
    the Adam decoder's SSIM on those test sets."""
    images = training_speckle(gamma, n, seed)
    enc = DualVortexEncoder()
    patterns = encode_batched(enc, images)
    cols = output_columns(images[0].numel(), outputs, seed)
    if cols is None:
        adam = LinearDecoder(method="adam", epochs=epochs, seed=seed, progress=False,
                             val_fraction=VAL_FRACTION, device="cpu").fit(patterns, images,
                                                                          encoder=enc)
        history = adam.history_
    else:
        adam, history = None, adam_columns(patterns, images, cols, epochs=epochs, seed=seed)
    hist = history["train_mse"]
    l_star, l_mean = optimum_and_mean_loss(patterns, images, cols)
    excess, rate = excess_readouts(hist, l_star)
    conv = convergence(hist) if len(hist) >= 2 else {"final_loss": hist[-1],
                                                      "epochs_to_threshold": None,
                                                      "decay_rate": float("nan")}
    epochs_x, losses = _thin(hist)
    val = history.get("val_mse") or []
    out = {
        "h_svd": float(svd_entropy(images).mean()),
        "epochs": epochs_x, "train_mse": losses,
        "final_train_mse": float(hist[-1]), "first_train_mse": float(hist[0]),
        "final_val_mse": float(val[-1]) if val else None,
        "remaining": float(hist[-1] / hist[0]),
        "epochs_to_threshold": conv["epochs_to_threshold"],
        "decay_rate": float(conv["decay_rate"]),
        "optimum_mse": l_star, "mean_image_mse": l_mean, "excess": excess, "rate": rate,
        "outputs": None if cols is None else int(len(cols)),
    }
    if adam is not None and sets:
        out["test"] = {s: evaluate_set(s, n_test, seed, _data_dir, enc, adam) for s in sets}
    return out


def cells(cfg: StudyConfig, sets: list[str] = (), data_dir: str | None = None) -> list[Cell]:
    """One cell per (γ, seed); with whole decoders on the transfer step's speckle sets
    (``learn_n`` = ``n_train``), each also scores its Adam decoder on ``sets``."""
    out = []
    for seed in range(cfg.seeds):
        for g in cfg.learn_gammas:
            p = {"gamma": g, "seed": seed, "n": cfg.learn_n, "epochs": cfg.learn_epochs}
            if cfg.learn_outputs is not None:
                p["outputs"] = cfg.learn_outputs
            elif sets and cfg.learn_n == cfg.n_train:
                p.update(sets=list(sets), n_test=cfg.n_test, _data_dir=data_dir)
            out.append(Cell(make_key("learn", f"g{g}_s{seed}", p),
                            "experiments.paper.learnability:learn_cell", p))
    return out



def transfer_aggregate(results: dict[str, dict], cell_list: list[Cell]) -> dict:
    """The Adam decoders' test SSIM per set and γ over seeds (as `transfer.aggregate`'s
    ``ssim``), when the cells scored them; else {}."""
    ssim: dict[str, dict[str, list]] = {}
    for c in cell_list:
        for s, v in (results[c.key].get("test") or {}).items():
            ssim.setdefault(s, {}).setdefault(str(c.params["gamma"]), []).append(
                v["ssim"]["mean"])
    return {"ssim": {s: {g: summary(v, skip_missing=True) for g, v in per.items()}
                     for s, per in ssim.items()}} if ssim else {}


def aggregate(cfg: StudyConfig, results: dict[str, dict], cell_list: list[Cell],
              ridge_train_mse: dict[str, dict] | None = None) -> dict:
    """Per γ: mean ± std (and per-seed values) of each figure, the per-seed excess loss
    at each read-out epoch, and the mean ± std loss curve;
    ``ridge_train_mse`` (per γ, from the transfer step) is put beside them."""
    by_gamma: dict[str, list[dict]] = {}
    for c in cell_list:
        by_gamma.setdefault(str(c.params["gamma"]), []).append(results[c.key])
    out = {}
    for g, runs in by_gamma.items():
        curves = np.asarray([r["train_mse"] for r in runs], dtype=np.float64)
        out[g] = {k: summary([r[k] for r in runs], skip_missing=True) for k in (
            "h_svd", "final_train_mse", "remaining", "epochs_to_threshold", "decay_rate",
            "optimum_mse", "mean_image_mse", "rate")}
        out[g]["excess"] = {t: [r["excess"][t] for r in runs] for t in runs[0]["excess"]}
        out[g]["ridge_train_mse"] = (ridge_train_mse or {}).get(g)
        out[g]["curve"] = {"epochs": runs[0]["epochs"], "mean": curves.mean(0).tolist(),
                           "std": curves.std(0).tolist()}
    return out
