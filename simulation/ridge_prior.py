"""Ridge regression with a prior weight and a measured input-noise term (capture decoders).

``ridge_with_prior`` solves, in the decoder's input layout (``normalise_for_decoder``)::

    argmin_W  ||X W - Y||²  +  n · Σ_j ν_j ||W_j||²  +  α ||W - P||²
    =>  (XᵀX + n·diag(ν) + αI) W = XᵀY + α P

* ``P`` (the prior) is a weight fitted elsewhere, e.g. on the calibrated twin's simulated
  patterns: α -> ∞ returns it, α -> 0 the data alone. Without a prior P = 0 (plain ridge).
* ``ν`` (``noise_var``) is the variance per decoder input that the data lacks but the
  inputs the decoder will see carry: for noise-free twin patterns, a single capture's
  noise; for training captures averaged k times, (1 - 1/k) of it. Adding n·diag(ν) to XᵀX
  is the expected Gram matrix of the noisy inputs (Bishop 1995: training with noise is
  Tikhonov regularisation), so the fit is the least-squares decoder for the inputs it
  will meet rather than for the cleaner ones it was trained on.
* α is chosen on a held-out set (given, e.g. captures, or a split of the data) from a
  log grid, after one eigendecomposition of XᵀX + n·diag(ν): each candidate is a diagonal
  rescaling. The final solve is a float64 Cholesky.

``capture_noise_variance`` estimates ν from repeated captures of the same images.
This module imports only ``simulation`` (DESIGN.md §2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .sensor import normalise_for_decoder

__all__ = ["ridge_with_prior", "capture_noise_variance"]


def capture_noise_variance(first: torch.Tensor, second: torch.Tensor, *,
                           shrink: float = 0.5) -> torch.Tensor:
    """Per-input noise variance (C·H·W,) of one capture, from two captures of the same images.

    ``first`` and ``second`` are patterns (B, C, H, W) of the same B images (B >= 2); each is
    normalised as the decoder sees it, and ν_j = mean_b (x1 - x2)²_bj / 2. With few repeats
    the per-input estimate is noisy, so it is pulled toward its mean by ``shrink`` (0: per
    input, 1: one number for all).
    """
    a = torch.as_tensor(first, dtype=torch.float32)
    b = torch.as_tensor(second, dtype=torch.float32)
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"second: expected the shape of first {tuple(a.shape)} (B, C, H, W), "
                         f"got {tuple(b.shape)}")
    if len(a) < 2:
        raise ValueError(f"first: expected at least 2 repeated images, got {len(a)}")
    if not 0.0 <= shrink <= 1.0:
        raise ValueError(f"shrink: expected a number in [0, 1], got {shrink}")
    d = normalise_for_decoder(a).double() - normalise_for_decoder(b).double()
    if not torch.isfinite(d).all():
        raise ValueError("first/second: the captures hold NaN or infinite values")
    var = (d * d).mean(0) / 2
    return ((1 - shrink) * var + shrink * var.mean()).float()


def _check_xy(X: torch.Tensor, Y: torch.Tensor, what: str) -> None:
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"{what}: expected inputs (n, d) and targets (n, p) with the same n, "
                         f"got {tuple(X.shape)} and {tuple(Y.shape)}")


def ridge_with_prior(X: torch.Tensor, Y: torch.Tensor, *, prior: torch.Tensor | None = None,
                     noise_var: torch.Tensor | None = None, alpha: float | None = None,
                     X_val: torch.Tensor | None = None, Y_val: torch.Tensor | None = None,
                     val_fraction: float = 0.1, seed: int = 0,
                     decades: tuple[float, float] = (-8.0, 4.0),
                     val_error: Callable[[torch.Tensor, torch.Tensor], float] | None = None
                     ) -> tuple[torch.Tensor, float, dict]:
    """W (d, p) float32, the α used, and the α search (see the module docstring).

    ``X`` (n, d) decoder inputs, ``Y`` (n, p) flattened images. ``alpha`` given: no search.
    Otherwise α is picked by the error on (``X_val``, ``Y_val``) when given
    (the fit then uses all of ``X``), else on a seeded ``val_fraction`` split of ``X``; the
    grid spans ``decades`` (powers of ten, half-decade steps) times the mean eigenvalue.
    The error is the mean squared error, or ``val_error(predictions, targets)`` (both
    (m, p) float32; lower is better, e.g. 1 - SSIM).
    History: {"alpha_grid", "val_mse" (the error of each α), "val": "given" | "split"}.
    """
    X = torch.as_tensor(X, dtype=torch.float32)
    Y = torch.as_tensor(Y, dtype=torch.float32)
    _check_xy(X, Y, "X/Y")
    n, d = X.shape
    p = Y.shape[1]
    P = torch.zeros(d, p, dtype=torch.float64) if prior is None else \
        torch.as_tensor(prior).double().to(X.device)
    if tuple(P.shape) != (d, p):
        raise ValueError(f"prior: expected a weight of shape {(d, p)}, got {tuple(P.shape)}")
    nu = torch.zeros(d, dtype=torch.float64) if noise_var is None else \
        torch.as_tensor(noise_var).double().reshape(-1)
    if nu.shape != (d,) or not torch.isfinite(nu).all() or (nu < 0).any():
        raise ValueError(f"noise_var: expected {d} finite values >= 0, got shape "
                         f"{tuple(nu.shape)}")
    from .ridge_linalg import centred_gram, eigh_cpu_one_thread

    def gram(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cx = x.double().mean(0).to(x.dtype)
        cy = y.double().mean(0).to(y.dtype)
        return centred_gram(x - cx, y - cy, cx, cy)

    history: dict = {}
    if alpha is None:
        if X_val is not None and Y_val is not None:
            Xv, Yv = torch.as_tensor(X_val, dtype=torch.float32), torch.as_tensor(Y_val)
            _check_xy(Xv, Yv.float(), "X_val/Y_val")
            Xt, Yt, how = X, Y, "given"
        else:
            n_val = int(round(val_fraction * n))
            if not 0 < n_val < n:
                raise ValueError(f"val_fraction: choosing alpha needs a held-out split; give "
                                 f"alpha, X_val/Y_val or more samples (n = {n})")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            va, tr = perm[:n_val], perm[n_val:]
            Xv, Yv, Xt, Yt, how = X[va], Y[va], X[tr], Y[tr], "split"
        Gt, Bt = gram(Xt, Yt)
        Mt = Gt + len(Xt) * torch.diag(nu)
        evals, evecs = eigh_cpu_one_thread(Mt.float())
        evals = evals.double().clamp_min(0)
        V = evecs.double()
        A = Xv.double() @ V
        Q1, Q2 = V.T @ Bt, V.T @ P
        yv = Yv.double()
        scale = float(evals.mean())
        lo, hi = decades
        grid = [scale * 10.0 ** e for e in torch.arange(lo, hi + 0.01, 0.5).tolist()]
        errs = []
        for a in grid:
            M = (Q1 + a * Q2) / (evals + a)[:, None]
            pred = A @ M
            errs.append(float(((pred - yv) ** 2).mean()) if val_error is None
                        else float(val_error(pred.float(), yv.float())))
        alpha = grid[min(range(len(grid)), key=errs.__getitem__)]
        history = {"alpha_grid": grid, "val_mse": errs, "val": how}
    elif alpha < 0:
        raise ValueError(f"alpha: expected a number >= 0, got {alpha}")
    G, B = gram(X, Y)
    M = G + n * torch.diag(nu) + float(alpha) * torch.eye(d, dtype=G.dtype)
    rhs = B + float(alpha) * P
    try:
        W = torch.cholesky_solve(rhs, torch.linalg.cholesky(M))
    except RuntimeError:  # singular (alpha = 0, no noise, rank-deficient X): least squares
        W = torch.linalg.lstsq(M, rhs, driver="gelsd").solution
    return W.float(), float(alpha), history
