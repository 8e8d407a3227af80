"""Importing slmsuite's saved calibrations (``calibration.slmsuite_import``).

The files are written by slmsuite itself: its ``FourierSLM`` built on the simulated
bench's own slmsuite ``SimulatedSLM`` + ``SimulatedCamera`` runs ``fourier_calibrate``,
``pixel_calibrate``, ``settle_calibrate`` and ``wavefront_calibrate`` and saves each with
``save_calibration``; the import is compared with the bench's hidden truth.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from calibration import CalibrationSet
from calibration.slmsuite_import import import_slmsuite
from calibration.store import CalibrationError, StepResult
from calibration.truth import errors_vs_truth
from devices import open_bench
from hil.cli import main

SIM = Path(__file__).resolve().parents[1] / "devices" / "benches" / "sim.toml"


def small_bench_file(tmp: Path, n: int = 256, name: str = "bench.toml") -> Path:
    """sim.toml at n x n pixels, without camera noise (slmsuite's camera renders it)."""
    text = SIM.read_text()
    text = text.replace("shape = [512, 512]", f"shape = [{n}, {n}]")
    text = re.sub(r"(?m)^noise = true", "noise = false", text)
    text = re.sub(r"(?m)^zero_order_fraction = [0-9.]+", "zero_order_fraction = 0.0", text)
    path = tmp / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def slmsuite_files(tmp_path_factory):
    """(bench file, {kind: file}) from slmsuite's own calibrations of a 256 px bench."""
    tmp = tmp_path_factory.mktemp("slmsuite")
    bench_file = small_bench_file(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from slmsuite.hardware.cameraslms import FourierSLM

        with open_bench(bench_file) as bench:
            cam, slm = bench.camera, bench.slm
            cam.wrapped.gain = cam.render_gain()  # as the simulated camera's frames have it
            fs = FourierSLM(cam.wrapped, slm.wrapped)
            fs.fourier_calibrate(array_shape=5, array_pitch=10, autoexpose=True, plot=0)
            files = {"fourier": fs.save_calibration("fourier", str(tmp))}
            fs.settle_calibrate(times=np.linspace(0, 0.02, 5), plot=-1)
            files["settle"] = fs.save_calibration("settle", str(tmp))
            fs.pixel_calibrate(levels=8, periods=1, orders=1, directions="x", plot=-1)
            fs.pixel_calibration_process(plot=0)
            files["pixel"] = fs.save_calibration("pixel", str(tmp))
            fs.wavefront_calibrate(calibration_points=np.array([[200.0], [128.0]]),
                                   superpixel_size=64, plot=-1)
            files["wavefront_superpixel"] = fs.save_calibration("wavefront_superpixel",
                                                                str(tmp))
    return bench_file, {k: Path(v) for k, v in files.items()}


def test_import_matches_truth(slmsuite_files):
    bench_file, files = slmsuite_files
    with open_bench(bench_file) as bench:
        cal = import_slmsuite(bench, list(files.values()))
        err = errors_vs_truth(cal, bench)
        truth = bench.truth
    assert cal.steps() == ["settle", "geometry", "lut", "source", "wavefront"]
    # geometry: slmsuite's affine converted to the model grid (pixel systems, k units)
    assert err["center_error_px"] < 0.5
    assert abs(err["scale_error_pct"]) < 0.5
    assert abs(err["rotation_error_deg"]) < 0.2
    # LUT: slmsuite's gamma (2*pi units, increasing) -> our delay relative to the top level
    assert err["lut_rms_rad"] < 0.05
    # wavefront: the correction negated is the aberration (every term has the true sign);
    # 4 x 4 superpixels only: measured 0.064 rad rms, waist 14 %, centre 5 px
    z, tz = cal.zernike_noll_rad, truth["zernike_noll_rad"]
    for j in (4, 5, 6, 7, 8):
        assert np.sign(z[j]) == np.sign(tz[j]), (j, z[j], tz[j])
    assert err["wavefront_rms_rad"] < 0.12
    assert abs(err["waist_error_pct"]) < 25
    assert err["source_center_error_px"] < 8
    # settle: slmsuite's fit (t0 + 4 tau) restated as ours (t0 + tau ln 1000)
    st = cal.settle.values
    assert st["slmsuite_kind"] == "settle" and st["tau_s"] > 0
    assert cal.settle_time_s == pytest.approx(st["communication_time_s"]
                                              + st["tau_s"] * np.log(1000))
    assert cal.settle_time_s > st["slmsuite_settle_time_s"]


def test_cli_import_saves_and_reloads(slmsuite_files, tmp_path, capsys):
    bench_file, files = slmsuite_files
    out = tmp_path / "cal"
    rc = main(["calibrate", str(bench_file), "--out", str(out), "--import-slmsuite",
               str(files["fourier"]), str(files["pixel"])])
    assert rc == 0
    text = capsys.readouterr().out
    assert "geometry: imported from slmsuite fourier" in text
    cal = CalibrationSet.load(out)
    assert cal.steps() == ["geometry", "lut"]
    assert cal.geometry["slmsuite_file_sha256"]
    # --resume adds the settle step to the same calibration
    rc = main(["calibrate", str(bench_file), "--out", str(out), "--resume",
               "--import-slmsuite", str(files["settle"])])
    assert rc == 0
    assert CalibrationSet.load(out).steps() == ["settle", "geometry", "lut"]


def test_refuses_other_devices(slmsuite_files, tmp_path, capsys):
    _, files = slmsuite_files
    other = small_bench_file(tmp_path, n=128, name="other.toml")
    rc = main(["calibrate", str(other), "--out", str(tmp_path / "cal"), "--import-slmsuite",
               str(files["fourier"])])
    assert rc == 2
    err = capsys.readouterr().err
    assert "other devices" in err and "slm shape: file [256, 256], bench [128, 128]" in err
    assert not (tmp_path / "cal" / "calibration.h5").exists()


def test_refuses_files_that_are_not_slmsuite_calibrations(slmsuite_files, tmp_path):
    bench_file, _ = slmsuite_files
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    pickled = tmp_path / "cal.pkl"
    pickled.write_bytes(b"\x80\x04N.")
    ours = CalibrationSet().save(tmp_path / "ours.h5")
    with open_bench(bench_file) as bench:
        for path, words in ((text, "not an HDF5 file"), (plain, "not an slmsuite calibration"),
                            (pickled, "pickles are never read"),
                            (ours, "one of our calibrations")):
            with pytest.raises(CalibrationError, match=words) as info:
                import_slmsuite(bench, [path])
            assert str(path) in str(info.value)


def test_refuses_unprocessed_pixel_calibration(slmsuite_files, tmp_path):
    bench_file, files = slmsuite_files
    raw = tmp_path / "raw-pixel.h5"
    raw.write_bytes(files["pixel"].read_bytes())
    with h5py.File(raw, "a") as f:
        del f["gamma"]
    with open_bench(bench_file) as bench, pytest.raises(CalibrationError, match="not processed"):
        import_slmsuite(bench, [raw])


def test_window_of_interest_is_folded_into_geometry(slmsuite_files, tmp_path):
    """slmsuite stores the affine in raw sensor pixels: a WOI offset moves the centre."""
    bench_file, files = slmsuite_files
    woi = tmp_path / "woi-fourier.h5"
    woi.write_bytes(files["fourier"].read_bytes())
    with h5py.File(woi, "a") as f:
        f["__meta__/cam/woi"][...] = np.array([10, 256, 20, 256])
    with open_bench(bench_file) as bench:
        a = import_slmsuite(bench, [files["fourier"]]).model_to_camera
        b = import_slmsuite(bench, [woi]).model_to_camera
    np.testing.assert_allclose(b[:, :2], a[:, :2])
    np.testing.assert_allclose(b[:, 2] - a[:, 2], [-10.0, -20.0], atol=1e-9)


def test_resume_of_all_steps_keeps_imported_ones(slmsuite_files, tmp_path, monkeypatch):
    """A lab that imported slmsuite's geometry and LUT does not measure them again on
    `hil calibrate --resume`; naming a step in --steps measures it."""
    import calibration.pipeline as pipeline
    from calibration import run_calibration

    bench_file, files = slmsuite_files
    ran = []

    def fake_step(step, ctx, options):  # records, measures nothing
        ran.append(step.name)
        return {r: StepResult(r, values={"measured": True}) for r in step.produces}

    monkeypatch.setattr(pipeline, "run_step", fake_step)
    with open_bench(bench_file) as bench:
        cal = import_slmsuite(bench, [files["fourier"], files["pixel"]])
        run_calibration(bench, tmp_path, calibration=cal, resume=True, progress=False,
                        report=False)
        assert "geometry" not in ran and "lut" not in ran and "dark" in ran
        assert cal.geometry["imported_from"] == "slmsuite"
        ran.clear()
        run_calibration(bench, tmp_path, steps="geometry", calibration=cal, resume=True,
                        progress=False, report=False)
        assert ran == ["geometry"] and cal.geometry["measured"]
