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
* α is chosen on a held-out set (given, e.g. captures, or a split of the data) from the
  decoders' one grid (``ridge_linalg.alpha_grid``, ``PRIOR_DECADES``), after one
  eigendecomposition of XᵀX + n·diag(ν): each candidate is a diagonal rescaling. The
  decomposition, the scores and the final solve (Cholesky) are float64: the grid reaches
  1e-8 times the mean eigenvalue, far below float32's rounding of the largest (XᵀX of
  sensor patterns spans ~7 decades, and with n < d it has a null space), where a float32
  ranking scores rounding noise. Without ν and with fewer samples than inputs (a few bench
  captures, or captures that are not averaged) the same solution comes, exactly and
  cheaper, from the (n, n) dual form.
* Every tensor the solve builds follows the data's device (``X``'s): a prior, ν or held-out
  set given elsewhere is moved there.

``ridge_toward`` is that fit without a noise term, as the bench's fine-tuning uses it
(``hil.bench_training``).

``capture_noise_variance`` estimates ν from repeated captures of the same images.
This module imports only ``simulation`` (docs/architecture.md §Direction-of-imports).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from .ridge_linalg import PRIOR_DECADES, alpha_grid, centred_gram, eigh_cpu_one_thread
from .sensor import normalise_for_decoder

__all__ = ["ridge_with_prior", "ridge_toward", "capture_noise_variance", "capture_offset"]


def capture_noise_variance(first: torch.Tensor, second: torch.Tensor, *,
                           shrink: float = 0.5) -> torch.Tensor:
    """Per-input noise variance (C·H·W,) of one capture, from two captures of the same images.

    ``first`` and ``second`` are patterns (B, C, H, W) of the same B images (B >= 2); each is
    normalised as the decoder sees it, and ν_j = mean_b (x1 - x2)²_bj / 2. With few repeats
    the per-input estimate is noisy, so it is pulled toward its mean by ``shrink`` (0: per
    input, 1: one number for all).
    """
    if not 0.0 <= shrink <= 1.0:
        raise ValueError(f"shrink: expected a number in [0, 1], got {shrink}")
    d = _input_difference(first, second, ("first", "second"), min_pairs=2)
    var = (d * d).mean(0) / 2
    return ((1 - shrink) * var + shrink * var.mean()).float()


def capture_offset(twin: torch.Tensor, captured: torch.Tensor) -> torch.Tensor:
    """Mean decoder input (C·H·W,) of the captures minus that of the twin's patterns.

    ``twin`` and ``captured`` are patterns (B, C, H, W) of the same B images (B >= 1, same
    order): the twin's and the bench's. Each is normalised as the decoder sees it, and the
    offset is mean_b (captured - twin). A calibrated twin misses a part of the bench that is
    the same for every image (on ``sim-realistic.toml`` most of the difference: see
    docs/results/crossover-sim-realistic); ``ridge_with_prior(input_offset=...)`` trains on
    the twin's patterns with it added.
    """
    d = _input_difference(twin, captured, ("twin", "captured"), min_pairs=1)
    return d.mean(0).float()


def _input_difference(first, second, names: tuple[str, str], *, min_pairs: int
                      ) -> torch.Tensor:
    """Decoder inputs of ``second`` minus those of ``first`` (B, C·H·W) float64, for two
    pattern sets (B, C, H, W) of the same B >= ``min_pairs`` images (``names``: theirs, for
    the errors)."""
    a = _on(first, torch.float32)
    b = _on(second, torch.float32, a.device)
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"{names[1]}: expected the shape of {names[0]} {tuple(a.shape)} "
                         f"(B, C, H, W), got {tuple(b.shape)}")
    if len(a) < min_pairs:
        raise ValueError(f"{names[0]}: expected at least {min_pairs} paired image(s), got "
                         f"{len(a)}")
    d = normalise_for_decoder(b).double() - normalise_for_decoder(a).double()
    if not torch.isfinite(d).all():
        raise ValueError(f"{names[0]}/{names[1]}: the patterns hold NaN or infinite values")
    return d


def _check_xy(X: torch.Tensor, Y: torch.Tensor, what: str) -> None:
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"{what}: expected inputs (n, d) and targets (n, p) with the same n, "
                         f"got {tuple(X.shape)} and {tuple(Y.shape)}")


