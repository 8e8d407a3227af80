"""The twin's patterns corrected toward the bench's: a linear residual map learned from pairs.

A calibrated twin predicts a bench's sensor patterns up to what it does not model (pixel
crosstalk, a phase response that varies across the panel, aberrations beyond the fitted
orders, camera non-linearity, vignetting, stray light...). Captures of synthetic speckle
show what the twin misses, but they are few (seconds each) and noisy, while the twin
gives any number of clean patterns. ``CaptureCorrection`` learns, from n pairs (the
twin's pattern t and the capture c of the same image), the map

    c ≈ μ_c + (t - μ_t) (I + M)

(means per input; M a (D, D) residual map, D = C·H·W) by ridge regression of the
residual (c - μ_c) - (t - μ_t) on t - μ_t, pulled toward M = 0 (the twin is right):

    M = Tᵀ (T Tᵀ + αI)⁻¹ R,   T = centred twin patterns (n, D), R = residuals (n, D)

solved in the (n, n) dual form (n is a few hundred to a few thousand captures, D = 2048
for the paper's 32×32 dual vortex) from one float64 eigendecomposition; α is picked from a
grid (relative to the mean eigenvalue) by the error on held-out pairs. With α large the
map is the twin plus the captures' mean offset; with α small it follows the captures.

The corrected twin then gives as many training patterns as a decoder needs, carrying the
bench's systematic flaws; the capture noise the twin lacks goes into the decoder's fit as
the noise term of ``ridge_prior`` (``LinearDecoder.fit_toward(noise_var=...)``). This is
the bench's own captures used where they are strong (what differs from the twin, a
smooth map shared by every image) and the twin where it is (clean patterns, any count).
Settings in ``__init__``, data in ``fit``, fitted attributes end in ``_`` (scikit-learn's
estimator shape). Imports only torch and ``simulation`` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import torch

from .ridge_linalg import alpha_grid
from .validate import check_number

__all__ = ["CaptureCorrection"]

#: the α grid, in decades of the mean eigenvalue of T Tᵀ / n (``ridge_linalg.alpha_grid``)
CORRECTION_DECADES = (-4.0, 3.0)


def _flat(x: Any, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    t = torch.as_tensor(x)
    if t.ndim < 2 or len(t) == 0 or not t.is_floating_point():
        raise ValueError(f"{name}: expected floating patterns (B, ...) with B >= 1, got "
                         f"{tuple(t.shape)} {t.dtype}")
    flat = t.reshape(len(t), -1).double()
    if not torch.isfinite(flat).all():
        raise ValueError(f"{name}: the patterns hold NaN or infinite values")
    return flat, tuple(t.shape[1:])


class CaptureCorrection:
    """Twin patterns -> the bench's, learned from paired twin patterns and captures.

    ``alpha``: the ridge strength toward "no correction" (None: picked on the held-out
    pairs given to ``fit``, or on a seeded ``val_fraction`` split of the pairs).
    Fitted: ``twin_mean_``, ``capture_mean_`` (D,), ``map_`` (D, D) float32 (M above),
    ``alpha_``, ``history_`` ({"alpha_grid", "val_mse", "val_mse_twin" (the uncorrected
    twin's error, offset included), "val"}), ``pattern_shape_``.
    """

    def __init__(self, alpha: float | None = None, *, val_fraction: float = 0.2,
                 seed: int = 0, decades: tuple[float, float] = CORRECTION_DECADES) -> None:
        self.alpha = alpha
        self.val_fraction = val_fraction
        self.seed = seed
        self.decades = decades

    def fit(self, twin: Any, captured: Any, *, val_twin: Any = None,
            val_captured: Any = None) -> CaptureCorrection:
        """Learn the map from ``twin`` (B, ...) and ``captured`` (B, ...) patterns of the
        same B images (same order); α on (``val_twin``, ``val_captured``) when given."""
        T, shape = _flat(twin, "twin")
        C, cshape = _flat(captured, "captured")
        if cshape != shape or len(C) != len(T):
            raise ValueError(f"captured: expected the shape of twin {(len(T), *shape)}, got "
                             f"{(len(C), *cshape)}")
        if self.alpha is not None:
            check_number(self.alpha, "alpha", allow_zero=True)
        if (val_twin is None) != (val_captured is None):
            raise ValueError("val_twin/val_captured: give both or neither")
        if val_twin is not None:
            Tv, vshape = _flat(val_twin, "val_twin")
            Cv, cvshape = _flat(val_captured, "val_captured")
            if vshape != shape or cvshape != shape or len(Tv) != len(Cv):
                raise ValueError("val_twin/val_captured: expected paired patterns of shape "
                                 f"{shape}, got {(len(Tv), *vshape)} and {(len(Cv), *cvshape)}")
            Tt, Ct, how = T, C, "given"
        elif self.alpha is None:
            check_number(self.val_fraction, "val_fraction", at_most=1.0)
            n_val = int(round(self.val_fraction * len(T)))
            if not 0 < n_val < len(T):
                raise ValueError(f"val_fraction: choosing alpha needs a held-out split; give "
                                 f"alpha, val_twin/val_captured or more pairs (n = {len(T)})")
            perm = torch.randperm(len(T), generator=torch.Generator().manual_seed(self.seed))
            Tv, Cv, Tt, Ct, how = T[perm[:n_val]], C[perm[:n_val]], T[perm[n_val:]], \
                C[perm[n_val:]], "split"
        alpha, history = self.alpha, {}
        if alpha is None:
            scale, predict = self._dual(Tt, Ct)
            grid = alpha_grid(scale, self.decades)
            errs = [float(((predict(a, Tv) - Cv) ** 2).mean()) for a in grid]
            i = min(range(len(grid)), key=errs.__getitem__)
            alpha = grid[i]
            base = Tv - Tt.mean(0) + Ct.mean(0)
            history = {"alpha_grid": grid, "val_mse": errs, "val": how,
                       "val_mse_twin": float(((base - Cv) ** 2).mean())}
        mt, mc = T.mean(0), C.mean(0)
        Tc = T - mt
        R = (C - mc) - Tc
        K = Tc @ Tc.T + float(alpha) * torch.eye(len(T), dtype=torch.float64)
        try:
            D = torch.cholesky_solve(R, torch.linalg.cholesky(K))
        except RuntimeError:  # alpha = 0 and rank-deficient pairs: least squares
            D = torch.linalg.lstsq(K, R, driver="gelsd").solution
        self.twin_mean_, self.capture_mean_ = mt.float(), mc.float()
        self.map_ = (Tc.T @ D).float()
        self.alpha_, self.history_, self.pattern_shape_ = float(alpha), history, shape
        return self

    @staticmethod
    def _dual(T: torch.Tensor, C: torch.Tensor):
        """(the grid's unit, α -> predictions of held-out twin patterns) from one eigh."""
        mt, mc = T.mean(0), C.mean(0)
        Tc = T - mt
        R = (C - mc) - Tc
        evals, U = torch.linalg.eigh(Tc @ Tc.T)
        evals = evals.clamp_min(0)
        Q = U.T @ R

        def predict(a: float, Tv: torch.Tensor) -> torch.Tensor:
            Tvc = Tv - mt
            return mc + Tvc + ((Tvc @ Tc.T) @ U) @ (Q / (evals + a)[:, None])

        return float(evals.sum()) / max(len(T), 1), predict

    def transform(self, twin: Any) -> torch.Tensor:
        """Corrected patterns, float32, the shape of ``twin`` (B, ...)."""
        if not hasattr(self, "map_"):
            raise RuntimeError("CaptureCorrection: call fit() before transform()")
        t = torch.as_tensor(twin)
        if tuple(t.shape[1:]) != self.pattern_shape_:
            raise ValueError(f"twin: expected patterns of shape (B, *{self.pattern_shape_}), "
                             f"got {tuple(t.shape)}")
        x = t.reshape(len(t), -1).float() - self.twin_mean_
        out = self.capture_mean_ + x + x @ self.map_
        return out.reshape(t.shape)
