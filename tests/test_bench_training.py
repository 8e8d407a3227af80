"""Hardware-in-the-loop training: the straight-through primitive and its use on a bench."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from session_helpers import bench_toml, small_bench

from calibration.imaging import BenchImager, ImagedBatch
from calibration.imaging_config import ImagingConfig
from calibration.truth import truth_model_to_camera
from hil.bench_training import (
    BenchEncoder,
    fine_tune_on_bench,
    physics_aware,
    ridge_toward,
    twin_patterns,
)


def test_forward_is_the_bench_backward_is_the_twin():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 8, 8, generator=g) * 6
    imgs = torch.rand(3, 8, 8, generator=g)
    offset = torch.rand(3, 2, 8, 8, generator=g)

    def twin(m, x):
        return twin_patterns(m, x)

    def bench(m, x):  # "reality": the twin plus something the twin does not know
        return twin_patterns(m, x) * 1.3 + offset

    m1 = masks.clone().requires_grad_()
    out = physics_aware(bench, twin)(m1, imgs)
    np.testing.assert_allclose(out.detach(), bench(masks, imgs), rtol=1e-6)
    up = torch.rand(out.shape, generator=g)
    (out * up).sum().backward()
    m2 = masks.clone().requires_grad_()
    (twin(m2, imgs) * up).sum().backward()
    np.testing.assert_allclose(m1.grad, m2.grad, rtol=1e-5, atol=1e-6)
    assert imgs.grad is None


class _FakeImager:
    """Twin optics with a pattern distortion the twin lacks (a stand-in bench)."""

    size = 8

    def __init__(self):
        self.masks = None

    def set_encoder_masks(self, m):
        self.masks = torch.as_tensor(m).clone()

    def capture(self, images):
        p = twin_patterns(self.masks, torch.as_tensor(images)) ** 1.2
        return ImagedBatch(p.numpy().astype(np.float32), np.zeros((len(p), 2, 1, 1)), [])


def test_bench_encoder_gives_mask_gradients_and_learns():
    torch.manual_seed(0)
    layer = BenchEncoder(_FakeImager(), torch.rand(2, 8, 8) * 6, learnable=True)
    x = torch.rand(4, 8, 8)
    p = layer(x)
    assert p.shape == (4, 2, 8, 8) and p.min() >= -1 and p.max() <= 1
    p.sum().backward()
    assert layer.masks_rad.grad is not None and torch.isfinite(layer.masks_rad.grad).all()
    layer.masks_rad.grad = None
    w = torch.zeros(128, 64)
    before = layer.masks_rad.detach().clone()
    res = fine_tune_on_bench(layer, w, steps=20, batch=16, lr=3e-3, mask_lr=1e-2,
                             progress=False)
    assert not torch.equal(res["masks_rad"], before)
    assert np.mean(res["loss"][-5:]) < np.mean(res["loss"][:5])


def test_ridge_toward_prior():
    g = torch.Generator().manual_seed(1)
    X, W = torch.randn(40, 30, generator=g), torch.randn(30, 5, generator=g)
    w, alpha, _ = ridge_toward(X, X @ W, torch.zeros(30, 5), alpha=1e-6)
    np.testing.assert_allclose(X @ w, X @ W, atol=1e-3)  # tiny alpha: interpolates
    w_prior, _, _ = ridge_toward(X, X @ W, W.clone(), alpha=1e3)
    np.testing.assert_allclose(w_prior, W, atol=1e-4)  # prior already right: kept


def test_ridge_toward_searches_the_decoders_grid():
    """The bench's α search uses the decoders' one grid rule (relative to the mean
    eigenvalue of XᵀX), not a list of absolute values: scaling the inputs by 100 scales
    every candidate by 10⁴ and picks the same point of the grid. Before, the grid was
    (0.3 ... 100) whatever the inputs' scale, and the choice was not returned."""
    from simulation.ridge_linalg import PRIOR_DECADES, alpha_grid

    g = torch.Generator().manual_seed(2)
    X, W = torch.randn(60, 200, generator=g), torch.randn(200, 4, generator=g)
    Y = X @ W + 0.5 * torch.randn(60, 4, generator=g)
    prior = W + 0.3 * torch.randn(W.shape, generator=g)
    w, a, hist = ridge_toward(X, Y, prior, seed=3)
    scale = float((X.double()[hist_rows(60, 0.2, 3)] ** 2).sum()) / 200
    np.testing.assert_allclose(hist["alpha_grid"], alpha_grid(scale, PRIOR_DECADES), rtol=1e-9)
    assert a == hist["alpha_grid"][int(np.argmin(hist["val_mse"]))]
    w100, a100, hist100 = ridge_toward(100 * X, Y, prior / 100, seed=3)
    assert a100 == pytest.approx(a * 1e4, rel=1e-6)
    assert int(np.argmin(hist100["val_mse"])) == int(np.argmin(hist["val_mse"]))
    # too few captures for a split (a first bench step of < 5 images): the grid's unit
    w3, a3, hist3 = ridge_toward(X[:3], Y[:3], prior)
    assert hist3 == {"val": "none"} and a3 == pytest.approx(float((X[:3] ** 2).sum()) / 200)


