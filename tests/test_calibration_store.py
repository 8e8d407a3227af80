"""CalibrationSet round trip, corrupt / foreign / missing files, geometry helpers, CLI args."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration import CalibrationError, CalibrationSet, StepResult, camera_to_model
from calibration.geometry import (
    affine_parameters,
    check_affine,
    fit_affine,
    nominal_model_to_camera,
)
from calibration.lut import unfold_delays
from calibration.pipeline import parse_steps
from calibration.registration import locate_spot


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
    assert back.geometry.code_version == cal.geometry.code_version
    assert back.geometry.time == cal.geometry.time  # the record's time, not the load's
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


V1_FILE = Path(__file__).parent / "data" / "calibration_v1.h5"


def test_a_file_written_before_the_step_registry_loads():
    """``tests/data/calibration_v1.h5`` was written by the code before the registry and
    typed attributes (commit c28c6cf: a 256 px simulated bench, seed 0, steps dark,
    geometry, lut, wavefront with reduced settings, plus a settle and a decoders record
    with nested, ragged, mixed and None values): JSON string attributes, and the geometry
    record holding the wavefront's centre correction (``model_to_camera``) beside its spot
    fit (``model_to_camera_spots``)."""
    import json

    with h5py.File(V1_FILE, "r") as f:
        assert int(f.attrs["format_version"]) == 1
        corrected = f["geometry/values/model_to_camera"][()]
        spots = f["geometry/values/model_to_camera_spots"][()]
        old_geo = json.loads(f["geometry/values"].attrs["json"])
    cal = CalibrationSet.load(V1_FILE)
    assert cal.steps() == ["settle", "dark", "geometry", "lut", "source", "wavefront",
                           "decoders"]
    # the geometry record is its spot fit again; the correction is applied on read
    np.testing.assert_array_equal(cal.geometry["model_to_camera"], spots)
    np.testing.assert_array_equal(cal.model_to_camera, corrected)
    assert set(cal.geometry.values) == {"model_to_camera", "size", "block",
                                        "diffraction_order", "inputs_sha256"}
    assert "model_to_camera" not in cal.wavefront.values
    params = cal.affine_parameters
    for k in ("center_x", "center_y", "scale", "rotation_deg", "shear"):
        assert params[k] == pytest.approx(old_geo[k], rel=1e-12, abs=1e-12), k
    assert cal.geometry["rotation_deg"] == pytest.approx(old_geo["rotation_deg"])
    assert cal.dark_frame.shape == (256, 256) and cal.dark_model is not None
    assert sorted(cal.zernike_noll_rad)[:2] == [4, 5]
    assert cal.decoders["decoder_files"]["twin"]["path"] == "decoder_twin.pt"
    assert cal.decoders["ragged"] == [[1, 2], [3]] and cal.decoders["mixed"] == [1, "a"]
    assert cal.settle["none_value"] is None and cal.settle_time_s == 0.012
    assert cal.devices["slm"]["shape"] == [256, 256]


def test_v1_file_whose_wavefront_was_replaced_keeps_the_map_in_use(tmp_path):
    """A version-1 geometry corrected by a wavefront step whose record was later replaced
    (an slmsuite import: no ``center_shift_px``) keeps the corrected map it was using."""
    import json
    import shutil

    path = tmp_path / "v1.h5"
    shutil.copy(V1_FILE, path)
    with h5py.File(path, "a") as f:
        corrected = f["geometry/values/model_to_camera"][()]
        attrs = f["wavefront/values"].attrs
        values = json.loads(attrs["json"])
        del values["center_shift_px"]
        attrs["json"] = json.dumps(values)
    cal = CalibrationSet.load(path)
    np.testing.assert_array_equal(cal.model_to_camera, corrected)
    assert "model_to_camera_spots" not in cal.geometry.values


def _values_of(cal: CalibrationSet) -> dict:
    return {n: (cal.record(n).values, cal.record(n).residuals, cal.record(n).devices)
            for n in cal.steps()}


def _assert_same(a, b, where=""):
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), (where, a, b)
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def test_v1_file_saved_again_reads_back_the_same(tmp_path):
    cal = CalibrationSet.load(V1_FILE)
    back = CalibrationSet.load(cal.save(tmp_path))
    _assert_same(_values_of(cal), _values_of(back))
    _assert_same(cal.devices, back.devices)
    np.testing.assert_array_equal(back.model_to_camera, cal.model_to_camera)


def test_values_are_native_typed_attributes_with_units(tmp_path):
    """No JSON text where HDF5 has a type (issue 11 item 6): numbers, strings, bools and
    lists are typed attributes, with ``<name>_units`` / a dataset's ``units``."""
    cal = _full_set()
    cal.set("settle", StepResult("settle", values={
        "settle_time_s": 0.02, "method": "fit", "flag": True, "none_value": None,
        "names": ["a", "bc"], "pair_px": [1.5, -2.0], "empty": [], "ragged": [[1], [2, 3]],
        "nested": {"inner": {"x_rad": 1.0, "7": "seven"}}, "big": list(range(2000)),
        "count": 3}))
    path = cal.save(tmp_path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2
        texts = []
        f.visititems(lambda name, obj: texts.extend(
            f"{name}:{k}" for k in obj.attrs if k == "json"))
        assert texts == []  # the version-1 layout is gone
        s = f["settle/values"].attrs
        assert isinstance(s["settle_time_s"], np.float64) and s["settle_time_s_units"] == "s"
        assert isinstance(s["count"], np.int64) and "count_units" not in s
        assert s["method"] == "fit" and isinstance(s["flag"], np.bool_)
        np.testing.assert_array_equal(s["pair_px"], [1.5, -2.0])
        assert s["pair_px_units"] == "px"
        assert list(s["_json_keys"]) == ["ragged"] and isinstance(s["none_value"], h5py.Empty)
        assert f["settle/values/nested/inner"].attrs["x_rad_units"] == "rad"
        assert f["settle/values/big"].shape == (2000,)  # a long list is a dataset
        assert f["dark/values/dark_frame"].attrs["units"] == "counts"
        assert f["geometry/values/model_to_camera"].attrs["units"] == "px"
        assert f["wavefront/values/zernike_noll_rad"].attrs["4_units"] == "rad"
        assert f["geometry"].attrs["time_units"].startswith("s since")
        assert f["provenance"].attrs["package"] == "hil-diffraction"
    back = CalibrationSet.load(path)
    v = back.settle.values
    assert v["names"] == ["a", "bc"] and v["pair_px"] == [1.5, -2.0] and v["empty"] == []
    assert v["ragged"] == [[1], [2, 3]] and v["none_value"] is None and v["flag"] is True
    assert v["nested"] == {"inner": {"x_rad": 1.0, "7": "seven"}} and v["count"] == 3
    np.testing.assert_array_equal(v["big"], np.arange(2000))
    assert back.zernike_noll_rad == {4: 0.1, 7: -0.2}
    assert back.geometry.code_version == cal.geometry.code_version


def test_a_huge_attribute_is_refused_unread(tmp_path):
    path = _full_set().save(tmp_path)
    with h5py.File(path, "a") as f:
        f["geometry/values"].attrs["huge"] = np.zeros(1 << 17)
    with pytest.raises(CalibrationError, match="huge.*refused unread"):
        CalibrationSet.load(path)


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
    from session_helpers import calibration_bench

    from calibration import run_calibration
    from calibration.lut import calibrate_phase_response
    from calibration.registration import calibrate_geometry

    with calibration_bench(0) as bench:
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
