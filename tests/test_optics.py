"""The optics of the twin against independent numpy implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simulation import (
    AngularSpectrum,
    DualVortexEncoder,
    PhaseEncoder,
    SensorModel,
    fraunhofer,
    normalise_for_decoder,
    phase_object,
)


def numpy_dual_vortex(images: np.ndarray) -> np.ndarray:
    """paper-spec §2.2 written out in numpy: the reference the encoder must match."""
    n, xmax = 32, 10.0
    dx = 2 * xmax / n
    x = np.linspace(-10, 10 - dx, n)
    X, Y = np.meshgrid(x, x)
    R2, TH = X**2 + Y**2, np.arctan2(Y, X)
    lens = np.exp(-1j * R2 / 8.0)

    def myfft2(a):
        return np.fft.fftshift(np.fft.fft2(np.fft.fftshift(a)))

    field = np.exp(1j * np.pi / 2 * images.astype(np.float64))
    return np.stack([np.abs(myfft2(field * lens * np.exp(1j * m * TH))) for m in (1, 3)], axis=1)


def numpy_decoder_input(s: np.ndarray) -> np.ndarray:
    out = []
    for img in s:
        chans = []
        for c in img:
            c = c - c.min()
            chans.append(2 * c / c.max() - 1)
        out.append(np.hstack(chans).ravel())
    return np.array(out)


def test_dual_vortex_matches_numpy_formula():
    rng = np.random.default_rng(3)
    imgs = rng.random((6, 32, 32)).astype(np.float32)
    ref = numpy_dual_vortex(imgs)
    got = DualVortexEncoder()(torch.from_numpy(imgs)).double().numpy()
    assert got.shape == (6, 2, 32, 32)
    # relative to the pattern's peak (≈ 1e3 in unnormalised DFT units)
    assert np.abs(got - ref).max() / ref.max() < 1e-5
    # and the decoder input, which is what the decoder sees, to 1e-5 absolute
    dec_in = normalise_for_decoder(torch.from_numpy(got).float()).double().numpy()
    assert dec_in.shape == (6, 2048)
    assert np.abs(dec_in - numpy_decoder_input(ref)).max() < 1e-5


def test_decoder_input_layout_is_side_by_side():
    p = torch.zeros(1, 2, 2, 3)
    p[0, 0] = torch.tensor([[0.0, 1, 2], [3, 4, 5]])
    p[0, 1] = torch.tensor([[10.0, 10, 10], [10, 10, 20]])
    flat = normalise_for_decoder(p)[0]
    row0 = flat[:6].tolist()
    assert row0[:3] == pytest.approx([-1, -0.6, -0.2])  # channel 0, row 0
    assert row0[3:] == pytest.approx([-1, -1, -1])  # channel 1, row 0, to its right


def test_fraunhofer_of_plane_wave_is_centred_peak():
    f = fraunhofer(torch.ones(1, 32, 32, dtype=torch.complex64))
    mag = f.abs()[0]
    assert mag[16, 16] == pytest.approx(1024, rel=1e-6)
    assert float(mag.sum() - mag[16, 16]) < 1e-2


@pytest.mark.parametrize("shape", [(3, 2, 32, 32), (2, 64, 48), (2, 33, 32), (2, 31, 31)])
def test_fraunhofer_equals_the_shifted_dft(shape):
    """The sign-checkerboard form is fftshift(fft2(fftshift(f))) for even sizes (and
    the shifts themselves for odd ones), values and gradients."""
    g = torch.Generator().manual_seed(1)
    f = torch.randn(*shape, dtype=torch.complex64, generator=g).requires_grad_(True)

    def shifted(x):
        return torch.fft.fftshift(torch.fft.fft2(torch.fft.fftshift(x, dim=(-2, -1))),
                                  dim=(-2, -1))

    a, b = fraunhofer(f), shifted(f)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)
    (ga,) = torch.autograd.grad(a.abs().sum(), f)
    (gb,) = torch.autograd.grad(b.abs().sum(), f)
    assert torch.allclose(ga, gb, atol=1e-4, rtol=1e-5)
    real = torch.randn(*shape[-2:], generator=g)  # a real field too
    assert torch.allclose(fraunhofer(real), shifted(real), atol=1e-4, rtol=1e-5)
    # a control: one shift left out is not the same transform
    wrong = torch.fft.fftshift(torch.fft.fft2(f), dim=(-2, -1))
    assert not torch.allclose(a, wrong, atol=1e-2)


def test_one_twin_forward_model_for_encoder_model_fit_and_bench_training():
    """`twin_field` is the encoder's field; the calibration's model fit (source amplitude
    on the object) and bench training's magnitude twin are that field through their
    sensors. Control: another amplitude gives other patterns."""
    from calibration.model_fit import twin_patterns as fit_twin
    from hil.bench_training import twin_patterns as training_twin
    from simulation.encoders import twin_field

    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 32, 32, generator=g)
    enc = DualVortexEncoder()
    field = twin_field(images, enc.masks_rad, enc.phase_depth)
    assert torch.equal(field, enc.field(images))
    amp = 0.5 + torch.rand(32, 32, generator=g)
    want = enc.sensor(fraunhofer(phase_object(images, enc.phase_depth)[:, None] * amp
                                 * torch.polar(torch.ones_like(enc.masks_rad),
                                               enc.masks_rad)))
    torch.testing.assert_close(fit_twin(images, enc, amp), want.float())
    torch.testing.assert_close(fit_twin(images, enc, None), enc(images))
    assert not torch.allclose(fit_twin(images, enc, amp * amp), want.float(), atol=1e-3)
    torch.testing.assert_close(training_twin(enc.masks_rad, images), field.abs(),
                               atol=1e-5, rtol=1e-5)


def test_learnable_encoder_gets_gradients_any_channel_count():
    enc = PhaseEncoder(torch.zeros(3, 32, 32))
    out = enc(torch.rand(4, 32, 32))
    assert out.shape == (4, 3, 32, 32)
    out.sum().backward()
    assert enc.masks_rad.grad is not None and torch.isfinite(enc.masks_rad.grad).all()
    assert float(enc.masks_rad.grad.abs().sum()) > 0


def test_intensity_sensor_is_square_of_magnitude():
    imgs = torch.rand(2, 32, 32)
    mag = DualVortexEncoder()(imgs)
    inten = DualVortexEncoder(sensor=SensorModel("intensity"))(imgs)
    assert torch.allclose(inten, mag**2, rtol=1e-4)


def test_shot_noise_statistics_and_bit_depth_saturation():
    field = torch.ones(2000, 4, 4, dtype=torch.complex64)  # uniform: 1/16 of the photons a pixel
    s = SensorModel("intensity", photons=1600.0, seed=1)(field)
    assert float(s.mean()) == pytest.approx(100.0, rel=0.02)
    assert float(s.var()) == pytest.approx(100.0, rel=0.1)  # Poisson: variance = mean
    q = SensorModel("intensity", photons=1600.0, bit_depth=6, seed=1)(field)
    assert float(q.max()) <= 63.0 and torch.equal(q, q.round())
    assert float((q == 63).float().mean()) > 0.9  # 100 e⁻ on a 63-count ADC saturates


def test_noise_is_seeded():
    field = torch.rand(3, 8, 8, dtype=torch.complex64)
    a = SensorModel(photons=1e4, read_noise=2.0, seed=7)(field)
    b = SensorModel(photons=1e4, read_noise=2.0, seed=7)(field)
    c = SensorModel(photons=1e4, read_noise=2.0, seed=8)(field)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_binning_sums_blocks():
    field = torch.ones(1, 4, 4, dtype=torch.complex64)
    assert torch.equal(SensorModel("intensity", binning=2)(field), torch.full((1, 2, 2), 4.0))
    with pytest.raises(ValueError, match="binning"):
        SensorModel("intensity", binning=3)(field)


def test_angular_spectrum_matches_direct_fresnel_free_space_identity():
    # A Gaussian beam: propagation keeps power and matches the analytic waist growth.
    n, pitch, wav = 128, 2.0, 0.5
    x = (torch.arange(n) - n / 2) * pitch
    Y, X = torch.meshgrid(x, x, indexing="ij")
    w0 = 20.0
    field = torch.exp(-(X**2 + Y**2) / w0**2).to(torch.complex64)[None]
    z = 2000.0
    out = AngularSpectrum((n, n), pitch, wav, z)(field)
    p_in, p_out = float((field.abs() ** 2).sum()), float((out.abs() ** 2).sum())
    assert p_out == pytest.approx(p_in, rel=1e-3)
    zr = math.pi * w0**2 / wav
    wz = w0 * math.sqrt(1 + (z / zr) ** 2)
    inten = (out.abs() ** 2)[0]
    r2 = (X**2 + Y**2)
    w_meas = math.sqrt(2 * float((inten * r2).sum() / inten.sum()))
    assert w_meas == pytest.approx(wz, rel=0.02)
    back = AngularSpectrum((n, n), pitch, wav, -z)(out)
    assert torch.allclose(back.abs(), field.abs(), atol=2e-3)
