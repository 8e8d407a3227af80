"""The one set of argument checks (`simulation.validate`): kinds, ranges and words."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from simulation.validate import WrongKind, check_choice, check_count, check_number


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.1), np.int64(3)])
def test_check_number_accepts_and_returns_a_float(value):
    out = check_number(value, "x")
    assert isinstance(out, float) and out == pytest.approx(float(value))


@pytest.mark.parametrize("value, kw, error, words", [
    ("1", {}, TypeError, "x: expected a number, got str"),
    (True, {}, TypeError, "x: expected a number, got bool"),
    (None, {}, TypeError, "x: expected a number, got NoneType"),
    (0, {}, ValueError, "x: expected a finite number > 0, got 0"),
    (-1.0, {"allow_zero": True}, ValueError, "x: expected a finite number >= 0, got -1.0"),
    (float("nan"), {}, ValueError, "x: expected a finite number > 0"),
    (float("inf"), {"allow_zero": True}, ValueError, "x: expected a finite number >= 0"),
    (90.0, {"at_most": 60.0, "unit": " s"}, ValueError,
     "x: expected at most 60 s (upper limit), got 90.0"),
])
def test_check_number_refuses_with_the_arguments_name(value, kw, error, words):
    with pytest.raises(error) as info:
        check_number(value, "x", **kw)
    assert str(info.value).startswith(words)


def test_the_wrong_kind_is_a_type_error_and_a_value_error():
    for call in (lambda: check_number("1", "x"), lambda: check_count(1.5, "n")):
        with pytest.raises(WrongKind) as info:
            call()
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError) as info:  # out of range: a ValueError, not a TypeError
        check_count(0, "n")
    assert not isinstance(info.value, TypeError)


def test_check_number_bounds_are_inclusive():
    assert check_number(0, "x", allow_zero=True) == 0.0
    assert check_number(60, "x", at_most=60) == 60.0


@pytest.mark.parametrize("value, low, error", [
    (0, 1, ValueError), (1, 2, ValueError), (1.0, 1, TypeError), (True, 0, TypeError),
    ("3", 1, TypeError),
])
def test_check_count_refuses(value, low, error):
    with pytest.raises(error, match=rf"^n: expected an integer >= {low}, got "):
        check_count(value, "n", low)


def test_check_count_returns_a_python_int():
    out = check_count(np.int32(4), "n")
    assert out == 4 and type(out) is int
    assert check_count(0, "n", 0) == 0


def test_check_choice():
    assert check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^mode: expected one of 'a', 'b', got 'c'$"):
        check_choice("c", "mode", ("a", "b"))


def test_the_device_backends_can_use_it_without_torch():
    code = "import sys, simulation.validate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["False"]


def test_the_packages_route_their_checks_through_it():
    """The old hand-written copies are gone: devices, calibration and the simulation's
    tensor checks give these words (a control: the words differ from the old ones)."""
    from session_helpers import FakeCameraDriver

    from devices import SlmsuiteCamera
    from simulation import speckle

    with pytest.raises(ValueError, match="pitch_um: expected a finite number > 0"):
        SlmsuiteCamera(FakeCameraDriver(), pitch_um=-1.0)
    with pytest.raises(TypeError, match="batch_size: expected an integer >= 1"):
        speckle(4, 15.0, batch_size=1.5)
    with pytest.raises(ValueError, match="gamma: expected a finite number > 0"):
        speckle(4, 0.0)
