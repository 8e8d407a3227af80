"""The linear decoder: closed form, the paper's Adam protocol, save/load, refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulation import (
    DualVortexEncoder,
    EncoderMismatchError,
    LinearDecoder,
    encode_batched,
    load_dataset,
    reconstruct,
    speckle,
    ssim,
)
from simulation.sensor import normalise_for_decoder


@pytest.fixture(scope="module")
def small_set(encoder):
    imgs = speckle(3000, 4.0, seed=2)
    return imgs, encode_batched(encoder, imgs)


@pytest.mark.slow
def test_ridge_with_zero_alpha_is_least_squares(small_set, encoder):
    imgs, pats = small_set
    dec = LinearDecoder(alpha=0.0).fit(pats, imgs, encoder=encoder)
    X = normalise_for_decoder(pats).double()
    Y = imgs.reshape(len(imgs), -1).double()
    lstsq = torch.linalg.lstsq(X, Y, driver="gelsd").solution
    pred_ours = X @ dec.weight_.double()
    pred_ls = X @ lstsq
    # same fitted values and the same residual (the normal equations' solution)
    assert torch.allclose(pred_ours, pred_ls, atol=1e-4)
    res_ours = float(((pred_ours - Y) ** 2).mean())
    res_ls = float(((pred_ls - Y) ** 2).mean())
    assert res_ours == pytest.approx(res_ls, rel=1e-5)


def test_ridge_matches_explicit_formula(small_set):
    imgs, pats = small_set
    X = normalise_for_decoder(pats).double()
    Y = imgs.reshape(len(imgs), -1).double()
    a = 3.5
    ref = torch.linalg.solve(X.T @ X + a * torch.eye(X.shape[1], dtype=torch.float64), X.T @ Y)
    dec = LinearDecoder(alpha=a).fit(pats, imgs)
    assert torch.allclose(dec.weight_.double(), ref, atol=1e-4)


def test_alpha_chosen_on_held_out_split(small_set):
    imgs, pats = small_set
    dec = LinearDecoder().fit(pats, imgs, seed=1)
    grid, errs = dec.history_["alpha_grid"], dec.history_["val_mse"]
    assert dec.alpha_ == grid[int(np.argmin(errs))]
    assert min(errs) < errs[0] and min(errs) < errs[-1]  # an interior optimum


def test_adam_gram_form_equals_keras_form(small_set):
    imgs, pats = small_set  # 3000 > 2048 inputs: the Gram path is taken
    dec = LinearDecoder().fit(pats, imgs, method="adam", epochs=15, progress=False, seed=4)
    # the same protocol written the direct way
    X = normalise_for_decoder(pats)
    Y = imgs.reshape(len(imgs), -1)
    n_tr = len(X) - int(0.01 * len(X))
    g = torch.Generator().manual_seed(4)
    limit = (6.0 / (2048 + 1024)) ** 0.5
    W = ((torch.rand((2048, 1024), generator=g) * 2 - 1) * limit).requires_grad_()
    opt = torch.optim.Adam([W], lr=1e-3, eps=1e-7)
    hist = []
    for _ in range(15):
        opt.zero_grad()
        loss = ((X[:n_tr] @ W - Y[:n_tr]) ** 2).mean()
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    assert np.allclose(dec.history_["train_mse"], hist, rtol=1e-3)
    assert torch.allclose(dec.weight_, W.detach(), atol=1e-5)
    assert len(dec.history_["val_mse"]) == 15
    assert hist[-1] < hist[0]


def test_adam_direct_form_when_few_samples(encoder):
    imgs = speckle(200, 1.0, seed=0)
    dec = LinearDecoder().fit(encoder(imgs), imgs, method="adam", epochs=5, progress=False)
    h = dec.history_["train_mse"]
    assert len(h) == 5 and h[-1] < h[0]


def test_save_load_roundtrip_and_encoder_refusal(tmp_path, small_set, encoder):
    imgs, pats = small_set
    dec = LinearDecoder(alpha=1.0).fit(pats, imgs, encoder=encoder)
    path = dec.save(tmp_path / "d.pt")
    back = LinearDecoder.load(path, encoder=encoder)
    assert torch.equal(back.predict(pats[:5]), dec.predict(pats[:5]))
    other = DualVortexEncoder((1, 2))
    with pytest.raises(EncoderMismatchError, match="charges"):
        LinearDecoder.load(path, encoder=other)
    with pytest.raises(EncoderMismatchError, match="another encoder"):
        dec.predict(other(imgs[:2]), encoder=other)
    three = DualVortexEncoder((1, 3, 5))
    with pytest.raises(EncoderMismatchError, match="shape"):
        dec.predict(three(imgs[:2]))
    (tmp_path / "bad.pt").write_bytes(b"not a decoder")
    with pytest.raises(ValueError, match="bad.pt"):
        LinearDecoder.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        LinearDecoder.load(tmp_path / "missing.pt")
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left nothing behind


def test_predict_before_fit_is_refused():
    with pytest.raises(RuntimeError, match="fit"):
        LinearDecoder().predict(torch.zeros(1, 2, 32, 32))


def test_colour_is_reconstructed_channel_by_channel(small_set, encoder):
    imgs, pats = small_set
    dec = LinearDecoder(alpha=1.0).fit(pats, imgs, encoder=encoder)
    colour = torch.rand(3, 3, 32, 32)
    rec = reconstruct(colour, encoder, dec)
    assert rec.shape == (3, 3, 32, 32)
    per_channel = reconstruct(colour[:, 1], encoder, dec)
    assert torch.allclose(rec[:, 1], per_channel, atol=1e-5)


@pytest.mark.realdata
def test_gamma15_ridge_reconstructs_mnist(data_dir, gamma15_ridge, encoder):
    _, dec = gamma15_ridge
    images, _ = load_dataset("mnist", "test", n=1000, data_dir=data_dir)
    rec = reconstruct(images, encoder, dec)
    score = float(ssim(images, rec.clamp(0, 1)).mean())
    assert score >= 0.35, score



def _well_conditioned_set(n: int = 3000, d: int = 256, seed: int = 0):
    """Gaussian patterns (no common mean, flat spectrum); images a noisy linear map."""
    g = torch.Generator().manual_seed(seed)
    pats = torch.randn(n, 1, 16, 16, generator=g)
    X = normalise_for_decoder(pats).double()
    M = torch.randn(d, 64, generator=g, dtype=torch.float64) / d**0.5
    imgs = (0.5 + 0.2 * (X - X.mean(0)) @ M
            + 0.01 * torch.randn(n, 64, generator=g, dtype=torch.float64))
    return pats, imgs.clamp(0, 1).reshape(n, 8, 8).float()


def _plain_float32_solve(X, Y, a):
    """Control: the same solve from an uncentred float32 XᵀX (float64 across blocks)."""
    from simulation.ridge_linalg import centred_gram

    G, B = centred_gram(X.float(), Y.float(), torch.zeros(X.shape[1]),
                         torch.zeros(Y.shape[1]))
    eye = torch.eye(X.shape[1], dtype=torch.float64)
    return torch.cholesky_solve(B, torch.linalg.cholesky(G + a * eye))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["well-conditioned", "speckle"])
def test_fast_gram_ridge_matches_float64_at_smallest_alpha(case, small_set):
    """The ridge fit builds XᵀX from centred float32 products accumulated in float64;
    at the smallest α of its grid (where rounding in XᵀX matters most) its weights,
    predictions and training MSE match a float64 solve. On sensor patterns (whose
    condition number comes from their common mean) a plain float32 XᵀX does not."""
    if case == "speckle":
        imgs, pats = small_set
    else:
        pats, imgs = _well_conditioned_set()
    X = normalise_for_decoder(pats).double()
    Y = imgs.reshape(len(imgs), -1).double()
    a = LinearDecoder().fit(pats, imgs).history_["alpha_grid"][0]
    eye = torch.eye(X.shape[1], dtype=torch.float64)
    G64 = X.T @ X + a * eye
    W64 = torch.cholesky_solve(X.T @ Y, torch.linalg.cholesky(G64))
    cond = float(torch.linalg.cond(G64))
    assert (cond > 1e6) if case == "speckle" else (cond < 1e3)

    def errors(W):
        return (float((W - W64).norm() / W64.norm()),
                float((X @ (W - W64)).norm() / (X @ W64).norm()))

    dec = LinearDecoder(alpha=a).fit(pats, imgs)
    w_err, pred_err = errors(dec.weight_.double())
    assert w_err < 1e-4 and pred_err < 1e-5
    assert dec.train_mse_ == pytest.approx(float(((X @ W64 - Y) ** 2).mean()), rel=1e-5)
    if case == "speckle":
        assert errors(_plain_float32_solve(X, Y, a))[0] > 10 * w_err
