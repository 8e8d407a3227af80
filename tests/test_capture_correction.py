"""simulation.capture_correction: the twin -> bench residual map learned from pairs."""

from __future__ import annotations

import pytest
import torch

from simulation.capture_correction import CaptureCorrection


def _pairs(n: int, flaw: bool, seed: int = 0, noise: float = 0.05):
    """Twin patterns (n, 2, 8, 8) and 'captures': the bench blurs each channel's rows
    (crosstalk) and scales it by a vignetting map when ``flaw``; always an offset and
    capture noise."""
    g = torch.Generator().manual_seed(seed)
    twin = torch.rand(n, 2, 8, 8, generator=g)
    bench = twin
    if flaw:
        bench = 0.6 * twin + 0.2 * (twin.roll(1, -1) + twin.roll(-1, -1))
        bench = bench * torch.linspace(1.0, 0.6, 8)[None, None, None, :]
    return twin, bench + 0.3 + noise * torch.randn(bench.shape, generator=g)


@pytest.mark.parametrize("flaw", [True, False])
def test_the_map_learns_what_the_twin_misses_and_only_that(flaw):
    twin, cap = _pairs(600, flaw)
    vt, vc = _pairs(100, flaw, seed=1)
    tt, tc = _pairs(200, flaw, seed=2)
    cc = CaptureCorrection().fit(twin, cap, val_twin=vt, val_captured=vc)
    err = float(((cc.transform(tt) - tc) ** 2).mean())
    err_twin = float(((tt - twin.mean(0) + cap.mean(0) - tc) ** 2).mean())  # offset only
    noise = 0.05 ** 2
    assert cc.transform(tt).shape == tt.shape and cc.alpha_ > 0
    if flaw:  # the flaw is learned: the error drops near the capture noise (measured
        # 1.25x it: the 128 x 128 map from 600 noisy pairs), a tenth of the twin's
        assert err < 1.5 * noise < 0.2 * err_twin, (err, err_twin)
    else:  # the control: nothing to learn, the map stays small and costs nothing
        assert err < 1.1 * err_twin and float(cc.map_.abs().max()) < 0.1, (err, err_twin)
    assert cc.history_["val"] == "given" and len(cc.history_["val_mse"]) == \
        len(cc.history_["alpha_grid"])


def test_alpha_from_a_split_and_given():
    twin, cap = _pairs(100, True)
    split = CaptureCorrection(seed=3).fit(twin, cap)
    assert split.history_["val"] == "split"
    fixed = CaptureCorrection(alpha=split.alpha_).fit(twin, cap)
    assert fixed.history_ == {}
    assert torch.allclose(fixed.map_, split.map_)


def test_bad_input_is_refused():
    twin, cap = _pairs(20, True)
    with pytest.raises(ValueError, match="captured: expected the shape"):
        CaptureCorrection(alpha=1.0).fit(twin, cap[:, :1])
    bad = cap.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        CaptureCorrection(alpha=1.0).fit(twin, bad)
    with pytest.raises(ValueError, match="give both or neither"):
        CaptureCorrection().fit(twin, cap, val_twin=twin)
    with pytest.raises(ValueError, match="alpha"):
        CaptureCorrection(alpha=-1.0).fit(twin, cap)
    with pytest.raises(RuntimeError, match="fit"):
        CaptureCorrection().transform(twin)
    cc = CaptureCorrection(alpha=1.0).fit(twin, cap)
    with pytest.raises(ValueError, match="twin: expected patterns of shape"):
        cc.transform(twin[:, :1])
