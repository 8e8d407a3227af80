"""Shared pieces of the study's cells: seeds, test sets, decoder fits, evaluation.

Every cell calls these with explicit seeds, so a cell gives the same numbers
wherever it runs.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import torch

from simulation import (
    DualVortexEncoder,
    LinearDecoder,
    classification_protocol,
    encode_batched,
    load_dataset,
    mse,
    speckle,
    spectral_statistics,
)
from simulation.datasets import available_datasets

__all__ = ["speckle_seed", "training_speckle", "test_images", "classification_split",
           "fit_ridge", "evaluate", "summary", "set_statistics", "present_sets",
           "classify_features", "ssim_batched", "encoded_split"]


def speckle_seed(gamma: float, seed: int) -> int:
    """The generator seed of the speckle set (γ, seed): distinct per γ and per seed."""
    return 1_000_003 * int(seed) + int(round(float(gamma) * 1000)) + 17


def training_speckle(gamma: float, n: int, seed: int) -> torch.Tensor:
    return speckle(n, gamma, seed=speckle_seed(gamma, seed))


def _split_name(set_name: str) -> tuple[str, str]:
    """'cifar10-grey' -> ('cifar10', 'grey'); 'mnist' -> ('mnist', 'grey')."""
    for suffix in ("-grey", "-colour"):
        if set_name.endswith(suffix):
            return set_name[: -len(suffix)], ("grey" if suffix == "-grey" else "channels")
    return set_name, "grey"


def present_sets(names, data_dir: str | None) -> tuple[list[str], list[str]]:
    """(present, missing): the sets whose test split can be found."""
    found = available_datasets(data_dir)
    present = [s for s in names if "test" in found.get(_split_name(s)[0], [])]
    return present, [s for s in names if s not in present]


@functools.lru_cache(maxsize=16)
def _load(name: str, split: str, colour: str, data_dir: str | None):
    return load_dataset(name, split, colour=colour, data_dir=data_dir)


def test_images(set_name: str, n: int, seed: int, data_dir: str | None) -> torch.Tensor:
    """``n`` test images of a set, a random subset drawn with ``seed``."""
    name, colour = _split_name(set_name)
    images, _ = _load(name, "test", colour, data_dir)
    n = min(n, len(images))
    idx = np.random.default_rng(10_000 + seed).permutation(len(images))[:n]
    return images[torch.from_numpy(idx)]


def classification_split(set_name: str, n_train: int, n_test: int, seed: int,
                         data_dir: str | None) -> dict:
    """Train and held-out images and labels for the classifier.

    The train split when its files exist; otherwise the test split is cut into two
    disjoint parts (``source`` says which), the held-out part never seen in training.
    """
    name, colour = _split_name(set_name)
    rng = np.random.default_rng(20_000 + seed)
    test_x, test_y = _load(name, "test", colour, data_dir)
    try:
        train_x, train_y = _load(name, "train", colour, data_dir)
        source = "train split / test split"
    except FileNotFoundError:
        train_x = train_y = None
        source = "test split divided into disjoint train / held-out parts"
    if train_x is None:
        order = torch.from_numpy(rng.permutation(len(test_x)))
        n_tr = min(n_train, len(order) // 2)
        n_te = min(n_test, len(order) - n_tr)
        tr, te = order[:n_tr], order[n_tr:n_tr + n_te]
        return {"train_x": test_x[tr], "train_y": test_y[tr], "test_x": test_x[te],
                "test_y": test_y[te], "source": source}
    tr = torch.from_numpy(rng.permutation(len(train_x))[: min(n_train, len(train_x))])
    te = torch.from_numpy(rng.permutation(len(test_x))[: min(n_test, len(test_x))])
    return {"train_x": train_x[tr], "train_y": train_y[tr], "test_x": test_x[te],
            "test_y": test_y[te], "source": source}


def fit_ridge(images: torch.Tensor, encoder=None, seed: int = 0,
              alpha: float | None = None,
              patterns: torch.Tensor | None = None) -> tuple[LinearDecoder, object]:
    """The closed-form ridge decoder for a training set; α chosen on a held-out 10 %
    unless given. ``patterns``: the images' sensor patterns through ``encoder`` when
    the caller has them already."""
    enc = encoder if encoder is not None else DualVortexEncoder()
    if patterns is None:
        patterns = encode_batched(enc, images)
    dec = LinearDecoder(method="ridge", alpha=alpha, seed=seed, progress=False,
                        device="cpu").fit(patterns, images, encoder=enc)
    return dec, enc


def summary(values, *, skip_missing: bool = False) -> dict:
    """Mean, (population) std, count and the values in their order (seed order: the
    verdicts pair them). With ``skip_missing``, ``None``/NaN entries are left out of the
    mean and std (still counted in ``n`` and kept in ``values``); otherwise they make the
    mean NaN, so that a missing number is never averaged away silently."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    if skip_missing:
        if a.size == 0 or np.isnan(a).all():
            mean = std = float("nan")
        else:
            mean, std = float(np.nanmean(a)), float(np.nanstd(a))
    else:
        mean, std = float(a.mean()), float(a.std())
    return {"mean": mean, "std": std, "n": int(a.size), "values": a.tolist()}


