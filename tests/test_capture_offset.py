"""simulation.ridge_prior.capture_offset and the fit that adds it to the twin's patterns
(``ridge_with_prior(input_offset=...)``, ``LinearDecoder.fit_toward(input_offset=...)``)."""

from __future__ import annotations

import pytest
import torch

from simulation import LinearDecoder
from simulation.ridge_prior import capture_offset, ridge_with_prior
from simulation.sensor import normalise_for_decoder


def _bench(n: int, *, flaw: bool, seed: int, noise: float = 0.02):
    """Images (n, 6, 6), the twin's patterns of them (n, 2, 8, 8) and the bench's: the
    twin's plus a stray-light pattern the same on every image (a ramp across the sensor)
    when ``flaw``, plus capture noise."""
    g = torch.Generator().manual_seed(seed)
    forward = torch.randn(36, 128, generator=torch.Generator().manual_seed(99)).abs()
    images = torch.rand(n, 6, 6, generator=g)
    twin = (images.reshape(n, 36) @ forward / 36).reshape(n, 2, 8, 8)
    bench = twin + noise * torch.randn(twin.shape, generator=g)
    if flaw:
        bench = bench + 0.4 * torch.linspace(0.0, 1.0, 8)[None, None, :, None]
    return images, twin, bench


@pytest.mark.parametrize("flaw", [True, False])
def test_the_offset_is_what_every_capture_adds(flaw):
    _, twin, bench = _bench(200, flaw=flaw, seed=0)
    off = capture_offset(twin, bench)
    diff = normalise_for_decoder(bench) - normalise_for_decoder(twin)
    torch.testing.assert_close(off, diff.mean(0))
    before = float(diff.pow(2).mean().sqrt())
    after = float((diff - off).pow(2).mean().sqrt())
    if flaw:  # the ramp is most of the difference (the min-max normalisation makes it
        # differ a little from image to image): the offset takes most of it away
        assert after < 0.4 * before, (before, after)  # measured 0.31
    else:  # the control: only noise, no offset to speak of
        assert float(off.pow(2).mean().sqrt()) < 0.3 * before, (off, before)


@pytest.mark.parametrize("flaw", [True, False])
def test_the_twin_with_the_offset_decodes_the_bench(flaw):
    imgs, twin, _ = _bench(600, flaw=flaw, seed=1)
    _, pair_twin, pair_bench = _bench(50, flaw=flaw, seed=2)   # 50 captured speckles
    val_imgs, _, val_bench = _bench(30, flaw=flaw, seed=4)    # held-out captures, for α
    test_imgs, _, test_bench = _bench(200, flaw=flaw, seed=3)  # captured test images
    off = capture_offset(pair_twin, pair_bench)
    held_out = {"val_patterns": val_bench, "val_images": val_imgs}
    plain = LinearDecoder().fit_toward(twin, imgs, **held_out)
    moved = LinearDecoder().fit_toward(twin, imgs, input_offset=off, **held_out)
    err = {k: float(((d.predict(test_bench) - test_imgs) ** 2).mean())
           for k, d in (("plain", plain), ("offset", moved))}
    if flaw:  # measured: 0.16 of the plain twin's error (α on the held-out captures)
        assert err["offset"] < 0.2 * err["plain"], err
    else:  # the control: nothing the twin misses, and the offset costs nothing
        assert err["offset"] < 1.1 * err["plain"], err
    assert moved.history_["input_offset_rms"] == pytest.approx(
        float(off.double().pow(2).mean().sqrt()))
    assert plain.history_["input_offset_rms"] is None


def test_input_offset_is_added_to_the_training_inputs_only():
    g = torch.Generator().manual_seed(4)
    X, Y = torch.randn(40, 12, generator=g), torch.randn(40, 3, generator=g)
    Xv, Yv = torch.randn(10, 12, generator=g), torch.randn(10, 3, generator=g)
    off = torch.randn(12, generator=g)
    for kw in ({"alpha": 0.5}, {"X_val": Xv, "Y_val": Yv}):
        got, a, _ = ridge_with_prior(X, Y, input_offset=off, **kw)
        want, b, _ = ridge_with_prior(X + off, Y, **kw)
        assert a == b
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="input_offset: expected 12 finite"):
        ridge_with_prior(X, Y, input_offset=off[:5], alpha=1.0)
    with pytest.raises(ValueError, match="input_offset: expected 12 finite"):
        ridge_with_prior(X, Y, input_offset=torch.full((12,), float("nan")), alpha=1.0)


def test_bad_pairs_are_refused():
    _, twin, bench = _bench(5, flaw=True, seed=5)
    with pytest.raises(ValueError, match="captured: expected the shape of twin"):
        capture_offset(twin, bench[:3])
    bad = bench.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        capture_offset(twin, bad)