def ridge_with_prior(X: torch.Tensor, Y: torch.Tensor, *, prior: torch.Tensor | None = None,
                     noise_var: torch.Tensor | None = None,
                     input_offset: torch.Tensor | None = None, alpha: float | None = None,
                     X_val: torch.Tensor | None = None, Y_val: torch.Tensor | None = None,
                     val_fraction: float = 0.1, seed: int = 0,
                     decades: tuple[float, float] = PRIOR_DECADES,
                     val_error: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
                     form: Literal["auto", "primal", "dual"] = "auto"
                     ) -> tuple[torch.Tensor, float, dict]:
    """W (d, p) float32, the α used, and the α search (see the module docstring).

    ``X`` (n, d) decoder inputs, ``Y`` (n, p) flattened images. ``input_offset`` (d,): added
    to every row of ``X`` (not to the held-out set) before the fit: the mean by which the
    inputs the decoder will meet differ from the training inputs (``capture_offset``), as
    ``noise_var`` is their variance. ``alpha`` given: no search.
    Otherwise α is picked by the error on (``X_val``, ``Y_val``) when given
    (the fit then uses all of ``X``), else on a seeded ``val_fraction`` split of ``X``; the
    grid is ``ridge_linalg.alpha_grid(mean eigenvalue, decades)``, the same rule as
    `LinearDecoder`'s. The error is the mean squared error, or ``val_error(predictions,
    targets)`` (both (m, p) float32; lower is better, e.g. 1 - SSIM).
    ``form``: "primal" diagonalises the (d, d) XᵀX + n·diag(ν) in float64; "dual" the
    (n, n) XXᵀ in float64, exact only without ``noise_var``
    (W = P + Xᵀ(XXᵀ + αI)⁻¹(Y - XP)) and far cheaper when n << d; "auto" (the default)
    takes the dual form when that holds and n < d, else the primal. Both score every α
    of the grid as the float64 closed form does.
    The solve runs on ``X``'s device; ``Y``, ``prior``, ``noise_var`` and the held-out set
    are moved there.
    History: {"alpha_grid", "val_mse" (the error of each α), "val": "given" | "split"}.
    """
    X = _on(X, torch.float32)
    dev = X.device
    Y = _on(Y, torch.float32, dev)
    _check_xy(X, Y, "X/Y")
    n, d = X.shape
    if input_offset is not None:
        off = _on(input_offset, torch.float32, dev).reshape(-1)
        if off.shape != (d,) or not torch.isfinite(off).all():
            raise ValueError(f"input_offset: expected {d} finite values, got shape "
                             f"{tuple(off.shape)}")
        X = X + off
    p = Y.shape[1]
    P = torch.zeros(d, p, dtype=torch.float64, device=dev) if prior is None else \
        _on(prior, torch.float64, dev)
    if tuple(P.shape) != (d, p):
        raise ValueError(f"prior: expected a weight of shape {(d, p)}, got {tuple(P.shape)}")
    nu = torch.zeros(d, dtype=torch.float64, device=dev) if noise_var is None else \
        _on(noise_var, torch.float64, dev).reshape(-1)
    if nu.shape != (d,) or not torch.isfinite(nu).all() or (nu < 0).any():
        raise ValueError(f"noise_var: expected {d} finite values >= 0, got shape "
                         f"{tuple(nu.shape)}")
    if form not in ("auto", "primal", "dual"):
        raise ValueError(f"form: expected 'auto', 'primal' or 'dual', got {form!r}")
    if form == "dual" and bool((nu > 0).any()):
        raise ValueError("form: the dual form is exact only without noise_var; use 'primal'")
    dual = form == "dual" or (form == "auto" and not bool((nu > 0).any()) and n < d)

    history: dict = {}
    if alpha is None:
        if X_val is not None and Y_val is not None:
            Xv, Yv = _on(X_val, torch.float32, dev), _on(Y_val, torch.float32, dev)
            _check_xy(Xv, Yv, "X_val/Y_val")
            Xt, Yt, how = X, Y, "given"
        else:
            n_val = int(round(val_fraction * n))
            if not 0 < n_val < n:
                raise ValueError(f"val_fraction: choosing alpha needs a held-out split; give "
                                 f"alpha, X_val/Y_val or more samples (n = {n})")
            # the split is drawn on the CPU (the same rows on every device)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed),
                                  device="cpu").to(dev)
            va, tr = perm[:n_val], perm[n_val:]
            Xv, Yv, Xt, Yt, how = X[va], Y[va], X[tr], Y[tr], "split"
        scale, predict = (_dual_predictions if dual else _primal_predictions)(Xt, Yt, Xv, P, nu)
        grid = alpha_grid(scale, decades)
        yv = Yv.double()
        errs = []
        for a in grid:
            pred = predict(a)
            errs.append(float(((pred - yv) ** 2).mean()) if val_error is None
                        else float(val_error(pred.float(), yv.float())))
        alpha = grid[min(range(len(grid)), key=errs.__getitem__)]
        history = {"alpha_grid": grid, "val_mse": errs, "val": how}
    elif alpha < 0:
        raise ValueError(f"alpha: expected a number >= 0, got {alpha}")
    if dual:
        Xd = X.double()
        R = Y.double() - Xd @ P
        K = Xd @ Xd.T + float(alpha) * torch.eye(n, dtype=torch.float64, device=dev)
        try:
            D = torch.cholesky_solve(R, torch.linalg.cholesky(K))
        except RuntimeError:  # singular (alpha = 0, rank-deficient X): least squares
            D = _lstsq(K, R)
        return (P + Xd.T @ D).float(), float(alpha), history
    G, B = _gram(X, Y)
    M = G + n * torch.diag(nu) + float(alpha) * torch.eye(d, dtype=G.dtype, device=dev)
    rhs = B + float(alpha) * P
    try:
        W = torch.cholesky_solve(rhs, torch.linalg.cholesky(M))
    except RuntimeError:  # singular (alpha = 0, no noise, rank-deficient X): least squares
        W = _lstsq(M, rhs)
    return W.float(), float(alpha), history


