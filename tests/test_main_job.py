"""The main job end to end: simulation, paper study (tiny), simulated bench."""

from __future__ import annotations

import json

import pytest

from hil.cli import main


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.realdata
def test_main_job_all_parts(tmp_path, data_dir, capsys):
    from experiments.main_job import run_main_job

    out = tmp_path / "job"
    # the decoders and model steps smaller than their defaults (as the walk-through notebook)
    small = {"model": {"n_images": 24, "steps": 150},
             "decoders": {"n_twin": 1500, "n_test": 16, "n_val": 16, "n_repeat": 4}}
    s = run_main_job(out, paper_scale="tiny", n_bench=8, n_capture=40, count=2000, n_test=40,
                     calibration_options=small, progress=False)
    assert {"simulation", "paper", "bench"} <= set(s)
    assert s["bench"]["status"] == 0 and s["bench"]["n"] == 8
    # the calibrated twin-trained decoder on captures is near the simulation figure
    assert s["bench"]["run_ssim_mean"] > 0.6 * s["simulation"]["datasets"]["mnist"]["ssim_mean"]
    assert s["bench"]["calibration_errors"]["center_error_px"] < 0.2
    assert {v["verdict"] for v in s["paper"]["verdicts"]} <= {"reproduced", "refuted",
                                                             "inconclusive", "measured"}
    index = (out / "index.md").read_text()
    for link in ("simulation/report.md", "paper/report.md", "bench/run/report.md"):
        assert link in index and (out / link).is_file()
    saved = json.loads((out / "summary.json").read_text())  # the file records the result
    assert saved["total_seconds"] == pytest.approx(s["total_seconds"])
    assert saved["bench"]["run_ssim_mean"] == pytest.approx(s["bench"]["run_ssim_mean"])
    assert f"Total time {s['total_seconds']:.0f} s." in index


def test_demo_help_names_the_parts(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "--no-paper" in out and "--no-bench" in out
