"""The calibration memory benchmark's parts (experiments/bench_calibration.py): the child
measurement reports the child's own peak, and the bench file changes only the camera."""

from __future__ import annotations

import sys

import tomllib

from experiments.bench_calibration import bench_file, measure_child


def test_measure_child_reports_its_own_peak():
    big = measure_child([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = "
                         "b'x' * len(b[::4096])"])
    small = measure_child([sys.executable, "-c", "pass"])
    assert big["rc"] == 0 and small["rc"] == 0
    assert big["peak_rss_mib"] >= 300 > small["peak_rss_mib"], (big, small)
    assert measure_child([sys.executable, "-c", "raise SystemExit(3)"])["rc"] == 3


def test_bench_file_changes_only_the_camera_shape(tmp_path):
    from devices import open_bench
    from devices.config import load_config

    p = bench_file((96, 128), tmp_path / "b.toml")
    cfg = tomllib.loads(p.read_text())
    ref = load_config("sim.toml")
    assert cfg["camera"]["shape"] == [96, 128]
    assert cfg["slm"] == {k: v for k, v in ref["slm"].items() if k in cfg["slm"]}
    with open_bench(p) as bench:
        assert tuple(bench.camera.shape) == (96, 128)
