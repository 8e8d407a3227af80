"""The paper's downstream classifier (docs/paper.md §Classifier) and its evaluation protocol.

The predecessor's ``classifiers.ipynb`` trains a Keras ``Sequential`` of
``Dense(D, linear, use_bias=False)`` and ``Dense(n_classes, softmax, use_bias=False,
kernel_initializer='normal')`` with categorical cross-entropy, Adam and batch size 32 for 100
epochs, and reports the final epoch's *training* accuracy only. `LinearSoftmaxClassifier`
reimplements that model in torch; `classification_protocol` also reports the accuracy on a
held-out test split. The author meant it to be a weak classifier ("bad enough so that if an
image is not salient, accuracy goes to zero"): it is a linear softmax classifier in a
factorised form.

A fitted classifier is saved with `LinearSoftmaxClassifier.save` and read back with
`LinearSoftmaxClassifier.load`: weights and JSON metadata in a checksummed
`simulation.weightfile` file, never a pickled object, so a crafted file runs no code.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from simulation._checks import as_tensor, check_finite, check_positive, default_device
from simulation.weightfile import load_weight_file, save_weight_file

__all__ = ["LinearSoftmaxClassifier", "classification_protocol"]

_PREDICT_CHUNK = 8192  # rows per forward pass at prediction time
FORMAT_VERSION = 1  # of the classifier's metadata in its weight file
_KIND = "LinearSoftmaxClassifier"
_REMAKE = "save the classifier again with LinearSoftmaxClassifier.save(path)"


def _features(X: Any, name: str, device: torch.device) -> torch.Tensor:
    """(B, ...) float features -> finite float32 (B, D) on `device`."""
    if (isinstance(X, torch.Tensor) and not X.is_floating_point()) or (
            isinstance(X, np.ndarray) and X.dtype.kind != "f"):
        raise TypeError(f"{name}: expected floating-point features, got dtype {X.dtype}")
    t = as_tensor(X, name)
    if t.ndim < 2:
        raise ValueError(f"{name}: expected shape (B, ...) with one row per sample, got shape "
                         f"{tuple(t.shape)}")
    if t.shape[0] == 0 or t[0].numel() == 0:
        raise ValueError(f"{name}: expected at least one sample and one feature, got shape "
                         f"{tuple(t.shape)}")
    t = t.reshape(t.shape[0], -1)
    check_finite(t, name)
    return t.to(device)


def _labels(y: Any, name: str, n_samples: int | None, n_classes: int | None) -> torch.Tensor:
    """Integer class labels (B,) as int64 on the CPU, checked against length and range."""
    if isinstance(y, torch.Tensor):
        t = y.detach().cpu()
    else:
        arr = np.asarray(y)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name}: expected integer class labels, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"{name}: expected shape (B,), got shape {tuple(t.shape)}")
    if n_samples is not None and len(t) != n_samples:
        raise ValueError(f"{name}: expected {n_samples} labels (one per sample), got {len(t)}")
    if len(t) == 0:
        raise ValueError(f"{name}: expected at least one label, got none")
    t = t.to(torch.int64)
    lo, hi = int(t.min()), int(t.max())
    if lo < 0:
        raise ValueError(f"{name}: expected labels >= 0, got minimum {lo}")
    if n_classes is not None and hi >= n_classes:
        raise ValueError(f"{name}: expected labels in 0..{n_classes - 1}, got maximum {hi}")
    return t


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with Keras's eps; torch's fused kernel (same update rule, faster) where available."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7, fused=True)
    except (RuntimeError, TypeError, ValueError):  # device or torch version without it
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7)


class LinearSoftmaxClassifier:
    """Linear softmax classifier as in the paper: Dense(D, no bias) then Dense(K, no bias).

    Model: logits = (x W1) W2 with W1 (D, D) initialised Glorot-uniform (the Keras default)
    and W2 (D, K) initialised N(0, 0.05^2) (Keras 'normal'); softmax cross-entropy loss;
    torch's Adam with `lr`, betas (0.9, 0.999) and eps=1e-7 (the Keras default); minibatches
    of `batch_size`, reshuffled every epoch by a generator seeded with `seed`. Inputs are any
    (B, ...) float array, flattened to (B, D). Runs on `device`, default CUDA when present.

    Attributes (after `fit` or `load`):
        n_features_in_: D.
        input_shape_: the per-sample shape of the features given to `fit`.
        n_classes_: K, `n_classes` if given, else max(y) + 1.
        history_: {"loss": [...], "accuracy": [...]}, one entry per epoch: the mean
            cross-entropy and the accuracy over that epoch's minibatches, measured while the
            weights were changing, as Keras reports them (the notebook's number is
            ``history_["accuracy"][-1]``).

    Example:
        >>> import torch
        >>> X = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
        >>> y = (X[:, 0] > 0).long()
        >>> clf = LinearSoftmaxClassifier(epochs=50).fit(X, y)
        >>> clf.score(X, y) > 0.9
        True
    """

    def __init__(
        self,
        epochs: int = 100,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: bool = False,
        n_classes: int | None = None,
    ) -> None:
        self.epochs = check_positive(epochs, "epochs", integer=True)
        self.batch_size = check_positive(batch_size, "batch_size", integer=True)
        self.lr = check_positive(lr, "lr")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed: expected an integer, got {seed!r}")
        self.seed = int(seed)
        self.device = device
        self.progress = bool(progress)
        if n_classes is not None:
            check_positive(n_classes, "n_classes", integer=True)
        self.n_classes = n_classes

    def __repr__(self) -> str:
        return (f"LinearSoftmaxClassifier(epochs={self.epochs}, batch_size={self.batch_size}, "
                f"lr={self.lr}, seed={self.seed}, device={self.device!r}, "
                f"progress={self.progress}, n_classes={self.n_classes})")

    # ------------------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any) -> LinearSoftmaxClassifier:
        """Train from scratch on features X (B, ...) and integer labels y (B,); returns self."""
        device = default_device(self.device)
        x = _features(X, "X", device)
        labels = _labels(y, "y", x.shape[0], self.n_classes)
        n, d = x.shape
        k = self.n_classes if self.n_classes is not None else int(labels.max()) + 1
        labels = labels.to(device)

        gen = torch.Generator().manual_seed(self.seed)
        limit = math.sqrt(6.0 / (d + d))
        w1 = (torch.rand(d, d, generator=gen) * 2.0 - 1.0) * limit
        w2 = torch.randn(d, k, generator=gen) * 0.05
        w1 = w1.to(device).requires_grad_(True)
        w2 = w2.to(device).requires_grad_(True)
        opt = _adam([w1, w2], self.lr)

        history: dict[str, list[float]] = {"loss": [], "accuracy": []}
        bs = self.batch_size
        epochs = tqdm(range(self.epochs), desc="classifier", unit="epoch",
                      disable=not self.progress)
        for _ in epochs:
            order = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                xb, yb = x[idx], labels[idx]
                logits = (xb @ w1) @ w2
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    loss_sum += loss.detach() * len(idx)
                    correct += (logits.argmax(dim=1) == yb).sum()
            history["loss"].append(float(loss_sum) / n)
            history["accuracy"].append(int(correct) / n)
            epochs.set_postfix(loss=f"{history['loss'][-1]:.4f}",
                               acc=f"{history['accuracy'][-1]:.4f}")

        self.w1_ = w1.detach()
        self.w2_ = w2.detach()
        self.n_features_in_ = d
        shape = X.shape if hasattr(X, "shape") else as_tensor(X, "X").shape
        self.input_shape_ = tuple(int(v) for v in shape[1:])
        self.feature_range_ = (float(x.min()), float(x.max()))
        self.n_classes_ = k
        self.history_ = history
        return self

    # -------------------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "w1_"):
            raise RuntimeError("LinearSoftmaxClassifier is not fitted yet: call fit(X, y) first")

    def _logits(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        x = _features(X, "X", self.w1_.device)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X: expected {self.n_features_in_} features per sample (as in "
                             f"fit), got {x.shape[1]}")
        with torch.no_grad():
            w = self.w1_ @ self.w2_  # the composition is one (D, K) linear map
            return torch.cat([c @ w for c in x.split(_PREDICT_CHUNK)])

    def predict_proba(self, X: Any) -> torch.Tensor:
        """Class probabilities, float32 (B, n_classes_), on the CPU."""
        return torch.softmax(self._logits(X), dim=1).cpu()

    def predict(self, X: Any) -> torch.Tensor:
        """Predicted class labels, int64 (B,), on the CPU."""
        return self._logits(X).argmax(dim=1).cpu()

    def score(self, X: Any, y: Any) -> float:
        """Accuracy (fraction of samples whose predicted label equals y)."""
        pred = self.predict(X)
        labels = _labels(y, "y", len(pred), self.n_classes_)
        return float((pred == labels).double().mean())


    # ------------------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted weights and JSON metadata to `path`; returns the path.

        The file (`simulation.weightfile`, read with ``torch.load(weights_only=True)``)
        holds the tensors ``w1`` (D, D) and ``w2`` (D, K) and metadata: format version,
        class count, feature count, input shape, normalisation (none: the features are
        used as given, flattened; the range seen in `fit` is recorded), hyperparameters,
        history and the SHA-256 of the weights. Atomic (temporary file, rename).
        """
        self._check_fitted()
        meta = {"format_version": FORMAT_VERSION, "n_classes": int(self.n_classes_),
                "n_features": int(self.n_features_in_),
                "input_shape": [int(v) for v in self.input_shape_],
                "normalisation": {"kind": "none",
                                  "train_feature_range": list(self.feature_range_)},
                "hyperparameters": {"epochs": self.epochs, "batch_size": self.batch_size,
                                    "lr": self.lr, "seed": self.seed},
                "history": self.history_}
        return save_weight_file(path, _KIND, {"w1": self.w1_, "w2": self.w2_}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, *,
             device: str | torch.device | None = None) -> LinearSoftmaxClassifier:
        """Read a classifier written by `save`, ready to `predict` and `score`.

        Raises FileNotFoundError for a missing file and ValueError naming the file for one
        that is not a classifier file (a pickled object included: it is refused, nothing
        in it runs), fails its checksum ("file corrupted"), holds non-finite weights, or
        whose metadata does not agree with its weights.
        """
        path = Path(path)
        tensors, meta = load_weight_file(path, _KIND, remake=_REMAKE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported classifier format "
                             f"{meta.get('format_version')!r}; {_REMAKE}")
        try:
            k, d = _count(meta["n_classes"]), _count(meta["n_features"])
            shape = tuple(_count(v) for v in meta["input_shape"])
            hyper = meta["hyperparameters"]
            lo, hi = (float(v) for v in meta["normalisation"]["train_feature_range"])
            clf = cls(epochs=hyper["epochs"], batch_size=hyper["batch_size"], lr=hyper["lr"],
                      seed=hyper["seed"], device=device, n_classes=k)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: inconsistent classifier metadata ({type(exc).__name__}"
                             f": {exc})") from exc
        w1, w2 = tensors.get("w1"), tensors.get("w2")
        got = {n: None if t is None else (str(t.dtype), tuple(t.shape))
               for n, t in (("w1", w1), ("w2", w2))}
        if (math.prod(shape) != d or got["w1"] != ("torch.float32", (d, d))
                or got["w2"] != ("torch.float32", (d, k))):
            raise ValueError(f"{path}: inconsistent classifier file: input shape {shape}, "
                             f"{d} features and {k} classes need float32 w1 {(d, d)} and w2 "
                             f"{(d, k)}, the file holds {got}")
        dev = default_device(device)
        clf.w1_, clf.w2_ = w1.to(dev), w2.to(dev)
        clf.n_features_in_, clf.n_classes_, clf.input_shape_ = d, k, shape
        clf.feature_range_ = (lo, hi)
        history = meta.get("history")
        clf.history_ = history if isinstance(history, dict) else {}
        return clf


