"""The electronic decoder: one linear layer, sensor pattern -> image (paper-spec §3).

`LinearDecoder` follows scikit-learn's estimator shape (``fit`` returns self,
fitted attributes end in ``_``). Two ways to fit the same 2048 -> 1024 map (no bias):

- ``method="ridge"``: the closed-form ridge solution (XᵀX + αI)W = XᵀY, with α
  given or chosen on a held-out split: one eigendecomposition, then every
  candidate α is a cheap diagonal rescaling. XᵀX and XᵀY are float64 sums of
  float32 products of mean-centred blocks (`ridge_linalg.centred_gram`), the solve float64
  Cholesky: within 1e-4 of an all-float64 fit even at the smallest α tried.
- ``method="adam"``: the paper's protocol: full batch, Adam (lr 1e-3, eps 1e-7),
  MSE, 5,000 epochs, the last 1 % held out for validation (as Keras'
  ``validation_split``), Glorot-uniform initialisation, loss history kept.
  When there are more samples than inputs, each step uses the Gram matrices
  XᵀX and XᵀY: the gradient and loss are the same numbers (up to rounding),
  at d/n of the cost.

A fitted decoder remembers its encoder's ``signature()`` when given one and
refuses patterns from another encoder; saved files carry it too, with a SHA-256
of the weights (`simulation.weightfile`): a file that changed is refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from ._checks import as_tensor, check_choice, check_images, check_positive
from ._checks import default_device as _default_device
from .ridge_linalg import alpha_scan, centred_gram, eigh_cpu_one_thread
from .sensor import normalise_channels, normalise_for_decoder
from .weightfile import load_weight_file, save_weight_file, weights_sha256

__all__ = ["LinearDecoder", "EncoderMismatchError"]

FORMAT_VERSION = 2  # 2: weights in a checksummed `simulation.weightfile` file
_KIND = "LinearDecoder"
_REMAKE = ("make it again with `hil train` (or `hil calibrate` for a calibration's "
           "decoders, LinearDecoder.fit(...).save(path) in Python)")


class EncoderMismatchError(ValueError):
    """Patterns come from an encoder other than the one the decoder was fitted for."""


def _signature_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: decoder has {a.get(k)!r}, patterns have {b.get(k)!r}"
            for k in keys if a.get(k) != b.get(k)]


class LinearDecoder:
    """Linear map from normalised sensor patterns (B, C, H, W) to images (B, H, W).

    Parameters
    ----------
    alpha : ridge regularisation; ``None`` chooses it on a held-out split.
    device : where to compute; default CUDA when present, else CPU.
    """

    def __init__(self, *, alpha: float | None = None, device: str | torch.device | None = None):
        if alpha is not None:
            check_positive(alpha, "alpha", allow_zero=True)
        self.alpha = alpha
        self.device = _default_device(device)

    # ----------------------------------------------------------------- helpers
    def _inputs(self, patterns) -> torch.Tensor:
        p = as_tensor(patterns, "patterns", device=self.device)
        if p.ndim != 4:
            raise ValueError(f"patterns: expected shape (B, C, H, W), got {tuple(p.shape)}")
        return normalise_for_decoder(p)

    def _check_fitted(self) -> None:
        if not hasattr(self, "weight_"):
            raise RuntimeError("LinearDecoder: call fit() (or load()) before predict()")

    def _check_encoder(self, encoder) -> None:
        if encoder is None:
            return
        sig = encoder.signature() if hasattr(encoder, "signature") else dict(encoder)
        mine = getattr(self, "encoder_signature_", None)
        if mine is None:
            return
        diff = _signature_diff(mine, sig)
        if diff:
            raise EncoderMismatchError(
                "patterns: this decoder was fitted for another encoder ("
                + "; ".join(diff) + "); fit a decoder for this encoder"
            )

    # --------------------------------------------------------------------- fit
    def fit(
        self,
        patterns,
        images,
        method: Literal["ridge", "adam"] = "ridge",
        *,
        encoder=None,
        alpha: float | None = None,
        val_fraction: float | None = None,
        epochs: int = 5000,
        lr: float = 1e-3,
        eps: float = 1e-7,
        seed: int = 0,
        progress: bool = True,
    ) -> LinearDecoder:
        """Fit the map from ``patterns`` (B, C, H, W) to ``images`` (B, H, W) in [0, 1].

        ``encoder`` (optional) is recorded so that patterns of another encoder are
        refused later. ``val_fraction`` is the held-out share: default 0.1 for
        choosing the ridge α, 0.01 for Adam (the paper). Returns ``self``.
        """
        check_choice(method, "method", ("ridge", "adam"))
        X = self._inputs(patterns)
        Y = check_images(images, "images", ndim=(3,), device=self.device)
        if Y.shape[0] != X.shape[0]:
            raise ValueError(
                f"images: expected {X.shape[0]} images (one per pattern), got {Y.shape[0]}"
            )
        self.image_shape_ = tuple(int(s) for s in Y.shape[1:])
        self.pattern_shape_ = tuple(int(s) for s in as_tensor(patterns, "patterns").shape[1:])
        Y = Y.reshape(Y.shape[0], -1)
        if val_fraction is not None and not (0.0 <= val_fraction < 1.0):
            raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction}")
        self.encoder_signature_ = encoder.signature() if encoder is not None else None
        self.method_ = method
        if method == "ridge":
            a = alpha if alpha is not None else self.alpha
            if a is not None:
                check_positive(a, "alpha", allow_zero=True)
            self._fit_ridge(X, Y, a, 0.1 if val_fraction is None else val_fraction, seed)
        else:
            check_positive(epochs, "epochs", integer=True)
            check_positive(lr, "lr")
            self._fit_adam(X, Y, epochs, lr, eps, 0.01 if val_fraction is None else val_fraction,
                           seed, progress)
        return self

    def fit_toward(self, patterns, images, *, prior=None, noise_var=None, encoder=None,
                   alpha: float | None = None, val_patterns=None, val_images=None,
                   val_error=None, seed: int = 0) -> LinearDecoder:
        """Ridge fit pulled toward a ``prior`` decoder, with an input-noise term.

        Solves (XᵀX + n·diag(``noise_var``) + αI)W = XᵀY + α·W_prior
        (``simulation.ridge_prior.ridge_with_prior``): ``prior`` is a fitted
        ``LinearDecoder`` of the same shapes (or its weight), None for plain ridge;
        ``noise_var`` the per-input variance (C·H·W,) the inputs will carry beyond the
        training data's (``capture_noise_variance``). α is picked on
        (``val_patterns``, ``val_images``) when given, else on a 10 % split, unless
        ``alpha`` (or the constructor's) is given, by the mean squared error or
        ``val_error(predictions, targets)`` (flattened images). ``method_`` is "ridge-prior"; the
        α search, whether a prior was used and the noise level are kept in ``history_``
        (saved with the file). Returns ``self``.
        """
        from .ridge_prior import ridge_with_prior

        X = self._inputs(patterns)
        Y = check_images(images, "images", ndim=(3,), device=self.device)
        if Y.shape[0] != X.shape[0]:
            raise ValueError(
                f"images: expected {X.shape[0]} images (one per pattern), got {Y.shape[0]}"
            )
        W0 = None
        if prior is not None:
            W0 = prior.weight_ if isinstance(prior, LinearDecoder) else prior
            if isinstance(prior, LinearDecoder):
                prior._check_fitted()
        Xv = Yv = None
        if (val_patterns is None) != (val_images is None):
            raise ValueError("val_patterns/val_images: give both or neither")
        if val_patterns is not None:
            Xv = self._inputs(val_patterns)
            Yv = check_images(val_images, "val_images", ndim=(3,), device=self.device)
            Yv = Yv.reshape(len(Yv), -1)
        a = alpha if alpha is not None else self.alpha
        W, a, hist = ridge_with_prior(X, Y.reshape(len(Y), -1), prior=W0,
                                      noise_var=noise_var, alpha=a, X_val=Xv, Y_val=Yv,
                                      seed=seed, val_error=val_error)
        self.image_shape_ = tuple(int(s) for s in Y.shape[1:])
        self.pattern_shape_ = tuple(int(s) for s in as_tensor(patterns, "patterns").shape[1:])
        self.encoder_signature_ = encoder.signature() if encoder is not None else None
        self.method_ = "ridge-prior"
        self.alpha_ = a
        self.weight_ = W.to(self.device)
        nv = None if noise_var is None else float(torch.as_tensor(noise_var).mean())
        self.history_ = {**hist, "prior": W0 is not None, "noise_var_mean": nv}
        with torch.no_grad():
            self.train_mse_ = float(((X @ self.weight_ - Y.reshape(len(Y), -1)) ** 2).mean())
        return self

    def _fit_ridge(self, X, Y, alpha, val_fraction, seed) -> None:
        d, n = X.shape[1], len(X)
        # Gram matrices in float64 from float32 products of centred blocks
        # (`ridge_linalg.centred_gram`): about 4x faster than a float64 XᵀX, and centring keeps the
        # float32 rounding far below the smallest eigenvalue (see its docstring).
        cx = X.double().mean(0).to(X.dtype)
        cy = Y.double().mean(0).to(Y.dtype)
        Xc, Yc = X - cx, Y - cy
        self.history_ = {}
        if alpha is None:
            n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0
            if n_val == 0 or n_val >= n:
                raise ValueError(
                    "val_fraction: choosing alpha needs a held-out split; give alpha or "
                    f"a val_fraction in (0, 1), got {val_fraction}"
                )
            g = torch.Generator().manual_seed(seed)
            perm = torch.randperm(n, generator=g).to(X.device)
            va, tr = perm[:n_val], perm[n_val:]
            Gt, Bt = centred_gram(Xc[tr], Yc[tr], cx, cy)
            Gv, Bv = centred_gram(Xc[va], Yc[va], cx, cy)
            G, B = Gt + Gv, Bt + Bv  # the split costs nothing extra
            # float32 eigenvectors are plenty to rank candidate alphas (float64 eigh is
            # 15x slower on CPU); the final solve below is float64 Cholesky.
            evals, evecs = eigh_cpu_one_thread(Gt.float())
            evals = evals.double().clamp_min(0)
            # (d, p): the ridge solution is evecs·diag(1/(λ+α))·proj. The products that
            # only rank the candidates run in float32 (their inputs are float32 already);
            # the final solve below is float64.
            proj = evecs.T @ Bt.float()
            grid, errs, best = alpha_scan(evals, evecs, proj, X[va], Y[va])
            alpha = grid[best]
            self.history_ = {"alpha_grid": grid, "val_mse": errs}
        else:
            G, B = centred_gram(Xc, Yc, cx, cy)
        del Xc, Yc
        try:
            L = torch.linalg.cholesky(G + alpha * torch.eye(d, dtype=G.dtype, device=G.device))
            W = torch.cholesky_solve(B, L)
        except RuntimeError:  # singular (alpha = 0 with rank-deficient X): least squares
            W = torch.linalg.lstsq(X.double().cpu(), Y.double().cpu(),
                                   driver="gelsd").solution.to(X.device)
        self.alpha_ = float(alpha)
        self.weight_ = W.to(torch.float32)
        # training MSE without another pass over X: ‖XW − Y‖² = tr WᵀGW − 2 tr WᵀB + ‖Y‖²,
        # and the solve gives GW = B − αW, so it is ‖Y‖² − tr WᵀB − α‖W‖² (float64; the
        # solve's residual moves it by ~1e-12 relative).
        sse = float((Y.double() ** 2).sum() - (W * B).sum() - alpha * (W * W).sum())
        self.train_mse_ = max(sse, 0.0) / Y.numel()

    def _fit_adam(self, X, Y, epochs, lr, eps, val_fraction, seed, progress) -> None:
        n = len(X)
        n_val = int(math.floor(val_fraction * n))  # Keras: the last samples, before shuffling
        Xt, Yt, Xv, Yv = X[: n - n_val], Y[: n - n_val], X[n - n_val :], Y[n - n_val :]
        d, p = X.shape[1], Y.shape[1]
        g = torch.Generator().manual_seed(seed)
        limit = math.sqrt(6.0 / (d + p))  # Glorot uniform, Keras' default
        W = ((torch.rand((d, p), generator=g) * 2 - 1) * limit).to(self.device)
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
        self.weight_ = W.detach()
        self.alpha_ = None
        self.history_ = {"train_mse": train_hist, "val_mse": val_hist}
        self.train_mse_ = float(((Xt @ self.weight_ - Yt) ** 2).mean())

    # ----------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, patterns, *, encoder=None, batch_size: int = 2048) -> torch.Tensor:
        """Reconstruct images from patterns (B, C, H, W) -> (B, H, W), float32.

        Colour sets encoded channel by channel, (B, 3, C, H, W), give (B, 3, H, W).
        Pass the ``encoder`` that made the patterns to have it checked.
        """
        self._check_fitted()
        self._check_encoder(encoder)
        p = as_tensor(patterns, "patterns", device=self.device)
        if p.ndim == 5:
            b, k = p.shape[:2]
            return self.predict(p.reshape(b * k, *p.shape[2:]), batch_size=batch_size
                                ).reshape(b, k, *self.image_shape_)
        if p.ndim != 4:
            raise ValueError(f"patterns: expected shape (B, C, H, W), got {tuple(p.shape)}")
        if tuple(p.shape[1:]) != self.pattern_shape_:
            raise EncoderMismatchError(
                f"patterns: expected shape (B, {', '.join(map(str, self.pattern_shape_))}) "
                f"as in fit, got {tuple(p.shape)}"
            )
        W = self._weight_channel_major()
        out = torch.empty((p.shape[0], W.shape[1]), dtype=torch.float32, device=self.device)
        # batches through one reused input buffer: no fresh pages for every batch
        buf = torch.empty(min(batch_size, p.shape[0]) * W.shape[0], device=self.device)
        for s in range(0, p.shape[0], batch_size):
            x = normalise_channels(p[s : s + batch_size], out=buf)
            torch.mm(x, W, out=out[s : s + batch_size])
        return out.reshape(p.shape[0], *self.image_shape_)

    def _weight_channel_major(self) -> torch.Tensor:
        """``weight_`` with its rows in (C, H, W) order, so that inputs need no transpose.

        ``weight_`` rows follow the paper's side-by-side layout (H, C, W); the same
        product in channel-major order saves a copy of every input batch.
        """
        cached = getattr(self, "_w_cm", None)
        if cached is not None and cached[0] is self.weight_:
            return cached[1]
        c, h, w = self.pattern_shape_
        wcm = (self.weight_.reshape(h, c, w, -1).permute(1, 0, 2, 3)
               .reshape(c * h * w, -1).contiguous())
        self._w_cm = (self.weight_, wcm)
        return wcm

    # --------------------------------------------------------------- save/load
    def metadata(self) -> dict:
        """What the decoder is: format, fit, shapes, encoder signature, weights' SHA-256."""
        self._check_fitted()
        return {"format_version": FORMAT_VERSION, "method": self.method_, "alpha": self.alpha_,
                "image_shape": list(self.image_shape_),
                "pattern_shape": list(self.pattern_shape_),
                "encoder": self.encoder_signature_, "train_mse": self.train_mse_,
                "weights_sha256": weights_sha256({"weight": self.weight_})}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights and metadata to ``path`` (.pt); atomic (temp file, rename).

        The file (`simulation.weightfile`) holds only tensors and JSON, with the SHA-256 of
        the weights; `load` recomputes it and refuses a file that changed.
        """
        self._check_fitted()
        meta = self.metadata()
        meta["history"] = getattr(self, "history_", {})
        return save_weight_file(path, _KIND, {"weight": self.weight_}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, *, encoder=None,
             device: str | torch.device | None = None) -> LinearDecoder:
        """Read a decoder written by `save`; with ``encoder``, refuse a mismatch.

        Raises FileNotFoundError for a missing file and ValueError naming the file for one
        that is not a decoder file, holds Python objects (nothing in it is run), fails its
        checksum ("file corrupted"), holds non-finite weights, or whose metadata does not
        agree with its weights.
        """
        path = Path(path)
        tensors, meta = load_weight_file(path, _KIND, remake=_REMAKE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported decoder format "
                             f"{meta.get('format_version')!r}; {_REMAKE}")
        weight = tensors.get("weight")
        try:
            image_shape = _shape(meta["image_shape"], 2)
            pattern_shape = _shape(meta["pattern_shape"], 3)
            method = meta["method"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: inconsistent decoder metadata ({exc})") from exc
        want = (math.prod(pattern_shape), math.prod(image_shape))
        if weight is None or weight.dtype != torch.float32 or tuple(weight.shape) != want:
            got = (None if weight is None
                   else f"{weight.dtype} {tuple(weight.shape)}")
            raise ValueError(f"{path}: inconsistent decoder file: pattern shape "
                             f"{pattern_shape} and image shape {image_shape} need float32 "
                             f"weights of shape {want}, the file holds {got}")
        encoder_sig = meta.get("encoder")
        if encoder_sig is not None and not isinstance(encoder_sig, dict):
            raise ValueError(f"{path}: inconsistent decoder metadata (encoder: expected a "
                             f"signature object, got {type(encoder_sig).__name__})")
        dec = cls(alpha=meta.get("alpha"), device=device)
        dec.weight_ = weight.to(dec.device)
        dec.method_, dec.alpha_ = method, meta.get("alpha")
        dec.image_shape_ = image_shape
        dec.pattern_shape_ = pattern_shape
        dec.encoder_signature_ = encoder_sig
        dec.train_mse_ = meta.get("train_mse")
        dec.history_ = meta.get("history") or {}
        dec._check_encoder(encoder)
        return dec


def _shape(value, ndim: int) -> tuple[int, ...]:
    """A JSON list of `ndim` positive integers as a tuple; ValueError otherwise."""
    if (not isinstance(value, list) or len(value) != ndim
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"expected {ndim} positive integers, got {value!r}")
    return tuple(value)
