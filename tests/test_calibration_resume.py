"""`hil calibrate --resume` and calibration memory/progress (issue 8, parts 5 and 7).

* resume: a calibration interrupted in step k (a step that raises) and resumed does not
  repeat the earlier steps' captures (camera frames counted on the simulated bench) and
  ends equal to an uninterrupted run; a step whose inputs changed (options, device
  identity) runs again; the CLI logs one line per skipped step.
* memory: the capture steps reduce frames as they arrive: the model step's peak
  (tracemalloc) does not grow with the number of captured images; the wavefront step
  keeps crops, not frames; ``RunningMoments`` equals numpy's mean/variance.
* progress: each step shows a bar counting its captures; ``--no-progress`` shows none.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tracemalloc

import numpy as np
import pytest
from session_helpers import CALIBRATION_BENCH

from calibration import CalibrationSet, run_calibration
from calibration.capture import RunningMoments

SMALL = CALIBRATION_BENCH
FAST = {"dark": {"n_dark": 4, "n_pairs": 1, "exposures": (0.3, 0.7)},
        "geometry": {"grid": 3, "averaging": 1},
        "lut": {"level_step": 32},
        "wavefront": {"averaging": 1, "max_iter": 5, "start_iter": 5, "iterations": 1,
                      "starts": (0.5,), "samples": 32}}
STEPS = "dark,geometry,lut,wavefront"


def small_bench(seed: int = 0, **camera):
    from devices import open_bench

    cfg = copy.deepcopy(SMALL)
    cfg["seed"] = int(seed)
    cfg["camera"].update(camera)
    return open_bench(cfg)


def _step_arrays(cal: CalibrationSet) -> dict[str, np.ndarray]:
    """Every numeric value of every step (the inputs record and free text left out)."""
    out = {}
    for name in cal.steps():
        step = getattr(cal, name)
        for part in ("values", "residuals", "data"):
            for k, v in getattr(step, part).items():
                if k == "inputs_sha256":
                    continue
                if isinstance(v, dict):
                    v = sorted(v.items())
                try:
                    out[f"{name}.{part}.{k}"] = np.asarray(v, dtype=float)
                except (TypeError, ValueError):
                    continue
    return out


class Injected(RuntimeError):
    pass


def test_resume_after_interruption_repeats_no_capture_and_equals_uninterrupted(
        tmp_path, monkeypatch, caplog):
    import calibration.lut

    with small_bench() as bench:
        whole = run_calibration(bench, tmp_path / "whole", steps=STEPS, options=FAST,
                                progress=False, report=False)
        frames_whole = bench.camera.frames_delivered

    real = calibration.lut.calibrate_phase_response

    def broken(*args, **kwargs):
        raise Injected("injected failure in the lut step")

    out = tmp_path / "resumed"
    with small_bench() as bench:
        monkeypatch.setattr(calibration.lut, "calibrate_phase_response", broken)
        with pytest.raises(Injected):
            run_calibration(bench, out, steps=STEPS, options=FAST, progress=False,
                            report=False)
        frames_first = bench.camera.frames_delivered
        saved = CalibrationSet.load(out)
        assert saved.steps() == ["dark", "geometry"]
        monkeypatch.setattr(calibration.lut, "calibrate_phase_response", real)
        with caplog.at_level(logging.INFO, logger="calibration.pipeline"):
            resumed = run_calibration(bench, out, steps=STEPS, options=FAST, progress=False,
                                      report=False, calibration=saved, resume=True)
        frames_resume = bench.camera.frames_delivered - frames_first
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2 and "dark" in skipped[0] and "geometry" in skipped[1], skipped
    # no capture of dark or geometry was repeated: the two runs together took exactly
    # the frames of one uninterrupted calibration
    assert frames_first + frames_resume == frames_whole
    assert resumed.steps() == whole.steps()
    a, b = _step_arrays(whole), _step_arrays(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k
    # and the file on disk holds the resumed result
    assert CalibrationSet.load(out).steps() == whole.steps()


def test_resume_reruns_a_step_whose_inputs_changed(tmp_path, caplog):
    steps = "dark,geometry"
    with small_bench() as bench:
        cal = run_calibration(bench, tmp_path, steps=steps, options=FAST, progress=False,
                              report=False)
        t_dark, t_geo = cal.dark.time, cal.geometry.time
        # same inputs: nothing captured
        n0 = bench.camera.frames_delivered
        run_calibration(bench, tmp_path, steps=steps, options=FAST, progress=False,
                        report=False, calibration=CalibrationSet.load(tmp_path), resume=True)
        assert bench.camera.frames_delivered == n0
        # a geometry setting changed: dark is kept, geometry runs again
        opts = copy.deepcopy(FAST)
        opts["geometry"]["grid"] = 4
        with caplog.at_level(logging.INFO, logger="calibration.pipeline"):
            cal2 = run_calibration(bench, tmp_path, steps=steps, options=opts, progress=False,
                                   report=False, calibration=CalibrationSet.load(tmp_path),
                                   resume=True)
    assert cal2.dark.time == t_dark
    assert cal2.geometry.time != t_geo
    assert any("geometry" in r.getMessage() and "inputs changed" in r.getMessage()
               for r in caplog.records)
    # another camera (another device identity): every step runs again, the later ones
    # because the step they read was redone
    with small_bench(seed=1) as bench:
        cal3 = run_calibration(bench, tmp_path, steps=steps, options=opts, progress=False,
                               report=False, calibration=CalibrationSet.load(tmp_path),
                               resume=True)
    assert cal3.dark.time != t_dark and cal3.geometry.time != cal2.geometry.time


def _bench_file(tmp_path):
    from experiments.bench_calibration import _toml_value

    lines = [f"{k} = {_toml_value(v)}" for k, v in SMALL.items() if not isinstance(v, dict)]
    for table, body in SMALL.items():
        if isinstance(body, dict):
            lines += [f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    p = tmp_path / "bench.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_cli_resume_skips_completed_steps(tmp_path, capsys, caplog):
    from hil.cli import main

    bench = _bench_file(tmp_path)
    out = tmp_path / "cal"
    opts = json.dumps(FAST)
    assert main(["calibrate", str(bench), "--out", str(out), "--steps", "dark,geometry",
                 "--options", opts, "--no-progress"]) == 0
    before = CalibrationSet.load(out)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="calibration.pipeline"):
        assert main(["calibrate", str(bench), "--out", str(out), "--steps",
                     "dark,geometry,lut", "--options", opts, "--no-progress", "--resume"]) == 0
    after = CalibrationSet.load(out)
    assert after.steps() == ["dark", "geometry", "lut"]
    assert after.dark.time == before.dark.time and after.geometry.time == before.geometry.time
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2, skipped


def test_steps_show_progress_with_capture_counts(tmp_path, capsys):
    with small_bench() as bench:
        run_calibration(bench, tmp_path, steps="dark", options=FAST, progress=True,
                        report=False)
        err = capsys.readouterr().err
        # a bar counting the step's captures: 4 dark frames at each of 2 exposures (the
        # background model) + 2 exposures x (1 pair x 2 + 1 frame binning the pixels)
        assert re.search(r"dark: .*\d/14 ", err), err[-500:]
        run_calibration(bench, tmp_path, steps="dark", options=FAST, progress=False,
                        report=False)
        assert "dark" not in capsys.readouterr().err


def test_model_step_memory_does_not_grow_with_captures(tmp_path):
    """Frames are reduced to model-grid patterns as they arrive: capturing 4x more images
    costs only their (C, N, N) patterns, not their frames (2 x 256 x 256 each)."""
    from calibration.model_fit import calibrate_model

    with small_bench() as bench:
        cal = run_calibration(bench, None, steps="dark,geometry", options=FAST,
                              progress=False, report=False)
        peaks = {}
        for n in (8, 40):
            tracemalloc.start()
            calibrate_model(bench, cal, n_images=n, steps=2)
            peaks[n] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    grow = peaks[40] - peaks[8]
    frames_bytes = 32 * 2 * 256 * 256 * 2  # the extra raw frames, had they been kept
    assert grow < frames_bytes / 4, (peaks, frames_bytes)


def test_wavefront_keeps_crops_not_frames(tmp_path):
    with small_bench() as bench:
        cal = run_calibration(bench, None, steps=STEPS, options=FAST, progress=False,
                              report=False)
    wf = cal.wavefront
    n_div = len(wf.data["frames"])
    assert wf.data["frames"].shape[1] < 256 and wf.data["frames"].shape[2] < 256
    assert wf.data["fitted"].shape == wf.data["frames"].shape
    assert wf.residuals["residual_maps"].shape == wf.data["frames"].shape
    assert wf.data["crop_origin_px"].shape == (2,) and n_div == 5


def test_running_moments_match_numpy():
    rng = np.random.default_rng(3)
    frames = rng.poisson(100.0, size=(9, 7, 5)).astype(np.float64)
    m = RunningMoments((7, 5))
    for f in frames:
        m.add(f)
    assert np.array_equal(m.mean, frames.mean(axis=0))
    np.testing.assert_allclose(m.variance(ddof=1), frames.var(axis=0, ddof=1), rtol=1e-12)
    with pytest.raises(ValueError, match="frame: expected shape"):
        m.add(np.zeros((5, 7)))