def hist_rows(n: int, val_fraction: float, seed: int) -> torch.Tensor:
    """The training rows of ``ridge_toward``'s seeded split."""
    n_val = round(val_fraction * n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[n_val:]


def test_bench_fine_tuning_beats_twin_only_training():
    """A flawed simulated bench (hidden LUT, aberrations, source, gain, zero order, noise):
    the twin-only decoder through the true geometry vs the same decoder fine-tuned on
    96 bench captures of synthetic speckle (no test image used for training)."""
    from devices.bench import open_bench
    from simulation import DualVortexEncoder, LinearDecoder, load_dataset, speckle, ssim

    enc = DualVortexEncoder()
    train = speckle(800, 15, seed=0)
    dec = LinearDecoder(alpha=1.0, device="cpu").fit(enc(train), train, encoder=enc)
    test, _ = load_dataset("digits", "test", n=10)
    cfg = small_bench(noise=True, zero_order_fraction=0.02)
    cfg["flaws"] = True
    with open_bench(cfg) as bench:
        geo = truth_model_to_camera(bench, 32, 8)
        imager = BenchImager(bench, config=ImagingConfig(geometry=geo))
        captured = torch.from_numpy(imager.capture(test).patterns)
        twin_only = float(ssim(test, dec.predict(captured)).mean())
        layer = BenchEncoder(imager, enc.masks_rad, learnable=False)
        res = fine_tune_on_bench(layer, dec.weight_, steps=3, batch=32, progress=False)
    dec.weight_ = res["weight"]
    tuned = float(ssim(test, dec.predict(captured)).mean())
    assert res["captures"] == 96
    assert tuned > twin_only + 0.05, (twin_only, tuned)


def test_train_on_bench_cli(tmp_path):
    from hil.cli import main

    bench = bench_toml(tmp_path / "bench.toml")
    out = tmp_path / "dec.pt"
    rc = main(["bench-train", str(bench), "--count", "300", "--alpha", "1.0",
               "--iterations", "1", "--out", str(out)])
    assert rc == 0 and out.is_file()
    hist = json.loads(out.with_suffix(".bench.json").read_text())
    assert hist["captures"] == 32 and len(hist["loss"]) == 1
    from simulation import LinearDecoder

    dec = LinearDecoder.load(out)
    assert dec.method_ == "ridge+bench"
    # the α chosen on the bench is the saved decoder's, with its search; the start's fit
    # (the twin ridge at --alpha 1.0) is kept under "start"; the setting alpha is untouched
    assert dec.alpha_ == hist["alpha"] and dec.alpha_ != 1.0
    assert dec.alpha_ == dec.history_["alpha_grid"][int(np.argmin(dec.history_["val_mse"]))]
    assert dec.history_["start"]["alpha"] == 1.0 and dec.alpha == 1.0
