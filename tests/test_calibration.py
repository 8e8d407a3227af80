"""Calibration on simulated benches with random hidden flaws: every routine must recover
``bench.truth`` within the issue's tolerances, over 5 seeds (256 px SLM and camera).

Tolerances (issue 4): geometry centre 0.2 camera px, scale 0.5 %, rotation 0.2°; LUT rms
0.1 rad; wavefront rms 0.1 rad. Also checked: gain within 3 %, dark level within 1 count.
One module-scoped run per seed (dark, geometry, lut, wavefront) feeds all the checks.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from session_helpers import FAST_CALIBRATION, calibration_bench

from calibration import CalibrationSet, errors_vs_truth, run_calibration
from calibration.geometry import affine_parameters
from calibration.truth import truth_model_to_camera

SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def calibrated(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"cal{request.param}")
    with calibration_bench(request.param) as bench:
        cal = run_calibration(bench, out, steps="dark,geometry,lut,wavefront",
                              options=FAST_CALIBRATION, progress=False)
        errors = errors_vs_truth(cal, bench)
        truth_a = truth_model_to_camera(bench, 32)
    print(f"\nseed {request.param}: " + ", ".join(f"{k} {v:.4g}" for k, v in errors.items()))
    return {"seed": request.param, "cal": cal, "errors": errors, "out": out,
            "truth_affine": truth_a}


def test_dark_and_gain(calibrated):
    e = calibrated["errors"]
    assert abs(e["gain_error_pct"]) < 3.0, e
    assert abs(e["dark_level_error_counts"]) < 1.0, e
    assert calibrated["cal"].dark_frame.shape == (256, 256)


def test_geometry_within_tolerance(calibrated):
    e = calibrated["errors"]
    assert e["center_error_px"] < 0.2, e
    assert abs(e["scale_error_pct"]) < 0.5, e
    assert abs(e["rotation_error_deg"]) < 0.2, e
    assert calibrated["cal"].geometry.residuals["rms_px"] < 0.2


def test_geometry_spots_before_centre_correction(calibrated):
    """The spot fit alone already meets scale and rotation (the centre is corrected later)."""
    geo = calibrated["cal"].geometry
    p = affine_parameters(geo["model_to_camera"])  # the geometry record is the spot fit
    q = affine_parameters(calibrated["truth_affine"])
    assert abs(p["scale"] / q["scale"] - 1) < 0.005
    assert abs(p["rotation_deg"] - q["rotation_deg"]) < 0.2


def test_phase_response_within_tolerance(calibrated):
    e = calibrated["errors"]
    assert e["lut_rms_rad"] < 0.1, e
    r = calibrated["cal"].phase_response_rad
    assert r.shape == (256,) and r[-1] == 0.0


def test_wavefront_and_source(calibrated):
    e = calibrated["errors"]
    assert e["wavefront_rms_rad"] < 0.1, e
    assert abs(e["waist_error_pct"]) < 10.0, e
    assert set(calibrated["cal"].zernike_noll_rad) == {4, 5, 6, 7, 8}


def test_gaussian_source_keeps_the_gaussian_beam_model(calibrated):
    """These benches' beams are Gaussian: the other beam models fit barely better, so the
    Gaussian is kept on every seed, and on the first with the waist of a fit that tries
    only the Gaussian (the wavefront step again on the same bench and earlier steps)."""
    cal = calibrated["cal"]
    assert cal.source["beam_model"] == "gaussian"
    r = cal.source.residuals
    assert r["relative_rms_clipped"] <= r["relative_rms_gaussian"] + 1e-3
    if calibrated["seed"] != SEEDS[0]:  # one rerun shows the equality (5 s each)
        return
    with calibration_bench(calibrated["seed"]) as bench:
        only = run_calibration(bench, steps="wavefront", calibration=copy.deepcopy(cal),
                               options={"wavefront": {"averaging": 1,
                                                      "beam_models": ("gaussian",)}},
                               progress=False)
    np.testing.assert_allclose(only.source["waist_px"], cal.source["waist_px"], rtol=0.02)


def test_calibration_file_and_report(calibrated):
    out = calibrated["out"]
    cal = CalibrationSet.load(out)
    assert cal.steps() == ["dark", "geometry", "lut", "source", "wavefront"]
    np.testing.assert_allclose(cal.model_to_camera, calibrated["cal"].model_to_camera)
    np.testing.assert_allclose(cal.phase_response_rad, calibrated["cal"].phase_response_rad)
    assert cal.zernike_noll_rad == calibrated["cal"].zernike_noll_rad
    assert cal.geometry.devices["camera"]["backend"] == "sim"
    report = (out / "report.md").read_text()
    for name in ("dark", "geometry", "lut", "wavefront"):
        assert f"## {name}" in report
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000


def test_steps_need_their_inputs(tmp_path):
    from calibration import CalibrationError

    with calibration_bench(0) as bench, pytest.raises(CalibrationError, match="geometry"):
        run_calibration(bench, tmp_path, steps="lut", progress=False)


def test_dark_refuses_without_laser():
    from types import SimpleNamespace

    from calibration.detector import calibrate_dark

    with calibration_bench(0) as bench:
        b = SimpleNamespace(slm=bench.slm, camera=bench.camera, laser=None)
        with pytest.raises(ValueError, match="block_beam"):
            calibrate_dark(b)


def _calibrate_shipped(bench_file: str, out) -> dict:
    """dark, geometry, lut and wavefront on a shipped bench (``bench_file``). On
    sim-realistic, the control too: the wavefront step again on the same bench and
    earlier steps, with only the Gaussian beam model (the fit before the beam-shape
    step), instead of a second whole calibration (the dark, geometry and LUT steps are
    the same either way)."""
    from devices import open_bench

    with open_bench(bench_file) as bench:
        cal = run_calibration(bench, out / "cal", steps="dark,geometry,lut,wavefront",
                              progress=False)
        result = {"cal": cal, "errors": errors_vs_truth(cal, bench)}
        if bench_file == "sim-realistic.toml":
            old = run_calibration(bench, out / "gaussian-only", steps="wavefront",
                                  calibration=CalibrationSet.load(out / "cal"),
                                  options={"wavefront": {"beam_models": ("gaussian",)}},
                                  progress=False, report=False)
            result["gaussian_only"] = errors_vs_truth(old, bench)
            result["gaussian_only_model"] = old.source["beam_model"]
    print(f"\n{bench_file}: " + ", ".join(f"{k} {v:.4g}" for k, v in result["errors"].items()))
    return result


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("bench_file", [
    "sim.toml",
    "sim-realistic.toml",
])
def test_shipped_benches_within_tolerance(bench_file, tmp_path):
    """The shipped example benches (512 px; 1920x1152 SLM + 1440x1080 camera), all defaults;
    sim-realistic has every [sim_flaws] flaw on (no twin models them), its beam clipped by
    an aperture (issue 10: the wavefront step fits the beam's shape).

    The wavefront is judged where the light is (``wavefront_pupil_rms_rad``) and the
    centre with the fitted tilt over the beam (``center_error_beam_px``): with the beam
    clipped to ~0.7 of the Zernike disk the outer ring is unobserved
    (``calibration.truth.pupil_wavefront_error``); where the beam fills the disk
    (sim.toml's Gaussian beam) the coefficient rms and the plain centre are held too.
    Gaussian beams among realistic flaws are the random realistic benches' case
    (``test_calibration_robust``, 256 px): a third full-size calibration here, of
    sim-realistic with a Gaussian source, cost about 50 CPU-s and checked nothing those
    do not.

    The control, on sim-realistic: only the Gaussian beam model (the fit before issue 10)
    misfits the source, outside the tolerance the clipped model meets (measured: waist
    -34.7 % and -33.6 % in two runs, against -2.0 %). It also absorbs the aperture as
    aberrations, but how far that shows where the light is varies between runs
    (pupil-weighted wavefront 0.115 and 0.076 rad: the bench's settle and flicker follow
    the wall clock, so a loaded machine changes the captures), and 0.076 is inside the
    0.1 rad tolerance: that is printed, not asserted. It is asserted here, not in a test of
    its own, so that it reuses this calibration's dark, geometry and LUT steps (one
    full-size calibration fewer, whichever worker runs it)."""
    result = _calibrate_shipped(bench_file, tmp_path)
    e, cal = result["errors"], result["cal"]
    assert e["center_error_beam_px"] < 0.2 and abs(e["scale_error_pct"]) < 0.5
    assert abs(e["rotation_error_deg"]) < 0.2
    assert e["lut_rms_rad"] < 0.1 and e["wavefront_pupil_rms_rad"] < 0.1
    clipped = bench_file == "sim-realistic.toml"
    assert cal.source["beam_model"] == ("clipped" if clipped else "gaussian")
    assert abs(e["waist_error_pct"]) < 10.0, e  # the source itself (measured: -2 % clipped)
    if not clipped:
        assert e["center_error_px"] < 0.2 and e["wavefront_rms_rad"] < 0.1
        return
    old = result["gaussian_only"]
    print("\nsim-realistic, Gaussian model only: "
          + ", ".join(f"{k} {v:.4g}" for k, v in old.items()))
    assert result["gaussian_only_model"] == "gaussian"
    assert abs(old["waist_error_pct"]) > 10.0, old
