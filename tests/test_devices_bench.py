"""Bench files and the context manager: errors name the key; the laser goes off on error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from session_helpers import FakeCameraDriver, sim_bench

from devices import (
    ConfigError,
    DeviceError,
    SlmsuiteCamera,
    load_config,
    open_bench,
    shipped_benches,
)
from devices.config import SCHEMA


def small(**extra):
    """The tiny simulated bench (seed 2) with its laser (on) and power meter; ``extra``
    tables are merged in."""
    d = sim_bench("tiny", seed=2, laser=True, power_meter=True)
    for k, v in extra.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return d


def test_shipped_benches_parse():
    names = set(shipped_benches())
    assert {"sim.toml", "sim-realistic.toml", "holoeye-basler.toml",
            "meadowlark-thorlabs.toml"} <= names
    for name in names:
        cfg = load_config(name)
        assert cfg["slm"]["backend"] and cfg["camera"]["backend"]
    real = load_config("sim-realistic")
    assert real["slm"]["shape"] == [1152, 1920] and real["camera"]["shape"] == [1080, 1440]
    assert real["camera"]["pitch_um"] == 3.45 and real["camera"]["bitdepth"] == 12


def test_context_manager_turns_laser_off_and_closes_on_error():
    with pytest.raises(RuntimeError, match="boom"):
        with open_bench(small()) as b:
            assert b.laser.is_output_on()
            b.slm.set_phase(np.zeros(b.slm.shape, np.float32))
            raise RuntimeError("boom")
    writes = [m for k, m in b.laser.transcript if k == "write"]
    assert writes[-1] == "OUTP 0"
    assert b.laser.transcript[-1] == ("reply", '+0,"No error"')  # the instrument accepted it
    assert all(d.closed for d in b.devices()) and len(b.devices()) == 4


def test_close_survives_a_failing_device(caplog):
    class Stuck(FakeCameraDriver):
        def close(self):
            raise DeviceError("stuck")

    b = open_bench(small())
    b.camera.close()
    b.camera = SlmsuiteCamera(Stuck())  # a camera whose driver fails to close
    b.close()
    assert b.slm.closed and b.laser.closed and b.power_meter.closed and "stuck" in caplog.text


def test_refused_setpoint_in_file_closes_what_was_open():
    with pytest.raises(DeviceError, match="max_power_mW"):
        open_bench(small(laser={"setpoint": 50.0}))


def test_info_lists_every_device():
    with open_bench(small()) as b:
        info = b.info()
    assert info["simulated"] and info["seed"] == 2
    assert info["laser"]["identity"].startswith("Thorlabs,ITC4001")
    assert info["camera"]["shape"] == [96, 128] and info["slm"]["zero_phase_grey"] == 255


def test_toml_file(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text('seed = 5\n[slm]\nbackend = "sim"\nshape = [32, 32]\n'
                 '[camera]\nbackend = "sim"\nshape = [32, 32]\nfocal_length_mm = 3.0\n'
                 'exposure_s = 0.002\n')
    with open_bench(p) as b:
        assert b.camera.get_exposure() == pytest.approx(0.002)
        assert b.laser is None and b.power_meter is None and b.truth["seed"] == 5
    p.write_text("[slm]\nbackend = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


@pytest.mark.parametrize("patch,key", [
    ({"camera": {"exposure_s": -1}}, "camera.exposure_s: expected a number > 0, got -1"),
    ({"camera": {"exposur_s": 1.0}}, "camera.exposur_s: unknown key"),
    ({"slm": {"shape": [0, 5]}}, "slm.shape: expected"),
    ({"slm": {"backend": "holoeye"}}, "slm.backend: expected"),
    ({"laser": {"backend": "slmsuite:Holoeye"}}, "laser.backend"),
    ({"camera": {"args": {"a": 1}}}, "camera.args: only for backend slmsuite"),
    ({"laser": {"output": "maybe"}}, "laser.output"),
    ({"colour": "red"}, "colour: unknown key"),
    ({"seed": -3}, "seed: expected an integer >= 0"),
])
def test_config_errors_name_the_key(patch, key):
    with pytest.raises(ConfigError) as info:
        load_config(small(**patch))
    assert str(info.value).startswith(key)
    assert isinstance(info.value, ValueError)


def test_missing_tables_and_backend():
    with pytest.raises(ConfigError, match="^camera: missing"):
        load_config({"slm": {"backend": "sim"}})
    with pytest.raises(ConfigError, match="^slm.backend: missing"):
        load_config({"slm": {}, "camera": {"backend": "sim"}})


_NUMERIC = [(s, k, key) for s, keys in SCHEMA.items() if s for k, key in keys.items()
            if key.kind in ("number", "int") and key.check is not None]


@settings(max_examples=60, deadline=None)
@given(target=st.sampled_from(_NUMERIC), value=st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.text(max_size=5),
    st.booleans(), st.lists(st.integers(), max_size=2)))
def test_wrong_values_are_refused_with_the_key(target, value):
    section, k, key = target
    ok_type = (isinstance(value, (int, float)) and not isinstance(value, bool)
               and (key.kind == "number" or isinstance(value, int)))
    ok = (ok_type and math.isfinite(value) and key.check(value)
          and (key.limit is None or value <= key.limit))
    table = {k: value} if section == "sim_flaws" else {"backend": "sim", k: value}
    cfg = small(**{section: table})
    if ok:
        load_config(cfg)
        return
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value).startswith(f"{section}.{k}: expected")


def test_missing_sdk_names_the_sdk_and_docs():
    d = small(slm={"backend": "slmsuite:Holoeye"})
    d["slm"].pop("shape")
    with pytest.raises(DeviceError) as info:
        open_bench(d)
    msg = str(info.value)
    assert "HEDS" in msg and "slmsuite.readthedocs.io" in msg
    assert not isinstance(info.value, ImportError)


def test_slmsuite_backend_through_the_adapter():
    d = small(slm={"backend": "slmsuite:SimulatedSLM",
                   "args": {"resolution": [64, 48], "wav_um": 0.633, "gpu": False}})
    d["slm"].pop("shape")
    d["camera"] = {"backend": "sim"}
    with pytest.raises(ConfigError, match='needs slm.backend = "sim"'):
        open_bench(d)
    d = small(slm={"backend": "slmsuite:SimulatedSLM", "args": {"resolutio": [64, 48]}})
    d["slm"].pop("shape")
    with pytest.raises(ConfigError, match="slm.args.resolutio: not an argument"):
        open_bench(d)


def test_simulated_power_meter_reads_the_laser():
    with open_bench(small()) as b:
        assert b.power_meter.read_power_W() == pytest.approx(10e-3, rel=0.01)
        b.laser.set_power_mW(4.0)
        assert b.power_meter.read_power_W() == pytest.approx(4e-3, rel=0.01)
        b.laser.output_off()
        assert b.power_meter.read_power_W() == 0
        assert ("query", "MEAS:POW?") in b.power_meter.transcript


#: simulation's utility modules (files, provenance, argument checks; torch-free): any
#: backend may use them
SIMULATION_UTILITIES = {"simulation.atomic", "simulation.provenance", "simulation.h5attrs",
                        "simulation.validate"}


def test_import_direction():
    """devices imports no package above it; the twin (simulation, other than its file
    utilities) only in the simulated backends."""
    import ast
    from pathlib import Path

    import devices

    root = Path(devices.__file__).parent
    for f in root.glob("*.py"):
        tree = ast.parse(f.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        tops = {n.split(".")[0] for n in names}
        assert not tops & {"hil", "calibration", "experiments"}, f.name
        twin = {n for n in names if n.split(".")[0] == "simulation"} - SIMULATION_UTILITIES
        if twin:
            assert f.name in ("flaws.py", "simulated.py") or f.name.startswith("sim_"), \
                (f.name, twin)
    zern = Path(root.parent / "simulation" / "zernike.py").read_text()
    assert "from devices" not in zern and "import hil" not in zern