#: scikit-image's SSIM constants (`simulation.ssim`: 7×7 uniform window, sample
#: covariance, data_range 1, K1 = 0.01, K2 = 0.03)
_SSIM_WIN, _SSIM_C1, _SSIM_C2 = 7, 0.01 ** 2, 0.03 ** 2


def _box_valid(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over each k×k window lying inside the image (last two axes), float64."""
    h, w = x.shape[-2:]
    r = x[..., :, 0:w - k + 1].copy()
    for j in range(1, k):
        r += x[..., :, j:w - k + 1 + j]
    c = r[..., 0:h - k + 1, :].copy()
    for i in range(1, k):
        c += r[..., i:h - k + 1 + i, :]
    return c / (k * k)


def ssim_batched(reference: torch.Tensor, reconstruction: torch.Tensor, *,
                 chunk: int = 512) -> np.ndarray:
    """`simulation.ssim` (scikit-image's ``structural_similarity``, the reconstruction
    clipped to [0, 1]) for a whole batch at once, in float64 like it.

    scikit-image averages the SSIM map over the pixels whose 7×7 window lies inside
    the image (it crops the 3-pixel border, where its reflected padding enters), so
    the five local means are needed only there: a 'valid' 7×7 box mean over the
    batch (`_box_valid`) instead of a Python loop of ``uniform_filter`` calls. Only
    the summation order differs (measured: ≤ 1e-15 from `simulation.ssim`). Grey
    (n, H, W) or colour (n, 3, H, W: the channels' mean), shape (n,)."""
    ref = reference.detach().cpu().double().numpy()
    rec = reconstruction.detach().cpu().clamp(0.0, 1.0).double().numpy()
    if ref.shape != rec.shape or ref.ndim not in (3, 4):
        raise ValueError(f"reconstruction: expected the reference's shape {ref.shape} "
                         f"(n, H, W) or (n, 3, H, W), got {rec.shape}")
    lead = ref.shape[:-2]
    a = ref.reshape(-1, *ref.shape[-2:])
    b = rec.reshape(-1, *rec.shape[-2:])
    out = np.empty(len(a))
    cov_norm = _SSIM_WIN ** 2 / (_SSIM_WIN ** 2 - 1)
    for i in range(0, len(a), chunk):
        x, y = a[i:i + chunk], b[i:i + chunk]
        ux, uy = _box_valid(x, _SSIM_WIN), _box_valid(y, _SSIM_WIN)
        uxx, uyy = _box_valid(x * x, _SSIM_WIN), _box_valid(y * y, _SSIM_WIN)
        uxy = _box_valid(x * y, _SSIM_WIN)
        vx, vy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy)
        vxy = cov_norm * (uxy - ux * uy)
        s = (((2 * ux * uy + _SSIM_C1) * (2 * vxy + _SSIM_C2))
             / ((ux ** 2 + uy ** 2 + _SSIM_C1) * (vx + vy + _SSIM_C2)))
        out[i:i + chunk] = s.mean(axis=(1, 2))
    out = out.reshape(lead)
    return out.mean(axis=1) if out.ndim == 2 else out


def reconstruct_set(images: torch.Tensor, encoder, decoder: LinearDecoder) -> torch.Tensor:
    return decoder.predict(encode_batched(encoder, images), encoder=encoder)


#: encoded test sets kept per worker process: every decoder of a study is scored on
#: the same test images through the same encoder, so each is encoded once per process
_ENCODED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_ENCODED_MAX = 8


def encoded_test_set(set_name: str, n: int, seed: int, data_dir: str | None,
                     encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """``test_images(set_name, n, seed, data_dir)`` and their sensor patterns through
    ``encoder``, cached per process (keyed by the encoder's signature)."""
    sig = json.dumps(encoder.signature(), sort_keys=True, default=str)
    key = (set_name, int(n), int(seed), data_dir, sig)
    # a smaller draw of the same (set, seed) is the head of a larger one (`test_images`
    # takes the first n of one permutation): slice a cached larger set instead
    for k, (images, patterns) in _ENCODED.items():
        if k[0] == key[0] and k[2:] == key[2:] and k[1] > key[1]:
            m = min(int(n), len(images))
            return images[:m], patterns[:m]
    if key not in _ENCODED:
        if len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.pop(next(iter(_ENCODED)))
        images = test_images(set_name, n, seed, data_dir)
        _ENCODED[key] = (images, encode_batched(encoder, images))
    return _ENCODED[key]


#: encoded classification splits kept per worker process (`encoded_split`): every
#: decoder cell of a seed classifies the same split, encoded through the same encoder
_SPLITS: dict[tuple, dict] = {}
_SPLITS_MAX = 4


def encoded_split(set_name: str, n_train: int, n_test: int, seed: int,
                  data_dir: str | None, encoder) -> dict:
    """`classification_split` with the sensor patterns of its images through
    ``encoder`` added (``train_p``, ``test_p``), cached per process (keyed by the
    encoder's signature). Callers must not modify the tensors."""
    sig = json.dumps(encoder.signature(), sort_keys=True, default=str)
    key = (set_name, int(n_train), int(n_test), int(seed), data_dir, sig)
    if key not in _SPLITS:
        if len(_SPLITS) >= _SPLITS_MAX:
            _SPLITS.pop(next(iter(_SPLITS)))
        split = dict(classification_split(set_name, n_train, n_test, seed, data_dir))
        split["train_p"] = encode_batched(encoder, split["train_x"])
        split["test_p"] = encode_batched(encoder, split["test_x"])
        _SPLITS[key] = split
    return _SPLITS[key]


def evaluate_set(set_name: str, n: int, seed: int, data_dir: str | None, encoder,
                 decoder: LinearDecoder) -> dict:
    """`evaluate` on a test set, its encoding cached (`encoded_test_set`)."""
    images, patterns = encoded_test_set(set_name, n, seed, data_dir, encoder)
    rec = decoder.predict(patterns, encoder=encoder)
    return {"ssim": summary(ssim_batched(images, rec)),
            "mse": summary(mse(images, rec.clamp(0, 1)))}


def evaluate(images: torch.Tensor, encoder, decoder: LinearDecoder) -> dict:
    """SSIM and MSE of the reconstructions of a test set: mean and std over images."""
    rec = reconstruct_set(images, encoder, decoder)
    return {"ssim": summary(ssim_batched(images, rec)),
            "mse": summary(mse(images, rec.clamp(0, 1)))}


def set_statistics(images: torch.Tensor) -> dict:
    """H_SVD (field and power normalisation, log₂) and Ω_k (magnitude and power weights).

    Colour sets are measured channel by channel (each channel is one 32×32 image).
    """
    grey = images.reshape(-1, *images.shape[-2:]) if images.ndim == 4 else images
    return {k: float(v.mean()) for k, v in spectral_statistics(grey).items()}


#: classifier trainers: "paper" the paper's factorised D×D·D×K softmax, minibatch Adam
#: (`simulation.LinearSoftmaxClassifier`); "dk" a single D×K softmax layer (the same
#: function class: a product of two linear maps is one linear map of rank ≤ K) fitted
#: full batch by L-BFGS, orders of magnitude cheaper at 60,000 training images.
CLF_METHODS = ("paper", "dk")


@torch.no_grad()
def softmax_loss_grad(X: torch.Tensor, y: torch.Tensor,
                      W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of the softmax of ``X @ W`` and its gradient in W, in closed form:
    (softmax − one-hot)ᵀ·X / n, computed as a K×D product. Autograd computes Xᵀ·G, which
    copied the whole transposed (n × D) training matrix at every evaluation (measured on
    60,000 × 2048 sensor patterns: 2.3 s of a 2.6 s L-BFGS step).

    The logits are formed transposed, Wᵀ·Xᵀ (K × n): with K = 10 columns, MKL's
    single-thread X·W ran at a third of the speed of the transposed product (measured on
    60,000 × 1024: 90 against 52 ms; the whole evaluation 151 against 95 ms)."""
    n = len(X)
    lsm = torch.log_softmax(W.t().contiguous() @ X.t(), dim=0)
    idx = torch.arange(n, device=X.device)
    loss = -lsm[y, idx].mean()
    p = lsm.exp_()
    p[y, idx] -= 1.0
    return loss, (p @ X).t().contiguous().div_(n)


def softmax_dk(train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y, *,
               n_classes: int, iterations: int = 200, seed: int = 0) -> dict:
    """A D×K linear softmax (no bias, as the paper's) fitted by full-batch L-BFGS.

    Returns train and held-out accuracy (after training; ``last_epoch_accuracy`` is
    the train accuracy too, as there are no minibatch epochs), the counts and the
    iterations run.
    """
    Xtr = train_x.reshape(len(train_x), -1).float()
    Xte = test_x.reshape(len(test_x), -1).float()
    ytr = torch.as_tensor(train_y).long()
    yte = torch.as_tensor(test_y).long()
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(Xtr.shape[1], n_classes, generator=g) * 0.05
    opt = torch.optim.LBFGS([W], lr=1.0, max_iter=iterations, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        loss, W.grad = softmax_loss_grad(Xtr, ytr, W)
        return loss

    opt.step(closure)
    with torch.no_grad():
        tr_acc = float(((Xtr @ W).argmax(1) == ytr).float().mean())
        te_acc = float(((Xte @ W).argmax(1) == yte).float().mean())
    return {"train_accuracy": tr_acc, "test_accuracy": te_acc,
            "last_epoch_accuracy": tr_acc, "n_train": len(Xtr), "n_test": len(Xte),
            "epochs": int(opt.state[opt._params[0]]["n_iter"]), "method": "dk"}


def classify_features(train_features: torch.Tensor, train_y, test_features: torch.Tensor,
                      test_y, *, epochs: int, seed: int, n_classes: int | None = None,
                      method: str = "paper") -> dict:
    """The linear softmax classifier; train and held-out accuracy.

    ``method`` "paper": the paper's factorised classifier, ``epochs`` of minibatch
    Adam; "dk": `softmax_dk` (``epochs`` is then its L-BFGS iteration cap).
    """
    if method not in CLF_METHODS:
        raise ValueError(f"method: expected one of {CLF_METHODS}, got {method!r}")
    if method == "dk":
        k = n_classes if n_classes is not None else int(torch.as_tensor(train_y).max()) + 1
        return softmax_dk(train_features, train_y, test_features, test_y, n_classes=k,
                          iterations=epochs, seed=seed)
    out = classification_protocol(train_features, train_y, test_features, test_y,
                                  epochs=epochs, seed=seed, device="cpu",
                                  n_classes=n_classes)
    return {k: out[k] for k in ("train_accuracy", "test_accuracy", "last_epoch_accuracy",
                                "n_train", "n_test", "epochs")}


def n_classes_of(set_name: str) -> int:
    return 100 if set_name.startswith("cifar100") else 10


def data_dir_or_env(data_dir: str | None) -> str | None:
    return data_dir if data_dir is not None else os.environ.get("HIL_DATA_DIR")
