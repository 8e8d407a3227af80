"""CalibrationSet round trip, corrupt / foreign / missing files, geometry helpers, CLI args."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration import CalibrationError, CalibrationSet, StepResult, camera_to_model
from calibration.geometry import affine_parameters, check_affine, nominal_model_to_camera
from calibration.lut import unfold_delays
from calibration.pipeline import parse_steps
from calibration.registration import fit_affine, locate_spot


def _full_set() -> CalibrationSet:
    rng = np.random.default_rng(0)
    cal = CalibrationSet(devices={"slm": {"device_id": "sim:slm"}})
    cal.set("dark", StepResult("dark", values={"dark_frame": rng.random((8, 8), np.float32),
                                               "gain_counts_per_electron": 0.4},
                               residuals={"ptc_rel_rms": 0.01}))
    cal.set("geometry", StepResult("geometry", values={
        "model_to_camera": np.array([[2.0, 0.1, 10.0], [-0.1, 2.0, 12.0]]), "size": 32,
        "block": 8}, residuals={"rms_px": 0.02, "point_residuals_px": rng.random((5, 2))},
        data={"model_pts": rng.random((5, 2))}, devices={"camera": {"shape": [8, 8]}}))
    cal.set("lut", StepResult("lut", values={"phase_response_rad": np.linspace(6, 0, 256)}))
    cal.set("wavefront", StepResult("wavefront", values={"zernike_noll_rad": {4: 0.1, 7: -0.2},
                                                         "radius_px": 128.0}))
    return cal


def test_round_trip(tmp_path):
    cal = _full_set()
    path = cal.save(tmp_path / "cal")
    assert path.name == "calibration.h5"
    back = CalibrationSet.load(tmp_path / "cal")
    assert back.steps() == ["dark", "geometry", "lut", "wavefront"]
    assert back.source is None and back.model is None and back.decoders is None
    np.testing.assert_array_equal(back.dark_frame, cal.dark_frame)
    np.testing.assert_array_equal(back.model_to_camera, cal.model_to_camera)
    assert back.grid_size == 32 and back.block == 8
    np.testing.assert_array_equal(back.phase_response_rad, cal.phase_response_rad)
    assert back.zernike_noll_rad == {4: 0.1, 7: -0.2}
    assert back.geometry.devices == {"camera": {"shape": [8, 8]}}
    assert back.devices == {"slm": {"device_id": "sim:slm"}}
    assert back.geometry.code_version and back.geometry.time > 0
    # an .h5 path is used as is
    p2 = cal.save(tmp_path / "x.h5")
    assert CalibrationSet.load(p2).steps() == back.steps()
    assert not list(tmp_path.glob("**/*.tmp"))


def test_empty_set_accessors_are_none():
    cal = CalibrationSet()
    assert cal.steps() == []
    assert cal.dark_frame is None and cal.model_to_camera is None
    assert cal.phase_response_rad is None and cal.zernike_noll_rad is None
    with pytest.raises(CalibrationError, match="geometry.*has not been run"):
        cal.require("geometry")
    with pytest.raises(ValueError, match="name"):
        cal.set("nonsense", StepResult("x"))
    with pytest.raises(KeyError, match="no value 'missing'"):
        _full_set().geometry["missing"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no calibration file"):
        CalibrationSet.load(tmp_path / "nothing")


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(CalibrationError, match="not a readable HDF5"):
        CalibrationSet.load(bad)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(CalibrationError, match="not a calibration file"):
        CalibrationSet.load(foreign)
    path = _full_set().save(tmp_path / "v.h5")
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CalibrationError, match="format version 99"):
        CalibrationSet.load(path)
    path = _full_set().save(tmp_path / "c.h5")
    with h5py.File(path, "a") as f:
        del f["geometry/values"]
    with pytest.raises(CalibrationError, match="corrupt"):
        CalibrationSet.load(path)


def test_failed_save_leaves_old_file(tmp_path, monkeypatch):
    cal = _full_set()
    path = cal.save(tmp_path)
    before = path.read_bytes()
    cal.geometry.values["bad"] = object()  # not serialisable
    with pytest.raises(TypeError):
        cal.save(tmp_path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".calibration-*"))


def test_camera_to_model_samples_through_the_affine():
    frame = np.add.outer(np.arange(64.0) * 100, np.arange(64.0))  # value = 100 y + x
    a = np.array([[1.5, 0.0, 3.25], [0.0, 1.5, 5.5]])
    out = camera_to_model(frame[None], a, size=8)
    cols, rows = np.meshgrid(np.arange(8), np.arange(8))
    expect = 100 * (1.5 * rows + 5.5) + (1.5 * cols + 3.25)  # bilinear is exact on a plane
    assert out.shape == (1, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expect, rtol=1e-5)
    assert camera_to_model(frame.astype(np.uint16), a, 8).shape == (1, 8, 8)
    assert camera_to_model(np.zeros((0, 64, 64)), a, 8).shape == (0, 8, 8)


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(4,), (2, 3, 4, 5), (3, 1, 9), (2, 5, 1)]))
def test_camera_to_model_rejects_bad_frames(shape):
    with pytest.raises(ValueError, match="frames"):
        camera_to_model(np.zeros(shape), np.eye(2, 3), 4)


@settings(max_examples=25, deadline=None)
@given(a=st.one_of(
    st.just(np.zeros((2, 3))), st.just(np.eye(3)), st.just(np.full((2, 3), np.nan)),
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=5,
             max_size=5)))
def test_bad_affines_are_refused(a):
    with pytest.raises(ValueError, match="model_to_camera"):
        check_affine(a)


def test_camera_to_model_bad_size_and_dtype():
    with pytest.raises(ValueError, match="size"):
        camera_to_model(np.zeros((1, 8, 8)), np.eye(2, 3), 0)
    with pytest.raises(ValueError, match="dtype"):
        camera_to_model(np.zeros((1, 8, 8), complex), np.eye(2, 3), 4)


def test_nominal_geometry():
    from types import SimpleNamespace

    slm = SimpleNamespace(wav_um=0.633, pitch_um=(8.0, 8.0))
    cam = SimpleNamespace(shape=(512, 600), pitch_um=(5.5, 5.5))
    a = nominal_model_to_camera(slm, cam, 32, 16, 50_000.0)
    p = affine_parameters(a, 32)
    assert p["scale"] == pytest.approx(0.633 * 50_000 / (32 * 16 * 8 * 5.5))
    assert (p["center_x"], p["center_y"]) == (300.0, 256.0)
    assert p["rotation_deg"] == 0.0
    with pytest.raises(ValueError, match="focal_length_um"):
        nominal_model_to_camera(slm, cam, 32, 16, -1.0)


def test_affine_fit_and_spot_location():
    rng = np.random.default_rng(1)
    model = rng.uniform(0, 32, (20, 2))
    true = np.array([[2.9, -0.1, 40.0], [0.1, 2.9, 50.0]])
    cam = model @ true[:, :2].T + true[:, 2]
    cam[3] += 25  # one bad spot
    a, inl = fit_affine(model, cam)
    np.testing.assert_allclose(a, true, atol=1e-6)
    assert not inl[3] and inl.sum() == 19
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.exp(-((xx - 30.3) ** 2 + (yy - 20.7) ** 2) / 4.0)
    x, y = locate_spot(img, radius=6)
    assert abs(x - 30.3) < 0.02 and abs(y - 20.7) < 0.02
    with pytest.raises(ValueError, match="no spot"):
        locate_spot(np.zeros((32, 32)))


def test_unfold_delays():
    delta = np.linspace(0, 2.2 * np.pi, 40)
    theta = np.abs(np.angle(np.exp(1j * delta)))  # folded into [0, pi]
    np.testing.assert_allclose(unfold_delays(theta), delta, atol=1e-9)


def test_parse_steps():
    assert parse_steps(None)[0] == "dark"
    assert parse_steps("lut,geometry") == ("geometry", "lut")
    with pytest.raises(ValueError, match="steps"):
        parse_steps("geometry,bogus")
    with pytest.raises(ValueError, match="steps"):
        parse_steps("")


def test_routines_refuse_bad_arguments(tmp_path):
    from calibration import run_calibration
    from calibration.lut import calibrate_phase_response
    from calibration.registration import calibrate_geometry
    from tests.test_calibration import small_bench

    with small_bench(0) as bench:
        with pytest.raises(ValueError, match="grid"):
            calibrate_geometry(bench, grid=1)
        with pytest.raises(ValueError, match="span"):
            calibrate_geometry(bench, span=1.5)
        with pytest.raises(ValueError, match="level_step"):
            calibrate_phase_response(bench, np.eye(2, 3), level_step=0)
        with pytest.raises(ValueError, match="model_to_camera"):
            calibrate_phase_response(bench, np.zeros((2, 3)))
        with pytest.raises(ValueError, match="options"):
            run_calibration(bench, None, steps="dark", options={"bogus": {}}, progress=False)
        with pytest.raises(ValueError, match="size"):
            run_calibration(bench, None, steps="dark", size=True, progress=False)
        with pytest.raises(TypeError):
            run_calibration(bench, None, steps="dark", options={"dark": {"nonsense": 1}},
                            progress=False)


def test_a_missing_value_is_a_user_error_naming_the_step_not_a_bug():
    """A calibration file without a value a step needs: one line from the CLI (a bare
    KeyError would now print a traceback, since hil.cli treats KeyError as a bug)."""
    from hil.cli import user_error_message

    step = StepResult("geometry", values={"model_to_camera": np.eye(2, 3)})
    with pytest.raises(KeyError) as info:
        step["lut_rad"]
    msg = user_error_message(info.value)
    assert msg is not None and "geometry" in msg and "lut_rad" in msg
    assert user_error_message(KeyError("a bug")) is None  # the control: a real bug
