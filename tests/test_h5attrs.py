"""simulation.h5attrs: typed HDF5 attributes with units, checked on reading."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from simulation.h5attrs import get_attr, set_attr, set_units, units_of


def test_values_round_trip_as_native_types(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        set_attr(f.attrs, "name", "mnist")
        set_attr(f.attrs, "seed", 7)
        set_attr(f.attrs, "exposure_s", 0.002, units="s")
        set_attr(f.attrs, "ok", True)
        set_attr(f.attrs, "shape", (2, 32, 32))
        set_attr(f.attrs, "gains", [0.5, 1.5])
        set_attr(f.attrs, "gone", None)
        d = f.create_dataset("x", data=np.zeros(3))
        set_units(d, "rad")
    with h5py.File(tmp_path / "a.h5", "r") as f:
        a = f.attrs
        assert a["name"] == "mnist" and a["seed"].dtype == np.int64
        assert "gone" not in a and units_of(f, "exposure_s") == "s"
        assert units_of(f["x"]) == "rad" and units_of(f, "seed") is None
        assert get_attr(a, "name", "str") == "mnist"
        assert get_attr(a, "seed", "int") == 7
        assert get_attr(a, "exposure_s", "float") == 0.002
        assert get_attr(a, "ok", "bool") is True
        assert get_attr(a, "shape", "int_array", shape=(3,)).tolist() == [2, 32, 32]
        assert get_attr(a, "gains", "float_array").tolist() == [0.5, 1.5]
        assert get_attr(a, "gone", "int", default=-1) == -1


@pytest.mark.parametrize("value", [{"a": 1}, object(), b"raw", ["a", "b"]])
def test_values_that_are_not_plain_are_refused(tmp_path, value):
    with h5py.File(tmp_path / "a.h5", "w") as f, pytest.raises(TypeError, match="'bad'"):
        set_attr(f.attrs, "bad", value)


def test_wrong_kinds_and_sizes_are_refused_naming_the_attribute(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w", libver="latest") as f:
        f.attrs["seed"] = "7"
        f.attrs["flag"] = 1
        f.attrs["shape"] = [1.0, 2.0, 3.0]
        f.attrs["big"] = np.zeros(70_000, np.int64)
        f.attrs["nan"] = np.nan
    with h5py.File(tmp_path / "a.h5", "r") as f:
        a = f.attrs
        with pytest.raises(ValueError, match=r"x.h5: attribute 'seed': expected an integer"):
            get_attr(a, "seed", "int", where="x.h5")
        with pytest.raises(ValueError, match="'flag': expected a boolean"):
            get_attr(a, "flag", "bool")
        with pytest.raises(ValueError, match="'shape': expected an integer array"):
            get_attr(a, "shape", "int_array")
        with pytest.raises(ValueError, match=r"'shape'.*of shape \(2\)"):
            get_attr(a, "shape", "float_array", shape=(2,))
        with pytest.raises(ValueError, match="'big'.*refused unread"):
            get_attr(a, "big", "int_array")
        with pytest.raises(ValueError, match="'nan'.*finite"):
            get_attr(a, "nan", "float")
