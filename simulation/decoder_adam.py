"""The paper's Adam protocol for `LinearDecoder` (``method="adam"``), full batch.

Adam (``lr``, ``eps``), MSE, ``epochs`` full-batch steps, the last ``val_fraction`` of the
samples held out (as Keras' ``validation_split``: before any shuffling), Glorot-uniform
initialisation from a seeded generator, loss history kept. When there are more samples
than inputs each step uses the Gram matrices XᵀX and XᵀY: the gradient and loss are the
same numbers (up to rounding), at d/n of the cost.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

__all__ = ["fit_adam"]


def fit_adam(X: torch.Tensor, Y: torch.Tensor, *, epochs: int, lr: float, eps: float,
             val_fraction: float, seed: int, progress: bool
             ) -> tuple[torch.Tensor, dict[str, list[float]], float]:
    """(weight (d, p), {"train_mse", "val_mse"} per epoch, final training MSE) for decoder
    inputs ``X`` (n, d) and flattened images ``Y`` (n, p), on ``X``'s device."""
    n = len(X)
    n_val = int(math.floor(val_fraction * n))  # Keras: the last samples, before shuffling
    Xt, Yt, Xv, Yv = X[: n - n_val], Y[: n - n_val], X[n - n_val :], Y[n - n_val :]
    d, p = X.shape[1], Y.shape[1]
    g = torch.Generator().manual_seed(seed)
    limit = math.sqrt(6.0 / (d + p))  # Glorot uniform, Keras' default
    W = ((torch.rand((d, p), generator=g) * 2 - 1) * limit).to(X.device)
    W = W.requires_grad_()
    opt = torch.optim.Adam([W], lr=lr, eps=eps)
    m = Xt.shape[0] * p
    gram = Xt.shape[0] > d
    if gram:
        G, B, yy = Xt.T @ Xt, Xt.T @ Yt, float((Yt.double() ** 2).sum())
    train_hist, val_hist = [], []
    bar = tqdm(range(epochs), desc="adam", disable=not progress, leave=False)
    for _ in bar:
        if gram:
            # MSE = (tr WᵀGW − 2 tr WᵀB + ‖Y‖²)/m, gradient 2(GW − B)/m: one matmul a step
            with torch.no_grad():
                GW = G @ W
                loss = ((W * GW).sum() - 2 * (W * B).sum() + yy) / m
                W.grad = (GW - B).mul_(2.0 / m)
        else:
            opt.zero_grad(set_to_none=True)
            loss = ((Xt @ W - Yt) ** 2).mean()
            loss.backward()
        opt.step()
        train_hist.append(float(loss.detach()))
        if n_val:
            with torch.no_grad():
                val_hist.append(float(((Xv @ W - Yv) ** 2).mean()))
        if progress and len(train_hist) % 50 == 0:
            bar.set_postfix(loss=f"{train_hist[-1]:.4g}")
    W = W.detach()
    return W, {"train_mse": train_hist, "val_mse": val_hist}, float(((Xt @ W - Yt) ** 2).mean())