def _count(value: Any) -> int:
    """A positive JSON integer; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def classification_protocol(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    **classifier_kwargs: Any,
) -> dict[str, Any]:
    """Fit `LinearSoftmaxClassifier` on a training split and report train AND test accuracy.

    The predecessor notebook reported only the final-epoch training accuracy (Keras's
    ``history['accuracy'][-1]``, a running mean over the last epoch); here the fitted model
    is also scored on held-out test data, which is the number to compare between features.
    The baselines of docs/paper.md §Classifier are the same call on other features:

    Example:
        >>> from simulation.datasets import load_dataset
        >>> xtr, ytr = load_dataset("digits", "train")
        >>> xte, yte = load_dataset("digits", "test")
        >>> raw = classification_protocol(xtr, ytr, xte, yte, epochs=5)  # raw-image baseline
        >>> sorted(raw)  # doctest: +NORMALIZE_WHITESPACE
        ['epochs', 'last_epoch_accuracy', 'n_test', 'n_train', 'test_accuracy',
         'train_accuracy']
        >>> # raw-sensor baseline: classification_protocol(encode(xtr), ytr, encode(xte), yte)
        >>> # reconstructions:     classification_protocol(decode(encode(xtr)), ytr, ...)

    Args:
        train_features, test_features: (B, ...) float arrays with the same per-sample size.
        train_labels, test_labels: integer labels (B,).
        **classifier_kwargs: passed to `LinearSoftmaxClassifier` (epochs, batch_size, lr,
            seed, device, progress, n_classes).

    Returns:
        {"train_accuracy": accuracy of the final model on the whole training split,
         "test_accuracy": accuracy on the test split,
         "n_train", "n_test": sample counts, "epochs": epochs trained,
         "last_epoch_accuracy": the notebook's number, ``history_["accuracy"][-1]``}.
    """
    clf = LinearSoftmaxClassifier(**classifier_kwargs)
    cpu = torch.device("cpu")
    x_train = _features(train_features, "train_features", cpu)
    x_test = _features(test_features, "test_features", cpu)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"test_features: expected {x_train.shape[1]} features per sample (as "
                         f"train_features), got {x_test.shape[1]}")
    y_train = _labels(train_labels, "train_labels", x_train.shape[0], clf.n_classes)
    y_test = _labels(test_labels, "test_labels", x_test.shape[0], clf.n_classes)
    if clf.n_classes is None:
        # size the output layer for both splits, so that a test label never seen in training
        # counts as an error instead of being refused
        clf.n_classes = int(max(y_train.max(), y_test.max())) + 1
    clf.fit(x_train, y_train)
    return {
        "train_accuracy": clf.score(x_train, y_train),
        "test_accuracy": clf.score(x_test, y_test),
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "epochs": clf.epochs,
        "last_epoch_accuracy": clf.history_["accuracy"][-1],
    }
