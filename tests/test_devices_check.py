"""`hil devices check`: saturation, dark level, frame rate and power meter (``--json``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from devices import open_bench
from hil.cli import main

SIM = Path(__file__).resolve().parents[1] / "devices" / "benches" / "sim.toml"


def bench_file(tmp: Path, *, exposure_s: float = 0.001, output: str = "on",
               instruments: bool = True) -> Path:
    """sim.toml at 64 x 64 pixels; optionally without laser and power meter."""
    text = SIM.read_text().replace("shape = [512, 512]", "shape = [64, 64]")
    text = re.sub(r"(?m)^exposure_s = .*$", f"exposure_s = {exposure_s}", text)
    text = re.sub(r'(?m)^output = "on"', f'output = "{output}"', text)
    if not instruments:
        text = text[:text.index("[laser]")]
    path = tmp / "bench.toml"
    path.write_text(text)
    return path


def check_json(path: Path, capsys, *extra: str) -> dict:
    assert main(["devices", "check", str(path), "--json", *extra]) == 0
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return json.loads(captured.out)


def test_reports_dark_rate_power(tmp_path, capsys):
    path = bench_file(tmp_path)
    rep = check_json(path, capsys, "--frames", "3")
    with open_bench(path) as bench:
        truth = bench.truth
    dark = rep["dark"]
    assert dark["measured"] and dark["laser_output_restored"]
    # read noise 5 e- at 0.4 counts/e-: the mean of 4096 pixels is within a count
    assert abs(dark["mean_counts"] - truth["dark_level_counts"]) < 1.0
    assert rep["frame_rate"]["frames"] == 3 and rep["frame_rate"]["measured_hz"] > 0
    assert rep["frame_rate"]["bound_hz"] == 1000.0  # 1 ms exposure, no frame-rate key
    assert abs(rep["power_meter"]["power_W"] - 0.010) < 0.001  # set-point 10 mW
    assert rep["power_meter"]["laser_output_on"] is True  # switched back on after the dark
    # the bench is lit well below full scale at 1 ms: a fraction near 1 (a wrong full
    # scale, counts compared against 8 bits) would show here
    assert rep["frame"]["saturated_fraction"] < 0.01


def test_saturation_and_low_signal_warnings(tmp_path, capsys):
    rep = check_json(bench_file(tmp_path, exposure_s=0.05), capsys)
    assert rep["frame"]["saturated_fraction"] > 0.001
    assert any(w.startswith("saturation:") for w in rep["warnings"])
    # laser off at opening: the frame is dark, the check says so and leaves it off
    rep = check_json(bench_file(tmp_path, output="off"), capsys)
    assert any(w.startswith("low signal:") for w in rep["warnings"])
    assert rep["dark"]["laser_output_restored"] is False
    assert rep["power_meter"]["laser_output_on"] is False
    assert rep["power_meter"]["power_W"] < 1e-4


def test_without_laser_dark_is_not_measured(tmp_path, capsys):
    rep = check_json(bench_file(tmp_path, instruments=False), capsys)
    assert rep["dark"]["measured"] is False and "no laser" in rep["dark"]["reason"]
    assert rep["power_meter"] is None
    assert main(["devices", "check", str(bench_file(tmp_path, instruments=False))]) == 0
    out = capsys.readouterr().out
    assert "dark level   not measured" in out and "frame rate" in out
