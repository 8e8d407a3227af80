"""Tests for simulation.classify: the paper's linear softmax classifier and its protocol."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simulation.classify import LinearSoftmaxClassifier, classification_protocol


def _blobs(n: int, d: int, k: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k Gaussian clusters in d dimensions; far apart (small spread) = linearly separable."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=torch.Generator().manual_seed(1234)) * 3.0
    y = torch.randint(0, k, (n,), generator=g)
    x = centres[y] + spread * torch.randn(n, d, generator=g)
    return x, y


def test_separable_problem_high_accuracy():
    x, y = _blobs(400, 10, 4, spread=0.5, seed=0)
    xt, yt = _blobs(200, 10, 4, spread=0.5, seed=1)
    clf = LinearSoftmaxClassifier(epochs=15, device="cpu").fit(x, y)
    assert clf.score(x, y) > 0.95 and clf.score(xt, yt) > 0.95
    assert clf.n_features_in_ == 10 and clf.n_classes_ == 4
    assert len(clf.history_["loss"]) == 15 and len(clf.history_["accuracy"]) == 15
    assert clf.history_["loss"][-1] < clf.history_["loss"][0]

    proba = clf.predict_proba(xt)
    assert proba.shape == (200, 4) and proba.dtype == torch.float32
    assert torch.allclose(proba.sum(dim=1), torch.ones(200), atol=1e-5)
    pred = clf.predict(xt)
    assert pred.dtype == torch.int64 and torch.equal(pred, proba.argmax(dim=1))


def test_images_and_numpy_inputs_are_flattened():
    x, y = _blobs(120, 12, 3, spread=0.3, seed=2)
    images = x.reshape(120, 3, 2, 2).numpy()  # (B, C, H, W) numpy
    clf = LinearSoftmaxClassifier(epochs=5, device="cpu").fit(images, y.numpy())
    assert clf.n_features_in_ == 12
    assert clf.score(images, y.numpy()) == clf.score(x, y)


def test_protocol_reports_train_and_test_accuracy():
    # more features than training samples and random labels: the classifier memorises the
    # training split, and the held-out accuracy stays near chance
    g = torch.Generator().manual_seed(0)
    xtr, ytr = torch.randn(60, 100, generator=g), torch.randint(0, 3, (60,), generator=g)
    xte, yte = torch.randn(300, 100, generator=g), torch.randint(0, 3, (300,), generator=g)
    result = classification_protocol(xtr, ytr, xte, yte, epochs=40, device="cpu")
    assert {"train_accuracy", "test_accuracy", "n_train", "n_test", "epochs"} <= set(result)
    assert result["n_train"] == 60 and result["n_test"] == 300 and result["epochs"] == 40
    assert result["train_accuracy"] > 0.9
    assert result["test_accuracy"] < 0.6
    assert result["train_accuracy"] != result["test_accuracy"]
    # the notebook's number is the memorised training split's, far above the held-out one
    assert result["last_epoch_accuracy"] > 0.9 > result["test_accuracy"] + 0.2


def test_protocol_test_label_unseen_in_training():
    x, y = _blobs(90, 6, 3, spread=0.3, seed=3)
    keep = y < 2
    result = classification_protocol(x[keep], y[keep], x, y, epochs=3, device="cpu")
    assert result["test_accuracy"] < 1.0  # class 2 can never be predicted right


def test_seeded_runs_identical():
    x, y = _blobs(150, 8, 3, spread=1.5, seed=4)
    a = LinearSoftmaxClassifier(epochs=4, seed=7, device="cpu").fit(x, y)
    b = LinearSoftmaxClassifier(epochs=4, seed=7, device="cpu").fit(x, y)
    c = LinearSoftmaxClassifier(epochs=4, seed=8, device="cpu").fit(x, y)
    assert torch.equal(a.w1_, b.w1_) and torch.equal(a.w2_, b.w2_)
    assert a.history_ == b.history_
    assert torch.equal(a.predict_proba(x), b.predict_proba(x))
    assert not torch.equal(a.w2_, c.w2_)


def test_progress_bar_runs(capsys):
    x, y = _blobs(40, 4, 2, spread=0.3, seed=5)
    LinearSoftmaxClassifier(epochs=2, progress=True, device="cpu").fit(x, y)
    assert "classifier" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_labels():
    x, y = _blobs(200, 10, 3, spread=0.3, seed=6)
    clf = LinearSoftmaxClassifier(epochs=5).fit(x, y)
    assert clf.w1_.device.type == "cuda"
    assert clf.predict(x).device.type == "cpu" and clf.score(x, y) > 0.95


@pytest.mark.realdata
def test_mnist_subset_beats_chance():
    value = os.environ.get("HIL_DATA_DIR")
    if not value:
        pytest.skip("real-data test: set HIL_DATA_DIR to the shared data folder (../shared/data)")
    root = Path(value)
    if not (root / "mnist_train.npz").is_file() or not (root / "mnist_test.npz").is_file():
        pytest.skip(f"real-data test: MNIST npz files not in {root}")
    from simulation.datasets import load_dataset

    xtr, ytr = load_dataset("mnist", "train", data_dir=root, n=2000)
    xte, yte = load_dataset("mnist", "test", data_dir=root, n=500)
    result = classification_protocol(xtr, ytr, xte, yte, epochs=5, device="cpu")
    assert result["test_accuracy"] > 0.8
    assert result["train_accuracy"] > result["test_accuracy"] - 0.05


# ---------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def fitted() -> LinearSoftmaxClassifier:
    x, y = _blobs(30, 5, 3, spread=0.3, seed=9)
    return LinearSoftmaxClassifier(epochs=1, device="cpu").fit(x, y)


@pytest.mark.parametrize("X, y, error, words", [
    (torch.tensor([[0.0, float("nan")]] * 4), torch.zeros(4, dtype=torch.long), ValueError,
     "NaN"),
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), ValueError, "(B, ...)"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), ValueError, "at least one"),
    (torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.long), TypeError,
     "floating-point"),
    ([[0.0, 1.0]] * 4, torch.zeros(4, dtype=torch.long), TypeError, "X"),
    (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), ValueError, "expected 4 labels"),
    (torch.zeros(4, 3), torch.tensor([0, 1, -1, 0]), ValueError, ">= 0"),
    (torch.zeros(4, 3), torch.zeros(4), TypeError, "integer class labels"),
    (torch.zeros(4, 3), np.zeros(4), TypeError, "integer class labels"),
    (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), ValueError, "(B,)"),
])
def test_fit_rejects_bad_input(X, y, error, words):
    with pytest.raises(error) as exc:
        LinearSoftmaxClassifier(epochs=1, device="cpu").fit(X, y)
    assert words in str(exc.value)


def test_label_range_with_n_classes():
    with pytest.raises(ValueError, match="0..1"):
        LinearSoftmaxClassifier(epochs=1, n_classes=2, device="cpu").fit(
            torch.zeros(3, 2), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("kwargs", [
    {"epochs": 0}, {"epochs": 1.5}, {"batch_size": 0}, {"lr": -1e-3}, {"lr": float("nan")},
    {"seed": 0.5}, {"n_classes": 0},
])
def test_constructor_rejects_bad_arguments(kwargs):
    with pytest.raises((TypeError, ValueError)) as exc:
        LinearSoftmaxClassifier(**kwargs)
    assert next(iter(kwargs)) in str(exc.value)


def test_predict_checks(fitted):
    with pytest.raises(RuntimeError, match="fit"):
        LinearSoftmaxClassifier().predict(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="expected 5 features"):
        fitted.predict(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="0..2"):
        fitted.score(torch.zeros(2, 5), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="expected 2 labels"):
        fitted.score(torch.zeros(2, 5), torch.tensor([0, 1, 2]))


def test_protocol_checks_shapes():
    x, y = _blobs(20, 4, 2, spread=0.3, seed=10)
    with pytest.raises(ValueError, match="test_features"):
        classification_protocol(x, y, torch.zeros(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="train_labels"):
        classification_protocol(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="test_features"):
        classification_protocol(x, y, x[:, 0], y)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 20), m=st.integers(0, 20))
def test_length_mismatch_property(n, m):
    if n == m:
        return
    with pytest.raises(ValueError, match="labels"):
        LinearSoftmaxClassifier(epochs=1, device="cpu").fit(
            torch.zeros(n, 3), torch.zeros(m, dtype=torch.long))
