"""Steps 5-6 (model fit, bench decoders) on one random simulated bench, and `hil calibrate`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from session_helpers import FAST_CALIBRATION, calibration_bench

from calibration import CalibrationSet, run_calibration
from calibration.model_fit import BenchModel, fit_bench_model

SEED = 7
TINY = {**FAST_CALIBRATION, "model": {"n_images": 24, "steps": 150},
        "decoders": {"n_twin": 800, "n_capture": 48, "n_test": 8, "n_val": 8, "n_repeat": 4,
                     "compare_nominal": True}}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("calfull")
    with calibration_bench(SEED) as bench:
        cal = run_calibration(bench, out, options=TINY, progress=False)
    return cal, out


def test_model_fit_explains_the_captures(full):
    cal, _ = full
    m = cal.model
    assert m.residuals["mean_correlation"] > 0.95, m.residuals
    assert m.residuals["relative_rms"] <= m.residuals["relative_rms_before"] + 1e-6
    theta = np.asarray(m["theta_model_px"])
    assert theta.shape == (2, 2, 3)
    assert np.abs(theta[:, :, :2]).max() < 0.03  # residual scale/rotation: geometry was right
    assert np.abs(theta[:, :, 2]).max() < 0.5  # residual shift, model pixels


def test_decoders_twin_and_capture(full):
    cal, out = full
    d = cal.decoders
    r = d.residuals
    assert r["ssim_twin_on_captures"] > 0.5, r
    assert r["ssim_twin_on_captures"] > 0.75 * r["ssim_twin_on_twin"], r
    assert r["ssim_twin_on_captures"] > r["ssim_twin_on_captures_nominal_geometry"] + 0.1, r
    # the captures alone (48) learn something (a constant image scores about 0), far less
    # than with the twin-trained decoder as their prior
    assert r["ssim_capture_on_captures"] > 0.05, r
    assert r["ssim_twin_prior_on_captures"] > r["ssim_capture_on_captures"] + 0.2, r
    from simulation import LinearDecoder

    dec = LinearDecoder.load(out / d["twin_path"])
    assert dec.pattern_shape_ == (2, 32, 32)
    assert (out / d["capture_path"]).is_file()
    back = CalibrationSet.load(out)
    assert back.steps()[-2:] == ["model", "decoders"]
    # what the decoders belong with: the imaging config, the files and their hashes
    from calibration.imaging_config import ImagingConfig

    assert back.imaging_config == ImagingConfig()
    assert back.decoder_file() == out / "decoder_twin.pt"
    assert back.decoder_record(out / "decoder_capture.pt")[0] == "capture"
    assert back.model["imaging_config"] == ImagingConfig().to_dict()
    assert "## model" in (out / "report.md").read_text()


def test_bench_model_recovers_a_known_warp():
    torch.manual_seed(0)
    from simulation import DualVortexEncoder, speckle

    twin = DualVortexEncoder()(speckle(16, 15, seed=3)).float()
    truth = BenchModel(2, 32)
    with torch.no_grad():
        truth.theta[:, 0, 2] = 0.3
        truth.theta[:, 1, 2] = -0.2
        truth.log_gain.fill_(np.log(2.0))
        truth.background.fill_(0.5)
        measured = truth(twin)
    model, res = fit_bench_model(measured, twin, steps=150, lr=0.03)
    assert res["relative_rms"] < 0.05
    np.testing.assert_allclose(model.theta.detach()[:, :, 2].numpy(), [[0.3, -0.2]] * 2,
                               atol=0.05)
    with pytest.raises(ValueError, match="measured, twin"):
        fit_bench_model(measured[:, :1], twin)


def _bench_file(tmp_path):
    p = tmp_path / "bench.toml"
    p.write_text(
        'name = "ci"\nseed = 2\n[slm]\nbackend = "sim"\nshape = [256, 256]\n'
        '[camera]\nbackend = "sim"\nshape = [256, 256]\nreference_power_mW = 10.0\n'
        '[laser]\nbackend = "sim"\ncontrol = "power"\nmax_power_mW = 20.0\n'
        'setpoint = 10.0\noutput = "on"\n')
    return p


def test_cli_calibrate(tmp_path, capsys):
    from hil.cli import main

    bench, out = _bench_file(tmp_path), tmp_path / "cal"
    assert main(["calibrate", str(bench), "--out", str(out), "--steps", "dark", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "calibration.h5" in text and "gain_error_pct" in text
    assert CalibrationSet.load(out).steps() == ["dark"]
    # a second run must not silently replace it
    assert main(["calibrate", str(bench), "--out", str(out), "--steps", "dark", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["calibrate", str(bench), "--out", str(out), "--steps", "bogus", "--quiet"]) == 2
    assert "steps" in capsys.readouterr().err
    assert main(["calibrate", str(bench), "--out", str(out), "--steps", "lut", "--resume",
                 "--quiet"]) == 2
    assert "geometry" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "missing.toml"), "--out", str(out), "--force",
                 "--quiet"]) == 2
