"""`hil devices list` and `hil devices check` through hil.cli.main."""

from __future__ import annotations

import json

from hil.cli import main


def test_list(capsys):
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("slmsuite:Holoeye", "slmsuite:Meadowlark", "slmsuite:Basler",
                 "slmsuite:ThorCam", "slmsuite:SimulatedCamera", "visa:<resource>"):
        assert name in out
    assert main(["devices", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    sim = [r for r in rows if r["backend"] == "slmsuite:SimulatedSLM"]
    assert sim and sim[0]["available"] is True


def test_check_shipped_sim(capsys):
    assert main(["devices", "check", "sim.toml"]) == 0
    out = capsys.readouterr().out
    assert "ITC4001-SIM" in out and "frame" in out and "closed all devices" in out


def test_check_json(tmp_path, capsys):
    p = tmp_path / "b.toml"
    p.write_text('[slm]\nbackend = "sim"\nshape = [32, 32]\n'
                 '[camera]\nbackend = "sim"\nshape = [32, 32]\nfocal_length_mm = 3.0\n')
    assert main(["devices", "check", str(p), "--json", "--averaging", "2"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["frame"]["shape"] == [32, 32] and rep["capture"]["averaging"] == 2


def test_check_errors_are_one_line(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('[slm]\nbackend = "sim"\n[camera]\nbackend = "sim"\nexposure_s = -1\n')
    assert main(["devices", "check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "camera.exposure_s: expected a number > 0, got -1" in err
    assert main(["devices", "check", "holoeye-basler.toml"]) == 2
    assert "HEDS" in capsys.readouterr().err
    assert main(["devices", "check", "no-such-bench.toml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_schema(capsys):
    assert main(["devices", "schema"]) == 0
    out = capsys.readouterr().out
    assert "[camera]" in out and "exposure_s" in out and "max_power_mW" in out
