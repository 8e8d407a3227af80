"""Synthetic data and metrics against the paper-spec reference values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulation import (
    PAPER_GAMMAS,
    convergence,
    mse,
    omega_k,
    psnr,
    speckle,
    speckle_mixture,
    spectral_statistics,
    ssim,
    svd_entropy,
    swapped_spectra,
)

# paper-spec §4.4: mean H_SVD (σ/Σσ, log2) and Ω_k (|FFT| weighted, cycles/px) per γ
H_SVD_TABLE = (0.73, 1.48, 2.08, 2.51, 2.79, 2.96, 3.39, 3.71, 3.93, 4.04)
OMEGA_TABLE = (0.074, 0.087, 0.115, 0.144, 0.164, 0.182, 0.227, 0.271, 0.310, 0.336)


@pytest.mark.parametrize("gamma,h_ref,w_ref", list(zip(PAPER_GAMMAS, H_SVD_TABLE, OMEGA_TABLE,
                                                         strict=True)))
def test_svd_entropy_table(gamma, h_ref, w_ref):
    imgs = speckle(500, gamma, seed=11)
    assert imgs.shape == (500, 32, 32) and imgs.dtype == torch.float32
    assert float(imgs.min()) == 0.0 and float(imgs.max()) == 1.0
    assert abs(float(svd_entropy(imgs).mean()) - h_ref) < 0.1
    assert abs(float(omega_k(imgs).mean()) - w_ref) < 0.01


def test_speckle_is_seeded_and_batch_independent():
    a = speckle(50, 2.0, seed=3)
    b = speckle(50, 2.0, seed=3, batch_size=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, speckle(50, 2.0, seed=4))


def test_markdown_form_reverses_the_trend():
    lo, hi = speckle(200, 0.1, form="markdown"), speckle(200, 15.0, form="markdown")
    assert float(svd_entropy(lo).mean()) > float(svd_entropy(hi).mean())


def test_svd_entropy_limits():
    eye = torch.eye(32)[None]
    assert float(svd_entropy(eye)) == pytest.approx(5.0, abs=1e-5)  # log2 32: flat spectrum
    rank1 = torch.outer(torch.rand(32), torch.rand(32))[None]
    assert float(svd_entropy(rank1)) == pytest.approx(0.0, abs=1e-3)
    assert float(svd_entropy(eye, base=np.e)) == pytest.approx(np.log(32), abs=1e-5)


def test_omega_k_of_a_pure_tone():
    x = torch.arange(32.0)
    img = (0.5 + 0.5 * torch.cos(2 * np.pi * 4 * x / 32))[None, None, :].expand(1, 32, 32)
    assert float(omega_k(img)) == pytest.approx(4 / 32, abs=1e-6)
    assert float(omega_k(img, units="radians")) == pytest.approx(2 * np.pi * 4 / 32, abs=1e-5)


def test_spectral_statistics_are_the_four_metrics_at_once():
    images = speckle(64, 2.0, seed=3)
    got = spectral_statistics(images)
    want = {"h_svd": svd_entropy(images), "h_svd_power": svd_entropy(images, power=True),
            "omega_k": omega_k(images), "omega_k_power": omega_k(images, weighting="power")}
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    assert not torch.equal(got["h_svd"], got["h_svd_power"])  # the two weightings differ
    with pytest.raises(ValueError):
        spectral_statistics(images * 3)  # not in [0, 1]


def test_swapped_spectra_takes_values_of_one_and_modes_of_other():
    a, b = speckle(20, 0.3, seed=1), speckle(20, 15.0, seed=2)
    mixed = swapped_spectra(a, b)
    assert mixed.shape == a.shape and float(mixed.min()) >= 0 and float(mixed.max()) <= 1
    raw = swapped_spectra(a, b, normalise=False).double()
    assert torch.allclose(torch.linalg.svdvals(raw), torch.linalg.svdvals(b.double()), atol=1e-4)
    u_raw = torch.linalg.svd(raw)[0][:, :, :5]
    u_a = torch.linalg.svd(a.double())[0][:, :, :5]
    # the leading modes are those of `a` (up to sign)
    assert torch.allclose((u_raw * u_a).sum(1).abs(), torch.ones(20, 5, dtype=torch.float64),
                          atol=1e-3)
    same = swapped_spectra(a, a)
    assert torch.allclose(same, a, atol=1e-5)


def test_mixture_proportions_and_seed():
    m = speckle_mixture(100, [0.3, 15.0], weights=[3, 1], seed=5)
    assert m.shape == (100, 32, 32)
    assert torch.equal(m, speckle_mixture(100, [0.3, 15.0], weights=[3, 1], seed=5))
    h = svd_entropy(m)
    assert 70 <= int((h < 2.5).sum()) <= 80  # 75 low-γ (H≈1.5), 25 high-γ (H≈4)


def test_quality_metrics():
    ref = torch.rand(5, 32, 32)
    assert np.allclose(ssim(ref, ref), 1.0)
    assert np.all(np.isinf(psnr(ref, ref)))
    noisy = (ref + 0.1).clamp(0, 1)
    assert np.all(ssim(ref, noisy) < 1.0)
    assert np.allclose(mse(ref, ref + 0.1), 0.01, atol=1e-6)
    assert np.allclose(psnr(ref, ref + 0.1, clip=False), 20.0, atol=1e-4)
    colour = torch.rand(2, 3, 32, 32)
    assert ssim(colour, colour).shape == (2,)


def test_convergence_figures():
    epochs = np.arange(200)
    hist = 0.5 * np.exp(-0.05 * epochs) + 0.01
    c = convergence(hist, threshold=0.02)
    assert c["epochs_to_threshold"] == int(np.argmax(hist <= 0.02)) + 1
    assert c["decay_rate"] == pytest.approx(0.05, rel=0.2)
    slow = convergence(0.5 * np.exp(-0.01 * epochs) + 0.01)
    assert slow["decay_rate"] < c["decay_rate"]
    with pytest.raises(ValueError, match="history"):
        convergence([1.0])
