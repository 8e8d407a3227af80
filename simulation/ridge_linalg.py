"""The linear algebra of the closed-form (ridge) decoder fits, in one home.

``centred_gram`` forms XᵀX and XᵀY accurately from float32 data with a large common mean;
``eigh_cpu_one_thread`` is the eigen-decomposition the α search diagonalises them with;
``alpha_grid`` is the one rule for the candidate α of every hold-out search (half decades
times the mean eigenvalue of XᵀX) and ``alpha_scan`` scores a plain ridge on it.
``simulation.decoders`` (ridge), ``simulation.ridge_prior`` (ridge toward a prior, and
through it ``hil.bench_training.ridge_toward`` on the bench) all use them.
"""

from __future__ import annotations

import torch

__all__ = ["centred_gram", "eigh_cpu_one_thread", "alpha_grid", "alpha_scan",
           "RIDGE_DECADES", "PRIOR_DECADES"]

#: α grid of a plain ridge fit, in powers of ten of the mean eigenvalue of XᵀX: past 1e2 the
#: weights shrink toward zero, which never predicts better.
RIDGE_DECADES: tuple[float, float] = (-8.0, 2.0)
#: α grid of a ridge pulled toward a prior: α -> ∞ returns the prior, which can be the best
#: answer (uninformative captures), so the grid reaches two decades further.
PRIOR_DECADES: tuple[float, float] = (-8.0, 4.0)


def alpha_grid(scale: float, decades: tuple[float, float] = RIDGE_DECADES) -> list[float]:
    """Candidate α: ``scale`` (the mean eigenvalue of XᵀX) times 10**e, e in half decades
    from ``decades[0]`` to ``decades[1]`` (both included)."""
    lo, hi = (float(v) for v in decades)
    if not -300.0 <= lo <= hi <= 300.0:
        raise ValueError(f"alpha_decades: expected (low, high) powers of ten with low <= high, "
                         f"got {decades!r}")
    return [scale * 10.0**e for e in torch.arange(lo, hi + 0.01, 0.5, device="cpu").tolist()]


def eigh_cpu_one_thread(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` with one intra-op thread on CPU.

    LAPACK's tridiagonal reduction synchronises its threads at every column; on a
    loaded machine with few cores those barriers spin (measured on 2 shared cores,
    2048², float32: 0.75 s with one thread against 6 to 28 s with two).
    """
    if G.device.type != "cpu":
        return torch.linalg.eigh(G)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(G)
    finally:
        torch.set_num_threads(threads)


def centred_gram(Xc: torch.Tensor, Yc: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
                  block: int = 2048, panels: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """XᵀX and XᵀY in float64 for X = Xc + 1·cxᵀ, Y = Yc + 1·cyᵀ (float32 inputs).

    Each block of ``block`` rows is multiplied in float32 and accumulated in
    float64; the symmetric XcᵀXc is formed by ``panels`` row panels of its upper
    triangle only (10 of 16 tiles for 4 panels; a BLAS ``syrk`` from SciPy would
    halve it, but its OpenBLAS threads spin against torch's on a small machine).
    The shift terms are added exactly in float64:
    XᵀX = XcᵀXc + s·cxᵀ + cx·sᵀ + n·cx·cxᵀ with s = Σ Xc (and likewise XᵀY).
    Sensor patterns have a large common mean, whose direction dominates ‖XᵀX‖;
    centring takes it out of the float32 products, so their rounding scales with
    the centred data (measured on 10,000 γ = 15 speckles: ‖ΔG‖₂/‖G‖₂ ≈ 6e-12
    against 6e-9 for a plain float32 XᵀX, with λ_min/λ_max ≈ 7e-8).
    """
    n, d = Xc.shape
    G = torch.zeros(d, d, dtype=torch.float64, device=Xc.device)
    B = torch.zeros(d, Yc.shape[1], dtype=torch.float64, device=Xc.device)
    edges = [d * i // panels for i in range(panels + 1)]
    for i in range(0, n, block):
        xb, yb = Xc[i:i + block], Yc[i:i + block]
        xbt = xb.T.contiguous()
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            G[lo:hi, lo:] += (xbt[lo:hi] @ xb[:, lo:]).double()
        B += (xbt @ yb).double()
    G = G.triu() + G.triu(1).T  # only the upper triangle was formed
    sx, sy = Xc.sum(0, dtype=torch.float64), Yc.sum(0, dtype=torch.float64)
    cx64, cy64 = cx.double(), cy.double()
    G += torch.outer(sx, cx64) + torch.outer(cx64, sx) + n * torch.outer(cx64, cx64)
    B += torch.outer(sx, cy64) + torch.outer(cx64, sy) + n * torch.outer(cx64, cy64)
    return G, B


def alpha_scan(evals: torch.Tensor, evecs: torch.Tensor, proj: torch.Tensor,
               Xv: torch.Tensor, Yv: torch.Tensor,
               decades: tuple[float, float] = RIDGE_DECADES
               ) -> tuple[list[float], list[float], int]:
    """Hold-out MSE of the ridge solution for every candidate α: ``(grid, val_mse, best)``.

    ``evals``, ``evecs``: the eigen-decomposition of the training XᵀX; ``proj`` = evecsᵀ·XᵀY
    (training); ``Xv``, ``Yv``: the held-out rows. The grid is ``alpha_grid`` (default: half
    decades from 1e-8 to 1e2 times the mean eigenvalue).
    val MSE(α) = (dᵀKd − 2·dᵀc + ‖Yv‖²)/m with d = 1/(λ+α): every candidate costs O(d²) after
    two Gram-sized products (run in the inputs' dtype, accumulated in float64), not an
    (n_val × d × p) matmul. ``best`` is the first minimum.
    """
    evals = evals.double()
    A = Xv @ evecs
    K = (A.T @ A).double() * (proj @ proj.T).double()
    c = ((A.T @ Yv).double() * proj.double()).sum(1)
    yy, m = float((Yv.double() ** 2).sum()), Yv.numel()
    grid = alpha_grid(float(evals.mean()), decades)
    errs = []
    for a in grid:
        dv = 1.0 / (evals + a)
        errs.append(max(float(dv @ K @ dv - 2 * dv @ c + yy) / m, 0.0))
    best = min(range(len(grid)), key=errs.__getitem__)
    return grid, errs, best
