"""`hil live BENCH`, headless: PNG frames with overlays, live.json, laser off on Ctrl-C."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from calibration import CalibrationSet
from calibration.store import StepResult
from calibration.truth import truth_model_to_camera
from devices import open_bench
from devices.simulated import SimCamera
from devices.visa import sim_laser_state
from hil.cli import main

SIM = Path(__file__).resolve().parents[1] / "devices" / "benches" / "sim.toml"


def bench_file(tmp: Path, *, output: str = "on", state: Path | None = None) -> Path:
    """sim.toml at 256 x 256 pixels (fast frames; the 32-grid window fits the camera)."""
    text = SIM.read_text().replace("shape = [512, 512]", "shape = [256, 256]")
    text = re.sub(r'(?m)^output = "on".*$', f'output = "{output}"', text)
    if state is not None:
        text = text.replace("[laser]\n", f'[laser]\nsim_state_file = "{state}"\n')
    path = tmp / "bench.toml"
    path.write_text(text)
    return path


def frames_json(out: Path) -> list[dict]:
    return json.loads((out / "live.json").read_text())["frames"]


def test_headless_frames_overlay_and_spot_offsets(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    path = bench_file(tmp_path)
    # a calibration holding the true geometry: the spots land where they are expected
    with open_bench(path) as bench:
        a = truth_model_to_camera(bench, 32)
        block = int(bench.slm.block_size((32, 32)))
        cal = CalibrationSet(devices={})
        cal.set("geometry", StepResult("geometry", values={"model_to_camera": a, "size": 32,
                                                           "block": block}))
        cal.save(tmp_path / "cal")
    out = tmp_path / "live"
    assert main(["live", str(path), "--frames", "4", "--out", str(out),
                 "--calibration", str(tmp_path / "cal")]) == 0
    assert "4 frames" in capsys.readouterr().out
    recs = frames_json(out)
    assert [r["frame"] for r in recs] == [0, 1, 2, 3]
    for r in recs:
        assert r["geometry"] == "calibrated" and r["exposure_s"] == 0.001
        assert r["saturated_fraction"] < 0.01 and r["full_scale"] == 4095  # lit below full
        assert np.hypot(*r["offset_px"]) < 1.0, r
    img = cv2.imread(str(out / "live_00002.png"))
    assert img.shape[1] >= 640 and img.shape[2] == 3
    assert np.any(np.all(img == (0, 220, 0), axis=-1))  # the model window, green
    assert np.any(np.all(img == (0, 220, 220), axis=-1))  # text / expected spot, yellow
    # without the calibration: the nominal geometry misses by the hidden camera offset
    out2 = tmp_path / "nominal"
    assert main(["live", str(path), "--frames", "2", "--out", str(out2)]) == 0
    recs = frames_json(out2)
    assert all(r["geometry"] == "nominal" and np.hypot(*r["offset_px"]) > 2 for r in recs)


def test_ctrl_c_leaves_laser_off_and_keeps_frames(tmp_path, monkeypatch):
    state = tmp_path / "laser.json"
    path = bench_file(tmp_path, output="off", state=state)
    calls = {"n": 0}
    render = SimCamera.render_frame

    def interrupting(self, *args):  # args: the exposure state (devices.sim_camera)
        calls["n"] += 1
        if calls["n"] == 3:
            assert sim_laser_state(state)["emitting"]  # --laser-on switched it on
            raise KeyboardInterrupt
        return render(self, *args)

    monkeypatch.setattr(SimCamera, "render_frame", interrupting)
    out = tmp_path / "live"
    rc = main(["live", str(path), "--frames", "10", "--out", str(out), "--laser-on"])
    assert rc == 130
    assert not sim_laser_state(state)["emitting"]
    assert sorted(p.name for p in out.glob("live_*.png")) == ["live_00000.png",
                                                              "live_00001.png"]
    assert len(frames_json(out)) == 2  # the interrupted session's records are kept


def test_refuses_without_display_or_out(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["live", str(bench_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "--out DIR" in err
