"""The electronic decoder: one linear layer, sensor pattern -> image (docs/paper.md §Decoder).

`LinearDecoder` has scikit-learn's estimator shape, as `simulation.classify`'s classifier
does: the constructor holds the settings (α or how to choose it, the solver, hold-out
share, seed, Adam's schedule, device), ``get_params``/``set_params`` read and change them,
``fit(patterns, images, *, encoder=None)`` and ``fit_toward(...)`` take data only, return
``self`` and set the fitted attributes, which end in ``_`` (``weight_``, ``alpha_``,
``method_``, ``history_`` with the α search ``alpha_grid``/``val_mse``, ...) and exist only
after a fit. Two ways to fit the same 2048 -> 1024 map (no bias):

- ``method="ridge"``: the closed-form ridge solution (XᵀX + αI)W = XᵀY, with α
  given or chosen on a held-out split: one eigendecomposition, then every
  candidate α is a cheap diagonal rescaling. XᵀX and XᵀY are float64 sums of
  float32 products of mean-centred blocks (`ridge_linalg.centred_gram`), the solve float64
  Cholesky: within 1e-4 of an all-float64 fit even at the smallest α tried. With fewer
  training samples than inputs (XᵀX has a null space) the products, the eigendecomposition
  and the α scores are float64, as the float64 closed form scores them.
- ``method="adam"``: the paper's protocol: full batch, Adam (lr 1e-3, eps 1e-7),
  MSE, 5,000 epochs, the last 1 % held out for validation (as Keras'
  ``validation_split``), Glorot-uniform initialisation, loss history kept.
  When there are more samples than inputs, each step uses the Gram matrices
  XᵀX and XᵀY: the gradient and loss are the same numbers (up to rounding),
  at d/n of the cost.

Every α search, here, in ``fit_toward`` and on the bench (``ridge_prior.ridge_toward``),
takes its candidates from one grid rule, ``ridge_linalg.alpha_grid``.

A fitted decoder remembers its encoder's ``signature()`` when given one and
refuses patterns from another encoder; saved files (`simulation.decoder_file`) carry it
too, with the settings and a SHA-256 of the weights: a file that changed is refused.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from ._checks import as_tensor, check_images
from ._checks import default_device as _default_device
from .decoder_adam import fit_adam
from .decoder_file import (
    FORMAT_VERSION,
    decoder_metadata,
    read_decoder_file,
    write_decoder_file,
)
from .decoder_params import PARAM_NAMES, callable_name, check_params, ssim_error
from .ridge_linalg import (
    PRIOR_DECADES,
    RIDGE_DECADES,
    alpha_scan,
    centred_gram,
    eigh_cpu_one_thread,
)
from .sensor import normalise_channels, normalise_for_decoder

__all__ = ["LinearDecoder", "EncoderMismatchError", "FORMAT_VERSION"]

ValError = Literal["mse", "ssim"] | Callable[[torch.Tensor, torch.Tensor], float]
_FIT_KEYWORDS = ("method", "alpha", "val_fraction", "epochs", "lr", "eps", "seed", "progress")
_TOWARD_KEYWORDS = ("alpha", "val_error", "seed")


class EncoderMismatchError(ValueError):
    """Patterns come from an encoder other than the one the decoder was fitted for."""


def _signature_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: decoder has {a.get(k)!r}, patterns have {b.get(k)!r}"
            for k in keys if a.get(k) != b.get(k)]


class LinearDecoder:
    """Linear map from normalised sensor patterns (B, C, H, W) to images (B, H, W).

    Settings (keyword-only; ``get_params``/``set_params``; saved with the decoder):
        alpha: ridge regularisation; None chooses it on held-out data (``alpha_`` is the
            α the weights were solved with, recorded after every fit).
        method: "ridge" (closed form) or "adam" (the paper's protocol), for ``fit``.
        val_fraction: the held-out share: None is 0.1 to choose α, 0.01 for Adam.
        seed: the hold-out split's and Adam's initialisation's seed.
        alpha_decades: the α grid, powers of ten of the mean eigenvalue of XᵀX
            (``ridge_linalg.alpha_grid``); None is ``RIDGE_DECADES`` (-8, 2) for ``fit``
            and ``PRIOR_DECADES`` (-8, 4) for ``fit_toward``.
        val_error: how a candidate α is scored on held-out data: "mse", "ssim" (1 - mean
            SSIM of the images) or a function ``(predictions, targets) -> float`` of
            flattened images (lower is better; a file records only its name). ``fit``'s
            ridge search scores by MSE only.
        epochs, lr, eps, progress: Adam's schedule and progress bar.
        device: where to compute; default CUDA when present, else CPU.

    Fitted attributes (after ``fit``, ``fit_toward`` or ``load``): ``weight_`` (C·H·W,
    H'·W') float32 in the paper's side-by-side input layout, ``alpha_``, ``method_``,
    ``history_`` (the α search: ``alpha_grid``, ``val_mse``; Adam: loss curves),
    ``train_mse_``, ``image_shape_``, ``pattern_shape_``, ``n_features_in_``,
    ``encoder_signature_``.
    """

    def __init__(self, *, alpha: float | None = None, method: Literal["ridge", "adam"] = "ridge",
                 val_fraction: float | None = None, seed: int = 0,
                 alpha_decades: tuple[float, float] | None = None,
                 val_error: ValError = "mse", epochs: int = 5000, lr: float = 1e-3,
                 eps: float = 1e-7, progress: bool = True,
                 device: str | torch.device | None = None) -> None:
        self.set_params(alpha=alpha, method=method, val_fraction=val_fraction, seed=seed,
                        alpha_decades=alpha_decades, val_error=val_error, epochs=epochs,
                        lr=lr, eps=eps, progress=progress, device=device)

    # ---------------------------------------------------------------- settings
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's settings by name (``deep`` is scikit-learn's; nothing nests)."""
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def set_params(self, **params: Any) -> LinearDecoder:
        """Change settings (checked as the constructor checks them); returns ``self``.

        Fitted attributes stay as they are until the next fit (a new ``device`` moves the
        weights there)."""
        p = check_params(params)
        if "device" in p:
            p["device"] = _default_device(p["device"])
            if hasattr(self, "weight_"):
                self.weight_ = self.weight_.to(p["device"])
        for name, value in p.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"LinearDecoder({args})"

    def _legacy(self, where: str, legacy: dict[str, Any], allowed: tuple[str, ...]) -> None:
        """Settings given to a fit method the old way: set them, with a DeprecationWarning."""
        if not legacy:
            return
        unknown = sorted(set(legacy) - set(allowed))
        if unknown:
            raise TypeError(f"LinearDecoder.{where}() got unexpected keyword argument(s) "
                            f"{unknown}")
        given = ", ".join(f"{k}=..." for k in legacy)
        warnings.warn(f"LinearDecoder.{where}({given}): settings belong to the constructor, "
                      f"LinearDecoder({given}), or set_params({given}); passing them to "
                      f"{where}() is deprecated", DeprecationWarning, stacklevel=3)
        # None meant "the constructor's value" in the old signature
        self.set_params(**{k: v for k, v in legacy.items()
                           if not (v is None and k in ("alpha", "val_fraction", "val_error"))})

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
    def _data(self, patterns, images) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Decoder inputs (B, C·H·W), flattened images, and the shapes a fit records."""
        X = self._inputs(patterns)
        Y = check_images(images, "images", ndim=(3,), device=self.device)
        if Y.shape[0] != X.shape[0]:
            raise ValueError(
                f"images: expected {X.shape[0]} images (one per pattern), got {Y.shape[0]}"
            )
        shapes = {"image_shape_": tuple(int(s) for s in Y.shape[1:]),
                  "pattern_shape_": tuple(int(s) for s in
                                          as_tensor(patterns, "patterns").shape[1:]),
                  "n_features_in_": int(X.shape[1])}
        return X, Y.reshape(Y.shape[0], -1), shapes

    def _record(self, shapes: dict[str, Any], encoder, method: str) -> None:
        """Set the fitted attributes that describe the data. Called after the solve, which
        sets the others last: a fit that fails leaves the decoder as it was."""
        for name, value in shapes.items():
            setattr(self, name, value)
        self.encoder_signature_ = encoder.signature() if encoder is not None else None
        self.method_ = method

    def fit(self, patterns, images, *, encoder=None, **deprecated: Any) -> LinearDecoder:
        """Fit the map from ``patterns`` (B, C, H, W) to ``images`` (B, H, W) in [0, 1].

        Data only: the settings (``method``, ``alpha``, ``val_fraction``, ``seed``, Adam's
        ``epochs``/``lr``/``eps``/``progress``) are the constructor's. ``encoder``
        (optional) is recorded so that patterns of another encoder are refused later.
        The old keywords (``method=``, ``alpha=``, ...) still work: they set the settings,
        with a DeprecationWarning. Returns ``self``.
        """
        self._legacy("fit", deprecated, _FIT_KEYWORDS)
        X, Y, shapes = self._data(patterns, images)
        vf = self.val_fraction
        if self.method == "ridge":
            if self.alpha is None and self.val_error != "mse":
                raise ValueError(f"val_error: fit(method='ridge') chooses alpha by mean "
                                 f"squared error, got {self.val_error!r}; use fit_toward, "
                                 f"or val_error='mse'")
            self._fit_ridge(X, Y, self.alpha, 0.1 if vf is None else vf, self.seed,
                            self.alpha_decades or RIDGE_DECADES)
        else:
            self._fit_adam(X, Y, self.epochs, self.lr, self.eps, 0.01 if vf is None else vf,
                           self.seed, self.progress)
        self._record(shapes, encoder, self.method)
        return self

    def fit_toward(self, patterns, images, *, prior=None, noise_var=None, input_offset=None,
                   encoder=None, val_patterns=None, val_images=None,
                   **deprecated: Any) -> LinearDecoder:
        """Ridge fit pulled toward a ``prior`` decoder, with an input-noise term.

        Solves (XᵀX + n·diag(``noise_var``) + αI)W = XᵀY + α·W_prior
        (``simulation.ridge_prior.ridge_with_prior``): ``prior`` is a fitted
        ``LinearDecoder`` of the same shapes (or its weight), None for plain ridge;
        ``noise_var`` the per-input variance (C·H·W,) the inputs will carry beyond the
        training data's (``capture_noise_variance``); ``input_offset`` (C·H·W,) their mean
        offset from the training data, added to the training inputs
        (``capture_offset``: the twin's patterns then carry what it misses on every image).
        All three are data (as scikit-learn's ``coef_init``), so they come here, not to the
        constructor. The setting ``alpha``
        None: α is picked on (``val_patterns``, ``val_images``) when given, else on a
        ``val_fraction`` (default 10 %) split, by ``val_error``, from the grid of
        ``alpha_decades`` (default ``PRIOR_DECADES``). ``method_`` is "ridge-prior"; the α
        search, whether a prior was used and the noise level are kept in ``history_``
        (saved with the file). The old keywords ``alpha=``, ``val_error=``, ``seed=`` still
        work (they set the settings, with a DeprecationWarning). Returns ``self``.
        """
        from .ridge_prior import ridge_with_prior

        self._legacy("fit_toward", deprecated, _TOWARD_KEYWORDS)
        X, Y, shapes = self._data(patterns, images)
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
        vf = 0.1 if self.val_fraction is None else self.val_fraction
        W, a, hist = ridge_with_prior(X, Y, prior=W0, noise_var=noise_var,
                                      input_offset=input_offset, alpha=self.alpha,
                                      X_val=Xv, Y_val=Yv, val_fraction=vf, seed=self.seed,
                                      decades=self.alpha_decades or PRIOR_DECADES,
                                      val_error=self._val_error_fn(shapes["image_shape_"]))
        self._record(shapes, encoder, "ridge-prior")
        self.alpha_ = a
        self.weight_ = W.to(self.device)
        nv = None if noise_var is None else float(torch.as_tensor(
            noise_var, dtype=torch.float64,
            device=noise_var.device if isinstance(noise_var, torch.Tensor) else "cpu").mean())
        ve = self.val_error if isinstance(self.val_error, str) else callable_name(self.val_error)
        off = None if input_offset is None else float(torch.as_tensor(
            input_offset, dtype=torch.float64, device="cpu").pow(2).mean().sqrt())
        self.history_ = {**hist, "prior": W0 is not None, "noise_var_mean": nv,
                         "input_offset_rms": off, "val_error": ve}
        with torch.no_grad():
            if input_offset is not None:
                X = X + torch.as_tensor(input_offset, dtype=X.dtype, device=X.device).reshape(-1)
            self.train_mse_ = float(((X @ self.weight_ - Y) ** 2).mean())
        return self

    def _val_error_fn(self, image_shape: tuple[int, ...]
                      ) -> Callable[[torch.Tensor, torch.Tensor], float] | None:
        """``val_error`` as a function of flattened (predictions, targets); None for MSE."""
        ve = self.val_error
        if callable(ve):
            return ve
        if ve == "mse":
            return None
        if ve == "ssim":
            return ssim_error(image_shape)
        raise ValueError(f"val_error: this decoder was fitted with the function {ve}, which a "
                         f"decoder file records by name only; set_params(val_error=...) with "
                         f"the function, 'mse' or 'ssim' before fitting again")

    def _fit_ridge(self, X, Y, alpha, val_fraction, seed, decades) -> None:
        d, n = X.shape[1], len(X)
        n_val = 0
        if alpha is None:
            n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0
            if n_val == 0 or n_val >= n:
                raise ValueError(
                    "val_fraction: choosing alpha needs a held-out split; give alpha or "
                    f"a val_fraction in (0, 1), got {val_fraction}"
                )
        # Gram matrices in float64 from float32 products of centred blocks
        # (`ridge_linalg.centred_gram`): about 4x faster than a float64 XᵀX, and centring keeps the
        # float32 rounding far below the smallest eigenvalue (see its docstring). Not so with
        # fewer training rows than inputs: XᵀX then has a null space, which float32 products
        # and a float32 eigh fill with rounding (~6e-8 of its largest eigenvalue) that the
        # grid's small α turn into held-out scores of noise; there the products, the eigh
        # and the α scan are float64 (cheap: n < d).
        work = torch.float64 if n - n_val < d else X.dtype
        X, Y = X.to(work), Y.to(work)
        cx = X.double().mean(0).to(X.dtype)
        cy = Y.double().mean(0).to(Y.dtype)
        Xc, Yc = X - cx, Y - cy
        history: dict = {}
        if alpha is None:
            # the split is drawn on the CPU (the same rows on every device)
            g = torch.Generator().manual_seed(seed)
            perm = torch.randperm(n, generator=g, device="cpu").to(X.device)
            va, tr = perm[:n_val], perm[n_val:]
            Gt, Bt = centred_gram(Xc[tr], Yc[tr], cx, cy)
            Gv, Bv = centred_gram(Xc[va], Yc[va], cx, cy)
            G, B = Gt + Gv, Bt + Bv  # the split costs nothing extra
            # n >= d: float32 eigenvectors rank the candidate alphas (float64 eigh is ~2.4x
            # slower on CPU; on 4000 γ = 15 speckles both pick the same α, scores within
            # 0.2 % there); the final solve below is float64 Cholesky. n < d: float64.
            evals, evecs = eigh_cpu_one_thread(Gt.to(work))
            evals = evals.double().clamp_min(0)
            # (d, p): the ridge solution is evecs·diag(1/(λ+α))·proj. The products that
            # only rank the candidates run in the working dtype; the final solve is float64.
            proj = evecs.T @ Bt.to(work)
            grid, errs, best = alpha_scan(evals, evecs, proj, X[va], Y[va], decades)
            alpha = grid[best]
            history = {"alpha_grid": grid, "val_mse": errs}
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
        self.history_ = history
        # training MSE without another pass over X: ‖XW − Y‖² = tr WᵀGW − 2 tr WᵀB + ‖Y‖²,
        # and the solve gives GW = B − αW, so it is ‖Y‖² − tr WᵀB − α‖W‖² (float64; the
        # solve's residual moves it by ~1e-12 relative).
        sse = float((Y.double() ** 2).sum() - (W * B).sum() - alpha * (W * W).sum())
        self.train_mse_ = max(sse, 0.0) / Y.numel()

    def _fit_adam(self, X, Y, epochs, lr, eps, val_fraction, seed, progress) -> None:
        self.weight_, self.history_, self.train_mse_ = fit_adam(
            X, Y, epochs=epochs, lr=lr, eps=eps, val_fraction=val_fraction, seed=seed,
            progress=progress)
        self.alpha_ = None

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
        """What the decoder is: format, settings (``params``), fit, shapes, encoder
        signature, weights' SHA-256 (`simulation.decoder_file`)."""
        self._check_fitted()
        return decoder_metadata(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights, settings and fitted attributes to ``path`` (.pt); atomic.

        The file (`simulation.decoder_file`) holds only tensors and JSON, with the SHA-256
        of the weights; `load` recomputes it and refuses a file that changed.
        """
        self._check_fitted()
        return write_decoder_file(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, encoder=None,
             device: str | torch.device | None = None) -> LinearDecoder:
        """Read a decoder written by `save`; with ``encoder``, refuse a mismatch.

        Settings come back as saved and fitted attributes as fitted, neither from the other
        (a format-2 file, which recorded no settings, gets the constructor's defaults). A
        ``val_error`` function comes back as its name (refit needs ``set_params``).
        Raises FileNotFoundError for a missing file and ValueError naming the file for one
        that is not a decoder file, holds Python objects (nothing in it is run), fails its
        checksum ("file corrupted"), holds non-finite weights, or whose metadata does not
        agree with its weights.
        """
        weight, params, fitted = read_decoder_file(path)
        params = dict(params or {})
        ve = params.pop("val_error", "mse")
        named_fn = isinstance(ve, str) and ve.startswith("<callable ")
        try:
            dec = cls(**params, val_error="mse" if named_fn else ve, device=device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: inconsistent decoder metadata (params: {exc})") from exc
        if named_fn:
            dec.val_error = ve
        dec.weight_ = weight.to(dec.device)
        for name, value in fitted.items():
            setattr(dec, name, value)
        dec._check_encoder(encoder)
        return dec
