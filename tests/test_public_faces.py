"""Each package's public face: every exported name resolves, and ``hil --help`` stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("simulation", "devices", "calibration", "hil", "experiments")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    mod = importlib.import_module(package)
    assert mod.__all__, f"{package} exports nothing"
    missing = [n for n in mod.__all__ if getattr(mod, n, None) is None]
    assert missing == []
    assert set(mod.__all__) <= set(dir(mod))


def test_unknown_names_raise_attribute_error():
    import hil

    with pytest.raises(AttributeError, match="no attribute 'RunConfg'"):
        hil.RunConfg  # noqa: B018


def test_importing_the_cli_and_the_lazy_faces_does_not_load_torch():
    code = ("import sys, hil, hil.cli, experiments; "
            "print('torch' in sys.modules); hil.RunConfig; print('torch' in sys.modules); "
            "hil.fine_tune_on_bench; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    # a run's settings need no torch; the last line is the control: the face does load it
    assert out == ["False", "False", "True"]


def test_simulation_utilities_import_no_torch_and_speckle_stays_the_function():
    """`simulation.atomic` / `.provenance` / `.h5attrs` are used by every package (the
    real-device backends too): importing them must not load the twin's torch. The face
    name `speckle` is also a module's name: it stays the function once the module is
    imported (the control: the module object would not be callable)."""
    code = ("import sys, simulation.atomic, simulation.provenance, simulation.h5attrs, "
            "simulation.validate; "
            "print('torch' in sys.modules); import simulation.speckle; "
            "from simulation import speckle; print(callable(speckle)); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["False", "True", "True"]
