"""SLM boundary: sign convention, wrapping, LUT, model-grid upsampling, input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.phase import (
    PHASE_SIGN,
    ZERO_PHASE_GREY,
    ideal_phase_response,
    lut_from_response,
    phase_to_grey,
)
from devices.slmsuite_adapter import SlmsuiteSLM


def _slmsuite_slm(shape=(48, 64), bitdepth=8):
    from slmsuite.hardware.slms.simulated import SimulatedSLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SimulatedSLM((shape[1], shape[0]), bitdepth=bitdepth, gpu=False, wav_um=0.633)


@pytest.fixture
def ours():
    return SlmsuiteSLM(_slmsuite_slm(), name="t")


def test_convention_is_written_once():
    """The two constants say what the conversion does, and nothing else defines them."""
    import ast
    from pathlib import Path

    grey = phase_to_grey(np.array([[0.0, 0.5]], np.float32), 8).astype(int)
    assert ZERO_PHASE_GREY == {255: "max", 0: "min"}.get(int(grey[0, 0]))
    assert PHASE_SIGN == np.sign(grey[0, 1] - grey[0, 0])  # a larger phase: which way
    root = Path(__file__).resolve().parents[1]
    homes = set()
    for pkg in ("devices", "simulation", "calibration", "hil", "experiments"):
        for f in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                targets = (node.targets if isinstance(node, ast.Assign) else
                           [node.target] if isinstance(node, ast.AnnAssign) else [])
                if any(getattr(t, "id", "") in ("PHASE_SIGN", "ZERO_PHASE_GREY")
                       for t in targets):
                    homes.add(f.relative_to(root).as_posix())
    assert homes == {"devices/phase.py"}
    r = ideal_phase_response(8)
    assert r[255] == 0 and r[0] == pytest.approx(2 * np.pi * 255 / 256)


def test_zero_phase_is_max_grey_on_the_wrapped_object(ours):
    shown = ours.set_phase(np.zeros(ours.shape, np.float32), settle=False)
    assert (shown == 255).all()
    assert (np.asarray(ours.wrapped.display) == 255).all()


def test_sign_increasing_phase_lowers_grey(ours):
    step = 2 * np.pi / 256
    for k, grey in [(1, 254), (2, 253), (128, 127), (255, 0)]:
        ours.set_phase(np.full(ours.shape, k * step, np.float32), settle=False)
        assert (np.asarray(ours.wrapped.display) == grey).all(), k


@pytest.mark.parametrize("bitdepth", [8, 10])
def test_same_grey_levels_as_slmsuite_float_path(bitdepth):
    """Random phase (negative, beyond 2*pi): identical to slmsuite's own conversion."""
    mine = SlmsuiteSLM(_slmsuite_slm(bitdepth=bitdepth))
    ref = _slmsuite_slm(bitdepth=bitdepth)
    rng = np.random.default_rng(0)
    phase = rng.normal(0, 20, mine.shape).astype(np.float32)
    mine.set_phase(phase, settle=False)
    ref.set_phase(phase.copy(), settle=False)
    np.testing.assert_array_equal(np.asarray(mine.wrapped.display), np.asarray(ref.display))
    assert mine.wrapped.display.dtype == ref.display.dtype


@pytest.mark.parametrize("sigma", [2e5, 4e6])
def test_huge_phases_take_the_exact_slow_path(sigma):
    mine, ref = SlmsuiteSLM(_slmsuite_slm()), _slmsuite_slm()
    phase = np.random.default_rng(4).normal(0, sigma, mine.shape).astype(np.float32)
    mine.set_phase(phase, settle=False)
    ref.set_phase(phase.copy(), settle=False)
    np.testing.assert_array_equal(np.asarray(mine.wrapped.display), np.asarray(ref.display))


def test_float64_and_strided_input():
    mine, ref = SlmsuiteSLM(_slmsuite_slm()), _slmsuite_slm()
    big = np.random.default_rng(5).uniform(-9, 9, (mine.shape[0], 2 * mine.shape[1]))
    phase = big[:, ::2]  # float64, not contiguous
    mine.set_phase(phase, settle=False)
    ref.set_phase(phase.copy(), settle=False)
    np.testing.assert_array_equal(np.asarray(mine.wrapped.display), np.asarray(ref.display))
    np.testing.assert_array_equal(mine.phase, phase.astype(np.float32))


def test_wrap_adds_nothing(ours):
    rng = np.random.default_rng(1)
    # level centres, so that float rounding cannot move a value across a boundary
    phase = (rng.integers(0, 256, ours.shape) * (2 * np.pi / 256)).astype(np.float32)
    a = ours.set_phase(phase, settle=False).copy()
    for k in (-3, 1, 5):
        b = ours.set_phase(phase + np.float32(2 * np.pi * k), settle=False)
        np.testing.assert_array_equal(a, b)