def _on(x, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """``x`` as a tensor of ``dtype`` on ``device`` (None: where a tensor is; anything
    else on the default device)."""
    if device is None and isinstance(x, torch.Tensor):
        device = x.device
    return torch.as_tensor(x, dtype=dtype, device=device)


def _lstsq(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Least squares for a singular system: SVD-based gelsd on CPU (CUDA has only gels,
    which needs full rank, so the system is solved on the CPU and moved back)."""
    return torch.linalg.lstsq(A.cpu(), B.cpu(), driver="gelsd").solution.to(A.device)


def _gram(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """XᵀX and XᵀY from float64 products (``centred_gram`` of float64 data). Float32
    products round XᵀX by ~6e-8 of its largest eigenvalue in every direction, which is all
    a null space (n < d) or the small eigenvalues of sensor patterns hold: the α ranking
    would score that rounding. On CPU they cost ~1.3x the float32 products."""
    x, y = x.double(), y.double()
    cx, cy = x.mean(0), y.mean(0)
    return centred_gram(x - cx, y - cy, cx, cy)


def _primal_predictions(Xt, Yt, Xv, P, nu) -> tuple[float, Callable[[float], torch.Tensor]]:
    """(d, d) form: Xv·(XᵀX + n·diag(ν) + αI)⁻¹(XᵀY + αP) by a float64 eigh of the Gram.
    Returns (the α grid's unit: the mean eigenvalue, trace / d, α -> held-out predictions).

    float64, not float32: a float32 eigh leaves eigenvalues and eigenvector components of
    size ~6e-8·λ_max where the Gram has (nearly) none, and XᵀY's leak into them divided by
    a small α is what the held-out score then measures (with n < d and ν = 0 it picked
    α ~1e-5 where the closed form's best is ~6). float64 moves that floor to ~1e-16·λ_max,
    some 4 decades below the grid's smallest α (>= 1e-8·λ_max/d, d = 2048); on CPU it
    costs ~2.4x the float32 eigh (2048², one thread)."""
    Gt, Bt = _gram(Xt, Yt)
    Mt = Gt + len(Xt) * torch.diag(nu)
    evals, V = eigh_cpu_one_thread(Mt)
    evals = evals.clamp_min(0)
    A = Xv.double() @ V
    Q1, Q2 = V.T @ Bt, V.T @ P
    unit = float(Mt.diagonal().sum()) / Mt.shape[0]
    return unit, lambda a: A @ ((Q1 + a * Q2) / (evals + a)[:, None])


def _dual_predictions(Xt, Yt, Xv, P, nu) -> tuple[float, Callable[[float], torch.Tensor]]:
    """(n, n) form, ν = 0: Xv·(P + Xtᵀ(XtXtᵀ + αI)⁻¹(Yt - XtP)) by a float64 eigh of XtXtᵀ.
    Its nonzero eigenvalues are XtᵀXt's, so the mean over d gives the primal grid's unit."""
    Xd = Xt.double()
    K = Xd @ Xd.T
    evals, U = torch.linalg.eigh(K)
    evals = evals.clamp_min(0)
    A = (Xv.double() @ Xd.T) @ U
    Q = U.T @ (Yt.double() - Xd @ P)
    base = Xv.double() @ P
    return float(evals.sum()) / Xt.shape[1], lambda a: base + A @ (Q / (evals + a)[:, None])


def ridge_toward(X: torch.Tensor, Y: torch.Tensor, prior: torch.Tensor, *,
                 alpha: float | None = None, val_fraction: float = 0.2, seed: int = 0
                 ) -> tuple[torch.Tensor, float, dict]:
    """argmin_W ||X W - Y||² + α||W - prior||²: ``ridge_with_prior`` without a noise term,
    α chosen (unless given) on a seeded ``val_fraction`` split from the same grid as every
    other decoder fit (``alpha_grid`` with ``PRIOR_DECADES``). With n << d (a few bench
    captures) it solves the dual form. Fewer than 5 samples leave no useful split: α is then
    the grid's unit, the mean eigenvalue of XᵀX (history "val": "none").
    Returns (W float32, α, history); the bench records both in the decoder it saves.
    """
    X = _on(X, torch.float32)
    if alpha is None and len(X) < 5:
        _check_xy(X, _on(Y, torch.float32, X.device), "X/Y")
        alpha = float((X.double() ** 2).sum()) / max(X.shape[1], 1)
        W, a, _ = ridge_with_prior(X, Y, prior=prior, alpha=alpha, form="auto")
        return W, a, {"val": "none"}
    return ridge_with_prior(X, Y, prior=prior, alpha=alpha, val_fraction=val_fraction,
                            seed=seed, decades=PRIOR_DECADES, form="auto")