def test_lut_measured_response_round_trip(ours):
    g = np.arange(256)
    response = 2 * np.pi * 0.97 * ((255 - g) / 256) ** 1.2  # non-linear, < 2*pi
    ours.set_phase_response(response)
    phase = np.resize(response, ours.shape).astype(np.float32)
    ours.set_phase(phase, settle=False)
    np.testing.assert_array_equal(np.asarray(ours.wrapped.display), np.resize(g, ours.shape))
    ours.set_phase_response(None)
    assert ours.lut is None


def test_lut_ideal_matches_linear():
    r = ideal_phase_response(8)
    lut = lut_from_response(r)
    phase = np.random.default_rng(2).uniform(-10, 10, (32, 32)).astype(np.float32)
    a, b = phase_to_grey(phase, 8), phase_to_grey(phase, 8, lut)
    assert np.mean(a == b) > 0.99  # differs only within half a LUT bin of a level boundary
    assert np.all(np.abs(a.astype(int) - b.astype(int)) % 255 <= 1)


def test_model_grid_is_upsampled_by_square_blocks():
    slm = SlmsuiteSLM(_slmsuite_slm(shape=(96, 128)))
    model = np.random.default_rng(3).uniform(0, 6, (32, 32)).astype(np.float32)
    shown = slm.set_phase(model, settle=False)
    assert slm.block_size(model.shape) == 3
    core = shown[:, 16:112].reshape(32, 3, 32, 3)
    assert (core == core[:, :1, :, :1]).all()
    np.testing.assert_array_equal(core[:, 0, :, 0], phase_to_grey(model, 8))
    assert (shown[:, :16] == 255).all() and (shown[:, 112:] == 255).all()  # margin: zero phase


def test_torch_tensor_accepted(ours):
    torch = pytest.importorskip("torch")
    t = torch.full(ours.shape, float(np.pi), dtype=torch.float32)
    assert (ours.set_phase(t, settle=False) == 127).all()


def test_nan_refused_before_anything_is_written(ours):
    before = np.asarray(ours.wrapped.display).copy()
    bad = np.ones(ours.shape, np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="phase_rad: expected finite"):
        ours.set_phase(bad)
    np.testing.assert_array_equal(np.asarray(ours.wrapped.display), before)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 120), cols=st.integers(1, 120), dtype=st.sampled_from(
    ["float32", "float64", "int32", "uint8", "bool", "complex64"]))
def test_bad_phase_input_named(rows, cols, dtype):
    slm = SlmsuiteSLM(_slmsuite_slm())
    arr = np.zeros((rows, cols), dtype=dtype)
    fits = rows <= slm.shape[0] and cols <= slm.shape[1]
    if dtype.startswith("float") and fits:
        slm.set_phase(arr, settle=False)
        return
    with pytest.raises((TypeError, ValueError), match="phase_rad"):
        slm.set_phase(arr, settle=False)


def test_settle_waits(ours):
    import time

    ours.settle_time_s = 0.05
    t0 = time.perf_counter()
    ours.set_phase(np.zeros(ours.shape, np.float32))
    assert time.perf_counter() - t0 >= 0.05
    t0 = time.perf_counter()
    ours.set_phase(np.zeros(ours.shape, np.float32), settle=False)
    assert time.perf_counter() - t0 < 0.05


def test_closed_slm_refuses(ours):
    ours.close()
    ours.close()  # twice is fine
    with pytest.raises(Exception, match="closed"):
        ours.set_phase(np.zeros(ours.shape, np.float32))


def test_zernike_noll_and_normalisation():
    import torch

    from simulation.zernike import noll_to_nm, unit_disk_grid, zernike, zernike_sum

    assert [noll_to_nm(j) for j in (1, 2, 3, 4, 5, 6, 7, 8, 11)] == [
        (0, 0), (1, 1), (1, -1), (2, 0), (2, -2), (2, 2), (3, -1), (3, 1), (4, 0)]
    rho, th = unit_disk_grid((201, 201))
    inside = rho <= 1
    for j in range(1, 12):
        z = zernike(j, rho, th)
        assert float((z[inside] ** 2).mean()) == pytest.approx(1.0, abs=0.02)
        assert float(z[~inside].abs().max()) == 0
    z4, z6 = zernike(4, rho, th)[inside], zernike(6, rho, th)[inside]
    assert abs(float((z4 * z6).mean())) < 0.01  # orthogonal
    s = zernike_sum({4: 0.5}, (64, 64))
    assert s.dtype == torch.float32 and s.shape == (64, 64)
    with pytest.raises(ValueError, match="j"):
        noll_to_nm(0)


def test_zernike_extend_matches_inside_and_continues():
    from simulation.zernike import unit_disk_grid, zernike

    rho, th = unit_disk_grid((40, 80))
    a, b = zernike(4, rho, th), zernike(4, rho, th, extend=True)
    inside = rho <= 1
    assert (a[inside] == b[inside]).all() and (b[~inside] > a[~inside]).all()
